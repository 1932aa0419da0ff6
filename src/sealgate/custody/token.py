"""PKCS#11 tokens (HSMs, smart cards, YubiHSM, Nitrokey; SoftHSM2 in tests) as a `Signer` backend.

A key generated on a token is created sensitive and non-extractable, so it signs inside the token and never exists
anywhere else; its self-signed certificate is built here, signed through the token, and stored beside the key as a
CKO_CERTIFICATE object with the same label and CKA_ID. Importing keystore keys onto a token is deliberately not
offered: a key that once lived in a file is only as safe as that file was.

Keys are addressed by a PKCS#11 URI (an RFC 7512 subset): `pkcs11:token=LABEL;object=LABEL[;id=%01%02][;serial=S]`
with the module from `?module-path=/usr/lib/...so` or SEALGATE_PKCS11_MODULE. The PIN comes from the passphrase
sources (file descriptor, environment, terminal), never from the URI: a `pin-value` in a URI would sit in argv.

Digests are signed with the raw mechanisms (CKM_RSA_PKCS over a DigestInfo, CKM_RSA_PKCS_PSS, CKM_ECDSA, CKM_DSA)
so gigabyte artifacts are hashed while streaming and only 32 bytes cross to the token; whole messages use the
token's hash-and-sign mechanism where it has one (CKM_SHA256_RSA_PKCS, ...) and otherwise the same raw path.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

import pkcs11
from asn1crypto import core as asn1_core
from asn1crypto import keys as asn1_keys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509 import ObjectIdentifier
from pkcs11 import MGF, Attribute, CertificateType, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as pkcs11_errors
from pkcs11.util.dsa import encode_dsa_signature
from pkcs11.util.ec import encode_ecdsa_signature, encode_named_curve_parameters

from sealgate.apk.certificate import Certificate
from sealgate.custody.roles import KeySpec, self_signed_certificate
from sealgate.custody.roles import role as role_spec
from sealgate.errors import TokenError, UsageError
from sealgate.signing import SigningAlgorithm

MODULE_ENV_VAR = "SEALGATE_PKCS11_MODULE"

_PATH_ATTRIBUTES = ("token", "object", "id", "serial", "type")

# DER of DigestInfo up to the digest (RFC 8017 section 9.2, note 1): CKM_RSA_PKCS signs DigestInfo as given.
_DIGEST_INFO_PREFIX = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_HASH_MECHANISM = {"sha1": Mechanism.SHA_1, "sha256": Mechanism.SHA256, "sha512": Mechanism.SHA512}
_MGF = {"sha1": MGF.SHA1, "sha256": MGF.SHA256, "sha512": MGF.SHA512}
_DIGEST_SIZE = {"sha1": 20, "sha256": 32, "sha512": 64}

# Hash-and-sign mechanisms for sign(data); used when the token lists them.
_COMBINED = {
    SigningAlgorithm.RSA_PKCS1_SHA1: Mechanism.SHA1_RSA_PKCS,
    SigningAlgorithm.RSA_PKCS1_SHA256: Mechanism.SHA256_RSA_PKCS,
    SigningAlgorithm.RSA_PKCS1_SHA512: Mechanism.SHA512_RSA_PKCS,
    SigningAlgorithm.RSA_PSS_SHA256: Mechanism.SHA256_RSA_PKCS_PSS,
    SigningAlgorithm.RSA_PSS_SHA512: Mechanism.SHA512_RSA_PKCS_PSS,
    SigningAlgorithm.ECDSA_SHA1: Mechanism.ECDSA_SHA1,
    SigningAlgorithm.ECDSA_SHA256: Mechanism.ECDSA_SHA256,
    SigningAlgorithm.ECDSA_SHA512: Mechanism.ECDSA_SHA512,
    SigningAlgorithm.DSA_SHA1: Mechanism.DSA_SHA1,
    SigningAlgorithm.DSA_SHA256: Mechanism.DSA_SHA256,
}

# The raw mechanism each key family needs for sign_digest (and for Ed25519, for everything).
_RAW = {"RSA": Mechanism.RSA_PKCS, "EC": Mechanism.ECDSA, "DSA": Mechanism.DSA, "Ed25519": Mechanism.EDDSA}

_ED25519_PARAMS = asn1_core.ObjectIdentifier("1.3.101.112").dump()  # id-Ed25519 (RFC 8410) as CKA_EC_PARAMS
_CURVE_OIDS = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed `pkcs11:` URI naming one token and (for signing) one key on it."""

    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    type: str | None = None
    module_path: str | None = None

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        if not text.startswith("pkcs11:"):
            raise UsageError(f"not a PKCS#11 URI (expected pkcs11:token=...;object=...): {text!r}")
        path, _, query = text[len("pkcs11:") :].partition("?")
        values: dict[str, str | bytes] = {}
        for part in filter(None, path.split(";")):
            name, sep, raw = part.partition("=")
            if not sep:
                raise UsageError(f"PKCS#11 URI attribute {part!r} has no value")
            if name not in _PATH_ATTRIBUTES:
                supported = ", ".join(f"{attribute}=" for attribute in _PATH_ATTRIBUTES)
                raise UsageError(f"PKCS#11 URI attribute {name!r} is not supported; use {supported}")
            if name in values:
                raise UsageError(f"PKCS#11 URI names {name!r} twice")
            values[name] = unquote_to_bytes(raw) if name == "id" else unquote(raw, errors="strict")
        module_path: str | None = None
        for part in filter(None, query.split("&")):
            name, _, raw = part.partition("=")
            if name in ("pin-value", "pin-source"):
                raise UsageError(
                    "a PIN does not belong in a PKCS#11 URI (command lines are visible to every user); "
                    "use SEALGATE_PASSPHRASE, --passphrase-fd N or the prompt"
                )
            if name != "module-path":
                raise UsageError(f"PKCS#11 URI query attribute {name!r} is not supported; use module-path=")
            module_path = unquote(raw, errors="strict")
        object_type = values.get("type")
        if object_type is not None and object_type not in ("private", "cert"):
            raise UsageError(f"PKCS#11 URI type={object_type!r}: sealgate signs with type=private keys")
        identifier = values.get("id")
        return cls(
            token=_text(values.get("token")),
            object=_text(values.get("object")),
            id=identifier if isinstance(identifier, bytes) else None,
            serial=_text(values.get("serial")),
            type=_text(object_type),
            module_path=module_path,
        )

    def module(self, environ: Mapping[str, str] | None = None) -> str:
        """The PKCS#11 module to load: the URI's module-path, else SEALGATE_PKCS11_MODULE."""
        env = os.environ if environ is None else environ
        module = self.module_path or env.get(MODULE_ENV_VAR)
        if not module:
            raise TokenError(
                f"no PKCS#11 module given: add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV_VAR} "
                "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
            )
        return module

    def __str__(self) -> str:
        parts = [
            f"{name}={quote(value, safe='')}"
            for name, value in (("token", self.token), ("object", self.object), ("serial", self.serial))
            if value is not None
        ]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{byte:02x}" for byte in self.id))
        if self.type is not None:
            parts.append(f"type={self.type}")
        uri = "pkcs11:" + ";".join(parts)
        return uri + (f"?module-path={quote(self.module_path, safe='/')}" if self.module_path else "")

    @property
    def token_name(self) -> str:
        return self.token or (f"serial {self.serial}" if self.serial else "(any)")


