"""A/B payloads against tools we did not write: OpenSSL checks our signatures over the bytes AOSP says are signed
(found with struct and a hand-written protobuf walk, not our reader), OpenSSL signs for the custodian's two-step
flow, and the xz and zstd command-line tools decompress our operation blobs back to the image chunks."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from conftest import require_tool
from payload_tools import BLOCK, fields, layout, make_images, make_key, manifest_signatures_range, raw_signatures
from sealgate.errors import PayloadError
from sealgate.ota.payload.apply import apply_payload
from sealgate.ota.payload.signer import insert_signatures, payload_hashes, sign_payload, signature_size
from sealgate.ota.payload.verify import verify_payload
from sealgate.ota.payload.writer import write_full_payload


def _openssl_verifies(openssl: str, pub: Path, signature: bytes, message: bytes, tmp_path: Path) -> bool:
    (tmp_path / "message").write_bytes(message)
    (tmp_path / "signature").write_bytes(signature)
    dgst = subprocess.run([openssl, "dgst", "-sha256", "-verify", str(pub), "-signature", str(tmp_path / "signature"),
                           str(tmp_path / "message")], capture_output=True, text=True)  # fmt: skip
    (tmp_path / "digest").write_bytes(hashlib.sha256(message).digest())
    pkeyutl = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-pkeyopt",
                              "digest:sha256", "-in", str(tmp_path / "digest"), "-sigfile",
                              str(tmp_path / "signature")], capture_output=True, text=True)  # fmt: skip
    assert (dgst.returncode == 0) == (pkeyutl.returncode == 0), (dgst.stdout, pkeyutl.stdout)
    return dgst.returncode == 0


@pytest.mark.parametrize("kind", ["rsa", "rsa4096", "ec"])
def test_openssl_verifies_both_signatures_over_the_bytes_aosp_signs(tmp_path: Path, kind: str) -> None:
    openssl = require_tool("openssl")
    key = make_key(tmp_path, kind)
    write_full_payload(make_images(tmp_path / "images"), tmp_path / "unsigned.bin", chunk_size=16 * BLOCK)
    sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", key.signer)
    data = (tmp_path / "payload.bin").read_bytes()
    parts = layout(data)
    metadata = data[: parts.metadata_end]
    signatures_offset, signatures_size = manifest_signatures_range(data[24 : parts.metadata_end])
    signature_start = parts.data_start + signatures_offset
    assert signature_start + signatures_size == len(data)
    # The metadata signature: over header + manifest.
    metadata_signatures = raw_signatures(data[parts.metadata_end : parts.data_start])
    assert len(metadata_signatures) == 1
    assert _openssl_verifies(openssl, key.pub_pem, metadata_signatures[0], metadata, tmp_path)
    # The payload signature: over header + manifest + data, skipping the metadata signature.
    payload_signatures = raw_signatures(data[signature_start:])
    signed = metadata + data[parts.data_start : signature_start]
    assert _openssl_verifies(openssl, key.pub_pem, payload_signatures[0], signed, tmp_path)
    # ... and not over the whole prefix (which would include the metadata signature).
    assert not _openssl_verifies(openssl, key.pub_pem, payload_signatures[0], data[:signature_start], tmp_path)
    # Every Signature carries unpadded_signature_size (fixed32, field 3) and data padded to the key's maximum size.
    for number, signature in fields(data[signature_start:]):
        parts_of = dict(fields(signature))  # type: ignore[arg-type]
        assert number == 1 and 1 not in parts_of and len(parts_of[2]) == signature_size(key.signer.public_key)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_the_custodians_two_steps_with_signatures_made_by_openssl(tmp_path: Path, kind: str) -> None:
    openssl = require_tool("openssl")
    key = make_key(tmp_path, kind)
    images = make_images(tmp_path / "images")
    write_full_payload(images, tmp_path / "unsigned.bin", compression="zstd", chunk_size=16 * BLOCK)
    size = signature_size(key.signer.public_key)
    hashes = payload_hashes(tmp_path / "unsigned.bin", [size])

    def openssl_sign(digest: bytes) -> bytes:
        (tmp_path / "digest").write_bytes(digest)
        run = subprocess.run([openssl, "pkeyutl", "-sign", "-inkey", str(key.key_pem), "-pkeyopt", "digest:sha256",
                              "-in", str(tmp_path / "digest")], capture_output=True, check=True)  # fmt: skip
        return run.stdout

    properties = insert_signatures(
        tmp_path / "unsigned.bin",
        tmp_path / "payload.bin",
        metadata_signatures=[openssl_sign(hashes.metadata_hash)],
        payload_signatures=[openssl_sign(hashes.payload_hash)],
        signature_sizes=[size],
        public_keys=[key.signer.public_key],
    )
    assert verify_payload(tmp_path / "payload.bin", [key.signer.certificate], properties=properties).verified
    target = tmp_path / "target"
    target.mkdir()
    apply_payload(tmp_path / "payload.bin", target, public_keys=[key.signer.public_key], properties=properties)
    for name, path in images.items():
        assert (target / f"{name}.img").read_bytes() == path.read_bytes()
    # Signatures over other hashes do not get in.
    wrong = openssl_sign(hashes.payload_hash)
    with pytest.raises(PayloadError, match="no trusted key verifies the metadata signature"):
        insert_signatures(
            tmp_path / "unsigned.bin",
            tmp_path / "other.bin",
            metadata_signatures=[wrong],
            payload_signatures=[wrong],
            signature_sizes=[size],
            public_keys=[key.signer.public_key],
        )
    assert not (tmp_path / "other.bin").exists()


@pytest.mark.parametrize(("compression", "tool", "type_number"), [("xz", "xz", 8), ("zstd", "zstd", 14)])
def test_command_line_decompressors_read_our_blobs(
    tmp_path: Path, compression: str, tool: str, type_number: int
) -> None:
    program = require_tool(tool)
    images = make_images(tmp_path / "images")
    write_full_payload(images, tmp_path / "payload.bin", compression=compression, chunk_size=16 * BLOCK)
    data = (tmp_path / "payload.bin").read_bytes()
    parts = layout(data)
    checked = 0
    # DeltaArchiveManifest.partitions = 13; PartitionUpdate: partition_name = 1, operations = 8;
    # InstallOperation: type 1, data_offset 2, data_length 3, dst_extents 6 (Extent: start_block 1, num_blocks 2).
    for number, partition in fields(data[24 : parts.metadata_end]):
        if number != 13:
            continue
        assert isinstance(partition, bytes)
        name = next(value for key, value in fields(partition) if key == 1)
        image = images[name.decode()].read_bytes()  # type: ignore[union-attr]
        for key, operation in fields(partition):
            if key != 8:
                continue
            values = dict(fields(operation))  # type: ignore[arg-type]
            if values[1] != type_number:
                continue
            blob = data[parts.data_start + values[2] : parts.data_start + values[2] + values[3]]  # type: ignore[operator]
            extent = dict(fields(values[6]))  # type: ignore[arg-type]
            start, count = extent.get(1, 0), extent[2]
            (tmp_path / "blob").write_bytes(blob)
            out = subprocess.run([program, "-dc", str(tmp_path / "blob")], capture_output=True, check=True).stdout
            assert out == image[start * BLOCK : (start + count) * BLOCK]  # type: ignore[operator]
            if tool == "xz":
                listing = subprocess.run([program, "--robot", "-lv", str(tmp_path / "blob")], capture_output=True,
                                         text=True, check=True).stdout  # fmt: skip
                assert "\tCRC32\t" in listing  # xz-embedded on the device knows CRC32 and no check only
            checked += 1
    assert checked >= 3
