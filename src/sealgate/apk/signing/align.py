"""zipalign's rule, applied while the ZIP is rewritten: STORED data starts on an aligned offset.

Android maps uncompressed resources and native libraries straight from the APK, which needs their data aligned (4
bytes; whole pages for *.so files, 16 KiB on devices with 16 KiB pages). Like apksigner, the signer aligns through
the local header's extra field rather than by moving entries: it drops any earlier alignment (apksig's 0xd935 field,
or the zero bytes old zipalign padded with) and appends an 0xd935 field whose padding makes the data start at a
multiple of the alignment. Compressed entries are left exactly as they are.
"""

from __future__ import annotations

import struct

from sealgate.errors import ApkFormatError

ALIGNMENT_EXTRA_ID = 0xD935
#: Header (id, size) plus the uint16 alignment the 0xd935 field records.
_FIELD_MIN_SIZE = 6
_MAX_EXTRA = 0xFFFF


def entry_alignment(name: str, extra: bytes, *, alignment: int, page_alignment: int) -> int:
    """The alignment for a STORED entry: the page size for *.so, else `alignment`, or more if its extra asks."""
    default = page_alignment if name.endswith(".so") else alignment
    declared = declared_alignment(extra)
    return max(default, declared) if declared is not None else default


def declared_alignment(extra: bytes) -> int | None:
    """The alignment an 0xd935 field records, if the extra field has a well-formed one."""
    position = 0
    while len(extra) - position >= 4:
        header_id, size = struct.unpack_from("<HH", extra, position)
        position += 4
        if size > len(extra) - position:
            return None
        if header_id == ALIGNMENT_EXTRA_ID:
            if size < 2:
                return None
            (multiple,) = struct.unpack_from("<H", extra, position)
            return multiple or None
        position += size
    return None


def aligned_extra(extra: bytes, extra_offset: int, multiple: int) -> bytes:
    """`extra` without earlier alignment, plus an 0xd935 field that puts the data that follows at a multiple.

    `extra_offset` is where the extra field starts in the output file. Fields other than alignment are kept in
    order; a malformed tail (a field running past the end) is dropped, as apksig drops it.
    """
    if multiple <= 1:
        return extra
    kept = bytearray()
    position = 0
    while len(extra) - position >= 4:
        header_id, size = struct.unpack_from("<HH", extra, position)
        if size > len(extra) - position - 4:
            break
        if not (header_id == ALIGNMENT_EXTRA_ID or (header_id == 0 and size == 0)):
            kept += extra[position : position + 4 + size]
        position += 4 + size
    data_start = extra_offset + len(kept) + _FIELD_MIN_SIZE
    padding = (multiple - data_start % multiple) % multiple
    kept += struct.pack("<HHH", ALIGNMENT_EXTRA_ID, 2 + padding, multiple) + bytes(padding)
    if len(kept) > _MAX_EXTRA:
        raise ApkFormatError(f"aligning needs an extra field of {len(kept)} bytes, more than a ZIP header holds")
    return bytes(kept)
