"""care_map.pb: the format against protoc (Debian's protobuf-compiler, with AOSP's care_map.proto transcribed below),
the ranges against the images themselves (stat, dump.erofs's block count, img2simg/simg2img sparse images), and the
release chain: sign-target-files regenerates META/care_map.pb for a rebuilt system.img with the release-keys
fingerprint, `release ota` packages it where `ota info`'s property files point, and `bundle apply`'s check refuses a
response whose care map is stale or edited."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from release_tools import SYSTEM_BUILD_PROP, WIFI_CERT, BuildInputs, avb_release_inputs, release_keys, role_signer
from sealgate.avb.images import add_hashtree_footer
from sealgate.cli.main import main
from sealgate.errors import OtaFormatError, ReleaseError
from sealgate.ota.care_map import PartitionCareMap, decode_care_map, encode_care_map, format_ranges, parse_ranges
from sealgate.release.care_map import file_source, image_care_blocks
from sealgate.release.report import SignReport
from sealgate.release.target_files import sign_target_files
from sealgate.release.target_files_bundle import TargetFilesHandler
from sealgate.signing import PrivateKeySigner
from test_release_images import _build_input

#: bootable/recovery/update_verifier/care_map.proto, as AOSP has it.
AOSP_CARE_MAP_PROTO = """\
syntax = "proto3";
package recovery_update_verifier;
option optimize_for = LITE_RUNTIME;
message CareMap {
  message PartitionInfo {
    string name = 1;
    string ranges = 2;
    string id = 3;
    string fingerprint = 4;
  }
  repeated PartitionInfo partitions = 1;
}
"""
BUILD_PROP = SYSTEM_BUILD_PROP.replace(
    "ro.product.device=oriole\n",
    "ro.product.device=oriole\nro.build.date.utc=1722470400\nro.build.version.security_patch=2024-08-05\n",
)
TEST_KEYS_FINGERPRINT = "google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys"
BLOCK = 4096


def _protoc(tmp_path: Path, *args: str, data: bytes) -> bytes:
    protoc = require_tool("protoc")
    (tmp_path / "care_map.proto").write_text(AOSP_CARE_MAP_PROTO)
    done = subprocess.run([protoc, f"-I{tmp_path}", *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _decode_raw(tmp_path: Path, data: bytes) -> list[dict[int, str]]:
    """protoc --decode_raw: every `1 { ... }` partition as {field number: string}."""
    text = _protoc(tmp_path, "--decode_raw", data=data).decode()
    partitions: list[dict[int, str]] = []
    for line in text.splitlines():
        if line.strip() == "1 {":
            partitions.append({})
        elif match := re.fullmatch(r'\s+(\d+): "(.*)"', line):
            partitions[-1][int(match[1])] = match[2]
    return partitions


def _encode_text(tmp_path: Path, text: str) -> bytes:
    return _protoc(tmp_path, "--encode=recovery_update_verifier.CareMap", "care_map.proto", data=text.encode())


def _dump_erofs_blocks(image: Path) -> int:
    shown = subprocess.run([require_tool("dump.erofs"), "-s", str(image)], capture_output=True, text=True, check=True)
    match = re.search(r"Filesystem blocks:\s+(\d+)", shown.stdout)
    assert match, shown.stdout
    return int(match[1])


def _replace_entry(source: Path, target: Path, name: str, data: bytes | None) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            if info.filename == name:
                if data is not None:
                    new.writestr(info, data)
            else:
                new.writestr(info, old.read(info))
    return target


# -- the format ------------------------------------------------------------------------------------------------


def test_protoc_reads_the_fields_we_write(tmp_path: Path) -> None:
    entries = [
        PartitionCareMap("system", "2,0,2048", "ro.system.build.fingerprint", "a/b/c:user/release-keys"),
        PartitionCareMap("vendor", "4,0,10,20,30", "ro.vendor.build.fingerprint", "a/b/c:user/release-keys"),
    ]
    data = encode_care_map(entries)
    assert _decode_raw(tmp_path, data) == [
        {1: "system", 2: "2,0,2048", 3: "ro.system.build.fingerprint", 4: "a/b/c:user/release-keys"},
        {1: "vendor", 2: "4,0,10,20,30", 3: "ro.vendor.build.fingerprint", 4: "a/b/c:user/release-keys"},
    ]
    decoded = _protoc(tmp_path, "--decode=recovery_update_verifier.CareMap", "care_map.proto", data=data).decode()
    assert 'name: "vendor"' in decoded and 'ranges: "4,0,10,20,30"' in decoded


def test_a_care_map_protoc_encodes_from_aosps_schema_reads_back_and_round_trips(tmp_path: Path) -> None:
    text = (
        'partitions { name: "system" ranges: "2,0,13" id: "ro.system.build.fingerprint" fingerprint: "fp" }\n'
        'partitions { name: "product" ranges: "2,0,3" id: "unknown" fingerprint: "unknown" }\n'
    )
    data = _encode_text(tmp_path, text)
    entries = decode_care_map(data)
    assert entries == [
        PartitionCareMap("system", "2,0,13", "ro.system.build.fingerprint", "fp"),
        PartitionCareMap("product", "2,0,3", "unknown", "unknown"),
    ]
    assert encode_care_map(entries) == data  # byte for byte what protoc writes
    assert entries[0].to_json()["blocks"] == 13


def test_ranges_are_rangelibs_raw_text() -> None:
    assert format_ranges([(0, 13)]) == "2,0,13"
    assert format_ranges([(0, 6), (10, 16)]) == "4,0,6,10,16"  # RangeSet("0-5 10-15").to_string_raw()
    assert parse_ranges("4,0,6,10,16") == ((0, 6), (10, 16))


@pytest.mark.parametrize(
    "text",
    ["", "0", "2,0", "3,0,1,2", "2,5,5", "2,6,5", "4,0,10,5,15", "2,0,2147483648", "2,a,b", "2,-1,3", "2, 0,3"],
)
def test_ranges_otautil_refuses_are_refused(text: str) -> None:
    with pytest.raises(OtaFormatError):
        parse_ranges(text)


def test_decode_refuses_what_update_verifier_gives_up_on(tmp_path: Path) -> None:
    for data, message in (
        (b"", "empty"),
        (b"\xff\xff\xff", "not a CareMap"),
        (_encode_text(tmp_path, 'partitions { ranges: "2,0,1" }'), "without a name"),
        (_encode_text(tmp_path, 'partitions { name: "system" }'), "no block ranges"),
        (_encode_text(tmp_path, 'partitions { name: "system" ranges: "3,0,1,2" }'), "even count"),
        (b"\n\x05\n\x01s\x10\x05", "wrong wire type"),  # ranges (field 2) as a varint
    ):
        with pytest.raises(OtaFormatError, match=message):
            decode_care_map(data)
    # a field number newer than the schema is tolerated
    entries = decode_care_map(b"\n\x0d\n\x01s\x12\x062,0,10H\x01")
    assert entries == [PartitionCareMap("s", "2,0,10", "", "")]


# -- the ranges of an image ------------------------------------------------------------------------------------


def _erofs_image(tmp_path: Path, files: int = 12) -> tuple[Path, int]:
    tree = tmp_path / "tree"
    (tree / "app").mkdir(parents=True)
    for index in range(files):
        (tree / "app" / f"f{index}").write_bytes(bytes([index + 1]) * (BLOCK * 2 + index))
    image = tmp_path / "system.img"
    subprocess.run([require_tool("mkfs.erofs"), "--quiet", str(image), str(tree)], check=True)
    return image, image.stat().st_size


def test_the_ranges_cover_exactly_the_filesystem_not_its_hash_tree(tmp_path: Path) -> None:
    image, size = _erofs_image(tmp_path)
    assert size % BLOCK == 0 and _dump_erofs_blocks(image) == size // BLOCK
    assert image_care_blocks(file_source(image), "system.img") is None  # no AVB footer: GetCareMap leaves it out
    add_hashtree_footer(image, "system", 4 * 1024 * 1024, None, salt=bytes(32))
    assert image.stat().st_size == 4 * 1024 * 1024
    assert image_care_blocks(file_source(image), "system.img") == ((0, size // BLOCK),)


def test_a_sparse_image_counts_its_data_chunks(tmp_path: Path) -> None:
    """img2simg writes zero runs as fill chunks, which sparse_img counts as care; a don't-care chunk is left out."""
    image, size = _erofs_image(tmp_path)
    add_hashtree_footer(image, "system", 4 * 1024 * 1024, None, salt=bytes(32))
    sparse = tmp_path / "system.simg"
    subprocess.run([require_tool("img2simg"), str(image), str(sparse)], check=True)
    assert sparse.read_bytes()[:4] == b"\x3a\xff\x26\xed"
    assert image_care_blocks(file_source(sparse), "system.img") == ((0, size // BLOCK),)
    # a hand-made sparse image with a don't-care chunk over blocks 2-3 (zeroed), checked by simg2img
    raw = bytearray(image.read_bytes())
    raw[2 * BLOCK : 4 * BLOCK] = bytes(2 * BLOCK)
    total = len(raw) // BLOCK
    chunks = [
        struct.pack("<HHII", 0xCAC1, 0, 2, 12 + 2 * BLOCK) + bytes(raw[: 2 * BLOCK]),
        struct.pack("<HHII", 0xCAC3, 0, 2, 12),
        struct.pack("<HHII", 0xCAC1, 0, total - 4, 12 + (total - 4) * BLOCK) + bytes(raw[4 * BLOCK :]),
    ]
    header = struct.pack("<IHHHHIIII", 0xED26FF3A, 1, 0, 28, 12, BLOCK, total, len(chunks), 0)
    crafted = tmp_path / "crafted.simg"
    crafted.write_bytes(header + b"".join(chunks))
    subprocess.run([require_tool("simg2img"), str(crafted), str(tmp_path / "back.img")], check=True)
    assert (tmp_path / "back.img").read_bytes() == bytes(raw)
    assert image_care_blocks(file_source(crafted), "system.img") == ((0, 2), (4, size // BLOCK))


# -- the release chain -----------------------------------------------------------------------------------------

#: (the test-keys input, the signed output, its report)
Signed = tuple[Path, Path, SignReport]


@pytest.fixture(scope="module")
def inputs(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildInputs:
    require_tool("apksigner")
    require_tool("mkfs.erofs")
    return avb_release_inputs(apksig_vectors, tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("cm-inputs"))


@pytest.fixture(scope="module")
def stale_care_map(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The input's care map: the test-keys system.img's blocks and test-keys fingerprint (protoc encodes it)."""
    work = tmp_path_factory.mktemp("stale")
    return _encode_text(
        work,
        f'partitions {{ name: "system" ranges: "2,0,7" id: "ro.system.build.fingerprint" '
        f'fingerprint: "{TEST_KEYS_FINGERPRINT}" }}',
    )


@pytest.fixture(scope="module")
def signed(inputs: BuildInputs, stale_care_map: bytes, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    work = tmp_path_factory.mktemp("care-map")
    avb_test_key: PrivateKeySigner = role_signer("avb-test-key")
    more = {"META/ab_partitions.txt": b"system\n", "META/care_map.pb": stale_care_map}
    source = _build_input(inputs, avb_test_key, work / "in", system_prop=BUILD_PROP, more=more)
    out = work / "signed.zip"
    return source, out, sign_target_files(source, out, release_keys(inputs))


def test_sign_target_files_regenerates_the_care_map_of_the_rebuilt_image(
    signed: Signed, stale_care_map: bytes, tmp_path: Path
) -> None:
    _, out, report = signed
    assert "CARE_MAP_REGENERATED" in {note.code for note in report.notes}
    with zipfile.ZipFile(out) as archive:
        care_map = archive.read("META/care_map.pb")
        (tmp_path / "system.img").write_bytes(archive.read("IMAGES/system.img"))
        props = dict(
            line.split("=", 1) for line in archive.read("SYSTEM/build.prop").decode().splitlines() if "=" in line
        )
    assert care_map != stale_care_map
    blocks = _dump_erofs_blocks(tmp_path / "system.img")  # the filesystem's own count, not the hash tree after it
    assert blocks * BLOCK < (tmp_path / "system.img").stat().st_size
    fingerprint = props["ro.system.build.fingerprint"]
    assert fingerprint.endswith(":user/release-keys") and fingerprint == TEST_KEYS_FINGERPRINT.replace(
        "test-keys", "release-keys"
    )
    assert _decode_raw(tmp_path, care_map) == [
        {1: "system", 2: f"2,0,{blocks}", 3: "ro.system.build.fingerprint", 4: fingerprint}
    ]


def test_without_rebuilding_the_care_map_stays_with_the_images_it_describes(
    signed: Signed, inputs: BuildInputs, stale_care_map: bytes, tmp_path: Path
) -> None:
    source, _, _ = signed
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, release_keys(inputs), rebuild_images=False)
    assert "CARE_MAP_REGENERATED" not in {note.code for note in report.notes}
    with zipfile.ZipFile(out) as archive:
        assert archive.read("META/care_map.pb") == stale_care_map


def test_release_ota_packages_the_care_map_where_the_property_files_point(
    signed: Signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = signed
    package = tmp_path / "ota.zip"
    capsys.readouterr()
    assert main(["release", "ota", str(out), str(package), "--compression", "none", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(entry["name"], entry["id"]) for entry in report["care_map"]] == [("system", "ro.system.build.fingerprint")]
    with zipfile.ZipFile(out) as target, zipfile.ZipFile(package) as ota:
        expected = target.read("META/care_map.pb")
        info = ota.getinfo("care_map.pb")
        assert info.compress_type == zipfile.ZIP_STORED and ota.read(info) == expected
        with open(package, "rb") as handle:  # the data offset from the local header, as update_engine reads it
            handle.seek(info.header_offset)
            local = handle.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_length + extra_length
            handle.seek(offset)
            assert handle.read(info.file_size) == expected
    capsys.readouterr()
    assert main(["ota", "info", str(package), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    for key in ("ota-property-files", "ota-streaming-property-files"):
        tokens = {token["name"]: token for token in shown["property_files"][key]}
        assert "care_map.pb" in tokens, key
        assert tokens["care_map.pb"]["offset"] == offset and tokens["care_map.pb"]["size"] == len(expected)
        assert all(token["matches"] for token in tokens.values())


def test_release_ota_refuses_a_care_map_update_verifier_would_reboot_on(
    signed: Signed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = signed
    forged = _replace_entry(out, tmp_path / "forged.zip", "META/care_map.pb", _encode_text(
        tmp_path, 'partitions { name: "system" ranges: "2,0,99999" id: "ro.system.build.fingerprint" fingerprint: "x" }'
    ))  # fmt: skip
    assert main(["release", "ota", str(forged), str(tmp_path / "ota.zip")]) == 1
    assert "read up to block 99999" in capsys.readouterr().err
    assert not (tmp_path / "ota.zip").exists()
    other = _replace_entry(out, tmp_path / "other.zip", "META/care_map.pb", _encode_text(
        tmp_path, 'partitions { name: "vendor" ranges: "2,0,1" id: "ro.vendor.build.fingerprint" fingerprint: "x" }'
    ))  # fmt: skip
    assert main(["release", "ota", str(other), str(tmp_path / "ota.zip")]) == 1
    assert "names vendor, which META/ab_partitions.txt does not" in capsys.readouterr().err
    broken = _replace_entry(out, tmp_path / "broken.zip", "META/care_map.pb", b"\xff\xff")
    with pytest.raises(ReleaseError, match="not a CareMap"):
        from sealgate.release.ota_from_target_files import build_ota_from_target_files

        build_ota_from_target_files(broken, tmp_path / "ota.zip", compression="none")


def test_the_offline_bundle_check_accepts_only_the_care_map_of_the_response_images(
    signed: Signed, inputs: BuildInputs, stale_care_map: bytes, tmp_path: Path
) -> None:
    source, out, _ = signed
    options = {"key_map": {WIFI_CERT: "networkstack"}}

    def check(package: Path) -> None:
        TargetFilesHandler().check(package, source, lambda role: inputs.signers[role].certificate, options)

    check(out)
    with zipfile.ZipFile(out) as archive:
        good = decode_care_map(archive.read("META/care_map.pb"))[0]
    edited = _encode_text(  # the right blocks with the test-keys fingerprint: update_verifier would skip them
        tmp_path,
        f'partitions {{ name: "system" ranges: "{good.ranges}" id: "{good.id}" '
        f'fingerprint: "{TEST_KEYS_FINGERPRINT}" }}',
    )
    shorter = _encode_text(
        tmp_path,
        f'partitions {{ name: "system" ranges: "2,0,1" id: "{good.id}" fingerprint: "{good.fingerprint}" }}',
    )
    for label, data in (("stale", stale_care_map), ("edited", edited), ("shorter", shorter), ("removed", None)):
        forged = _replace_entry(out, tmp_path / f"{label}.zip", "META/care_map.pb", data)
        with pytest.raises(ReleaseError, match=r"META/care_map\.pb is not the care map of the rebuilt images"):
            check(forged)
