"""The update list LineageOS's Updater app reads, written from a channel, for devices that run that app.

The app (LineageOS/android_packages_apps_Updater, app/src/main/java/org/lineageos/updater/misc/Utils.java,
parseJson and parseJsonUpdate) fetches the URL in `lineage.updater.uri` (with {device}, {type} and {incr}
replaced) and reads `{"response": [...]}`; each element must have, with these JSON types (org.json getLong and
getString):

    datetime  integer  the build's ro.build.date.utc; shown only when newer than the running build
    filename  string   the name the download is saved as
    id        string   unique per update (the app's database key): here the package's SHA-256
    romtype   string   compared, case-insensitively, with ro.lineage.releasetype
    size      integer  bytes
    url       string   absolute URL of the package
    version   string   compared with ro.lineage.build.version (an update with a lower version is ignored)

An element missing one of them is skipped by the app, so all are always written. The app installs full packages
only, and shows nothing older than the running build, so the list names the channel's newest build and its full
OTA (the version string is the publisher's for this build; earlier builds may have had another). Canonical JSON
like the channel file.
"""

from __future__ import annotations

import posixpath
from typing import Any

from sealgate.ota.channel import Channel, canonical_json


def lineage_updates(channel: Channel, *, base_url: str, version: str, romtype: str) -> bytes:
    """The Updater's JSON for `channel`; `base_url` is the absolute URL of the directory holding the channel file."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    build = channel.newest
    update: dict[str, Any] = {
        "datetime": build.timestamp,
        "filename": posixpath.basename(build.full.url),
        "id": build.full.sha256,
        "romtype": romtype,
        "size": build.full.size,
        "url": base + build.full.url,
        "version": version,
    }
    return canonical_json({"response": [update]})
