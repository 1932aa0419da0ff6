"""App icons for the index: the launcher icon's PNGs copied out of the APK, one per screen density.

F-Droid clients look for <package>.<versionCode>.png in icons-<dpi>/ for their screen (index-v1) or take the file
index-v2 names under icons/. The manifest's icon is resolved through resources.arsc to its PNG per density
(`apk.manifest.resolve_file_variants`); each density folder gets the APK's PNG for that density, else the nearest
larger one, else the largest there is, and icons/ gets the largest. The PNG bytes are copied as they are in the
APK: fdroidserver re-encodes them with Pillow (so its files hash differently), which adds a dependency and a
decoder of untrusted images for no gain a client can see. Adaptive (XML) icons are not rendered; an APK with
only those has no icon in the index, as with fdroidserver when it cannot render one.
"""

from __future__ import annotations

from pathlib import Path

from sealgate.durable import replace_file
from sealgate.errors import RepoError, SealgateError
from sealgate.repo.model import FileEntry
from sealgate.repo.scan import ScannedApk

#: fdroidserver's icon folders (update.screen_densities, without anydpi).
DENSITIES = (640, 480, 320, 240, 160, 120)
ICONS = "icons"
MAX_ICON_SIZE = 4 * 1024 * 1024
_DEFAULT_DENSITY = 160  # mdpi: what a resource without a density qualifier is drawn at


def icon_name(scan: ScannedApk) -> str:
    return f"{scan.package}.{scan.version_code}.png"


def extract_icons(section_dir: Path, scan: ScannedApk) -> FileEntry | None:
    """Write the icons of the APK `scan` describes (in `section_dir`), unless they are there; the icons/ entry."""
    if not scan.icons:
        return None
    name = icon_name(scan)
    main = section_dir / ICONS / name
    if not main.is_file():
        by_density = {density or _DEFAULT_DENSITY: path for density, path in scan.icons}
        try:
            pngs = _read(section_dir / scan.name, set(by_density.values()))
        except (SealgateError, OSError) as exc:
            raise RepoError(f"cannot read the icon of {section_dir / scan.name}: {exc}") from None
        by_density = {density: path for density, path in by_density.items() if path in pngs}
        if not by_density:
            return None
        largest = by_density[max(by_density)]
        for density in DENSITIES:
            larger = sorted(d for d in by_density if d >= density)
            source = by_density[larger[0]] if larger else largest
            _write(section_dir / f"{ICONS}-{density}" / name, pngs[source])
        _write(main, pngs[largest])
    try:
        data = main.read_bytes()
    except OSError as exc:
        raise RepoError(f"cannot read {main}: {exc.strerror}") from None
    return FileEntry.of_bytes(f"/{ICONS}/{name}", data)


def _read(apk: Path, names: set[str]) -> dict[str, bytes]:
    from sealgate.ziparchive import ZipArchive

    with ZipArchive.open(apk) as archive:
        result = {}
        for name in names:
            entry = archive.entry(name)
            if entry is not None:
                result[name] = archive.read(entry, max_size=MAX_ICON_SIZE)
    return result


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, data)
    except OSError as exc:
        raise RepoError(f"cannot write {path}: {exc.strerror}") from None
