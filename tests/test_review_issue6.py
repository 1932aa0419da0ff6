"""Security review of issue 6 (OS releases): each finding as a test that failed before its fix, then bounded
structure-aware fuzz tests of the readers hostile input reaches first (channel, OTA metadata, payload.bin, vbmeta):
whatever the bytes, only a SealgateError subclass may escape, and never after a long time.

The attacker model is the brief's: the web server or mirror (channel files, packages), and hostile payloads that a
trusted key signed (what a compromised build could hand the custodian), which reach the applier's own checks."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from payload_tools import PayloadKey, make_key
from sealgate.errors import SealgateError
from sealgate.ota.channel import read_channel
from sealgate.ota.metadata import OtaMetadata, parse_property_files
from sealgate.ota.payload import schema
from sealgate.ota.payload.apply import apply_payload
from sealgate.ota.payload.header import MAGIC
from sealgate.ota.payload.signer import sign_payload

BLOCK = 4096


# --- finding 1: a channel file nested deeply enough makes json raise RecursionError -----------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deeply_nested_channel_is_a_format_error_not_a_recursion_error(opening: bytes) -> None:
    # A hostile mirror serves 200 KB of brackets: `device ota check` must refuse it, not print a traceback.
    with pytest.raises(SealgateError):
        read_channel(opening * 200_000)


# --- finding 2: integers longer than Python's int() limit in the metadata text ------------------------------------


def test_metadata_text_with_a_huge_timestamp_is_a_format_error() -> None:
    text = "ota-type=AB\npre-device=sargo\npost-timestamp=" + "9" * 5000 + "\n"
    with pytest.raises(SealgateError):
        OtaMetadata.from_text(text)


def test_property_files_with_a_huge_offset_are_a_format_error() -> None:
    with pytest.raises(SealgateError):
        parse_property_files("payload.bin:" + "1" * 5000 + ":10")


# --- finding 3: a signed manifest whose partition name or size no file can have --------------------------------


def _manifest_payload(name: str = "boot", size: int = BLOCK, data: bytes = bytes(BLOCK)) -> bytes:
    manifest = schema.DeltaArchiveManifest()
    manifest.block_size = BLOCK
    manifest.minor_version = 0
    partition = manifest.partitions.add()
    partition.partition_name = name
    partition.new_partition_info.size = size
    partition.new_partition_info.hash = hashlib.sha256(bytes(min(size, BLOCK))).digest()
    operation = partition.operations.add()
    operation.type = schema.OPERATION_TYPES["REPLACE"]
    operation.data_offset = 0
    operation.data_length = len(data)
    operation.data_sha256_hash = hashlib.sha256(data).digest()
    extent = operation.dst_extents.add()
    extent.start_block, extent.num_blocks = 0, 1
    encoded = manifest.SerializeToString()
    return MAGIC + struct.pack(">QQI", 2, len(encoded), 0) + encoded + data


@pytest.fixture(scope="module")
def payload_key(tmp_path_factory: pytest.TempPathFactory) -> PayloadKey:
    return make_key(tmp_path_factory.mktemp("review-key"))


def _signed(tmp_path: Path, key: PayloadKey, raw: bytes, label: str = "p") -> Path:
    unsigned, signed = tmp_path / f"{label}.unsigned", tmp_path / f"{label}.bin"
    unsigned.write_bytes(raw)
    try:
        sign_payload(unsigned, signed, key.signer)
    except SealgateError:
        signed.write_bytes(raw)  # the signer refused its structure: the reader and applier must refuse it too
    return signed


@pytest.mark.parametrize(
    ("name", "size"),
    [("a\x00b", BLOCK), ("boot", 2**64 - BLOCK), ("boot", 2**63), ("boot", 2**62 - BLOCK)],
    ids=["nul-in-name", "size-2^64", "size-2^63", "size-beyond-the-filesystem"],
)
def test_signed_payload_with_an_impossible_partition_is_refused(
    tmp_path: Path, payload_key: PayloadKey, name: str, size: int
) -> None:
    signed = _signed(tmp_path, payload_key, _manifest_payload(name, size))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(SealgateError):
        apply_payload(signed, target, public_keys=[payload_key.signer.public_key])