def _text(value: str | bytes | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _TokenKey:
    """Signing with one private key object on a token: the part of a TokenSigner that needs no certificate."""

    def __init__(self, name: str, private_key: Any, mechanisms: set[Any]):
        self.name = name
        self.handle = private_key
        self._mechanisms = mechanisms
        self.family = _family(private_key.key_type)

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        if _RAW[self.family] not in self._mechanisms:
            return frozenset()
        usable = {algorithm for algorithm in SigningAlgorithm if algorithm.key_type == self.family}
        if Mechanism.RSA_PKCS_PSS not in self._mechanisms:
            usable = {algorithm for algorithm in usable if not algorithm.value.startswith("rsa-pss")}
        return frozenset(usable)

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        self._check(algorithm)
        if algorithm is SigningAlgorithm.ED25519:
            return self._call(lambda: self.handle.sign(data, mechanism=Mechanism.EDDSA), algorithm)
        combined = _COMBINED.get(algorithm)
        if combined is None or combined not in self._mechanisms:
            return self.sign_digest(algorithm.digest(data), algorithm)
        param = _pss_param(algorithm) if algorithm.value.startswith("rsa-pss") else None
        raw = self._call(lambda: self.handle.sign(data, mechanism=combined, mechanism_param=param), algorithm)
        return self._encode(raw)

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        self._check(algorithm)
        hash_name = algorithm.hash_name
        if hash_name is None:
            raise UsageError(f"{algorithm.value} signs whole messages; use sign(), not sign_digest()")
        if len(digest) != _DIGEST_SIZE[hash_name]:
            raise UsageError(f"{algorithm.value} needs a {_DIGEST_SIZE[hash_name]}-byte digest, got {len(digest)}")
        if self.family == "RSA" and algorithm.value.startswith("rsa-pss"):
            param = _pss_param(algorithm)
            return self._call(
                lambda: self.handle.sign(digest, mechanism=Mechanism.RSA_PKCS_PSS, mechanism_param=param), algorithm
            )
        if self.family == "RSA":
            digest_info = _DIGEST_INFO_PREFIX[hash_name] + digest
            return self._call(lambda: self.handle.sign(digest_info, mechanism=Mechanism.RSA_PKCS), algorithm)
        raw = self._call(lambda: self.handle.sign(digest, mechanism=_RAW[self.family]), algorithm)
        return self._encode(raw)

    def _check(self, algorithm: SigningAlgorithm) -> None:
        if algorithm not in self.algorithms():
            raise UsageError(
                f"token key {self.name!r} is a {self.family} key and cannot sign with {algorithm.value} "
                "(or the token lacks the mechanism)"
            )

    def _encode(self, raw: bytes) -> bytes:
        # Tokens return DSA/ECDSA signatures as r||s; Java, apksig and OpenSSL expect the DER SEQUENCE.
        if self.family == "EC":
            return bytes(encode_ecdsa_signature(raw))
        if self.family == "DSA":
            return bytes(encode_dsa_signature(raw))
        return raw

    def _call(self, operation: Callable[[], bytes], algorithm: SigningAlgorithm) -> bytes:
        try:
            return bytes(operation())
        except pkcs11_errors.PKCS11Error as exc:
            raise TokenError(
                f"the token refused to sign with key {self.name!r} ({algorithm.value}): {_reason(exc)}"
            ) from None


class TokenSigner:
    """A `Signer` over a private key that stays on a PKCS#11 token; close it (or use `with`) to end the session."""

    def __init__(self, key: _TokenKey, lease: _Lease, certificate: Certificate):
        self._key = key
        self._lease = lease
        self._certificate = certificate
        self._public_key = certificate.public_key()

    @classmethod
    def open(cls, uri: str | Pkcs11Uri, pin: str, *, environ: Mapping[str, str] | None = None) -> TokenSigner:
        """Log in to the token named by `uri` and find the private key and certificate it names."""
        parsed = Pkcs11Uri.parse(uri) if isinstance(uri, str) else uri
        if parsed.object is None and parsed.id is None:
            raise UsageError(f"the PKCS#11 URI {parsed} names no key: add object=LABEL or id=...")
        lease, mechanisms = _open_session(parsed, pin, rw=False, environ=environ)
        session = lease.session
        try:
            private_key = _find_one(session, ObjectClass.PRIVATE_KEY, parsed, "private key")
            certificate = _find_certificate(session, private_key, parsed)
            public = _find_public_key(session, private_key)
            if public is not None and _spki(public) != certificate.public_key_der:
                raise TokenError(
                    f"the certificate stored with key {_describe(parsed)} does not belong to it; "
                    "re-create the key with `sealgate keys token-init`"
                )
            key = _TokenKey(parsed.object or str(private_key.label), private_key, mechanisms)
            return cls(key, lease, certificate)
        except BaseException:
            lease.close()
            raise

    @property
    def name(self) -> str:
        return self._key.name

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._public_key

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        return self._key.algorithms()

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        return self._key.sign(data, algorithm)

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        return self._key.sign_digest(digest, algorithm)

    def key_protection(self) -> dict[str, bool]:
        """Whether the key can leave the token, for audits: a key made by generate_on_token is sensitive, never
        extractable, always sensitive, never extractable since creation, and generated on the token (local)."""
        names = {
            "sensitive": Attribute.SENSITIVE,
            "extractable": Attribute.EXTRACTABLE,
            "always_sensitive": Attribute.ALWAYS_SENSITIVE,
            "never_extractable": Attribute.NEVER_EXTRACTABLE,
            "local": Attribute.LOCAL,
        }
        try:
            return {name: bool(self._key.handle[attribute]) for name, attribute in names.items()}
        except pkcs11_errors.PKCS11Error as exc:
            raise TokenError(f"cannot read the attributes of token key {self.name!r}: {_reason(exc)}") from None

    def close(self) -> None:
        self._lease.close()

    def __enter__(self) -> TokenSigner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def generate_on_token(
    uri: str | Pkcs11Uri,
    role: str,
    pin: str,
    *,
    key: KeySpec | None = None,
    distribution: str = "Android distribution",
    environ: Mapping[str, str] | None = None,
) -> TokenSigner:
    """Generate the role's key ON the token (sensitive, never extractable) with a self-signed certificate beside it.

    The object label is the URI's object= (the role's name when absent). An existing object with that label is
    never replaced: a key on a token may be the only copy.
    """
    parsed = Pkcs11Uri.parse(uri) if isinstance(uri, str) else uri
    spec = role_spec(role)
    if key is not None:
        spec = spec.with_key(key)
    label = parsed.object or spec.name
    parsed = Pkcs11Uri(parsed.token, label, parsed.id, parsed.serial, None, parsed.module_path)
    lease, mechanisms = _open_session(parsed, pin, rw=True, environ=environ)
    session = lease.session
    try:
        if any(True for _ in session.get_objects({Attribute.LABEL: label})):
            raise TokenError(
                f"token {parsed.token_name} already holds an object labelled {label!r}; keys on a token are never "
                "replaced: choose another label with object=..."
            )
        key_id = parsed.id or os.urandom(16)
        public, private = _generate_keypair(session, spec.key, label, key_id, mechanisms)
        try:
            public_key = _public_key_of(public)
            algorithm = spec.default_algorithm
            subject = spec.certificate_subject(distribution)
            token_key = _TokenKey(label, private, mechanisms)
            cert_der = self_signed_certificate(public_key, subject, algorithm, token_key.sign)
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: label,
                    Attribute.ID: key_id,
                    Attribute.SUBJECT: subject.public_bytes(),
                    Attribute.VALUE: cert_der,
                }
            )
        except BaseException:
            # A key without its certificate is unusable and would block the label; it never signed anything.
            for obj in (private, public):
                with contextlib.suppress(pkcs11_errors.PKCS11Error):
                    obj.destroy()
            raise
        return TokenSigner(token_key, lease, Certificate.from_der(cert_der))
    except pkcs11_errors.PKCS11Error as exc:
        lease.close()
        raise TokenError(f"generating key {label!r} on token {parsed.token_name} failed: {_reason(exc)}") from None
    except BaseException:
        lease.close()
        raise


