"""Strict ZIP reading: what Android refuses is refused here too, and bounded reads stay bounded."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from sealgate.errors import ZipBombError, ZipFormatError
from sealgate.ziparchive import ZipArchive


def _zip(entries: list[tuple[str, bytes]], *, compress: bool = False, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in entries:
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def _write(tmp_path: Path, data: bytes, name: str = "a.zip") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _codes(path: Path) -> list[str]:
    with ZipArchive.open(path) as archive:
        return [violation.code for violation in archive.violations]


def test_reads_entries_and_data(tmp_path: Path) -> None:
    path = _write(tmp_path, _zip([("a.txt", b"hello"), ("dir/b.bin", bytes(range(256)) * 100)], compress=True))
    with ZipArchive.open(path) as archive:
        assert [entry.name for entry in archive.entries] == ["a.txt", "dir/b.bin"]
        assert archive.violations == ()
        b_entry = archive.entry("dir/b.bin")
        assert b_entry is not None
        assert archive.read(b_entry) == bytes(range(256)) * 100


def test_comment_is_located(tmp_path: Path) -> None:
    path = _write(tmp_path, _zip([("a", b"x")], comment=b"c" * 65535))
    with ZipArchive.open(path) as archive:
        assert archive.sections.comment == b"c" * 65535


def test_janus_prefix_is_a_violation(tmp_path: Path) -> None:
    data = _zip([("a", b"x")])
    # A DEX-like prefix with offsets fixed up, as the Janus attack builds it.
    prefix = b"dex\n035\0" + bytes(120)
    shifted = _shift_offsets(data, len(prefix))
    path = _write(tmp_path, prefix + shifted)
    assert "ZIP_DATA_BEFORE_FIRST_ENTRY" in _codes(path)
    with pytest.raises(ZipFormatError, match="Janus"):
        ZipArchive.open(path, strict=True)


def test_duplicate_names_are_a_violation(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning):
        archive.writestr("classes.dex", b"good")
        archive.writestr("classes.dex", b"evil")
    path = _write(tmp_path, buffer.getvalue())
    assert "ZIP_DUPLICATE_ENTRY" in _codes(path)


@pytest.mark.parametrize("bad", [b"\x00", b"\r", b"\n"])
def test_control_characters_in_names(tmp_path: Path, bad: bytes) -> None:
    # zipfile cuts names at NUL, so write a placeholder and patch both headers' bytes.
    data = _zip([("a#b", b"x")]).replace(b"a#b", b"a" + bad + b"b")
    path = _write(tmp_path, data)
    assert "ZIP_BAD_ENTRY_NAME" in _codes(path)


def test_local_header_name_mismatch(tmp_path: Path) -> None:
    data = bytearray(_zip([("abc", b"x")]))
    assert data[30:33] == b"abc"
    data[30:33] = b"abd"
    path = _write(tmp_path, bytes(data))
    assert "ZIP_LOCAL_HEADER_MISMATCH" in _codes(path)


def test_local_header_size_mismatch(tmp_path: Path) -> None:
    data = bytearray(_zip([("abc", b"xyz")]))
    struct.pack_into("<I", data, 22, 2)  # uncompressed size in the local header
    path = _write(tmp_path, bytes(data))
    assert "ZIP_LOCAL_HEADER_MISMATCH" in _codes(path)


def test_garbage_between_cd_and_eocd(tmp_path: Path) -> None:
    data = _zip([("a", b"x")])
    eocd = data.rindex(b"PK\x05\x06")
    path = _write(tmp_path, data[:eocd] + b"GARBAGE" + data[eocd:])
    assert "ZIP_GARBAGE_BEFORE_EOCD" in _codes(path)


def test_overlapping_entries(tmp_path: Path) -> None:
    data = bytearray(_zip([("a", b"x" * 100), ("b", b"y" * 100)]))
    cd = data.index(b"PK\x01\x02")
    second_cd = data.index(b"PK\x01\x02", cd + 4)
    # Point the second entry's local header into the first entry's data: both must still parse, but overlap.
    first_data = data.index(b"x" * 100)
    fake_header = data[data.index(b"PK\x03\x04", 4) : data.index(b"PK\x03\x04", 4) + 31]
    data[first_data : first_data + 31] = fake_header
    struct.pack_into("<I", data, second_cd + 42, first_data)
    path = _write(tmp_path, bytes(data))
    assert "ZIP_OVERLAPPING_ENTRIES" in _codes(path)


@pytest.mark.parametrize(
    "data",
    [b"", b"PK", b"not a zip at all" * 10, b"PK\x05\x06" + bytes(18)[:10]],
)
def test_not_a_zip(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ZipFormatError):
        ZipArchive.open(_write(tmp_path, data))


def test_truncated_central_directory(tmp_path: Path) -> None:
    data = _zip([("a", b"x")])
    eocd = data.rindex(b"PK\x05\x06")
    broken = bytearray(data)
    struct.pack_into("<I", broken, eocd + 12, 10_000)  # central directory size far past the file
    with pytest.raises(ZipFormatError, match="central directory"):
        ZipArchive.open(_write(tmp_path, bytes(broken)))


def test_trailing_bytes_after_eocd(tmp_path: Path) -> None:
    with pytest.raises(ZipFormatError, match="comment length"):
        ZipArchive.open(_write(tmp_path, _zip([("a", b"x")]) + b"tail"))


def test_zip_bomb_is_bounded(tmp_path: Path) -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(bytes(64 * 1024 * 1024)) + bomb.flush()
    data = bytearray(_zip([("bomb", b"tiny")], compress=True))
    # Replace the entry's data with the bomb but declare a small size, as an attacker would.
    path = _write(tmp_path, _replace_deflated(bytes(data), "bomb", payload, declared_size=4))
    with ZipArchive.open(path) as archive:
        entry = archive.entry("bomb")
        assert entry is not None
        with pytest.raises(ZipBombError):
            archive.read(entry)
        with pytest.raises(ZipBombError):
            archive.read(entry, max_size=1024)


def test_declared_size_over_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, _zip([("big", bytes(10_000))], compress=True))
    with ZipArchive.open(path) as archive:
        entry = archive.entry("big")
        assert entry is not None
        with pytest.raises(ZipBombError, match="over the limit"):
            archive.read(entry, max_size=100)


def test_crc_mismatch(tmp_path: Path) -> None:
    data = bytearray(_zip([("a", b"hello")]))
    data[data.index(b"hello")] ^= 1
    with ZipArchive.open(_write(tmp_path, bytes(data))) as archive:
        entry = archive.entry("a")
        assert entry is not None
        with pytest.raises(ZipFormatError, match="CRC"):
            archive.read(entry)


def test_zip64_archive(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        with archive.open("big", "w", force_zip64=True) as handle:
            handle.write(b"z" * 1000)
        archive.writestr("small", b"s")
    data = buffer.getvalue()
    # Python writes ZIP64 extras on the entry; force a ZIP64 end record by declaring too many entries.
    path = _write(tmp_path, data)
    with ZipArchive.open(path) as archive:
        entry = archive.entry("big")
        assert entry is not None
        assert archive.read(entry) == b"z" * 1000


def test_zip64_end_record(tmp_path: Path) -> None:
    data = _zip([("a", b"x")])
    eocd_at = data.rindex(b"PK\x05\x06")
    (_, _, _, count, total, cd_size, cd_offset, _) = struct.unpack_from("<IHHHHIIH", data, eocd_at)
    body = data[:eocd_at]
    zip64_offset = len(body)
    zip64_record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, total, cd_size, cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, zip64_offset, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path = _write(tmp_path, body + zip64_record + locator + eocd)
    with ZipArchive.open(path) as archive:
        assert archive.sections.zip64_eocd_offset == zip64_offset
        assert [entry.name for entry in archive.entries] == ["a"]
        assert archive.violations == ()


def test_real_apks_parse_cleanly(apksig_vectors: Path) -> None:
    """Every well-formed APK of the reference set parses without violations."""
    clean = 0
    for path in sorted((apksig_vectors / "files").glob("golden-*.apk")):
        with ZipArchive.open(path) as archive:
            assert archive.violations == (), path.name
            assert archive.entry("AndroidManifest.xml") is not None
            clean += 1
    assert clean >= 20


def _shift_offsets(data: bytes, shift: int) -> bytes:
    out = bytearray(data)
    eocd = data.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", data, eocd + 16)[0]
    struct.pack_into("<I", out, eocd + 16, cd_offset + shift)
    pos = cd_offset
    while data[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        local = struct.unpack_from("<I", data, pos + 42)[0]
        struct.pack_into("<I", out, pos + 42, local + shift)
        pos += 46 + name_len + extra_len + comment_len
    return bytes(out)


def _replace_deflated(data: bytes, name: str, payload: bytes, *, declared_size: int) -> bytes:
    """Rebuild a one-entry deflated archive whose entry holds `payload` and claims `declared_size` bytes."""
    del data
    crc = 0
    raw_name = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(payload), declared_size, len(raw_name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(payload), declared_size, len(raw_name), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    body = local + raw_name + payload
    cd = central + raw_name
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + eocd
