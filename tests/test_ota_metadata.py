"""OTA metadata: the text form against releasetools' own expectations, metadata.pb against protoc (an independent
decoder and encoder), round trips, and malformed metadata refused with a typed error.

The expected text dictionaries are those of build/make/tools/releasetools/test_ota_from_target_files.py
(test_GetPackageMetadata_abOta_full, _abOta_incremental, _wipe, _downgrade, _retrofitDynamicPartitions), whose
build properties are TEST_TARGET_INFO_DICT / TEST_SOURCE_INFO_DICT: device product-device, fingerprints
build-fingerprint-target / -source, incrementals build-version-incremental-target / -source, timestamps 1500000000
/ 1400000000, sdk 27, security patch 2017-12-01.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from sealgate.errors import OtaFormatError, UsageError
from sealgate.ota.metadata import (
    METADATA_NAME,
    METADATA_PROTO_NAME,
    OtaMetadata,
    PartitionState,
    parse_property_files,
    read_package_metadata,
)

TARGET = {"post_build": ["build-fingerprint-target"], "post_build_incremental": "build-version-incremental-target",
          "post_sdk_level": "27", "post_security_patch_level": "2017-12-01", "post_timestamp": 1500000000,
          "post_device": ["product-device"], "pre_device": ["product-device"]}  # fmt: skip
SOURCE = {"pre_build": ["build-fingerprint-source"], "pre_build_incremental": "build-version-incremental-source"}
COMMON_TEXT = {"ota-required-cache": "0", "post-build": "build-fingerprint-target",
               "post-build-incremental": "build-version-incremental-target", "post-sdk-level": "27",
               "post-security-patch-level": "2017-12-01", "post-timestamp": "1500000000",
               "pre-device": "product-device"}  # fmt: skip

#: ota_metadata.proto's messages as the AOSP file declares them, written out here independently of
#: sealgate.ota.metadata_proto's table, so protoc checks our bytes against the spec rather than against ourselves.
SPEC_PROTO = """syntax = "proto3";
package build.tools.releasetools;
message PartitionState { string partition_name = 1; repeated string device = 2; repeated string build = 3;
  string version = 4; }
message DeviceState { repeated string device = 1; repeated string build = 2; string build_incremental = 3;
  int64 timestamp = 4; string sdk_level = 5; string security_patch_level = 6;
  repeated PartitionState partition_state = 7; }
message OtaMetadata {
  enum OtaType { UNKNOWN = 0; AB = 1; BLOCK = 2; BRICK = 3; };
  OtaType type = 1; bool wipe = 2; bool downgrade = 3; map<string, string> property_files = 4;
  DeviceState precondition = 5; DeviceState postcondition = 6; bool retrofit_dynamic_partitions = 7;
  int64 required_cache = 8; bool spl_downgrade = 9; }