# -- sessions and objects -----------------------------------------------------------------------------------------


def _open_session(uri: Pkcs11Uri, pin: str, *, rw: bool, environ: Mapping[str, str] | None) -> tuple[_Lease, set[Any]]:
    module = uri.module(environ)
    if not os.path.isfile(module):
        raise TokenError(
            f"PKCS#11 module {module} not found; install the token's driver (SoftHSM2: Debian package softhsm2) "
            f"or correct module-path / {MODULE_ENV_VAR}"
        )
    try:
        library = pkcs11.lib(module)
    except pkcs11_errors.PKCS11Error as exc:
        raise TokenError(f"cannot load PKCS#11 module {module}: {exc}") from None
    if uri.token is None and uri.serial is None:
        raise UsageError(f"the PKCS#11 URI {uri} names no token: add token=LABEL")
    try:
        token = library.get_token(
            token_label=uri.token, token_serial=uri.serial.encode() if uri.serial is not None else None
        )
    except pkcs11_errors.NoSuchToken:
        present = sorted(t.label for t in library.get_tokens() if t.label)
        raise TokenError(
            f"no token {uri.token_name} in {module} (tokens present: {', '.join(present) or 'none'}); "
            "is it plugged in and initialised?"
        ) from None
    except pkcs11_errors.MultipleTokensReturned:
        raise TokenError(f"several tokens match {uri.token_name}; add serial= to the URI") from None
    except pkcs11_errors.PKCS11Error as exc:
        raise TokenError(f"cannot list the tokens of {module}: {_reason(exc)}") from None
    key = (module, bytes(token.serial), token.label)
    login = _LOGINS.get(key)
    if login is None:
        login = _Login.log_in(token, pin, uri)
        _LOGINS[key] = login
    elif not login.accepts(pin):
        raise TokenError(f"wrong PIN for token {uri.token_name}")
    try:
        session = token.open(rw=rw)  # shares the application's login on this token
        mechanisms = set(token.slot.get_mechanisms())
    except pkcs11_errors.PKCS11Error as exc:
        if login.users == 0:
            _LOGINS.pop(key, None)
            login.log_out()
        raise TokenError(f"cannot open a session on token {uri.token_name}: {_reason(exc)}") from None
    login.users += 1
    return _Lease(session, key), mechanisms


