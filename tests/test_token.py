"""PKCS#11 token keys against SoftHSM2: generated on the token, never extractable, signing through the same Signer
protocol as keystore keys, with signatures checked by `cryptography` and by OpenSSL.

Each module that uses the `softhsm` fixture gets a fresh token directory; SoftHSM reads its configuration when the
library is initialised, so the fixture re-initialises the library after pointing SOFTHSM2_CONF at the new one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pkcs11
import pytest
from asn1crypto import pem as asn1_pem
from cryptography.hazmat.primitives import serialization
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as pkcs11_errors

from conftest import _in_ci, require_tool
from sealgate.custody.keystore import Keystore
from sealgate.custody.roles import KeySpec
from sealgate.custody.token import Pkcs11Uri, TokenSigner, generate_on_token
from sealgate.errors import TokenError, UsageError
from sealgate.signing import Signer, SigningAlgorithm
from test_keystore import PASSPHRASE, verify

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "sealgate-test"
PIN = "246810"
SO_PIN = "13579111"


@dataclass(frozen=True)
class SoftHsm:
    module: str
    label: str
    pin: str

    def uri(self, obj: str | None = None) -> str:
        return f"pkcs11:token={self.label}" + (f";object={obj}" if obj else "") + f"?module-path={self.module}"


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A freshly initialised SoftHSM2 token in a temporary directory."""
    util = require_tool("softhsm2-util")
    if not Path(MODULE).is_file():
        message = f"{MODULE} is missing (.ci/run installs softhsm2)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            [util, "--init-token", "--free", "--label", LABEL, "--so-pin", SO_PIN, "--pin", PIN],
            check=True,
            capture_output=True,
        )
        pkcs11.lib(MODULE).reinitialize()  # SoftHSM reads SOFTHSM2_CONF when initialised
        yield SoftHsm(MODULE, LABEL, PIN)


@pytest.fixture(scope="module")
def token_keys(softhsm: SoftHsm) -> Iterator[dict[str, TokenSigner]]:
    """RSA, EC and Ed25519 keys generated on the token for three roles."""
    signers = {
        "releasekey": generate_on_token(softhsm.uri(), "releasekey", PIN, key=KeySpec.parse("rsa-2048")),
        "ota": generate_on_token(softhsm.uri(), "ota", PIN, key=KeySpec.parse("ec-p256")),
        "root": generate_on_token(softhsm.uri(), "root", PIN),
    }
    yield signers
    for signer in signers.values():
        signer.close()