"""


@pytest.mark.parametrize(
    ("fields", "extra_text"),
    [
        pytest.param({"ota_type": "AB", **TARGET}, {"ota-type": "AB"}, id="abOta_full"),
        pytest.param(
            {"ota_type": "AB", **TARGET, **SOURCE},
            {
                "ota-type": "AB",
                "pre-build": "build-fingerprint-source",
                "pre-build-incremental": "build-version-incremental-source",
            },
            id="abOta_incremental",
        ),
        pytest.param(
            {"ota_type": "BLOCK", "wipe": True, **TARGET}, {"ota-type": "BLOCK", "ota-wipe": "yes"}, id="wipe"
        ),
        pytest.param(
            {
                "ota_type": "BLOCK",
                **TARGET,
                **SOURCE,
                "downgrade": True,
                "wipe": True,
                "spl_downgrade": True,
                "post_timestamp": 1400000000,
            },
            {
                "ota-type": "BLOCK",
                "ota-downgrade": "yes",
                "ota-wipe": "yes",
                "post-timestamp": "1400000000",
                "pre-build": "build-fingerprint-source",
                "pre-build-incremental": "build-version-incremental-source",
                "spl-downgrade": "yes",
            },
            id="downgrade",
        ),
        pytest.param(
            {"ota_type": "BLOCK", "retrofit_dynamic_partitions": True, **TARGET},
            {"ota-type": "BLOCK", "ota-retrofit-dynamic-partitions": "yes"},
            id="retrofit",
        ),
    ],
)
def test_text_form_is_releasetools_legacy_metadata(fields: dict[str, object], extra_text: dict[str, str]) -> None:
    metadata = OtaMetadata(**fields)  # type: ignore[arg-type]
    expected = {**COMMON_TEXT, **extra_text}
    assert metadata.legacy_dict() == expected
    # WriteMetadata: "%s=%s\n" for each item, sorted by key.
    assert metadata.to_text() == "".join(f"{key}={expected[key]}\n" for key in sorted(expected))
    read_back = OtaMetadata.from_text(metadata.to_text())
    assert read_back.legacy_dict() == expected


def test_text_form_full_ab_bytes() -> None:
    metadata = OtaMetadata(ota_type="AB", **TARGET, property_files={"ota-streaming-property-files": "payload.bin:1:2 "})  # type: ignore[arg-type]
    assert metadata.to_text() == (
        "ota-required-cache=0\n"
        "ota-streaming-property-files=payload.bin:1:2 \n"
        "ota-type=AB\n"
        "post-build=build-fingerprint-target\n"
        "post-build-incremental=build-version-incremental-target\n"
        "post-sdk-level=27\n"
        "post-security-patch-level=2017-12-01\n"
        "post-timestamp=1500000000\n"
        "pre-device=product-device\n"
    )
    # Several devices or fingerprints are joined with '|' (BuildLegacyOtaMetadata's separator).
    metadata.pre_device = ["a", "b"]
    assert "pre-device=a|b\n" in metadata.to_text()


def _full_metadata() -> OtaMetadata:
    return OtaMetadata(
        ota_type="AB", wipe=True, downgrade=True, spl_downgrade=True, required_cache=0,
        pre_device=["sargo"], pre_build=["google/sargo/sargo:12/SP1A/1:user/release-keys"],
        pre_build_incremental="1", pre_timestamp=1600000000,
        post_device=["sargo"], post_build=["google/sargo/sargo:12/SP1A/2:user/release-keys"],
        post_build_incremental="2", post_timestamp=1500000000, post_sdk_level="thirty-one",
        post_security_patch_level="2024-02-05",
        post_partition_states=[PartitionState("vendor", ["sargo"], ["vendor-fingerprint"], "1500000001")],
        property_files={"ota-streaming-property-files": "payload.bin:41:5174,metadata:5988:520   ",
                        "ota-property-files": "payload_metadata.bin:41:174,payload.bin:41:5174   "},
    )  # fmt: skip


def test_proto_round_trip_and_field_order() -> None:
    metadata = _full_metadata()
    data = metadata.to_proto()
    assert OtaMetadata.from_proto(data) == metadata
    # Top-level fields in field-number order (1 type, 2 wipe, 3 downgrade, 4 map entries, 5, 6, 9); the map's
    # keys sorted, which is also the order releasetools inserts them (ota-property-files first).
    assert data[0] == 0x08 and data[1] == 1
    assert data[2:4] == b"\x10\x01" and data[4:6] == b"\x18\x01" and data[6] == 0x22
    assert data.index(b"ota-property-files") < data.index(b"ota-streaming-property-files")
    assert data.endswith(b"\x48\x01")


def test_proto_decoded_by_protoc_field_by_field(tmp_path: Path) -> None:
    protoc = require_tool("protoc")
    (tmp_path / "spec.proto").write_text(SPEC_PROTO)
    data = _full_metadata().to_proto()
    decoded = subprocess.run(
        [protoc, f"-I{tmp_path}", "--decode=build.tools.releasetools.OtaMetadata", str(tmp_path / "spec.proto")],
        input=data, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    lines = [line.strip() for line in decoded.splitlines()]
    for expected in ("type: AB", "wipe: true", "downgrade: true", "spl_downgrade: true", "precondition {",
                     'device: "sargo"', 'build: "google/sargo/sargo:12/SP1A/1:user/release-keys"',
                     'build_incremental: "1"', "timestamp: 1600000000", "postcondition {", "timestamp: 1500000000",
                     'sdk_level: "thirty-one"', 'security_patch_level: "2024-02-05"', "partition_state {",
                     'partition_name: "vendor"', 'version: "1500000001"', 'key: "ota-property-files"',
                     'value: "payload_metadata.bin:41:174,payload.bin:41:5174   "'):  # fmt: skip
        assert expected in lines, (expected, decoded)
    # The raw decoder (no schema at all) sees the field numbers of the spec.
    raw = subprocess.run([protoc, "--decode_raw"], input=data, capture_output=True, check=True).stdout.decode()
    top_level = [line.split(":")[0].split(" ")[0] for line in raw.splitlines() if line[:1].isdigit()]
    assert top_level == ["1", "2", "3", "4", "4", "5", "6", "9"]


def test_proto_bytes_equal_protoc_encoding_of_the_same_message(tmp_path: Path) -> None:
    protoc = require_tool("protoc")
    (tmp_path / "spec.proto").write_text(SPEC_PROTO)
    metadata = OtaMetadata(
        ota_type="AB",
        **TARGET,
        property_files={  # type: ignore[arg-type]
            "ota-streaming-property-files": "payload.bin:41:5174 ",
            "ota-property-files": "payload.bin:41:5174 ",
        },
    )
    text_format = """type: AB
