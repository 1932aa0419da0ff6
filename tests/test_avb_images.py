"""Adding AVB footers: the dm-verity hash tree and root digest checked against cryptsetup's `veritysetup format`
(format 1, no superblock), the hash descriptor's digest against hashlib, the layout against avbtool's rules, and the
result read back and verified through the footer."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import require_tool
from sealgate.avb.descriptors import HashDescriptor, HashtreeDescriptor, PropertyDescriptor
from sealgate.avb.footer import read_image, resign_footer_image
from sealgate.avb.images import add_hash_footer, add_hashtree_footer
from sealgate.avb.vbmeta import verify_vbmeta
from sealgate.errors import UsageError
from test_avb import _signer


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _veritysetup(data: Path, block_size: int, hash_algorithm: str, salt: bytes, tmp_path: Path) -> tuple[bytes, bytes]:
    """(root digest, hash tree) as cryptsetup computes them."""
    tool = require_tool("veritysetup")
    hash_file = tmp_path / "veritysetup.hash"
    hash_file.unlink(missing_ok=True)
    result = subprocess.run(
        [tool, "format", str(data), str(hash_file), "--no-superblock", "--format=1", f"--hash={hash_algorithm}",
         f"--salt={salt.hex()}", f"--data-block-size={block_size}", f"--hash-block-size={block_size}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    root = next(line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if line.startswith("Root hash"))
    return bytes.fromhex(root), hash_file.read_bytes()


@pytest.mark.parametrize(
    ("size", "block_size", "hash_algorithm"),
    [(1024 * 1024 + 1000, 4096, "sha256"), (600 * 1024, 4096, "sha1"), (2 * 1024 * 1024, 1024, "sha256")],
    ids=["sha256-2-levels-unaligned", "sha1-padded-digests", "sha256-3-levels"],
)
def test_hash_tree_matches_veritysetup(
    tmp_path: Path, key: rsa.RSAPrivateKey, size: int, block_size: int, hash_algorithm: str
) -> None:
    data = os.urandom(size)
    image = tmp_path / "system.img"
    image.write_bytes(data)
    salt = os.urandom(32)
    partition_size = 4 * 1024 * 1024
    footer = add_hashtree_footer(image, "system", partition_size, _signer(key), hash_algorithm=hash_algorithm,
                                 salt=salt, block_size=block_size, rollback_index=4)  # fmt: skip
    assert image.stat().st_size == partition_size and footer.original_image_size == size
    _, vbmeta = read_image(image)
    (descriptor,) = vbmeta.descriptors
    assert isinstance(descriptor, HashtreeDescriptor)
    padded = -(-size // block_size) * block_size
    assert (descriptor.image_size, descriptor.tree_offset, descriptor.data_block_size) == (padded, padded, block_size)
    plain = tmp_path / "data.img"
    plain.write_bytes(data + bytes(padded - size))  # veritysetup hashes whole blocks; AVB pads with zeros
    root, tree = _veritysetup(plain, block_size, hash_algorithm, salt, tmp_path)
    assert descriptor.root_digest == root
    written = image.read_bytes()
    assert written[:size] == data and not any(written[size:padded])
    assert written[descriptor.tree_offset : descriptor.tree_offset + descriptor.tree_size] == tree
    assert footer.vbmeta_offset == descriptor.tree_offset + descriptor.tree_size
    assert verify_vbmeta(vbmeta, [key.public_key()]).verified and vbmeta.rollback_index == 4


def test_hash_footer_layout_and_digest(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    data = os.urandom(150_000)
    image = tmp_path / "boot.img"
    image.write_bytes(data)
    salt = os.urandom(32)
    footer = add_hash_footer(image, "boot", 512 * 1024, _signer(key), salt=salt,
                             properties={"com.android.build.boot.os_version": b"14"})  # fmt: skip
    written = image.read_bytes()
    assert len(written) == 512 * 1024 and written[: len(data)] == data
    assert footer.vbmeta_offset == 151552  # the image rounded up to 4 KiB, as avbtool places vbmeta
    found, vbmeta = read_image(image)
    assert found == footer
    prop, descriptor = vbmeta.descriptors
    assert prop == PropertyDescriptor("com.android.build.boot.os_version", b"14")
    assert isinstance(descriptor, HashDescriptor) and descriptor.image_size == len(data)
    assert descriptor.digest == hashlib.sha256(salt + data).digest()
    assert verify_vbmeta(vbmeta, [key.public_key()]).verified
    # The footer image re-signs in place like any avbtool-made one.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    resign_footer_image(image, _signer(other))
    assert verify_vbmeta(read_image(image)[1], [other.public_key()]).verified
    assert image.read_bytes()[: len(data)] == data


def test_footers_refuse_what_does_not_fit(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    image = tmp_path / "boot.img"
    image.write_bytes(os.urandom(100_000))
    with pytest.raises(UsageError):
        add_hash_footer(image, "boot", 102400, _signer(key))  # no room for vbmeta and the footer block
    assert image.stat().st_size == 100_000
    with pytest.raises(UsageError):
        add_hashtree_footer(image, "system", 106496, _signer(key))
    assert image.stat().st_size == 100_000
    add_hash_footer(image, "boot", 256 * 1024, None)
    with pytest.raises(UsageError):
        add_hash_footer(image, "boot", 256 * 1024, _signer(key))  # already has a footer
    assert verify_vbmeta(read_image(image)[1]).status == "OK_NOT_SIGNED"
