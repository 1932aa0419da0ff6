"""The AVB footer of partition images (boot.img, system.img, ...) and re-signing the vbmeta it points to.

`avbtool add_hash_footer` / `add_hashtree_footer` append a vbmeta image to a partition image and end the partition
with a 64-byte footer (libavb/avb_footer.h): 'AVBf', a big-endian uint32 major and minor version (1.0), then uint64
original_image_size, vbmeta_offset and vbmeta_size, then 28 reserved bytes. libavb reads the last 64 bytes of the
partition and refuses a footer whose major version is not 1 or whose minor version is newer than it knows
(avb_footer_validate_and_byteswap). The vbmeta image must lie after the original data and before the footer, and
be at most 64 KiB (libavb's VBMETA_MAX_SIZE). Android sparse images are refused with a message: the footer lives in
the unsparsed image.

Re-signing keeps the image's layout: the new vbmeta image is written at the same offset (the descriptors' hashes
cover the partition data, which does not change), the rest of the old one zeroed, and the footer's vbmeta_size
updated. Only the vbmeta region and the footer are read or written, so a multi-gigabyte system.img costs a few KiB;
writing to another file copies the image in 1 MiB chunks into a temporary file that replaces the output only
when complete.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgate.avb.vbmeta import VbmetaImage, read_vbmeta, resign_vbmeta
from sealgate.durable import fsync_directory
from sealgate.errors import AvbFormatError

if TYPE_CHECKING:
    from sealgate.signing import Signer

FOOTER_MAGIC = b"AVBf"
FOOTER_SIZE = 64
FOOTER_VERSION_MAJOR = 1
FOOTER_VERSION_MINOR = 0
_FOOTER = struct.Struct(">4sLLQQQ28s")
assert _FOOTER.size == FOOTER_SIZE
_COPY_CHUNK = 1024 * 1024
#: libavb loads at most this much vbmeta from a partition (VBMETA_MAX_SIZE in libavb/avb_slot_verify.c).
VBMETA_MAX_SIZE = 64 * 1024
#: Android sparse images (libsparse) start with this magic; AVB footers live in the unsparsed image.
SPARSE_MAGIC = b"\x3a\xff\x26\xed"


@dataclass(frozen=True)
class AvbFooter:
    original_image_size: int
    vbmeta_offset: int
    vbmeta_size: int
    version_major: int = FOOTER_VERSION_MAJOR
    version_minor: int = FOOTER_VERSION_MINOR

    @classmethod
    def parse(cls, data: bytes) -> AvbFooter:
        if len(data) != FOOTER_SIZE or data[:4] != FOOTER_MAGIC:
            raise AvbFormatError("no AVB footer: the last 64 bytes do not start with 'AVBf'")
        _, major, minor, original, offset, size, _ = _FOOTER.unpack(data)
        if major != FOOTER_VERSION_MAJOR or minor > FOOTER_VERSION_MINOR:
            raise AvbFormatError(f"AVB footer version {major}.{minor} is not supported (1.0 is)")
        return cls(original, offset, size, major, minor)

    def encode(self) -> bytes:
        return _FOOTER.pack(
            FOOTER_MAGIC, self.version_major, self.version_minor, self.original_image_size, self.vbmeta_offset,
            self.vbmeta_size, bytes(28),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "version": f"{self.version_major}.{self.version_minor}",
            "original_image_size": self.original_image_size,
            "vbmeta_offset": self.vbmeta_offset,
            "vbmeta_size": self.vbmeta_size,
        }


def read_footer(path: Path) -> AvbFooter | None:
    """The image's AVB footer, None when it has none; AvbFormatError for a footer that is there but unusable."""
    with path.open("rb") as file:
        if file.read(4) == SPARSE_MAGIC:
            raise AvbFormatError(f"{path} is an Android sparse image; unsparse it first (simg2img)")
        size = file.seek(0, os.SEEK_END)
        if size < FOOTER_SIZE:
            return None
        file.seek(size - FOOTER_SIZE)
        data = file.read(FOOTER_SIZE)
    if data[:4] != FOOTER_MAGIC:
        return None
    footer = AvbFooter.parse(data)
    _check_layout(footer, size, path)
    return footer