class _Login:
    """The application's login on one token, shared by all its sessions.

    PKCS#11 keeps one login state per application and token: a second C_Login fails, and a C_Logout (which
    python-pkcs11 sends when the session that logged in closes) logs every session out. So the first signer of a
    token logs in, later ones open plain sessions under that login, and the login ends with the last of them. A later
    caller's PIN is still checked, against a digest of the PIN that logged in.
    """

    def __init__(self, session: Any, pin_digest: bytes | None):
        self._session = session
        self._pin_digest = pin_digest
        self.users = 0

    @classmethod
    def log_in(cls, token: Any, pin: str, uri: Pkcs11Uri) -> _Login:
        try:
            return cls(token.open(user_pin=pin), _pin_digest(pin))
        except pkcs11_errors.UserAlreadyLoggedIn:
            # Something else in this process logged in (not through sealgate); use its login.
            return cls(None, None)
        except pkcs11_errors.PinIncorrect:
            raise TokenError(f"wrong PIN for token {uri.token_name}") from None
        except pkcs11_errors.PinLocked:
            raise TokenError(
                f"the PIN of token {uri.token_name} is locked; its security officer must unlock it"
            ) from None
        except (pkcs11_errors.PinLenRange, pkcs11_errors.PinInvalid):
            raise TokenError(f"the PIN given for token {uri.token_name} has an invalid length or characters") from None
        except pkcs11_errors.PKCS11Error as exc:
            raise TokenError(f"cannot log in to token {uri.token_name}: {_reason(exc)}") from None

    def accepts(self, pin: str) -> bool:
        return self._pin_digest is None or hmac.compare_digest(self._pin_digest, _pin_digest(pin))

    def log_out(self) -> None:
        if self._session is not None:
            with contextlib.suppress(pkcs11_errors.PKCS11Error):
                self._session.close()
            self._session = None


