"""Run by fdroidserver's own interpreter (.venv-fdroidserver): download and verify a repository's index the way
fdroidserver does, and print what it found as one JSON object. Never imports sealgate.

usage: python fdroid_client.py URL FINGERPRINT CACHEDIR
"""

from __future__ import annotations

import json
import shutil
import sys


def main() -> int:
    url, fingerprint, cachedir = sys.argv[1:4]
    import fdroidserver.common as common
    import fdroidserver.index as index
    from fdroidserver.exception import VerificationException

    common.config = {"jarsigner": shutil.which("jarsigner"), "cachedir": cachedir}
    result: dict[str, object] = {}
    for name, download in (("v2", index.download_repo_index_v2), ("v1", index.download_repo_index_v1)):
        try:
            data, _ = download(f"{url}?fingerprint={fingerprint}")
        except VerificationException as exc:
            result[name] = {"error": str(exc)}
            continue
        if name == "v2":
            result[name] = {
                "packages": {package: sorted(value["versions"]) for package, value in data["packages"].items()},
                "address": data["repo"]["address"],
            }
        else:
            result[name] = {
                "packages": {
                    package: sorted(v["hash"] for v in versions) for package, versions in data["packages"].items()
                },
                "apps": [app["packageName"] for app in data["apps"]],
                "fingerprint": data["repo"].get("fingerprint"),
            }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
