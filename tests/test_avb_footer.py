"""Partition images with an AVB footer: the footer packed by hand from avb_footer.h, vbmeta found through it, and
re-signed in place (same offsets, partition data untouched) or into another file."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.avb.descriptors import HashDescriptor
from sealgate.avb.footer import read_footer, read_image, resign_footer_image
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import build_vbmeta, verify_vbmeta
from sealgate.errors import AvbFormatError
from test_avb import _signer

PARTITION_SIZE = 256 * 1024


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        "old": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "new": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "big": rsa.generate_private_key(public_exponent=65537, key_size=4096),
    }


def _boot_image(path: Path, key: rsa.RSAPrivateKey, *, partition_size: int = PARTITION_SIZE) -> bytes:
    """A boot.img laid out as avbtool add_hash_footer lays it out: data, vbmeta at the next 4 KiB, footer at the end."""
    data = os.urandom(100_000)
    salt = os.urandom(32)
    descriptor = HashDescriptor(len(data), "sha256", "boot", salt, hashlib.sha256(salt + data).digest())
    vbmeta = build_vbmeta([descriptor], _signer(key), rollback_index=1)
    vbmeta_offset = -(-len(data) // 4096) * 4096
    footer = struct.pack(">4sLLQQQ28x", b"AVBf", 1, 0, len(data), vbmeta_offset, len(vbmeta))
    image = bytearray(partition_size)
    image[: len(data)] = data
    image[vbmeta_offset : vbmeta_offset + len(vbmeta)] = vbmeta
    image[-64:] = footer
    path.write_bytes(image)
    return data


def test_vbmeta_is_found_through_the_footer(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    boot = tmp_path / "boot.img"
    data = _boot_image(boot, keys["old"])
    footer, vbmeta = read_image(boot)
    assert footer is not None and footer.original_image_size == len(data) and footer.vbmeta_offset == 102400
    (descriptor,) = vbmeta.descriptors
    assert isinstance(descriptor, HashDescriptor)
    assert descriptor.digest == hashlib.sha256(descriptor.salt + data).digest()
    assert verify_vbmeta(vbmeta, [keys["old"].public_key()]).verified


def test_resign_in_place_keeps_offsets_and_data(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    boot = tmp_path / "boot.img"
    data = _boot_image(boot, keys["old"])
    before = read_footer(boot)
    new_footer = resign_footer_image(boot, _signer(keys["new"]), rollback_index=7)
    assert boot.stat().st_size == PARTITION_SIZE
    assert boot.read_bytes()[: len(data)] == data
    assert (new_footer.vbmeta_offset, new_footer.original_image_size) == (before.vbmeta_offset, len(data))  # type: ignore[union-attr]
    footer, vbmeta = read_image(boot)
    assert footer == new_footer and vbmeta.rollback_index == 7
    assert vbmeta.public_key == public_key_metadata(keys["new"].public_key())
    assert verify_vbmeta(vbmeta, [keys["new"].public_key()]).verified
    # A bigger key's vbmeta is longer; it still fits here, and the footer records the new size.
    out = tmp_path / "boot-big.img"
    grown = resign_footer_image(boot, _signer(keys["big"]), output=out)
    assert grown.vbmeta_size > new_footer.vbmeta_size and grown.vbmeta_offset == new_footer.vbmeta_offset
    assert read_image(boot)[1].public_key == vbmeta.public_key  # the input was left alone
    assert verify_vbmeta(read_image(out)[1], [keys["big"].public_key()]).verified


def test_resign_refuses_a_vbmeta_that_does_not_fit(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    boot = tmp_path / "boot.img"
    vbmeta_end = 102400 + 1024  # a 2048-bit vbmeta with one hash descriptor is about 1 KiB
    _boot_image(boot, keys["old"], partition_size=vbmeta_end + 64)
    original = boot.read_bytes()
    with pytest.raises(AvbFormatError):
        resign_footer_image(boot, _signer(keys["big"]))
    assert boot.read_bytes() == original


def test_bad_footers_are_refused(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    boot = tmp_path / "boot.img"
    _boot_image(boot, keys["old"])
    image = bytearray(boot.read_bytes())
    for offset, fmt, value in ((-60, ">L", 2), (-56, ">L", 1), (-44, ">Q", PARTITION_SIZE), (-52, ">Q", 200_000)):
        tampered = bytearray(image)
        struct.pack_into(fmt, tampered, len(tampered) + offset, value)
        boot.write_bytes(tampered)
        with pytest.raises(AvbFormatError):
            read_image(boot)
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(4096))
    assert read_footer(plain) is None
    with pytest.raises(AvbFormatError):
        resign_footer_image(plain, _signer(keys["new"]))
