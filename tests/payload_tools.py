"""Helpers for the A/B payload tests (not a test module): throwaway keys, partition images, and an independent
reading of the payload layout straight from update_metadata.proto's description (struct and a hand-written
protobuf walk, not our reader), so the tests do not check our code with itself."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealgate.signing import PrivateKeySigner
from signing_tools import certified_signer

BLOCK = 4096


@dataclass(frozen=True)
class PayloadKey:
    signer: PrivateKeySigner
    cert_pem: Path
    key_pem: Path
    pub_pem: Path


def make_key(tmp_path: Path, kind: str = "rsa", name: str = "ota") -> PayloadKey:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=4096 if kind == "rsa4096" else 2048)
        if kind.startswith("rsa")
        else ec.generate_private_key(ec.SECP256R1())
    )
    signer, certificate = certified_signer(name, key, f"payload test {name} {kind}")
    cert_pem, key_pem, pub_pem = (tmp_path / f"{name}-{kind}.{suffix}" for suffix in ("x509.pem", "key.pem", "pub.pem"))
    cert_pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    pub_pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    return PayloadKey(signer, cert_pem, key_pem, pub_pem)


def make_images(directory: Path, seed: int = 1) -> dict[str, Path]:
    """Three partitions with random, compressible and all-zero regions, sizes in whole blocks."""
    import random

    directory.mkdir(parents=True, exist_ok=True)
    generator = random.Random(seed)
    text = b"".join(b"ro.build.fingerprint=sealgate/%d\n" % n for n in range(8000))
    images = {
        "boot": generator.randbytes(20 * BLOCK) + bytes(12 * BLOCK) + text[: 16 * BLOCK],
        "system": text[: 40 * BLOCK] + bytes(64 * BLOCK) + generator.randbytes(30 * BLOCK) + bytes(BLOCK),
        "vbmeta": generator.randbytes(BLOCK),
    }
    paths = {}
    for name, data in images.items():
        path = directory / f"{name}.img"
        path.write_bytes(data)
        paths[name] = path
    return paths


@dataclass(frozen=True)
class Layout:
    """A payload's regions as update_metadata.proto describes them, read with struct alone."""

    manifest_size: int
    metadata_signature_size: int

    @property
    def metadata_end(self) -> int:
        return 24 + self.manifest_size

    @property
    def data_start(self) -> int:
        return self.metadata_end + self.metadata_signature_size


def layout(data: bytes) -> Layout:
    magic, version, manifest_size, signature_size = struct.unpack_from(">4sQQI", data)
    assert magic == b"CrAU" and version == 2
    return Layout(manifest_size, signature_size)


def varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message, by the wire format alone."""
    out: list[tuple[int, int | bytes]] = []
    position = 0
    while position < len(data):
        tag, position = varint(data, position)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = varint(data, position)
            out.append((number, value))
        elif wire == 2:
            length, position = varint(data, position)
            out.append((number, data[position : position + length]))
            position += length
        elif wire == 5:
            out.append((number, struct.unpack_from("<I", data, position)[0]))
            position += 4
        elif wire == 1:
            out.append((number, struct.unpack_from("<Q", data, position)[0]))
            position += 8
        else:
            raise AssertionError(f"wire type {wire}")
    return out


def raw_signatures(blob: bytes) -> list[bytes]:
    """Signatures { repeated Signature signatures = 1 { bytes data = 2; fixed32 unpadded_signature_size = 3 } }:
    each signature's data truncated to its unpadded size."""
    result = []
    for number, signature in fields(blob):
        assert number == 1 and isinstance(signature, bytes)
        parts = dict(fields(signature))
        data, unpadded = parts[2], parts[3]
        assert isinstance(data, bytes) and isinstance(unpadded, int)
        result.append(data[:unpadded])
    return result


def manifest_signatures_range(manifest: bytes) -> tuple[int, int]:
    """signatures_offset (4) and signatures_size (5) of a DeltaArchiveManifest."""
    values = dict(fields(manifest))
    offset, size = values[4], values[5]
    assert isinstance(offset, int) and isinstance(size, int)
    return offset, size


def sealgate_cli() -> list[str]:
    import sys

    return [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]


def env_with_passphrase() -> dict[str, str]:
    return {**os.environ, "SEALGATE_PASSPHRASE": "payload test passphrase"}