_LOGINS: dict[tuple[str, bytes, str], _Login] = {}


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


class _Lease:
    """One session under the shared login; closing the last lease of a token logs out."""

    def __init__(self, session: Any, key: tuple[str, bytes, str]):
        self.session = session
        self._key = key
        self._open = True

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        with contextlib.suppress(pkcs11_errors.PKCS11Error):
            self.session.close()
        login = _LOGINS.get(self._key)
        if login is not None:
            login.users -= 1
            if login.users <= 0:
                del _LOGINS[self._key]
                login.log_out()


def _template(uri: Pkcs11Uri, object_class: ObjectClass) -> dict[Any, Any]:
    template: dict[Any, Any] = {Attribute.CLASS: object_class}
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


def _find_one(session: Any, object_class: ObjectClass, uri: Pkcs11Uri, what: str) -> Any:
    try:
        found = list(session.get_objects(_template(uri, object_class)))
    except pkcs11_errors.PKCS11Error as exc:
        raise TokenError(f"cannot search token {uri.token_name}: {_reason(exc)}") from None
    if not found:
        raise TokenError(f"no {what} {_describe(uri)} on token {uri.token_name}")
    if len(found) > 1:
        raise TokenError(f"{len(found)} {what}s match {_describe(uri)} on token {uri.token_name}; add id= to the URI")
    return found[0]


def _find_certificate(session: Any, private_key: Any, uri: Pkcs11Uri) -> Certificate:
    template = {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: private_key.id}
    try:
        found = list(session.get_objects(template))
        if not found:
            by_label = {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: private_key.label}
            found = list(session.get_objects(by_label))
        if len(found) != 1:
            raise TokenError(
                f"{'no' if not found else 'more than one'} certificate stored with key {_describe(uri)} on token "
                f"{uri.token_name}; keys made by `sealgate keys token-init` carry exactly one"
            )
        der = bytes(found[0][Attribute.VALUE])
    except pkcs11_errors.PKCS11Error as exc:
        raise TokenError(f"cannot read the certificate of {_describe(uri)}: {_reason(exc)}") from None
    return Certificate.from_der(der)


def _find_public_key(session: Any, private_key: Any) -> PublicKeyTypes | None:
    try:
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: private_key.id}))
    except pkcs11_errors.PKCS11Error:
        return None
    return _public_key_of(found[0]) if len(found) == 1 else None


