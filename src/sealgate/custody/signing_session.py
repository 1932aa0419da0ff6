"""The two services of offline signing: the custodian's signing session, and the online side's `apply`.

Offline, `SigningSession.prepare` refuses to start on a machine with a network interface up, checks the request
bundle's integrity and the signing record's chain, and builds the summary the custodian confirms: every item with
its role, the fingerprint of the key that will sign it, what the APK or OTA package itself declares (read from the
payload, not from the request's claims) and the requester's metadata. Nothing is signed before `sign` is called with the
passphrase, and every key needed is unlocked and every item checked before the first signature, so a wrong
passphrase or an unusable algorithm leaves no half-signed response. Each signature is appended to the record as it
is made; the response bundle is written atomically last.

Online, `apply_response` trusts nothing in the response but what it can check against the request it holds and the
public keys exported from the keystore: the response must name that request's id and digest, every output must be
signed by the role's certificate, a signed APK must carry exactly the files of the unsigned one, a signed OTA
package must pass recovery's whole-file verification with the role's certificate alone and carry exactly the
entries that were sent (plus the otacert signing adds), and the record
entries must be an untouched piece of the chain that describes exactly these signatures. Only when every item
passes are the results moved into place; otherwise nothing is written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sealgate.apk.certificate import Certificate
from sealgate.custody import record as signing_record
from sealgate.custody.bundle import (
    HANDLED_KINDS,
    MAX_ED25519_FILE,
    RequestBundle,
    RequestItem,
    ResponseItem,
    SigningRequest,
    SigningResponse,
    hash_file,
    new_bundle_id,
    open_request,
    open_response,
    write_response,
)
from sealgate.custody.keystore import PUBLIC_FORMAT, PUBLIC_MANIFEST
from sealgate.custody.kinds import ArtifactPlan, handler_for
from sealgate.custody.offline import OfflineStatus, ensure_offline
from sealgate.custody.record import RecordEntry, check_segment, utc_now
from sealgate.durable import fsync_directory
from sealgate.errors import BundleError, RecordError, SealgateError, UsageError
from sealgate.signing import Signer, SigningAlgorithm
from sealgate.ziparchive import ZipArchive

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from sealgate.apk.signing import ApkSigningOptions


class KeySource(Protocol):
    """What a session needs from a keystore (the encrypted directory, or a token backend with the same shape)."""

    def certificate(self, role: str) -> Certificate: ...

    def signer(self, role: str, passphrase: str) -> Signer: ...


@contextlib.contextmanager
def _disk(what: str) -> Iterator[None]:
    """Turn a failed read or write (a full disk, a missing directory) into an error a person can act on."""
    try:
        yield
    except OSError as exc:
        hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        raise BundleError(f"{what}: {exc.strerror or exc}{hint}") from exc


# -- what the custodian is shown -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApkFacts:
    """What the APK payload itself declares (read on the offline machine, whatever the request claims)."""

    package: str
    version_code: int
    version_name: str | None
    min_sdk: int
    already_signed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version_code": self.version_code,
            "version_name": self.version_name,
            "min_sdk": self.min_sdk,
            "already_signed": self.already_signed,
        }


@dataclass(frozen=True, slots=True)
class OtaFacts:
    """What an OTA package's metadata declares (read on the offline machine, whatever the request claims)."""

    ota_type: str | None
    pre_device: str | None
    pre_build: str | None
    post_build: str | None
    post_timestamp: str | None
    post_security_patch_level: str | None
    already_signed: bool
    #: payload.bin: "unsigned" (the session signs it), "signed" (kept), "unreadable" or "absent" (not an A/B payload).
    payload: str = "absent"

    @property
    def signs_payload(self) -> bool:
        return self.payload == "unsigned"

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": self.payload,
            "payload_will_be_signed": self.signs_payload,
            "ota_type": self.ota_type,
            "pre_device": self.pre_device,
            "pre_build": self.pre_build,
            "post_build": self.post_build,
            "post_timestamp": self.post_timestamp,
            "post_security_patch_level": self.post_security_patch_level,
            "already_signed": self.already_signed,
        }


@dataclass(frozen=True, slots=True)
class ItemSummary:
    item: RequestItem
    certificate: Certificate
    apk: ApkFacts | None = None
    ota: OtaFacts | None = None
    #: For a handled kind (target files): what it declares, and the certificate of every role that will sign it.
    plan: ArtifactPlan | None = None
    plan_certificates: Mapping[str, Certificate] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        obj = {
            **self.item.to_json(),
            "certificate_sha256": self.certificate.sha256,
            "certificate_subject": self.certificate.subject,
            "key": self.certificate.key_description,
            "apk": self.apk.to_json() if self.apk is not None else None,
            "ota": self.ota.to_json() if self.ota is not None else None,
        }
        if self.plan is not None:
            obj["plan"] = {
                **self.plan.to_json(),
                "certificates": {role: cert.sha256 for role, cert in self.plan_certificates.items()},
            }
        return obj