def read_image_vbmeta(path: Path) -> tuple[AvbFooter | None, bytes]:
    """The vbmeta bytes of an image: the region a footer points to, or the file itself when it has no footer.

    A footerless file is read only up to 1 MiB (vbmeta partitions are 64 KiB; libavb reads at most that much).
    """
    footer = read_footer(path)
    with path.open("rb") as file:
        if footer is None:
            return None, file.read(_COPY_CHUNK)
        file.seek(footer.vbmeta_offset)
        return footer, file.read(footer.vbmeta_size)


def read_image(path: Path) -> tuple[AvbFooter | None, VbmetaImage]:
    footer, data = read_image_vbmeta(path)
    return footer, read_vbmeta(data)


def resign_footer_image(
    path: Path,
    signer: Signer,
    *,
    output: Path | None = None,
    algorithm: str | None = None,
    rollback_index: int | None = None,
    keep_public_key_metadata: bool = False,
) -> AvbFooter:
    """Re-sign the vbmeta behind `path`'s AVB footer, in place (or into `output`), keeping every offset.

    AvbFormatError when the image has no footer, or the new vbmeta (a bigger key) does not fit before the footer.
    Returns the new footer.
    """
    footer, data = read_image_vbmeta(path)
    if footer is None:
        raise AvbFormatError(f"{path} has no AVB footer; re-sign a standalone vbmeta image with resign_vbmeta")
    new_vbmeta = resign_vbmeta(
        data,
        signer,
        algorithm=algorithm,
        rollback_index=rollback_index,
        keep_public_key_metadata=keep_public_key_metadata,
        padding_size=0,
    )
    size = path.stat().st_size
    room = size - FOOTER_SIZE - footer.vbmeta_offset
    if len(new_vbmeta) > room:
        raise AvbFormatError(
            f"the re-signed vbmeta ({len(new_vbmeta)} bytes) does not fit the {room} bytes before {path}'s footer"
        )
    new_footer = AvbFooter(
        footer.original_image_size, footer.vbmeta_offset, len(new_vbmeta), footer.version_major, footer.version_minor
    )
    patch = new_vbmeta + bytes(max(0, footer.vbmeta_size - len(new_vbmeta)))
    if output is None:
        _patch(path, footer.vbmeta_offset, patch, size - FOOTER_SIZE, new_footer.encode())
        return new_footer
    fd, tmp_name = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, path.open("rb") as source:
            shutil.copyfileobj(source, out, _COPY_CHUNK)
        _patch(tmp, footer.vbmeta_offset, patch, size - FOOTER_SIZE, new_footer.encode())
        tmp.replace(output)
        fsync_directory(output.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return new_footer


def _patch(path: Path, vbmeta_offset: int, vbmeta: bytes, footer_offset: int, footer: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(vbmeta_offset)
        file.write(vbmeta)
        file.seek(footer_offset)
        file.write(footer)
        file.flush()
        os.fsync(file.fileno())


def _check_layout(footer: AvbFooter, size: int, path: Path) -> None:
    if footer.vbmeta_size > VBMETA_MAX_SIZE:
        raise AvbFormatError(
            f"{path}: AVB footer's vbmeta size {footer.vbmeta_size} exceeds libavb's {VBMETA_MAX_SIZE}"
        )
    if footer.original_image_size > footer.vbmeta_offset:
        raise AvbFormatError(f"{path}: AVB footer puts vbmeta inside the original image data")
    if footer.vbmeta_offset + footer.vbmeta_size > size - FOOTER_SIZE:
        raise AvbFormatError(f"{path}: AVB footer points past the end of the image (vbmeta would overlap the footer)")
