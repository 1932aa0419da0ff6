"""The simulated device's A/B slots on disk: each slot is a directory of partition images (<partition>.img).

Slot directories live under the device directory's slots/ and carry a generation in their name (a-1f2e3d4c); the
database records which directory each slot is. So putting an update in place is one database commit that points the
inactive slot at a freshly written directory: before the commit the old slot is intact, after it the new one is
complete, and there is no moment when a slot is half old, half new. The replaced directory is removed after the
commit; an update that is refused removes its staging directory and touches nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from sealgate.durable import fsync_directory
from sealgate.errors import DeviceError

SLOTS_DIRECTORY = "slots"
_PARTITION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.img$")
_STAGING_PREFIX = ".staging-"
_STEP = 1 << 20


def slots_root(device_directory: Path) -> Path:
    return device_directory / SLOTS_DIRECTORY


def slot_path(device_directory: Path, directory_name: str) -> Path:
    return slots_root(device_directory) / directory_name


def image_files(directory: Path) -> dict[str, Path]:
    """Partition name -> image file for every <partition>.img in `directory`."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise DeviceError(f"cannot read the images in {directory}: {exc.strerror}") from exc
    return {entry.name[: -len(".img")]: entry for entry in entries if _PARTITION.match(entry.name) and entry.is_file()}


def new_staging(device_directory: Path) -> Path:
    """A fresh, empty directory next to the slots, for an update to be written into."""
    root = slots_root(device_directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=root))
    except OSError as exc:
        raise DeviceError(f"cannot make a staging directory in {root}: {exc.strerror}") from exc


def copy_image(source: Path, target: Path) -> None:
    """Copy one image in bounded steps and make it durable (slots are never shared: each holds its own bytes)."""
    with open(source, "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, _STEP)
        writer.flush()
        os.fsync(writer.fileno())


def flash(device_directory: Path, images: Path, slot: str) -> str:
    """Write the factory images in `images` as a new directory for `slot`; returns its name (not yet recorded)."""
    found = image_files(images)
    if not found:
        raise DeviceError(f"{images} holds no partition images (<partition>.img)")
    staging = new_staging(device_directory)
    try:
        for name, path in found.items():
            copy_image(path, staging / f"{name}.img")
        return promote(staging, slot)
    except OSError as exc:
        discard(staging)
        raise DeviceError(f"cannot write the images of slot {slot}: {exc.strerror or exc}") from exc
    except BaseException:
        discard(staging)
        raise


def complete_from(staging: Path, source: Path) -> list[str]:
    """Copy into `staging` the partitions of `source` the update did not write (they stay as they are)."""
    present = image_files(staging)
    copied = []
    for name, path in image_files(source).items():
        if name not in present:
            copy_image(path, staging / f"{name}.img")
            copied.append(name)
    return copied


def promote(staging: Path, slot: str) -> str:
    """Give a complete staging directory its slot name; it becomes the slot only when the database says so."""
    for path in staging.iterdir():
        os.chmod(path, 0o444)
    name = f"{slot}-{secrets.token_hex(4)}"
    os.rename(staging, staging.parent / name)
    fsync_directory(staging.parent)
    return name


def discard(path: Path) -> None:
    """Remove a staging or replaced slot directory; leftovers of a crash are harmless (no record points at them)."""
    shutil.rmtree(path, ignore_errors=True)
