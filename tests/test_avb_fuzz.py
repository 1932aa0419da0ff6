"""Malformed AVB input never escapes as anything but AvbFormatError (or a refusing verdict): random mutations and
truncations of vbmeta images, descriptors and footer images, with a fixed seed so failures reproduce."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.avb.descriptors import parse_descriptors
from sealgate.avb.footer import read_image
from sealgate.avb.vbmeta import build_vbmeta, verify_vbmeta
from sealgate.errors import AvbFormatError
from test_avb import _descriptors, _signer
from test_avb_footer import _boot_image


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        elif kind == 1:  # a field set to an extreme value
            offset = rng.randrange(0, len(mutated) - 8) & ~3
            struct.pack_into(">Q", mutated, offset, rng.choice([0, 1, 2**63, 2**64 - 1, len(data), 0xFFFFFFFF]))
        elif kind == 2:
            del mutated[rng.randrange(len(mutated)) :]
        else:
            mutated += bytes(rng.randrange(1, 200))
        out.append(bytes(mutated))
    return out


def test_mutated_vbmeta_images_are_refused_cleanly(key: rsa.RSAPrivateKey) -> None:
    signer = _signer(key)
    image = build_vbmeta(_descriptors(), signer, rollback_index=1)
    rng = random.Random(6)
    for mutated in _mutations(image, rng, 3000):
        try:
            verdict = verify_vbmeta(mutated, [signer.public_key])
        except AvbFormatError:
            continue
        if mutated[: len(image)] != image:
            assert not verdict.verified


def test_mutated_descriptor_areas_are_refused_cleanly() -> None:
    encoded = b"".join(d.encode() for d in _descriptors())
    rng = random.Random(7)
    for mutated in _mutations(encoded, rng, 3000):
        with contextlib.suppress(AvbFormatError):
            parse_descriptors(mutated)


def test_mutated_footers_are_refused_cleanly(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    boot = tmp_path / "boot.img"
    _boot_image(boot, key)
    image = boot.read_bytes()
    tail = image[-64:]
    rng = random.Random(8)
    for mutated_tail in _mutations(tail, rng, 300):
        boot.write_bytes(image[:-64] + mutated_tail)
        with contextlib.suppress(AvbFormatError):
            read_image(boot)
    boot.write_bytes(b"\x3a\xff\x26\xed" + bytes(100))
    with pytest.raises(AvbFormatError, match="sparse"):
        read_image(boot)