property_files { key: "ota-streaming-property-files" value: "payload.bin:41:5174 " }
property_files { key: "ota-property-files" value: "payload.bin:41:5174 " }
precondition { device: "product-device" }
postcondition { device: "product-device" build: "build-fingerprint-target"
  build_incremental: "build-version-incremental-target" timestamp: 1500000000 sdk_level: "27"
  security_patch_level: "2017-12-01" }
"""
    encoded = subprocess.run(
        [protoc, f"-I{tmp_path}", "--deterministic_output", "--encode=build.tools.releasetools.OtaMetadata",
         str(tmp_path / "spec.proto")], input=text_format.encode(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert metadata.to_proto() == encoded


def test_unknown_field_numbers_are_tolerated_but_known_ones_must_have_their_type() -> None:
    data = OtaMetadata(ota_type="AB", **TARGET).to_proto()  # type: ignore[arg-type]
    assert OtaMetadata.from_proto(data + b"\x50\x01").post_timestamp == 1500000000  # field 10: a newer releasetools
    with pytest.raises(OtaFormatError, match="wrong wire type"):
        OtaMetadata.from_proto(data + b"\x0a\x01x")  # field 1 (type) as a string
    with pytest.raises(OtaFormatError, match="wrong wire type"):
        OtaMetadata.from_proto(b"\x32\x03\x22\x01x")  # postcondition.timestamp as a string


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x32\x05\x12\x02", "not an OtaMetadata"),  # truncated
        (b"\xff\xff\xff", "not an OtaMetadata"),
        (b"\x08\x07", "unknown OTA type"),
        (b"\x32\x03\x32\x01x", "not a YYYY-MM-DD"),
        (b"\x32\x0b\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "out of range"),  # negative timestamp
        (b"\x22\x0a\x0a\x01k\x12\x05bad!!", "not a name:offset:size"),
    ],
)
def test_malformed_proto_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(OtaFormatError, match=message):
        OtaMetadata.from_proto(data)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ota-type=AB\npost-timestamp=soon\n", "post-timestamp must be a non-negative integer"),
        ("ota-type=AB\npost-timestamp=-1\n", "post-timestamp must be a non-negative integer"),
        ("ota-type=AB\nota-wipe=no\n", "ota-wipe must be 'yes'"),
        ("ota-type=XY\n", "unknown ota-type"),
        ("ota-type=AB\njust some words\n", "not key=value"),
        ("ota-type=AB\nota-type=BLOCK\n", "twice"),
        ("ota-type=AB\npost-security-patch-level=May 2024\n", "not a YYYY-MM-DD"),
        ("ota-type=AB\nota-streaming-property-files=payload.bin:x:1\n", "not a name:offset:size"),
    ],
)
def test_malformed_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(OtaFormatError, match=message):
        OtaMetadata.from_text(text)


@pytest.mark.parametrize(
    "change",
    [
        {"post_build": ["two\nlines"]},
        {"pre_device": ["a|b"]},
        {"post_security_patch_level": "2024-1-5"},
        {"post_timestamp": -1},
        {"ota_type": "DELTA"},
        {"post_build_incremental": " padded"},
        {"property_files": {"ota-type": "payload.bin:1:1"}},
    ],
)
def test_values_the_forms_cannot_carry_are_refused_on_writing(change: dict[str, object]) -> None:
    metadata = OtaMetadata(**{"ota_type": "AB", **TARGET, **change})  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        metadata.to_proto()


def _package(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_read_package_metadata_prefers_pb_and_requires_agreement(tmp_path: Path) -> None:
    metadata = _full_metadata()
    both = _package(tmp_path / "both.zip", {METADATA_PROTO_NAME: metadata.to_proto(),
                                            METADATA_NAME: metadata.to_text().encode()})  # fmt: skip
    assert read_package_metadata(both) == metadata
    text_only = _package(tmp_path / "text.zip", {METADATA_NAME: metadata.to_text().encode()})
    from_text = read_package_metadata(text_only)
    assert from_text.post_build == metadata.post_build and from_text.post_device == []  # the text has no post-device
    assert from_text.legacy_dict() == {key: value.strip() for key, value in metadata.legacy_dict().items()}
    pb_only = _package(tmp_path / "pb.zip", {METADATA_PROTO_NAME: metadata.to_proto()})
    assert read_package_metadata(pb_only) == metadata
    other = OtaMetadata(**{**metadata.__dict__, "post_timestamp": 1700000000})
    disagreeing = _package(tmp_path / "disagree.zip", {METADATA_PROTO_NAME: metadata.to_proto(),
                                                       METADATA_NAME: other.to_text().encode()})  # fmt: skip
    with pytest.raises(OtaFormatError, match=r"disagree.*post-timestamp"):
        read_package_metadata(disagreeing)
    text_with_more = metadata.to_text().encode() + b"post-device=x\n"
    extra_key = _package(
        tmp_path / "extra.zip", {METADATA_PROTO_NAME: metadata.to_proto(), METADATA_NAME: text_with_more}
    )
    with pytest.raises(OtaFormatError, match="disagree"):
        read_package_metadata(extra_key)
    with pytest.raises(OtaFormatError, match="neither"):
        read_package_metadata(_package(tmp_path / "none.zip", {"payload.bin": b"CrAU"}))
    with pytest.raises(OtaFormatError, match="not a ZIP"):
        read_package_metadata(tmp_path / "missing.zip")
    duplicated = tmp_path / "duplicated.zip"
    with zipfile.ZipFile(duplicated, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr(METADATA_NAME, metadata.to_text())
        archive.writestr(METADATA_NAME, other.to_text())
    with pytest.raises(OtaFormatError, match=r"twice|duplicate"):
        read_package_metadata(duplicated)
    not_utf8 = _package(tmp_path / "latin.zip", {METADATA_NAME: b"post-build=caf\xe9\n"})
    with pytest.raises(OtaFormatError, match="UTF-8"):
        read_package_metadata(not_utf8)


@pytest.mark.parametrize(
    "entries",
    [
        {METADATA_PROTO_NAME: b"\x32\x05\x12\x02"},
        {METADATA_NAME: b"post-timestamp=tomorrow\n"},
        {
            METADATA_PROTO_NAME: OtaMetadata(ota_type="AB", **TARGET).to_proto(),  # type: ignore[arg-type]
            METADATA_NAME: b"ota-type=BLOCK\n",
        },
    ],
    ids=["bad-proto", "bad-text", "disagreeing"],
)
def test_cli_info_on_malformed_metadata_exits_1_without_traceback(tmp_path: Path, entries: dict[str, bytes]) -> None:
    import sys

    package = _package(tmp_path / "bad.zip", entries)
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    for extra in ([], ["--json"]):
        result = subprocess.run([*sealgate, "ota", "info", str(package), *extra], capture_output=True, text=True)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr and "sealgate:" in result.stderr


def test_parse_property_files_ignores_padding() -> None:
    tokens = parse_property_files("payload.bin:679:343,metadata:69:379      ")
    assert [(token.name, token.offset, token.size) for token in tokens] == [("payload.bin", 679, 343),
                                                                            ("metadata", 69, 379)]  # fmt: skip
    assert str(tokens[0]) == "payload.bin:679:343"
