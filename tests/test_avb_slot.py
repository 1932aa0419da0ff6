"""A directory of images as one verified-boot chain (vbmeta.img -> boot.img hash, vbmeta_system.img chained ->
system.img hashtree): verified as avb_slot_verify would, refused when any link breaks, and re-signed as a set."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.avb.descriptors import ChainPartitionDescriptor
from sealgate.avb.footer import read_image
from sealgate.avb.images import add_hash_footer, add_hashtree_footer
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.slot import resign_image_set, verify_image_set
from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta
from sealgate.errors import UsageError
from test_avb import _signer


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {name: rsa.generate_private_key(public_exponent=65537, key_size=2048) for name in ("top", "system", "new")}


def _image_set(directory: Path, keys: dict[str, rsa.RSAPrivateKey]) -> Path:
    directory.mkdir()
    (directory / "boot.img").write_bytes(os.urandom(200_000))
    add_hash_footer(directory / "boot.img", "boot", 512 * 1024, None)
    (directory / "system.img").write_bytes(os.urandom(700_000))
    add_hashtree_footer(directory / "system.img", "system", 1024 * 1024, None)
    (system_tree,) = read_image(directory / "system.img")[1].descriptors
    (boot_hash,) = read_image(directory / "boot.img")[1].descriptors
    (directory / "vbmeta_system.img").write_bytes(
        build_vbmeta([system_tree], _signer(keys["system"]), rollback_index=3, padding_size=4096)
    )
    chain = ChainPartitionDescriptor(1, "vbmeta_system", public_key_metadata(keys["system"].public_key()))
    (directory / "vbmeta.img").write_bytes(
        build_vbmeta([boot_hash, chain], _signer(keys["top"]), rollback_index=5, padding_size=4096)
    )
    return directory


def test_a_genuine_set_verifies_and_reports_rollback_indexes(
    tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    images = _image_set(tmp_path / "images", keys)
    report = verify_image_set(images, [keys["top"].public_key()])
    assert report.verified, report.errors
    assert report.rollback_indexes == {0: 5, 1: 3}
    assert sorted(report.checked) == ["boot", "system", "vbmeta", "vbmeta_system"]
    assert report.to_json()["rollback_indexes"] == {"0": 5, "1": 3}


@pytest.mark.parametrize(
    ("what", "expected"),
    [("boot data", "digest-mismatch"), ("system data", "root-digest-mismatch"),
     ("vbmeta_system key", "chain-key-mismatch"), ("missing system", "missing-partition"),
     ("wrong trusted key", "untrusted-key")],
)  # fmt: skip
def test_every_broken_link_is_refused(
    tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey], what: str, expected: str
) -> None:
    images = _image_set(tmp_path / "images", keys)
    trusted = keys["top"].public_key()
    if what == "boot data":
        data = bytearray((images / "boot.img").read_bytes())
        data[1000] ^= 1
        (images / "boot.img").write_bytes(data)
    elif what == "system data":
        data = bytearray((images / "system.img").read_bytes())
        data[500_000] ^= 1
        (images / "system.img").write_bytes(data)
    elif what == "vbmeta_system key":
        (system_tree,) = read_vbmeta((images / "vbmeta_system.img").read_bytes()).descriptors
        (images / "vbmeta_system.img").write_bytes(build_vbmeta([system_tree], _signer(keys["new"]), rollback_index=3))
    elif what == "missing system":
        (images / "system.img").unlink()
    else:
        trusted = keys["new"].public_key()
    report = verify_image_set(images, [trusted])
    assert not report.verified and expected in [issue.code for issue in report.errors], report.errors


def test_resign_the_set_with_the_distribution_keys(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    images = _image_set(tmp_path / "images", keys)
    untouched = tmp_path / "copy"
    shutil.copytree(images, untouched)
    new_top, new_system = _signer(keys["new"], "avb"), _signer(keys["system"], "avb_system")
    with pytest.raises(UsageError):
        resign_image_set(untouched, new_top)  # vbmeta_system would keep a key nobody named
    assert verify_image_set(untouched, [keys["top"].public_key()]).verified  # the refusal changed nothing
    report = resign_image_set(images, new_top, chained={"vbmeta_system": new_system}, rollback_index=6,
                              chained_rollback_indexes={"vbmeta_system": 4})  # fmt: skip
    assert report.verified and report.rollback_indexes == {0: 6, 1: 4}
    assert not verify_image_set(images, [keys["top"].public_key()]).verified
    assert (images / "system.img").read_bytes() == (untouched / "system.img").read_bytes()


def test_a_partition_chained_through_its_footer(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    boot = images / "boot.img"
    boot.write_bytes(os.urandom(100_000))
    add_hash_footer(boot, "boot", 256 * 1024, _signer(keys["system"]), rollback_index=2)
    chain = ChainPartitionDescriptor(2, "boot", public_key_metadata(keys["system"].public_key()))
    (images / "vbmeta.img").write_bytes(build_vbmeta([chain], _signer(keys["top"]), rollback_index=1))
    report = verify_image_set(images, [keys["top"].public_key()])
    assert report.verified and report.rollback_indexes == {0: 1, 2: 2} and "boot" in report.checked
    resigned = resign_image_set(images, _signer(keys["new"]), chained={"boot": _signer(keys["new"], "boot")})
    assert resigned.verified, resigned.errors
    assert read_image(boot)[0] is not None and boot.stat().st_size == 256 * 1024