@dataclass(frozen=True, slots=True)
class SigningSummary:
    """Exactly what will be signed, for the custodian to read before confirming."""

    bundle: str
    request: SigningRequest
    request_sha256: str
    items: tuple[ItemSummary, ...]
    network: OfflineStatus
    record: str
    record_entries: int
    record_head: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "request_id": self.request.bundle_id,
            "request_sha256": self.request_sha256,
            "created_at": self.request.created_at,
            "requester": self.request.requester,
            "online_interfaces": list(self.network.online_interfaces),
            "record": self.record,
            "record_entries": self.record_entries,
            "record_head": self.record_head,
            "items": [item.to_json() for item in self.items],
        }

    def to_text(self) -> str:
        request = self.request
        lines = [
            f"Signing request {request.bundle_id}",
            f"  from       {request.requester}, made {request.created_at}",
            f"  digest     {self.request_sha256}  (compare with the digest the requester gave you)",
            f"  bundle     {self.bundle}",
            f"  record     {self.record} ({self.record_entries} entries, head {self.record_head or 'none yet'})",
            f"  {_network_line(self.network)}",
            "",
            f"{len(self.items)} item(s) will be signed:",
        ]
        for number, summary in enumerate(self.items, 1):
            item = summary.item
            size = "" if item.size is None else f", {_human_size(item.size)}"
            lines.append(f"[{number}] {item.name} ({item.kind}{size})")
            lines.append(f"    sha256     {item.sha256}")
            how = f"APK signature ({_options_text(item.apk_options)})" if item.kind == "apk" else None
            if item.kind == "ota":
                how = f"whole-file OTA signature (signapk -w, {ota_algorithm(summary.certificate)})"
                if summary.ota is not None and summary.ota.signs_payload:
                    how = f"payload signature (update_engine's) and {how}"
            if summary.plan is not None:
                how = f"{item.kind} re-signed for release with {len(summary.plan.roles)} role(s)"
            if how is None:
                assert item.algorithm is not None
                over = "the digest above" if item.kind == "digest" else "the file"
                how = f"detached {item.algorithm.value} signature over {over}"
            lines.append(f"    signs as   {item.role}: {how}; purpose {item.purpose}")
            lines.append(f"    key        {summary.certificate.sha256}  {summary.certificate.key_description}")
            lines.append(f"               {summary.certificate.subject}")
            if summary.apk is not None:
                apk = summary.apk
                version = f"{apk.version_code}" + (f" ({apk.version_name})" if apk.version_name else "")
                lines.append(f"    APK says   package {apk.package}, version {version}, minSdk {apk.min_sdk}")
                if apk.already_signed:
                    lines.append("               (it already carries a signature, which will be replaced)")
            if summary.ota is not None:
                ota = summary.ota
                lines.append(f"    OTA says   device {ota.pre_device or '?'}, {ota.ota_type or '?'} update")
                lines.append(f"               to {ota.post_build or '?'}")
                spl = ota.post_security_patch_level or "?"
                lines.append(f"               timestamp {ota.post_timestamp or '?'}, security patch {spl}")
                if ota.pre_build:
                    lines.append(f"               incremental from {ota.pre_build}")
                if ota.already_signed:
                    lines.append("               (it already carries a whole-file signature, which will be replaced)")
                if ota.signs_payload:
                    lines.append(f"    payload    payload.bin is unsigned: it will be signed with the {item.role} key")
                    lines.append("               (update_engine's metadata and payload signatures), then")
                    lines.append("               payload_properties.txt and the package rebuilt, same metadata")
                elif ota.payload == "signed":
                    lines.append("    payload    payload.bin is already signed; it is kept as it is")
            if summary.plan is not None:
                for line in summary.plan.lines:
                    lines.append(f"    {line}")
                for role, certificate in summary.plan_certificates.items():
                    lines.append(f"    role       {role:<13} {certificate.sha256}  {certificate.key_description}")
            labels = {
                "description": "what",
                "version": "version",
                "device": "device",
                "previous_release": "previous",
                "changes": "changes",
            }
            for key, value in item.metadata.to_json().items():
                text = value.replace("\n", "\n" + " " * 15)
                lines.append(f"    {labels[key]:<10} {text}")
        return "\n".join(lines)


def _network_line(status: OfflineStatus) -> str:
    if status.offline:
        return "network    offline (no interface up but loopback)"
    return f"network    ONLINE: {', '.join(status.online_interfaces)} up (allowed by --allow-online)"