def openssl_verify(tmp_path: Path, signer: Signer, data: bytes, signature: bytes, algorithm: SigningAlgorithm) -> None:
    openssl = require_tool("openssl")
    public = tmp_path / "public.pem"
    public.write_bytes(
        signer.public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "data").write_bytes(data)
    (tmp_path / "sig").write_bytes(signature)
    if algorithm is SigningAlgorithm.ED25519:
        command = ["pkeyutl", "-verify", "-pubin", "-inkey", str(public), "-rawin", "-in", str(tmp_path / "data")]
        command += ["-sigfile", str(tmp_path / "sig")]
    else:
        command = ["dgst", f"-{algorithm.hash_name}", "-verify", str(public), "-signature", str(tmp_path / "sig")]
        if algorithm.value.startswith("rsa-pss"):
            command += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        command.append(str(tmp_path / "data"))
    result = subprocess.run([openssl, *command], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"openssl rejected a {algorithm.value} signature: {output}"
    assert "Verified OK" in output or "Signature Verified Successfully" in output, output


# -- generating and signing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["releasekey", "ota", "root"])
def test_token_keys_sign_with_every_algorithm(token_keys: dict[str, TokenSigner], role: str, tmp_path: Path) -> None:
    signer = token_keys[role]
    assert isinstance(signer, Signer)
    assert signer.name == role
    expected_family = {"releasekey": "RSA", "ota": "EC", "root": "Ed25519"}[role]
    assert {algorithm.key_type for algorithm in signer.algorithms()} == {expected_family}
    data = b"factory image 2025.06.01"
    for algorithm in sorted(signer.algorithms(), key=lambda a: a.value):
        signature = signer.sign(data, algorithm)
        verify(signer, data, signature, algorithm)
        openssl_verify(tmp_path, signer, data, signature, algorithm)
        if algorithm.hash_name is not None:
            from_digest = signer.sign_digest(algorithm.digest(data), algorithm)
            verify(signer, data, from_digest, algorithm)
            if algorithm.key_type == "RSA" and "pss" not in algorithm.value:
                assert from_digest == signature  # PKCS#1 v1.5 is deterministic: both paths give the same bytes


def test_token_certificates_are_self_signed_by_the_token_key(
    token_keys: dict[str, TokenSigner], tmp_path: Path
) -> None:
    openssl = require_tool("openssl")
    for role, signer in token_keys.items():
        cert = tmp_path / f"{role}.pem"
        cert.write_bytes(asn1_pem.armor("CERTIFICATE", signer.certificate.der))
        result = subprocess.run([openssl, "verify", "-CAfile", str(cert), str(cert)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"CN=Android distribution {role}" in signer.certificate.subject


def test_reopening_by_uri_finds_key_and_certificate(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    with TokenSigner.open(softhsm.uri("ota"), PIN) as reopened:
        assert reopened.certificate == token_keys["ota"].certificate
        signature = reopened.sign(b"x", SigningAlgorithm.ECDSA_SHA256)
        verify(token_keys["ota"], b"x", signature, SigningAlgorithm.ECDSA_SHA256)


def test_dsa_key_on_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    with generate_on_token(softhsm.uri("dsa-test"), "avb", PIN, key=KeySpec.parse("dsa-2048")) as signer:
        for algorithm in (SigningAlgorithm.DSA_SHA256, SigningAlgorithm.DSA_SHA1):
            signature = signer.sign_digest(algorithm.digest(b"vbmeta"), algorithm)
            verify(signer, b"vbmeta", signature, algorithm)
            openssl_verify(tmp_path, signer, b"vbmeta", signature, algorithm)


def test_same_role_from_keystore_and_token(softhsm: SoftHsm, tmp_path: Path) -> None:
    """One Signer protocol: the code that signs does not know (or care) where the key lives."""
    keystore = Keystore.create(
        tmp_path / "keys", PASSPHRASE, roles=["platform"], key_overrides={"platform": KeySpec.parse("rsa-2048")}
    )
    from_keystore = keystore.signer("platform", PASSPHRASE)
    with generate_on_token(softhsm.uri("platform"), "platform", PIN, key=KeySpec.parse("rsa-2048")) as from_token:
        for signer in (from_keystore, from_token):
            algorithm = SigningAlgorithm.RSA_PKCS1_SHA256
            assert algorithm in signer.algorithms()
            digest = algorithm.digest(b"framework-res.apk")
            verify(signer, b"framework-res.apk", signer.sign_digest(digest, algorithm), algorithm)
            verify(signer, b"framework-res.apk", signer.sign(b"framework-res.apk", algorithm), algorithm)
        assert from_keystore.certificate.subject == from_token.certificate.subject


def test_signers_share_the_token_login(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    """Closing one signer must not log the others out (PKCS#11 has one login per process and token)."""
    first = TokenSigner.open(softhsm.uri("releasekey"), PIN)
    second = TokenSigner.open(softhsm.uri("ota"), PIN)
    first.close()
    first.close()  # closing twice is harmless
    with second:
        verify(second, b"x", second.sign(b"x", SigningAlgorithm.ECDSA_SHA256), SigningAlgorithm.ECDSA_SHA256)
    third = token_keys["root"]
    verify(third, b"x", third.sign(b"x", SigningAlgorithm.ED25519), SigningAlgorithm.ED25519)


# -- the key never leaves --------------------------------------------------------------------------------------------


def test_token_key_never_leaves_the_token(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    for signer in token_keys.values():
        assert signer.key_protection() == {
            "sensitive": True,
            "extractable": False,
            "always_sensitive": True,
            "never_extractable": True,
            "local": True,
        }
    token = pkcs11.lib(MODULE).get_token(token_label=LABEL)
    with token.open(rw=True) as session:  # under the login the signers hold (PKCS#11 shares it per process)
        rsa_key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA, label="releasekey")
        ec_key = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label="ota")
        with pytest.raises(pkcs11_errors.AttributeSensitive):
            rsa_key[Attribute.PRIVATE_EXPONENT]
        with pytest.raises(pkcs11_errors.AttributeSensitive):
            rsa_key[Attribute.PRIME_1]
        with pytest.raises(pkcs11_errors.AttributeSensitive):
            ec_key[Attribute.VALUE]
        with pytest.raises(pkcs11_errors.PKCS11Error):  # once false, CKA_EXTRACTABLE can never become true
            rsa_key[Attribute.EXTRACTABLE] = True
        wrapping = session.generate_key(KeyType.AES, 256, store=False)
        with pytest.raises(pkcs11_errors.PKCS11Error):  # CKR_KEY_UNEXTRACTABLE: not even wrapped under a token key
            wrapping.wrap_key(rsa_key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert rsa_key[Attribute.EXTRACTABLE] is False


# -- clear errors ----------------------------------------------------------------------------------------------------


def test_missing_module(softhsm: SoftHsm) -> None:
    with pytest.raises(TokenError, match=r"PKCS#11 module /no/such/module\.so not found"):
        TokenSigner.open("pkcs11:token=x;object=y?module-path=/no/such/module.so", PIN)
    with pytest.raises(TokenError, match="SEALGATE_PKCS11_MODULE"):
        TokenSigner.open("pkcs11:token=x;object=y", PIN, environ={})


def test_missing_token(softhsm: SoftHsm) -> None:
    with pytest.raises(TokenError, match=rf"no token nosuch in {MODULE} \(tokens present: {LABEL}\)"):
        TokenSigner.open(f"pkcs11:token=nosuch;object=ota?module-path={MODULE}", PIN)


def test_wrong_pin(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    with pytest.raises(TokenError, match=f"wrong PIN for token {LABEL}"):
        TokenSigner.open(softhsm.uri("ota"), "000000")


def test_missing_object(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    with pytest.raises(TokenError, match=f"no private key labelled 'nosuch' on token {LABEL}"):
        TokenSigner.open(softhsm.uri("nosuch"), PIN)


def test_existing_label_is_never_replaced(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    before = token_keys["root"].certificate
    with pytest.raises(TokenError, match="never replaced"):
        generate_on_token(softhsm.uri(), "root", PIN)
    with TokenSigner.open(softhsm.uri("root"), PIN) as still:
        assert still.certificate == before


def test_module_from_environment(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    uri = f"pkcs11:token={LABEL};object=ota"
    with TokenSigner.open(uri, PIN, environ={"SEALGATE_PKCS11_MODULE": MODULE}) as signer:
        assert signer.certificate == token_keys["ota"].certificate


def test_algorithm_that_does_not_fit_the_key(token_keys: dict[str, TokenSigner]) -> None:
    with pytest.raises(UsageError, match="cannot sign with ecdsa-sha256"):
        token_keys["releasekey"].sign(b"x", SigningAlgorithm.ECDSA_SHA256)
    with pytest.raises(UsageError, match="32-byte digest"):
        token_keys["releasekey"].sign_digest(b"short", SigningAlgorithm.RSA_PKCS1_SHA256)


# -- URIs ------------------------------------------------------------------------------------------------------------


def test_uri_parsing() -> None:
    uri = Pkcs11Uri.parse("pkcs11:token=My%20Token;object=release%3Bkey;id=%01%ff;type=private?module-path=/x/y.so")
    assert uri == Pkcs11Uri("My Token", "release;key", b"\x01\xff", None, "private", "/x/y.so")
    assert Pkcs11Uri.parse(str(uri)) == uri
    for bad, message in [
        ("token=x", "not a PKCS#11 URI"),
        ("pkcs11:token=x;token=y", "names 'token' twice"),
        ("pkcs11:token=x;slot-id=1", "'slot-id' is not supported"),
        ("pkcs11:token=x;type=secret-key", "type='secret-key'"),
        ("pkcs11:token=x;object=y?pin-value=1234", "a PIN does not belong in a PKCS#11 URI"),
        ("pkcs11:token=x;object=y?pin-source=file:/pin", "a PIN does not belong"),
    ]:
        with pytest.raises(UsageError, match=message):
            Pkcs11Uri.parse(bad)


def test_token_lists_only_what_it_holds(softhsm: SoftHsm, token_keys: dict[str, TokenSigner]) -> None:
    """A certificate object sits beside each generated key with the same label and CKA_ID."""
    token = pkcs11.lib(MODULE).get_token(token_label=LABEL)
    with token.open() as session:
        for role, signer in token_keys.items():
            key = session.get_key(ObjectClass.PRIVATE_KEY, label=role)
            (certificate,) = session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key.id})
            assert certificate[Attribute.LABEL] == role
            assert bytes(certificate[Attribute.VALUE]) == signer.certificate.der
    assert os.environ["SOFTHSM2_CONF"].endswith("softhsm2.conf")


def test_repository_index_signed_with_a_token_key(softhsm: SoftHsm, tmp_path: Path) -> None:
    """The repo key on a token signs entry.jar (SHA-256) and index-v1.jar (SHA-1) as F-Droid clients need."""
    from repo_tools import signed_app, throwaway_signer
    from sealgate.repo.config import load_config
    from sealgate.repo.index_jar import read_index_jar
    from sealgate.repo.init import init_repository
    from sealgate.repo.update import UpdateOptions, update_repository

    repo_key = generate_on_token(softhsm.uri(), "repo", PIN, key=KeySpec.parse("rsa-2048"))
    try:
        root = tmp_path / "fdroid"
        init_repository(root, url="https://example.org/fdroid/repo", name="t", description="d", archive_older=0)
        (root / "metadata" / "org.example.app.yml").write_text("License: MIT\n")
        signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [throwaway_signer("developer")])
        update_repository(load_config(root), repo_key, UpdateOptions(timestamp=1_700_000_000))
        fingerprint = repo_key.certificate.sha256
        read_index_jar(root / "repo" / "entry.jar", "entry.json", expected_fingerprint=fingerprint)
        read_index_jar(root / "repo" / "index-v1.jar", "index-v1.json", expected_fingerprint=fingerprint)
    finally:
        repo_key.close()
