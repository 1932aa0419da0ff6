"""Signed index JARs (entry.jar, index-v1.jar): written with the APK signer's JAR code, read with its verifier.

A client trusts a repository by one fingerprint, the SHA-256 of the index signing certificate, and F-Droid clients
check the JAR signature with java.util.jar: exactly one signer with exactly one certificate, and digests the
client accepts. Those differ by file, and the rule is the client's, not ours to choose:

* entry.jar (index-v2): SHA-256 digests only (fdroidclient's EntryVerifier refuses MD5 and SHA-1);
* index-v1.jar: SHA-1 digests only (fdroidclient's IndexV1Verifier accepts nothing but SHA1-Digest there), as
  fdroidserver writes it with `jarsigner -digestalg SHA1`. Clients that read index-v2 never open it.

A JAR holds the JSON file and the three META-INF files, in jarsigner's order (manifest first, so streaming readers
find it), deflated, with the index's own timestamp as the entries' date: the same index and key give the same JAR
(RSA signatures are deterministic).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealgate.errors import RepoError, SealgateError
from sealgate.signing import Signer, SigningAlgorithm
from sealgate.ziparchive import ZipArchive

if TYPE_CHECKING:
    from sealgate.apk.certificate import Certificate

ENTRY_JAR = "entry.jar"
INDEX_V1_JAR = "index-v1.jar"
#: A JAR's index entry larger than this is refused when read (index-v1 of f-droid.org is about 20 MB).
MAX_INDEX_SIZE = 512 * 1024 * 1024
#: fdroidclient refuses certificates shorter than this (its JarIndexVerifier), so we refuse to sign with one.
MIN_CERTIFICATE_SIZE = 256
#: The Android level whose JAR rules match a current Java runtime's: signed attributes, SHA-1 and SHA-256 digests.
_JAVA_LEVEL = 24
_SIGNATURE_BLOCK = re.compile(r"^META-INF/[^/]+\.(RSA|DSA|EC)$", re.IGNORECASE)
_SHA1_ALGORITHMS = {"RSA": SigningAlgorithm.RSA_PKCS1_SHA1, "DSA": SigningAlgorithm.DSA_SHA1}
_SHA256_ALGORITHMS = {
    "RSA": SigningAlgorithm.RSA_PKCS1_SHA256,
    "DSA": SigningAlgorithm.DSA_SHA256,
    "EC": SigningAlgorithm.ECDSA_SHA256,
}


@dataclass(frozen=True)
class VerifiedIndex:
    """The JSON inside a verified index JAR, and the certificate that signed it."""

    data: bytes
    certificate: Certificate

    @property
    def fingerprint(self) -> str:
        return self.certificate.sha256


@dataclass(frozen=True)
class PreparedJar:
    """An index JAR before its signature: the JSON entry, MANIFEST.MF and the .SF file the signature is over."""

    entry_name: str
    data: bytes
    signer_name: str
    digest: str
    signing: SigningAlgorithm
    key_type: str
    manifest: bytes
    signature_file: bytes
    timestamp_ms: int


def prepare_index_jar(
    entry_name: str, data: bytes, certificate: Certificate, *, key_name: str, timestamp_ms: int, sha1: bool
) -> PreparedJar:
    """Everything of the JAR but the signature: what an offline custodian signs is `signature_file`."""
    from sealgate.apk.signing import jar
    from sealgate.signing import key_algorithms

    if len(certificate.der) < MIN_CERTIFICATE_SIZE:
        raise RepoError(
            f"the certificate of key {key_name!r} is {len(certificate.der)} bytes; F-Droid clients refuse "
            f"index signing certificates under {MIN_CERTIFICATE_SIZE} bytes"
        )
    algorithms = key_algorithms(certificate.public_key())
    key_type = next(iter(algorithms)).key_type if algorithms else "unknown"
    table = _SHA1_ALGORITHMS if sha1 else _SHA256_ALGORITHMS
    if key_type not in table:
        raise RepoError(
            f"key {key_name!r} is an {key_type} key; F-Droid clients verify index-v1.jar only with SHA-1 "
            "digests, which Java pairs with RSA or DSA keys: use an RSA repo key"
        )
    digest_name = "SHA-1" if sha1 else "SHA-256"
    entry_digest = jar.digest(digest_name)
    entry_digest.update(data)
    manifest, sections = jar.build_manifest(jar.main_attributes(None), {entry_name: entry_digest.digest()}, digest_name)
    signature_file = jar.build_signature_file(manifest, sections, digest_name, ())
    return PreparedJar(
        entry_name=entry_name,
        data=data,
        signer_name=jar.signer_file_name(key_name),
        digest=digest_name,
        signing=table[key_type],
        key_type=key_type,
        manifest=manifest,
        signature_file=signature_file,
        timestamp_ms=timestamp_ms,
    )


def assemble_index_jar(prepared: PreparedJar, signer: Signer) -> bytes:
    """The signed JAR: `signer` signs the prepared .SF (a key at hand, or a signature made offline)."""
    from sealgate.apk.signing import jar
    from sealgate.apk.signing.key_algorithms import JarAlgorithm

    algorithm = JarAlgorithm(prepared.digest, prepared.signing, prepared.key_type)
    block = jar.build_signature_block(jar.JarSigner(signer, prepared.signer_name, algorithm), prepared.signature_file)
    base = f"{jar.META_INF}{prepared.signer_name}"
    files = [
        (jar.MANIFEST_NAME, prepared.manifest),
        (f"{base}.SF", prepared.signature_file),
        (f"{base}.{prepared.key_type}", block),
        (prepared.entry_name, prepared.data),
    ]
    date_time = time.gmtime(prepared.timestamp_ms // 1000)[:6]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file_name, content in files:
            info = zipfile.ZipInfo(file_name, date_time=(max(date_time[0], 1980), *date_time[1:]))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, content, compresslevel=9)
    return buffer.getvalue()


def sign_index_jar(entry_name: str, data: bytes, signer: Signer, *, timestamp_ms: int, sha1: bool) -> bytes:
    """The JAR holding `data` as `entry_name`, signed by `signer` (SHA-1 digests for index-v1.jar, else SHA-256)."""
    prepared = prepare_index_jar(
        entry_name, data, signer.certificate, key_name=signer.name, timestamp_ms=timestamp_ms, sha1=sha1
    )
    return assemble_index_jar(prepared, signer)


def read_index_jar(
    path: str | os.PathLike[str],
    entry_name: str | None = None,
    *,
    expected_fingerprint: str | None = None,
    label: str | None = None,
) -> VerifiedIndex:
    """Verify an index JAR and return its JSON entry; RepoError when anything is off.

    `entry_name` None takes the first entry outside META-INF/ (as fdroidserver does for old index.jar files).
    The fingerprint, when given, may be in any case and with separators (as F-Droid shows it: AB:CD or AB CD).
    `label` names the JAR in messages (its URL, for a download) instead of `path`.
    """
    from sealgate.apk.v1 import verify_v1

    where = label or os.fspath(path)
    try:
        archive = ZipArchive.open(path)
    except SealgateError as exc:
        raise RepoError(f"{where} is not a signed index JAR: {exc}") from None
    with archive:
        if archive.violations:
            raise RepoError(f"{where}: {archive.violations[0].message}")
        blocks = [entry for entry in archive.entries if _SIGNATURE_BLOCK.match(entry.name)]
        if len(blocks) != 1:
            found = "no signature" if not blocks else f"{len(blocks)} signatures"
            raise RepoError(f"{where} has {found}; an index JAR must carry exactly one signer")
        # Judged as a current Java runtime judges a JAR (signed attributes, SHA-1 or SHA-256), not as Android 1.x.
        result = verify_v1(archive, _JAVA_LEVEL, 0x7FFFFFFF, found_apk_sig_scheme_ids=frozenset())
        if not result.verified or len(result.signers) != 1 or len(result.signers[0].certificates) != 1:
            issues = [*result.errors, *(issue for signer in result.signers for issue in signer.errors)]
            problems = "; ".join(issue.message for issue in issues[:2]) or "it does not verify"
            raise RepoError(f"{where}: the JAR signature does not verify: {problems}")
        certificate = result.signers[0].certificates[0]
        names = [entry.name for entry in archive.entries if not entry.name.startswith("META-INF/")]
        name = entry_name if entry_name is not None else (names[0] if names else None)
        entry = archive.entry(name) if name is not None else None
        if entry is None:
            raise RepoError(f"{where} does not hold {entry_name or 'an index'}")
        data = archive.read(entry, max_size=MAX_INDEX_SIZE)
    if expected_fingerprint is not None and certificate.sha256 != normalise_fingerprint(expected_fingerprint):
        raise RepoError(
            f"{where} is signed by {certificate.sha256}, not by the expected {expected_fingerprint}: "
            "refusing an index from another key"
        )
    return VerifiedIndex(data, certificate)


def read_index_jar_bytes(
    data: bytes, entry_name: str | None, *, expected_fingerprint: str | None, label: str
) -> VerifiedIndex:
    """`read_index_jar` for a JAR held in memory (a download), through a private temporary file."""
    with tempfile.TemporaryDirectory(prefix="sealgate-index-") as directory:
        path = Path(directory) / "index.jar"
        path.write_bytes(data)
        return read_index_jar(path, entry_name, expected_fingerprint=expected_fingerprint, label=label)


def normalise_fingerprint(text: str) -> str:
    """Lowercase hex without separators: how clients compare fingerprints."""
    return re.sub(r"[^0-9a-f]", "", text.lower())
