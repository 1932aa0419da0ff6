"""`sealgate release avb-info` and `release avb-sign`: exit statuses, JSON shapes, the files they write."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.avb.descriptors import ChainPartitionDescriptor, HashDescriptor
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta, verify_vbmeta
from sealgate.cli.main import main
from test_avb import _signer
from test_avb_footer import _boot_image

PASSPHRASE = "avb cli test passphrase"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    signer = _signer(key)
    path = tmp_path / "avb.x509.pem"
    path.write_bytes(x509.load_der_x509_certificate(signer.certificate.der).public_bytes(serialization.Encoding.PEM))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_avb_info_writes_pkmd_and_prints_its_digest(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "avb_pkmd.bin"
    status, stdout, _ = _run(capsys, "release", "avb-info", "--certificate", str(_pem(tmp_path, key)),
                             "--out", str(out), "--json")  # fmt: skip
    assert status == 0
    document = json.loads(stdout)
    assert out.read_bytes() == public_key_metadata(key.public_key())
    assert document["public_key_digest"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (document["key_bits"], document["algorithm"], document["out"]) == (2048, "SHA256_RSA2048", str(out))
    status, stdout, _ = _run(capsys, "release", "avb-info", "--pkmd", str(out))
    assert status == 0 and document["public_key_digest"] in stdout


def test_avb_info_inspects_and_verifies_images(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "vbmeta.img"
    descriptors = [HashDescriptor(4096, "sha256", "boot", b"s", b"d" * 32),
                   ChainPartitionDescriptor(1, "vbmeta_system", public_key_metadata(key.public_key()))]  # fmt: skip
    image.write_bytes(build_vbmeta(descriptors, _signer(key), rollback_index=12, padding_size=4096))
    status, stdout, _ = _run(capsys, "release", "avb-info", "--image", str(image), "--json")
    document = json.loads(stdout)
    assert status == 0 and document["verified"] and document["key_trusted"] is None and document["footer"] is None
    assert document["vbmeta"]["rollback_index"] == 12
    assert [d["type"] for d in document["vbmeta"]["descriptors"]] == ["hash", "chain_partition"]
    status, stdout, _ = _run(
        capsys, "release", "avb-info", "--image", str(image), "--certificate", str(_pem(tmp_path, key))
    )
    assert status == 0 and "signed by the given key: yes" in stdout
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = tmp_path / "other" / "k.pem"
    other_pem.parent.mkdir()
    other_pem.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    status, stdout, _ = _run(capsys, "release", "avb-info", "--image", str(image), "--certificate", str(other_pem),
                             "--json")  # fmt: skip
    assert status == 1 and json.loads(stdout)["errors"][0]["code"] == "untrusted-key"
    broken = tmp_path / "broken.img"
    broken.write_bytes(b"AVB0" + bytes(100))
    status, stdout, stderr = _run(capsys, "release", "avb-info", "--image", str(broken), "--json")
    assert status == 1 and json.loads(stdout)["errors"][0]["code"] == "malformed" and "Traceback" not in stderr
    boot = tmp_path / "boot.img"
    _boot_image(boot, key)
    status, stdout, _ = _run(capsys, "release", "avb-info", "--image", str(boot), "--json")
    assert status == 0 and json.loads(stdout)["footer"]["vbmeta_offset"] == 102400


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "release", "avb-info")[0] == 2
    bogus = tmp_path / "bogus.pem"
    bogus.write_bytes(b"not a key")
    assert _run(capsys, "release", "avb-info", "--certificate", str(bogus))[0] == 2
    assert _run(capsys, "release", "avb-info", "--certificate", str(bogus), "--pkmd", str(bogus))[0] == 2


def test_keystore_key_info_and_signing(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    keystore = tmp_path / "ks"
    status, _, stderr = _run(capsys, "keys", "init", str(keystore), "--roles", "avb", "--key-type", "rsa-2048")
    assert status == 0, stderr
    monkeypatch.delenv("SEALGATE_PASSPHRASE")  # reading the public key needs no passphrase
    pkmd = tmp_path / "avb_pkmd.bin"
    status, stdout, _ = _run(capsys, "release", "avb-info", "--keystore", str(keystore), "--out", str(pkmd), "--json")
    assert status == 0
    digest = json.loads(stdout)["public_key_digest"]
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    image = tmp_path / "vbmeta.img"
    chained = tmp_path / "system_key.pem"
    chained.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    image.write_bytes(build_vbmeta([ChainPartitionDescriptor(1, "vbmeta_system", b"old")], _signer(key)))
    signed = tmp_path / "signed.img"
    status, stdout, stderr = _run(capsys, "release", "avb-sign", str(image), str(signed), "--keystore", str(keystore),
                                  "--rollback-index", "1700000000", "--chain-key", f"vbmeta_system={chained}",
                                  "--json")  # fmt: skip
    assert status == 0, stderr
    document = json.loads(stdout)
    assert document["verified"] and document["public_key_digest"] == digest
    vbmeta = read_vbmeta(signed.read_bytes())
    assert len(signed.read_bytes()) % 4096 == 0 and vbmeta.rollback_index == 1700000000
    assert vbmeta.chain_partitions()["vbmeta_system"].public_key == public_key_metadata(key.public_key())
    assert verify_vbmeta(vbmeta, [pkmd.read_bytes()]).verified
    boot = tmp_path / "boot.img"
    _boot_image(boot, key)
    status, _, stderr = _run(capsys, "release", "avb-sign", str(boot), str(boot), "--keystore", str(keystore))
    assert status == 0, stderr
    status, _, _ = _run(capsys, "release", "avb-info", "--image", str(boot), "--pkmd", str(pkmd))
    assert status == 0
    status, _, stderr = _run(capsys, "release", "avb-sign", str(image), str(signed), "--keystore", str(keystore),
                             "--chain-key", "vbmeta_vendor=" + str(chained))  # fmt: skip
    assert status == 2 and "vbmeta_vendor" in stderr


def test_avb_verify_checks_a_directory_of_images(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_avb_slot import _image_set

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    images = _image_set(tmp_path / "images", {"top": key, "system": other, "new": other})
    pem = _pem(tmp_path, key)
    status, stdout, _ = _run(capsys, "release", "avb-verify", str(images), "--certificate", str(pem), "--json")
    document = json.loads(stdout)
    assert status == 0 and document["verified"] and document["rollback_indexes"] == {"0": 5, "1": 3}
    data = bytearray((images / "boot.img").read_bytes())
    data[10] ^= 1
    (images / "boot.img").write_bytes(data)
    status, stdout, _ = _run(capsys, "release", "avb-verify", str(images), "--certificate", str(pem))
    assert status == 1 and "digest-mismatch" in stdout
    assert _run(capsys, "release", "avb-verify", str(images))[0] == 2