def _options_text(options: Mapping[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(options.items())) or "default options"


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"


# -- the offline session ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningOutcome:
    """A finished session: the response written, its digest, and the record's head to write down."""

    response_path: Path
    response_sha256: str
    response: SigningResponse

    @property
    def record_head(self) -> str | None:
        return self.response.record_head

    def to_json(self) -> dict[str, Any]:
        return {
            "response": os.fspath(self.response_path),
            "response_sha256": self.response_sha256,
            "response_id": self.response.bundle_id,
            "request_id": self.response.request_id,
            "record_head": self.record_head,
            "items": [item.to_json() for item in self.response.items],
        }


class SigningSession:
    """One request on the offline machine: prepare (checks, summary), then `sign` after the custodian confirms."""

    def __init__(
        self,
        bundle: RequestBundle,
        keys: KeySource,
        record_path: Path,
        summary: SigningSummary,
        work: tempfile.TemporaryDirectory[str],
        extracted: dict[str, Path],
    ):
        self._bundle = bundle
        self._keys = keys
        self._record = record_path
        self.summary = summary
        self._work = work
        self._extracted = extracted

    @classmethod
    def prepare(
        cls,
        bundle_path: str | os.PathLike[str],
        keys: KeySource,
        record_path: str | os.PathLike[str],
        *,
        allow_online: bool = False,
        expected_sha256: str | None = None,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> SigningSession:
        """Refuse when online, check the bundle (every payload hash) and the record, and build the summary.

        `expected_sha256` is the request digest the requester gave out of band; when given it must match.
        """
        network = ensure_offline(allow_online)
        record_path = Path(record_path)
        bundle = open_request(bundle_path)
        work: tempfile.TemporaryDirectory[str] | None = None
        try:
            with _disk("cannot unpack the request on this machine"):
                if expected_sha256 is not None and expected_sha256.lower() != bundle.sha256:
                    raise BundleError(
                        f"the request's digest is {bundle.sha256}, not the {expected_sha256} you were given: "
                        "the bundle was altered or is not the one the requester made"
                    )
                entries, head = _check_record(record_path)
                work = tempfile.TemporaryDirectory(prefix=".sealgate-sign-", dir=work_dir)
                extracted: dict[str, Path] = {}
                summaries = []
                for item in bundle.request.items:
                    certificate = keys.certificate(item.role)
                    apk = None
                    ota = None
                    plan = None
                    plan_certificates: dict[str, Certificate] = {}
                    if item.kind in HANDLED_KINDS:
                        path = Path(work.name) / f"in-{item.id}.bin"
                        with open(path, "xb") as handle:
                            bundle.copy_payload(item, handle)
                        extracted[item.id] = path
                        plan = _plan(item, path)
                        plan_certificates = {role: keys.certificate(role) for role in plan.roles}
                    elif item.kind == "ota":
                        path = Path(work.name) / f"in-{item.id}.zip"
                        with open(path, "xb") as handle:
                            bundle.copy_payload(item, handle)
                        extracted[item.id] = path
                        ota = _ota_facts(path, item)
                        ota_algorithm(certificate, item)
                    elif item.kind == "apk":
                        path = Path(work.name) / f"in-{item.id}.apk"
                        with open(path, "xb") as handle:
                            bundle.copy_payload(item, handle)
                        extracted[item.id] = path
                        apk = _apk_facts(path, item)
                        _check_apk_plan(item, certificate, apk.min_sdk)
                    else:
                        assert item.algorithm is not None
                        _check_algorithm(item, certificate, item.algorithm)
                    summaries.append(ItemSummary(item, certificate, apk, ota, plan, plan_certificates))
                summary = SigningSummary(
                    bundle=os.fspath(bundle_path),
                    request=bundle.request,
                    request_sha256=bundle.sha256,
                    items=tuple(summaries),
                    network=network,
                    record=os.fspath(record_path),
                    record_entries=entries,
                    record_head=head,
                )
                return cls(bundle, keys, record_path, summary, work, extracted)
        except BaseException:
            bundle.close()
            if work is not None:
                work.cleanup()
            raise

    def close(self) -> None:
        self._bundle.close()
        self._work.cleanup()

    def __enter__(self) -> SigningSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sign(self, passphrase: str, out: str | os.PathLike[str]) -> SigningOutcome:
        """Unlock every role needed, sign each item, record each signature, write the response atomically."""
        out_path = Path(out)
        if out_path.exists():
            raise BundleError(f"{out_path} already exists; choose another name (bundles are never overwritten)")
        request = self.summary.request
        signers: dict[str, Signer] = {}
        for summary in self.summary.items:
            wanted = {summary.item.role: summary.certificate, **summary.plan_certificates}
            for role, certificate in wanted.items():
                if role not in signers:
                    signer = self._keys.signer(role, passphrase)
                    if signer.certificate.sha256 != certificate.sha256:
                        raise BundleError(f"the key of role {role} changed since the summary was shown; start again")
                    signers[role] = signer
        for summary in self.summary.items:
            if (
                summary.item.algorithm is not None
                and summary.item.algorithm not in signers[summary.item.role].algorithms()
            ):
                raise BundleError(
                    f"item {summary.item.id} ({summary.item.name}): the {summary.item.role} key cannot sign with "
                    f"{summary.item.algorithm.value}"
                )
        items: list[ResponseItem] = []
        entries: list[RecordEntry] = []
        outputs: dict[str, Path] = {}
        try:
            with _disk("cannot write the signed output"):
                for summary in self.summary.items:
                    item = summary.item
                    signer = signers[item.role]
                    output = Path(self._work.name) / f"out-{item.id}"
                    algorithm = self._sign_item(item, signer, output, summary, signers)
                    output_sha256, output_size = hash_file(output)
                    entry = signing_record.append(
                        self._record,
                        role=item.role,
                        certificate_sha256=signer.certificate.sha256,
                        artifact=item.name,
                        artifact_sha256=item.sha256,
                        output_sha256=output_sha256,
                        purpose=item.purpose,
                        algorithm=algorithm,
                        bundle_id=request.bundle_id,
                    )
                    entries.append(entry)
                    outputs[item.id] = output
                    items.append(
                        ResponseItem(
                            id=item.id,
                            kind=item.kind,
                            role=item.role,
                            certificate_sha256=signer.certificate.sha256,
                            algorithm=algorithm,
                            output_sha256=output_sha256,
                            output_size=output_size,
                        )
                    )
                response = SigningResponse(
                    bundle_id=new_bundle_id(),
                    created_at=utc_now(),
                    request_id=request.bundle_id,
                    request_sha256=self.summary.request_sha256,
                    items=tuple(items),
                    record=tuple(entries),
                    signed_online=not self.summary.network.offline,
                )
                digest = write_response(out_path, response, outputs)
        except SealgateError as exc:
            if entries:
                raise type(exc)(
                    f"{exc} ({len(entries)} signature(s) made before this are in the signing record; "
                    "no response was written)"
                ) from exc
            raise
        return SigningOutcome(out_path, digest, response)

    def _sign_item(
        self, item: RequestItem, signer: Signer, output: Path, summary: ItemSummary, signers: Mapping[str, Signer]
    ) -> str:
        if summary.plan is not None:
            handler = handler_for(item.kind)
            try:
                handler.sign(self._extracted[item.id], output, {role: signers[role] for role in summary.plan.roles},
                             item.release_options)  # fmt: skip
            except BundleError:
                raise
            except SealgateError as exc:
                raise BundleError(f"item {item.id} ({item.name}) cannot be signed: {exc}") from exc
            return handler.algorithm
        if item.kind == "apk":
            return _sign_apk(self._extracted[item.id], output, signer, item)
        if item.kind == "ota":
            work = Path(self._work.name) / f"ota-{item.id}"
            return _sign_ota(self._extracted[item.id], output, signer, item, work)
        assert item.algorithm is not None
        algorithm = item.algorithm
        if item.kind == "digest":
            signature = signer.sign_digest(bytes.fromhex(item.sha256), algorithm)
            message: bytes | None = None
            digest = bytes.fromhex(item.sha256)
        elif algorithm.hash_name is None:
            message = b"".join(bytes(chunk) for chunk in self._bundle.iter_payload(item))
            signature = signer.sign(message, algorithm)
            digest = b""
        else:
            hasher = hashlib.new(algorithm.hash_name)
            for chunk in self._bundle.iter_payload(item):
                hasher.update(chunk)
            digest = hasher.digest()
            signature = signer.sign_digest(digest, algorithm)
            message = None
        # Check the signature before it is recorded: a faulty backend must not produce a record of a bad signature.
        if not verify_signature(signer.certificate, algorithm, signature, digest=digest, message=message):
            raise BundleError(
                f"item {item.id} ({item.name}): the {item.role} key produced a signature that does not verify"
            )
        with open(output, "xb") as handle:
            handle.write(signature)
        return algorithm.value


def _plan(item: RequestItem, path: Path) -> ArtifactPlan:
    try:
        return handler_for(item.kind).plan(path, item.release_options)
    except BundleError:
        raise
    except SealgateError as exc:
        raise BundleError(f"item {item.id} ({item.name}) cannot be signed: {exc}") from exc


def _check_record(path: Path) -> tuple[int, str | None]:
    if not path.exists():
        return 0, None
    report = signing_record.verify(path)
    if not report.ok:
        issue = report.issues[0]
        raise RecordError(
            f"the signing record {path} is damaged ({issue.message}); nothing will be signed onto it. "
            f"Run `sealgate record verify {path}` and restore it from a copy"
        )
    return report.entries, report.head


def _apk_facts(path: Path, item: RequestItem) -> ApkFacts:
    from sealgate.apk.manifest import read_manifest

    try:
        with ZipArchive.open(path) as archive:
            manifest = read_manifest(archive)
            signed = _has_signing_block(archive) or any(
                entry.name.upper().startswith("META-INF/")
                and entry.name.upper().endswith((".SF", ".RSA", ".DSA", ".EC"))
                for entry in archive.entries
            )
    except SealgateError as exc:
        raise BundleError(f"item {item.id} ({item.name}) is not an APK Android would read: {exc}") from exc
    return ApkFacts(manifest.package, manifest.version_code, manifest.version_name, manifest.min_sdk, signed)


def _has_signing_block(archive: ZipArchive) -> bool:
    offset = archive.sections.cd_offset
    return offset >= 16 and archive.pread(offset - 16, 16) == b"APK Sig Block 42"


def _check_algorithm(item: RequestItem, certificate: Certificate, algorithm: SigningAlgorithm) -> None:
    key_type = _key_type(certificate)
    if algorithm.key_type != key_type:
        raise BundleError(
            f"item {item.id} ({item.name}) asks for {algorithm.value}, but role {item.role} holds a {key_type} key; "
            "the requester must name an algorithm for that key"
        )
    if item.kind == "file" and algorithm.hash_name is None and (item.size or 0) > MAX_ED25519_FILE:
        raise BundleError(f"item {item.id} ({item.name}) is too large to sign with {algorithm.value}")


def _key_type(certificate: Certificate) -> str:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return "unknown"


def _apk_options(item: RequestItem) -> ApkSigningOptions:
    """The item's options as the APK signer's `ApkSigningOptions` (names and types were checked with the bundle)."""
    from sealgate.apk.signing import ApkSigningOptions

    return ApkSigningOptions(**dict(item.apk_options))  # type: ignore[arg-type]


def _check_apk_plan(item: RequestItem, certificate: Certificate, apk_min_sdk: int) -> None:
    """Resolve the APK signing options now, so that options the signer refuses stop the session before any signing."""
    from sealgate.apk.signing.options import plan_signing

    try:
        plan_signing(_apk_options(item), [_PlanningSigner(item.role, certificate)], apk_min_sdk)
    except (TypeError, ValueError, UsageError) as exc:
        raise BundleError(f"item {item.id} ({item.name}) cannot be signed with its APK options: {exc}") from exc


class _PlanningSigner:
    """A key's public half, enough for the APK signer to plan; it cannot sign."""

    def __init__(self, name: str, certificate: Certificate):
        self._name = name
        self._certificate = certificate

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._certificate.public_key()

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        key_type = _key_type(self._certificate)
        return frozenset(algorithm for algorithm in SigningAlgorithm if algorithm.key_type == key_type)

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        raise UsageError("a planning stand-in cannot sign")

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        raise UsageError("a planning stand-in cannot sign")


def _sign_apk(source: Path, output: Path, signer: Signer, item: RequestItem) -> str:
    from sealgate.apk.signing import sign_apk

    verification = sign_apk(source, output, [signer], _apk_options(item))
    if not verification.verified:
        problems = "; ".join(issue.message for issue in verification.errors) or "unknown reason"
        raise BundleError(f"item {item.id} ({item.name}): the signed APK does not verify: {problems}")
    if [certificate.sha256 for certificate in verification.signers] != [signer.certificate.sha256]:
        raise BundleError(f"item {item.id} ({item.name}): the signed APK does not name the {item.role} certificate")
    return apk_algorithm(verification.schemes)


def ota_algorithm(certificate: Certificate, item: RequestItem | None = None, *, payload: bool = False) -> str:
    """How a whole-file OTA signature is named in the record: "ota-whole-file-sha256" (or -sha1, as recovery picks
    the hash from the certificate), "ota-payload-sha256+whole-file-sha256" when the session signed payload.bin too;
    BundleError when recovery would not load the certificate at all."""
    from sealgate.ota.whole_file import trusted_key

    try:
        name = f"whole-file-{trusted_key(certificate, 'the certificate').hash_name}"
        return f"ota-payload-sha256+{name}" if payload else f"ota-{name}"
    except UsageError as exc:
        what = f"item {item.id} ({item.name}): " if item is not None else ""
        raise BundleError(f"{what}the role's key cannot sign OTA packages recovery accepts: {exc}") from exc


def _ota_facts(path: Path, item: RequestItem) -> OtaFacts:
    from sealgate.custody.ota_payload import payload_state
    from sealgate.ota.info import read_info
    from sealgate.ota.metadata import read_package_metadata

    try:
        metadata = read_package_metadata(path)
        signed = read_info(path).whole_file_signed
    except SealgateError as exc:
        raise BundleError(f"item {item.id} ({item.name}) is not an OTA package Android would read: {exc}") from exc
    return OtaFacts(
        ota_type=metadata.ota_type,
        pre_device="|".join(metadata.pre_device) or None,
        pre_build="|".join(metadata.pre_build) or None,
        post_build="|".join(metadata.post_build) or None,
        post_timestamp=str(metadata.post_timestamp) if metadata.post_timestamp else None,
        post_security_patch_level=metadata.post_security_patch_level,
        already_signed=signed,
        payload=payload_state(path),
    )


def _sign_ota(source: Path, output: Path, signer: Signer, item: RequestItem, work: Path) -> str:
    from sealgate.custody.ota_payload import payload_state, sign_package_payload
    from sealgate.ota.signer import sign_package

    signs_payload = payload_state(source) == "unsigned"
    try:
        if signs_payload:
            with_payload = work / "payload-signed.zip"
            sign_package_payload(source, with_payload, signer, work)
            source = with_payload
        verification = sign_package(source, output, signer)
    except SealgateError as exc:
        raise BundleError(f"item {item.id} ({item.name}) cannot be signed: {exc}") from exc
    if not verification.verified or verification.signer is None:
        problems = "; ".join(issue.message for issue in verification.errors) or "unknown reason"
        raise BundleError(f"item {item.id} ({item.name}): the signed OTA package does not verify: {problems}")
    if verification.signer.sha256 != signer.certificate.sha256:
        raise BundleError(f"item {item.id} ({item.name}): the signed package does not name the {item.role} certificate")
    return ota_algorithm(signer.certificate, item, payload=signs_payload)


def _check_signed_ota(
    signed: Path, unsigned: Path, item: RequestItem, certificate: Certificate, answer: ResponseItem, work: Path
) -> None:
    """Recovery's verdict with the role's certificate alone, and exactly the unsigned package's entries inside
    (or, when the payload was sent unsigned, the same package with its payload signed by the role's key)."""
    from sealgate.custody.ota_payload import PayloadCheckError, check_signed_payload, payload_state
    from sealgate.ota.signer import OTACERT, kept_entry
    from sealgate.ota.whole_file import trusted_key, verify_package

    report = verify_package(signed, [trusted_key(certificate, f"the {item.role} certificate")])
    if not report.verified:
        problems = "; ".join(issue.message for issue in report.errors[:3])
        raise BundleError(
            f"the signed OTA package of item {item.id} ({item.name}) does not verify with the {item.role} "
            f"certificate {certificate.sha256}: {problems}; nothing was written"
        )
    signs_payload = payload_state(unsigned) == "unsigned"
    expected = ota_algorithm(certificate, item, payload=signs_payload)
    if answer.algorithm != expected:
        raise BundleError(
            f"item {item.id} ({item.name}) was signed as {answer.algorithm}, not the {expected} its package "
            "needs; nothing was written"
        )
    if signs_payload:
        try:
            check_signed_payload(signed, unsigned, certificate, work)
        except PayloadCheckError as exc:
            raise BundleError(
                f"the signed OTA package of item {item.id} ({item.name}) is refused: {exc}; nothing was written"
            ) from exc
        return
    try:
        before = _entry_digests(unsigned, kept_entry)
        after = _entry_digests(signed, lambda name: name != OTACERT)
    except SealgateError as exc:
        raise BundleError(f"the signed OTA package of item {item.id} ({item.name}) cannot be read: {exc}") from exc
    difference = _digest_difference(before, after, "unsigned package")
    if difference is not None:
        raise BundleError(
            f"the signed OTA package of item {item.id} ({item.name}) is not the package that was sent for signing "
            f"({difference}): an artifact was swapped; nothing was written"
        )


def apk_algorithm(schemes: Sequence[int]) -> str:
    """How an APK signature is named in the record: the schemes it carries, e.g. "apk-v1+v2+v3"."""
    labels = {1: "v1", 2: "v2", 3: "v3", 31: "v3.1", 4: "v4"}
    return "apk-" + "+".join(labels.get(scheme, f"v{scheme}") for scheme in sorted(schemes))


# -- signatures ------------------------------------------------------------------------------------------------------


def verify_signature(
    certificate: Certificate,
    algorithm: SigningAlgorithm,
    signature: bytes,
    *,
    digest: bytes = b"",
    message: bytes | None = None,
) -> bool:
    """Whether `signature` is `certificate`'s key signing `digest` (or, for Ed25519, `message`) with `algorithm`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    key = certificate.public_key()
    try:
        if algorithm is SigningAlgorithm.ED25519:
            if not isinstance(key, ed25519.Ed25519PublicKey) or message is None:
                return False
            key.verify(signature, message)
            return True
        hash_algorithm = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha512": hashes.SHA512()}[
            algorithm.hash_name or ""
        ]
        if len(digest) != hash_algorithm.digest_size:
            return False
        prehashed = Prehashed(hash_algorithm)
        if isinstance(key, rsa.RSAPublicKey) and algorithm.key_type == "RSA":
            pad: padding.AsymmetricPadding = (
                padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size)
                if algorithm.value.startswith("rsa-pss")
                else padding.PKCS1v15()
            )
            key.verify(signature, digest, pad, prehashed)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm.key_type == "EC":
            key.verify(signature, digest, ec.ECDSA(prehashed))
        elif isinstance(key, dsa.DSAPublicKey) and algorithm.key_type == "DSA":
            key.verify(signature, digest, prehashed)
        else:
            return False
    except InvalidSignature:
        return False
    return True


# -- the online side: public keys and apply --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """The public export of a keystore (`keys export-public`): each role's current and retired certificates."""

    path: Path
    current: Mapping[str, Certificate]
    retired: Mapping[str, tuple[Certificate, ...]]

    def certificate(self, role: str) -> Certificate:
        try:
            return self.current[role]
        except KeyError:
            raise BundleError(
                f"the public keys in {self.path} have no role {role!r} (they have: {', '.join(sorted(self.current))})"
            ) from None

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PublicKeys:
        """Read keys.json and every certificate it names, checking each against the fingerprint it records."""
        path = Path(directory)
        manifest_path = path / PUBLIC_MANIFEST
        try:
            document = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError(
                f"{path} has no {PUBLIC_MANIFEST}: give the directory `sealgate keys export-public` wrote"
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read {manifest_path}: {exc}") from exc
        if not isinstance(document, dict) or document.get("format") != PUBLIC_FORMAT:
            raise BundleError(f"{manifest_path} is not a sealgate public-key export")
        roles = document.get("roles")
        if not isinstance(roles, dict):
            raise BundleError(f"{manifest_path} lists no roles")
        current: dict[str, Certificate] = {}
        retired: dict[str, tuple[Certificate, ...]] = {}
        for role, entry in roles.items():
            if not isinstance(entry, dict):
                raise BundleError(f"{manifest_path}: the entry of role {role!r} is not an object")
            current[role] = _load_certificate(path, entry, f"role {role}")
            olds = entry.get("retired", [])
            if not isinstance(olds, list):
                raise BundleError(f"{manifest_path}: retired keys of role {role!r} are not a list")
            retired[role] = tuple(_load_certificate(path, old, f"role {role} (retired)") for old in olds)
        return cls(path, current, retired)


def _load_certificate(directory: Path, entry: Any, what: str) -> Certificate:
    from asn1crypto import pem

    name = entry.get("certificate") if isinstance(entry, dict) else None
    expected = entry.get("certificate_sha256") if isinstance(entry, dict) else None
    if not isinstance(name, str) or "/" in name or not isinstance(expected, str):
        raise BundleError(f"{directory / PUBLIC_MANIFEST}: {what} lacks a certificate file name or fingerprint")
    try:
        data = (directory / name).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the certificate of {what}: {directory / name}: {exc.strerror}") from exc
    if pem.detect(data):
        _, _, data = pem.unarmor(data)
    certificate = Certificate.from_der(data)
    if certificate.sha256 != expected:
        raise BundleError(
            f"{directory / name} does not match the fingerprint {PUBLIC_MANIFEST} records for {what}: the public "
            "export was altered"
        )
    return certificate


@dataclass(frozen=True, slots=True)
class AppliedItem:
    id: str
    kind: str
    name: str
    path: Path
    sha256: str
    role: str
    certificate_sha256: str
    algorithm: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "path": os.fspath(self.path),
            "sha256": self.sha256,
            "role": self.role,
            "certificate_sha256": self.certificate_sha256,
            "algorithm": self.algorithm,
        }


@dataclass(frozen=True, slots=True)
class ApplyResult:
    request_id: str
    response_id: str
    items: tuple[AppliedItem, ...]
    record: tuple[RecordEntry, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def record_head(self) -> str | None:
        return self.record[-1].hash if self.record else None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "response_id": self.response_id,
            "items": [item.to_json() for item in self.items],
            "record_head": self.record_head,
            "record": [entry.to_json() for entry in self.record],
            "warnings": list(self.warnings),
        }


def apply_response(
    response_path: str | os.PathLike[str],
    request_path: str | os.PathLike[str],
    public: PublicKeys,
    out_dir: str | os.PathLike[str],
) -> ApplyResult:
    """Check a response against the request it must answer and the public keys, then move its results into place."""
    out = Path(out_dir)
    with open_request(request_path) as request_bundle, open_response(response_path) as response_bundle:
        request = request_bundle.request
        response = response_bundle.response
        _check_answers(request_bundle, response)
        pairs = _pair_items(request, response, public)
        _check_record_entries(request, response, pairs)
        targets = {item.id: out / item.output_name for item, _ in pairs}
        existing = sorted(os.fspath(path) for path in targets.values() if os.path.lexists(path))
        if existing:
            raise BundleError(f"refusing to overwrite {', '.join(existing)}; apply into an empty directory")
        created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BundleError(f"cannot create {out}: {exc.strerror}") from exc
        with _disk(f"cannot write into {out}"):
            staging = Path(tempfile.mkdtemp(prefix=".sealgate-apply-", dir=out))
        try:
            with _disk(f"cannot write into {out}"):
                staged = {}
                for item, answer in pairs:
                    staged[item.id] = _stage(request_bundle, response_bundle, item, answer, public, staging)
                for item, _ in pairs:
                    os.replace(staged[item.id], targets[item.id])
                fsync_directory(out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    out.rmdir()
            raise
        shutil.rmtree(staging, ignore_errors=True)
    warnings = []
    if response.signed_online:
        warnings.append("the custodian signed with a network interface up (--allow-online)")
    applied = tuple(
        AppliedItem(
            item.id,
            item.kind,
            item.name,
            targets[item.id],
            answer.output_sha256,
            item.role,
            answer.certificate_sha256,
            answer.algorithm,
        )
        for item, answer in pairs
    )
    return ApplyResult(request.bundle_id, response.bundle_id, applied, response.record, tuple(warnings))


def _check_answers(request_bundle: RequestBundle, response: SigningResponse) -> None:
    request = request_bundle.request
    if response.request_id != request.bundle_id:
        raise BundleError(
            f"this response answers request {response.request_id}, not {request.bundle_id} (the request given): "
            "it is a response to another request, or an old one replayed; nothing was written"
        )
    if response.request_sha256 != request_bundle.sha256:
        raise BundleError(
            f"this response was made for a request {request.bundle_id} whose digest is {response.request_sha256}, "
            f"but the request given has digest {request_bundle.sha256}: the request was altered on its way to the "
            "custodian; nothing was written"
        )


def _pair_items(
    request: SigningRequest, response: SigningResponse, public: PublicKeys
) -> list[tuple[RequestItem, ResponseItem]]:
    answers = {answer.id: answer for answer in response.items}
    asked = [item.id for item in request.items]
    if sorted(answers) != sorted(asked):
        missing = sorted(set(asked) - set(answers))
        extra = sorted(set(answers) - set(asked))
        detail = (
            f"missing {', '.join(missing)}" if missing else f"items the request did not ask for: {', '.join(extra)}"
        )
        raise BundleError(f"the response does not answer exactly the request's items ({detail}); nothing was written")
    pairs = []
    for item in request.items:
        answer = answers[item.id]
        if answer.kind != item.kind or answer.role != item.role:
            raise BundleError(f"item {item.id} ({item.name}) was answered as {answer.kind} by {answer.role}")
        expected = public.certificate(item.role)
        if answer.certificate_sha256 != expected.sha256:
            raise BundleError(
                f"item {item.id} ({item.name}) was signed with certificate {answer.certificate_sha256}, not the "
                f"{item.role} certificate {expected.sha256} of the public keys; nothing was written"
            )
        if item.kind in HANDLED_KINDS:
            if answer.algorithm != handler_for(item.kind).algorithm:
                raise BundleError(
                    f"item {item.id} ({item.name}) was signed as {answer.algorithm}, not the "
                    f"{handler_for(item.kind).algorithm} its kind makes"
                )
        elif item.kind == "ota":
            forms = (ota_algorithm(expected, item), ota_algorithm(expected, item, payload=True))
            if answer.algorithm not in forms:
                raise BundleError(
                    f"item {item.id} ({item.name}) was signed as {answer.algorithm}, not the "
                    f"{' or '.join(forms)} the {item.role} certificate makes"
                )
        elif item.kind != "apk":
            assert item.algorithm is not None
            if answer.algorithm != item.algorithm.value:
                raise BundleError(
                    f"item {item.id} ({item.name}) was signed with {answer.algorithm}, not the "
                    f"{item.algorithm.value} asked for"
                )
        pairs.append((item, answer))
    return pairs


def _check_record_entries(
    request: SigningRequest, response: SigningResponse, pairs: Sequence[tuple[RequestItem, ResponseItem]]
) -> None:
    entries = response.record
    if len(entries) != len(pairs):
        raise BundleError(
            f"the response carries {len(entries)} signing-record entries for {len(pairs)} signatures: the record "
            "does not account for what was signed; nothing was written"
        )
    problem = check_segment(entries)
    if problem is not None:
        raise BundleError(f"the response's signing-record entries were tampered with: {problem}; nothing was written")
    for entry, (item, answer) in zip(entries, pairs, strict=True):
        expected = {
            "role": item.role,
            "certificate_sha256": answer.certificate_sha256,
            "artifact": item.name,
            "artifact_sha256": item.sha256,
            "output_sha256": answer.output_sha256,
            "purpose": item.purpose,
            "algorithm": answer.algorithm,
            "bundle_id": request.bundle_id,
        }
        found = entry.to_json()
        wrong = [key for key, value in expected.items() if found[key] != value]
        if wrong:
            raise BundleError(
                f"signing-record entry {entry.seq} does not describe item {item.id} ({item.name}): its "
                f"{', '.join(wrong)} differ; nothing was written"
            )


def _stage_pair(
    request_bundle: RequestBundle,
    response_bundle: Any,
    item: RequestItem,
    answer: ResponseItem,
    target: Path,
    staging: Path,
) -> Path:
    """The signed artifact at `target` (fsynced: it is what will be placed) and, beside it, the payload that was sent,
    so a check can compare the two; returns the latter's path."""
    with open(target, "xb") as handle:
        response_bundle.copy_output(answer, handle)
        handle.flush()
        os.fsync(handle.fileno())
    unsigned = staging / f"{item.id}.unsigned"
    with open(unsigned, "xb") as handle:
        request_bundle.copy_payload(item, handle)
    return unsigned


def _stage(
    request_bundle: RequestBundle,
    response_bundle: Any,
    item: RequestItem,
    answer: ResponseItem,
    public: PublicKeys,
    staging: Path,
) -> Path:
    certificate = public.certificate(item.role)
    target = staging / f"{item.id}.out"
    if item.kind in HANDLED_KINDS:
        unsigned = _stage_pair(request_bundle, response_bundle, item, answer, target, staging)
        try:
            handler_for(item.kind).check(target, unsigned, public.certificate, item.release_options)
        except BundleError as exc:
            raise BundleError(
                f"the signed {item.kind} of item {item.id} ({item.name}): {exc}; nothing was written"
            ) from exc
        except SealgateError as exc:
            raise BundleError(
                f"the signed {item.kind} of item {item.id} ({item.name}) is refused: {exc}; nothing was written"
            ) from exc
        unsigned.unlink()
        return target
    if item.kind == "ota":
        unsigned = _stage_pair(request_bundle, response_bundle, item, answer, target, staging)
        _check_signed_ota(target, unsigned, item, certificate, answer, staging / f"{item.id}.check")
        unsigned.unlink()
        return target
    if item.kind == "apk":
        unsigned = _stage_pair(request_bundle, response_bundle, item, answer, target, staging)
        _check_signed_apk(target, unsigned, item, certificate, public.retired.get(item.role, ()))
        unsigned.unlink()
        return target
    assert item.algorithm is not None
    signature = response_bundle.read_output(answer)
    algorithm = item.algorithm
    message: bytes | None = None
    if item.kind == "digest":
        digest = bytes.fromhex(item.sha256)
    elif algorithm.hash_name is None:
        message = b"".join(bytes(chunk) for chunk in request_bundle.iter_payload(item))
        digest = b""
    else:
        hasher = hashlib.new(algorithm.hash_name)
        for chunk in request_bundle.iter_payload(item):
            hasher.update(chunk)
        digest = hasher.digest()
    if not verify_signature(certificate, algorithm, signature, digest=digest, message=message):
        raise BundleError(
            f"the signature of item {item.id} ({item.name}) does not verify with the {item.role} public key: it was "
            "made by another key or over other data; nothing was written"
        )
    with open(target, "xb") as handle:
        handle.write(signature)
        handle.flush()
        os.fsync(handle.fileno())
    return target


def _check_signed_apk(
    signed: Path, unsigned: Path, item: RequestItem, certificate: Certificate, retired: Sequence[Certificate]
) -> None:
    from sealgate.apk.verifier import verify_apk

    try:
        report = verify_apk(signed)
    except SealgateError as exc:
        raise BundleError(f"the signed APK of item {item.id} ({item.name}) is malformed: {exc}") from exc
    if not report.verified:
        problems = "; ".join(issue.message for issue in report.errors[:3])
        raise BundleError(f"the signed APK of item {item.id} ({item.name}) does not verify: {problems}")
    if [signer.sha256 for signer in report.signers] != [certificate.sha256]:
        found = ", ".join(signer.sha256 for signer in report.signers)
        raise BundleError(
            f"the signed APK of item {item.id} ({item.name}) is signed by {found}, not the {item.role} certificate "
            f"{certificate.sha256}; nothing was written"
        )
    known = {certificate.sha256, *(old.sha256 for old in retired)}
    for entry in report.sdk_signers:
        strangers = [signer.sha256 for signer in entry.signers if signer.sha256 not in known]
        if strangers:
            raise BundleError(
                f"the signed APK of item {item.id} ({item.name}) is signed for SDK {entry.min_sdk}.. by "
                f"{', '.join(strangers)}, which is no key of role {item.role}; nothing was written"
            )
    difference = _content_difference(unsigned, signed)
    if difference is not None:
        raise BundleError(
            f"the signed APK of item {item.id} ({item.name}) is not the APK that was sent for signing "
            f"({difference}): an artifact was swapped; nothing was written"
        )


def _kept_by_signer(name: str) -> bool:
    """Entries the APK signer carries over from the unsigned APK (it drops old signature files and a source stamp)."""
    from sealgate.apk.signing.apk_signer import SOURCE_STAMP_ENTRY
    from sealgate.apk.signing.jar import is_signed_entry

    return is_signed_entry(name) and name != SOURCE_STAMP_ENTRY


def _entry_digests(path: Path, kept: Callable[[str], bool] = _kept_by_signer) -> dict[str, str]:
    digests: dict[str, str] = {}
    with ZipArchive.open(path) as archive:
        for entry in archive.entries:
            if not kept(entry.name):
                continue
            hasher = hashlib.sha256()
            for chunk in archive.iter_data(entry):
                hasher.update(chunk)
            digests[entry.name] = hasher.hexdigest()
    return digests


def _content_difference(unsigned: Path, signed: Path) -> str | None:
    """Why the signed APK's files differ from the unsigned one's (JAR signature files aside), or None."""
    try:
        before, after = _entry_digests(unsigned), _entry_digests(signed)
    except SealgateError as exc:
        return f"its entries cannot be read: {exc}"
    return _digest_difference(before, after, "unsigned APK")


def _digest_difference(before: Mapping[str, str], after: Mapping[str, str], what: str) -> str | None:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    if added:
        return f"it has entries the {what} lacks: {', '.join(added[:5])}"
    if removed:
        return f"it lacks entries of the {what}: {', '.join(removed[:5])}"
    if changed:
        return f"entries differ: {', '.join(changed[:5])}"
    return None