def _generate_keypair(session: Any, spec: KeySpec, label: str, key_id: bytes, mechanisms: set[Any]) -> tuple[Any, Any]:
    private_template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public_template = {Attribute.TOKEN: True, Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}
    options: dict[str, Any] = {
        "id": key_id,
        "label": label,
        "store": True,
        "capabilities": MechanismFlag.SIGN | MechanismFlag.VERIFY,
        "private_template": private_template,
        "public_template": public_template,
    }
    if spec.family == "rsa":
        return session.generate_keypair(KeyType.RSA, spec.size, **options)  # type: ignore[no-any-return]
    if spec.family == "dsa":
        assert spec.size is not None
        parameters = session.generate_domain_parameters(KeyType.DSA, spec.size)
        return parameters.generate_keypair(**options)  # type: ignore[no-any-return]
    if spec.family == "ec":
        assert spec.curve is not None
        ec_params = encode_named_curve_parameters(_CURVE_OIDS[spec.curve])
        parameters = session.create_domain_parameters(KeyType.EC, {Attribute.EC_PARAMS: ec_params}, local=True)
        return parameters.generate_keypair(**options)  # type: ignore[no-any-return]
    if Mechanism.EC_EDWARDS_KEY_PAIR_GEN not in mechanisms:
        raise TokenError("this token cannot generate Ed25519 keys (no CKM_EC_EDWARDS_KEY_PAIR_GEN)")
    parameters = session.create_domain_parameters(
        KeyType.EC_EDWARDS, {Attribute.EC_PARAMS: _ED25519_PARAMS}, local=True
    )
    return parameters.generate_keypair(**options)  # type: ignore[no-any-return]


def _public_key_of(public: Any) -> PublicKeyTypes:
    """A token's public key object as a `cryptography` key (to build and check certificates)."""
    key_type = public.key_type
    if key_type == KeyType.RSA:
        exponent = int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big")
        modulus = int.from_bytes(public[Attribute.MODULUS], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if key_type == KeyType.DSA:
        numbers = dsa.DSAParameterNumbers(
            p=int.from_bytes(public[Attribute.PRIME], "big"),
            q=int.from_bytes(public[Attribute.SUBPRIME], "big"),
            g=int.from_bytes(public[Attribute.BASE], "big"),
        )
        return dsa.DSAPublicNumbers(int.from_bytes(public[Attribute.VALUE], "big"), numbers).public_key()
    point = _unwrap_octet_string(bytes(public[Attribute.EC_POINT]))
    if key_type == KeyType.EC:
        params = asn1_keys.ECDomainParameters.load(bytes(public[Attribute.EC_PARAMS]))
        if params.name != "named":
            raise TokenError("the token's EC key uses explicit curve parameters; sealgate supports named curves")
        oid = ObjectIdentifier(asn1_keys.NamedCurve(params.chosen.native).dotted)
        try:
            curve = ec.get_curve_for_oid(oid)()
        except LookupError:
            raise TokenError(f"the token's EC key is on curve {oid.dotted_string}, unknown to sealgate") from None
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if key_type == KeyType.EC_EDWARDS:
        return ed25519.Ed25519PublicKey.from_public_bytes(point)
    raise TokenError(f"unsupported key type {key_type!r} on the token")


def _unwrap_octet_string(value: bytes) -> bytes:
    # CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some tokens store the bare point.
    if value[:1] == b"\x04":
        try:
            parsed = asn1_core.OctetString.load(value, strict=True)
            return bytes(parsed.native)
        except ValueError:
            pass
    return value


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _family(key_type: Any) -> str:
    families = {KeyType.RSA: "RSA", KeyType.EC: "EC", KeyType.DSA: "DSA", KeyType.EC_EDWARDS: "Ed25519"}
    try:
        return families[key_type]
    except KeyError:
        raise TokenError(f"unsupported key type {key_type!r} on the token") from None


def _pss_param(algorithm: SigningAlgorithm) -> tuple[Any, Any, int]:
    hash_name = algorithm.hash_name or "sha256"
    return (_HASH_MECHANISM[hash_name], _MGF[hash_name], _DIGEST_SIZE[hash_name])


def _describe(uri: Pkcs11Uri) -> str:
    parts = []
    if uri.object is not None:
        parts.append(f"labelled {uri.object!r}")
    if uri.id is not None:
        parts.append(f"with id {uri.id.hex()}")
    return " ".join(parts) or "(unnamed)"


def _reason(exc: BaseException) -> str:
    """PKCS#11 errors carry their CKR name as the class name; the message is often empty."""
    text = str(exc).strip()
    return f"{type(exc).__name__}{': ' + text if text else ''}"
