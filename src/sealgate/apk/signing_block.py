"""The APK Signing Block: where v2, v3, v3.1 and source-stamp signatures live.

Layout (little-endian), immediately before the ZIP central directory:
``uint64 size | (uint64 length, uint32 id, value)* | uint64 size | "APK Sig Block 42"``, both sizes counting
everything after the first size field. A scheme's block is found as apksig and the platform find it: pairs are
walked in order and the first pair with the wanted ID wins, so a second block with the same ID appended by an
attacker is never read. A malformed signing block means "no signature of that scheme", which is why the lookup
returns None rather than raising: the caller then falls back exactly as Android does (and the stripping-protection
checks of the older schemes catch the downgrade).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sealgate.ziparchive import ZipArchive

MAGIC = b"APK Sig Block 42"
FOOTER_SIZE = 24
V2_BLOCK_ID = 0x7109871A
V3_BLOCK_ID = 0xF05368C0
V31_BLOCK_ID = 0x1B93AD61
SOURCE_STAMP_V2_BLOCK_ID = 0x6DFF800D
VERITY_PADDING_BLOCK_ID = 0x42726577
_MAX_BLOCK_SIZE = 0x7FFFFFFF - 8


@dataclass(frozen=True, slots=True)
class SigningBlock:
    """A located APK Signing Block and the offsets that content digests need."""

    offset: int
    #: The whole block, from its leading size field to the end of its magic.
    data: bytes
    #: Why a scheme lookup found nothing (for messages), or "" when the pairs parse cleanly.
    walk_problem: str

    def find(self, block_id: int) -> bytes | None:
        """The value of the first pair with `block_id`, or None if absent or unreachable because of damage."""
        return _find_pair(self.data, block_id)[0]

    def ids(self) -> list[int]:
        """The IDs of the pairs that parse, in order; used for reporting only."""
        found: list[int] = []
        pos = 8
        end = len(self.data) - FOOTER_SIZE
        while pos + 12 <= end:
            length, pair_id = struct.unpack_from("<QI", self.data, pos)
            if length < 4 or length > end - pos - 8:
                break
            found.append(pair_id)
            pos += 8 + length
        return found


def locate_signing_block(archive: ZipArchive) -> tuple[SigningBlock | None, str]:
    """The signing block before the central directory, or (None, reason) when there is none."""
    cd_offset = archive.sections.cd_offset
    if cd_offset < 32:
        return None, "the APK is too small to hold an APK Signing Block"
    footer = archive.pread(cd_offset - FOOTER_SIZE, FOOTER_SIZE)
    if footer[8:] != MAGIC:
        return None, "no APK Signing Block before the central directory"
    (size_in_footer,) = struct.unpack_from("<Q", footer, 0)
    if size_in_footer < FOOTER_SIZE or size_in_footer > _MAX_BLOCK_SIZE:
        return None, f"APK Signing Block size {size_in_footer} is out of range"
    total = size_in_footer + 8
    offset = cd_offset - total
    if offset < 0:
        return None, f"APK Signing Block would start at offset {offset}, before the file"
    data = archive.pread(offset, total)
    (size_in_header,) = struct.unpack_from("<Q", data, 0)
    if size_in_header != size_in_footer:
        return None, f"APK Signing Block sizes in header ({size_in_header}) and footer ({size_in_footer}) differ"
    block = SigningBlock(offset, data, "")
    return block, ""


def _find_pair(data: bytes, block_id: int) -> tuple[bytes | None, str]:
    pos = 8
    end = len(data) - FOOTER_SIZE
    index = 0
    while pos < end:
        index += 1
        if end - pos < 8:
            return None, f"APK Signing Block entry #{index} is truncated"
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if length < 4 or length > 0x7FFFFFFF:
            return None, f"APK Signing Block entry #{index} has an out-of-range length {length}"
        if length > end - pos:
            return None, f"APK Signing Block entry #{index} runs past the block"
        (pair_id,) = struct.unpack_from("<I", data, pos)
        if pair_id == block_id:
            return data[pos + 4 : pos + length], ""
        pos += length
    return None, f"no block with ID {block_id:#x} in the APK Signing Block"
