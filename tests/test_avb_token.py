"""AVB signing with a key that never leaves a PKCS#11 token (SoftHSM2): vbmeta images signed through TokenSigner
verify, with SHA-256 and SHA-512, and `release avb-sign --pkcs11` / `avb-info --pkcs11` work end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealgate.avb.descriptors import HashDescriptor
from sealgate.avb.keys import public_key_digest
from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta, resign_vbmeta, verify_vbmeta
from sealgate.cli.main import main
from sealgate.custody.roles import KeySpec
from sealgate.custody.token import TokenSigner, generate_on_token
from test_token import PIN, SoftHsm, softhsm  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def avb_key(softhsm: SoftHsm) -> Iterator[TokenSigner]:  # noqa: F811
    signer = generate_on_token(softhsm.uri(), "avb", PIN, key=KeySpec.parse("rsa-2048"))
    yield signer
    signer.close()


@pytest.mark.parametrize("algorithm", ["SHA256_RSA2048", "SHA512_RSA2048"])
def test_token_key_signs_vbmeta(avb_key: TokenSigner, algorithm: str) -> None:
    descriptors = [HashDescriptor(4096, "sha256", "boot", b"s" * 32, b"d" * 32)]
    image = build_vbmeta(descriptors, avb_key, algorithm=algorithm, rollback_index=2)
    vbmeta = read_vbmeta(image)
    assert vbmeta.algorithm.name == algorithm
    assert verify_vbmeta(vbmeta, [avb_key.public_key]).verified
    assert vbmeta.public_key_digest == public_key_digest(avb_key.public_key)


def test_cli_signs_and_describes_with_a_token_key(
    softhsm: SoftHsm,  # noqa: F811
    avb_key: TokenSigner,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PIN)
    uri = softhsm.uri("avb")
    image = tmp_path / "vbmeta.img"
    image.write_bytes(resign_vbmeta(build_vbmeta([], avb_key), avb_key))
    signed = tmp_path / "signed.img"
    assert main(["release", "avb-sign", str(image), str(signed), "--pkcs11", uri, "--rollback-index", "9"]) == 0
    capsys.readouterr()
    assert main(["release", "avb-info", "--pkcs11", uri, "--json"]) == 0
    digest = json.loads(capsys.readouterr().out)["public_key_digest"]
    vbmeta = read_vbmeta(signed.read_bytes())
    assert vbmeta.rollback_index == 9 and vbmeta.public_key_digest == digest
