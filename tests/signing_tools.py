"""Helpers that drive Debian's apksigner as a peer for differential tests (not a test module).

Keys are generated afresh in a temporary directory for each session, so no test depends on a key that someone could
also use elsewhere; they are written as PKCS#8 DER (`.pk8`) plus a PEM certificate (`.x509.pem`), the pair that
`apksigner sign --key K.pk8 --cert C.x509.pem` accepts. Unsigned inputs are copied from the apksig vectors at test
time (a real binary AndroidManifest.xml is needed and writing one here would test our writer, not the verifier).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import re
import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from sealgate.apk.certificate import Certificate
from sealgate.signing import PrivateKeySigner

#: Key types apksigner can sign with, named like the apksig test keys (rsa-2048, ec-p256, dsa-1024).
KEY_TYPES = ("rsa-1024", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521", "dsa-1024", "dsa-2048")

_CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}

#: apksigner's subprocesses are JVMs; nothing it does on a test APK takes this long unless it hangs.
_TIMEOUT = 120


class ApksignerError(RuntimeError):
    """apksigner refused to sign or rotate: the test set-up is wrong, not the verifier under test."""


@dataclass(frozen=True)
class SignerKey:
    """A throwaway key pair on disk, and the fingerprint Android would report for its certificate."""

    name: str
    key_path: Path
    cert_path: Path
    cert_der: bytes

    @property
    def cert_sha256(self) -> str:
        return hashlib.sha256(self.cert_der).hexdigest()


def _private_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    family, _, size = key_type.partition("-")
    if family == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=int(size))
    if family == "ec":
        return ec.generate_private_key(_CURVES[size])
    if family == "dsa":
        return dsa.generate_private_key(key_size=int(size))
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def _self_signed(key: CertificateIssuerPrivateKeyTypes, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    digest = hashes.SHA512() if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384 else None
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, digest or hashes.SHA256())
    )


def certified_signer(
    name: str, key: CertificateIssuerPrivateKeyTypes, common_name: str
) -> tuple[PrivateKeySigner, x509.Certificate]:
    """A PrivateKeySigner called `name` for `key`, with a self-signed sha256 certificate for CN=`common_name` valid
    for ten years from 2024-01-01 (fixed, so no test depends on the clock): what the OTA, AVB and release tests sign
    with. apksigner's keys come from make_key instead."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650)).sign(key, hashes.SHA256())
    )  # fmt: skip
    der = certificate.public_bytes(serialization.Encoding.DER)
    return PrivateKeySigner(name, key, Certificate.from_der(der)), certificate


def make_key(directory: Path, key_type: str, label: str = "") -> SignerKey:
    """Generate `key_type` (see KEY_TYPES) into `directory`; `label` tells apart two keys of the same type."""
    name = f"{key_type}{label}"
    key = _private_key(key_type)
    cert = _self_signed(key, f"sealgate test {name}")
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.pk8"
    cert_path = directory / f"{name}.x509.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return SignerKey(name, key_path, cert_path, cert.public_bytes(serialization.Encoding.DER))


def unsigned_apk(vectors: Path, directory: Path, base: str = "golden-aligned-in.apk") -> Path:
    """A writable copy of an unsigned apksig input APK (minSdkVersion 23) in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"unsigned-{base}"
    shutil.copyfile(vectors / "files" / base, target)
    target.chmod(0o644)
    return target


def _signer_args(signer: SignerKey) -> list[str]:
    return ["--key", str(signer.key_path), "--cert", str(signer.cert_path)]


def _v1_name(index: int, count: int) -> list[str]:
    """apksigner cuts v1 names derived from key file names to 8 characters, so rsa-2048_2 clashes with rsa-2048."""
    return ["--v1-signer-name", f"SIGNER{index + 1}"] if count > 1 else []


def _flag(name: str, value: bool | None) -> list[str]:
    return [] if value is None else [f"--{name}-signing-enabled", "true" if value else "false"]


#: How apksigner is started; `share_jvm_classes` adds JVM options that halve its start-up time.
_APKSIGNER = ["apksigner"]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    if command[0] == "apksigner":
        command = [*_APKSIGNER, *command[1:]]
    return subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT, check=False)


def share_jvm_classes(directory: Path, vectors: Path) -> None:
    """Start apksigner from a class-data-sharing archive (built once under a lock, shared by xdist workers).

    Each apksigner run is a new JVM, and start-up dominates on test-sized APKs: an AppCDS archive of the classes
    that sign, verify and rotate load, plus the C1 compiler only, cut a run from about 0.5 s to 0.2 s. When the
    archive cannot be built the JVM options still apply and the archive is simply not used.
    """
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "apksigner.jsa"
    with (directory / "apksigner.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            _build_class_archive(directory, vectors, archive)
    options = ["-JXlog:disable", "-JXX:TieredStopAtLevel=1", "-JXX:+UseSerialGC"]
    if archive.exists():
        options.append(f"-JXX:SharedArchiveFile={archive}")
    _APKSIGNER[:] = ["apksigner", *options]


def _build_class_archive(directory: Path, vectors: Path, archive: Path) -> None:
    work = directory / "cds-warm-up"
    unsigned = unsigned_apk(vectors, work)
    old, new = make_key(work, "rsa-2048"), make_key(work, "ec-p256")
    signed, lineage = work / "signed.apk", work / "lineage"
    key = _signer_args(old)
    runs = [
        ["sign", "--out", str(signed), *key, str(unsigned)],
        ["verify", "--print-certs", "-v", str(signed)],
        ["rotate", "--out", str(lineage), "--old-signer", *key, "--new-signer", *_signer_args(new)],
    ]
    lists = []
    for index, run in enumerate(runs):
        lists.append(work / f"classes{index}.list")
        _run(["apksigner", f"-JXX:DumpLoadedClassList={lists[-1]}", *run])
    classes = sorted({line for path in lists if path.exists() for line in path.read_text().splitlines()})
    (work / "classes.list").write_text("\n".join(classes) + "\n")
    partial = archive.with_suffix(".partial")
    share = [f"-XX:SharedClassListFile={work / 'classes.list'}", f"-XX:SharedArchiveFile={partial}"]
    if _APKSIGNER_JAR.exists():
        _run(["java", "-Xshare:dump", *share, "-Xlog:disable", "-jar", str(_APKSIGNER_JAR)])
    if partial.exists():
        partial.rename(archive)


#: The jar Debian's /usr/bin/apksigner runs; an archive is only valid for that exact class path.
_APKSIGNER_JAR = Path("/usr/share/java/apksigner.jar")


def apksigner_sign(
    unsigned: Path,
    out: Path,
    signers: Sequence[SignerKey],
    *,
    v1: bool | None = None,
    v2: bool | None = None,
    v3: bool | None = None,
    v4: bool = False,
    min_sdk: int | None = None,
    max_sdk: int | None = None,
    lineage: Path | None = None,
) -> Path:
    """Sign with `apksigner sign`; None leaves a scheme to apksigner's choice for the SDK window.

    Several signers without a lineage make a multi-signer v1/v2 APK; with a lineage they are points of the rotation
    history, oldest first (apksigner signs v1/v2 with the oldest and v3 with the newest).
    """
    if not signers:
        raise ValueError("at least one signer is needed")
    command = ["apksigner", "sign", "--out", str(out)]
    command += _flag("v1", v1) + _flag("v2", v2) + _flag("v3", v3) + _flag("v4", v4)
    if min_sdk is not None:
        command += ["--min-sdk-version", str(min_sdk)]
    if max_sdk is not None:
        command += ["--max-sdk-version", str(max_sdk)]
    if lineage is not None:
        command += ["--lineage", str(lineage)]
    for index, signer in enumerate(signers):
        command += [*(["--next-signer"] if index else []), *_signer_args(signer), *_v1_name(index, len(signers))]
    command.append(str(unsigned))
    result = _run(command)
    if result.returncode != 0 or not out.exists():
        raise ApksignerError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return out


def apksigner_rotate(out: Path, old: SignerKey, new: SignerKey, previous: Path | None = None) -> Path:
    """Make (or extend `previous`) a proof-of-rotation lineage file in which `old` vouches for `new`."""
    command = ["apksigner", "rotate", "--out", str(out)]
    if previous is not None:
        command += ["--in", str(previous)]
    command += ["--old-signer", *_signer_args(old), "--new-signer", *_signer_args(new)]
    result = _run(command)
    if result.returncode != 0 or not out.exists():
        raise ApksignerError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return out


_SCHEME_LINE = re.compile(r"^Verified using v(\d)(?:\.(\d))? scheme \([^)]*\): (true|false)$")
_SIGNER_DIGEST = re.compile(r"^Signer #\d+ certificate SHA-256 digest: ([0-9a-f]{64})$")


@dataclass
class ApksignerVerdict:
    """What `apksigner verify --print-certs -v` concluded, parsed from its output."""

    verified: bool
    #: Schemes printed as verified, numbered like ApkVerification.schemes (1, 2, 3, 31, 4).
    schemes: set[int] = field(default_factory=set)
    #: SHA-256 of each signer certificate apksigner prints, in its order.
    signers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""


def parse_verify_output(returncode: int, stdout: str, stderr: str) -> ApksignerVerdict:
    """Read apksigner 31's verbose output; the exit status and the 'Verifies' line must agree."""
    lines = [line.strip() for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
    verdict = ApksignerVerdict(verified=returncode == 0 and "Verifies" in lines, output=stdout + stderr)
    for line in lines:
        if match := _SCHEME_LINE.match(line):
            if match.group(3) == "true":
                verdict.schemes.add(int(match.group(1)) * (10 if match.group(2) else 1) + int(match.group(2) or 0))
        elif match := _SIGNER_DIGEST.match(line):
            verdict.signers.append(match.group(1))
        elif line.startswith(("ERROR", "Exception in thread", "Caused by:")):
            # apksigner 31 reports some malformed APKs by dying with a Java exception instead of an ERROR line.
            verdict.errors.append(line)
        elif line.startswith("WARNING"):
            verdict.warnings.append(line)
    return verdict


def apksigner_verify(apk: Path, *, min_sdk: int | None = None, max_sdk: int | None = None) -> ApksignerVerdict:
    """Run `apksigner verify --print-certs -v` at the given SDK window (None: the APK's minSdkVersion..newest)."""
    command = ["apksigner", "verify", "--print-certs", "-v"]
    if min_sdk is not None:
        command += ["--min-sdk-version", str(min_sdk)]
    if max_sdk is not None:
        command += ["--max-sdk-version", str(max_sdk)]
    result = _run([*command, str(apk)])
    return parse_verify_output(result.returncode, result.stdout, result.stderr)


class KeyRing:
    """Keys generated on first use and kept for the session: RSA 4096 and DSA 2048 take about a second each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, SignerKey] = {}

    def __getitem__(self, name: str) -> SignerKey:
        """`rsa-2048` or, for a second key of the same type, `rsa-2048_2`."""
        if name not in self._keys:
            key_type, _, label = name.partition("_")
            self._keys[name] = make_key(self.directory, key_type, f"_{label}" if label else "")
        return self._keys[name]


# --- ZIP layout, found independently of sealgate's reader so tampering does not trust the code under test ---

_EOCD = struct.Struct("<IHHHHIIH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_SIG_BLOCK_MAGIC = b"APK Sig Block 42"


@dataclass(frozen=True)
class ZipEntryLayout:
    name: str
    method: int
    central_offset: int
    local_offset: int
    data_offset: int
    compressed_size: int


@dataclass(frozen=True)
class ApkLayout:
    """Where the parts of a well-formed APK are, as byte offsets into the file."""

    size: int
    eocd_offset: int
    cd_offset: int
    cd_size: int
    entries: list[ZipEntryLayout]
    #: Offset of the APK Signing Block (its leading size field), or None when the APK has none.
    signing_block_offset: int | None
    #: (block ID, offset of the value, length of the value) for each ID-value pair of the signing block.
    signing_block_pairs: list[tuple[int, int, int]]

    def entry(self, name: str) -> ZipEntryLayout:
        return next(entry for entry in self.entries if entry.name == name)


def apk_layout(data: bytes) -> ApkLayout:
    """Parse just enough of a known-good APK to aim mutations; raises on anything unexpected (a test bug)."""
    eocd = data.rindex(b"PK\x05\x06", max(0, len(data) - 65557))
    _, _, _, _, count, cd_size, cd_offset, _ = _EOCD.unpack_from(data, eocd)
    entries = []
    position = cd_offset
    for _ in range(count):
        fields = _CENTRAL.unpack_from(data, position)
        method, compressed, name_len, extra_len, comment_len, local = fields[4], fields[8], *fields[10:13], fields[16]
        name = data[position + _CENTRAL.size : position + _CENTRAL.size + name_len].decode("utf-8")
        local_fields = _LOCAL.unpack_from(data, local)
        data_offset = local + _LOCAL.size + local_fields[9] + local_fields[10]
        entries.append(ZipEntryLayout(name, method, position, local, data_offset, compressed))
        position += _CENTRAL.size + name_len + extra_len + comment_len
    block_offset, pairs = _signing_block(data, cd_offset)
    return ApkLayout(len(data), eocd, cd_offset, cd_size, entries, block_offset, pairs)


def _signing_block(data: bytes, cd_offset: int) -> tuple[int | None, list[tuple[int, int, int]]]:
    if cd_offset < 32 or data[cd_offset - 16 : cd_offset] != _SIG_BLOCK_MAGIC:
        return None, []
    (size,) = struct.unpack_from("<Q", data, cd_offset - 24)
    start = cd_offset - size - 8
    pairs = []
    position = start + 8
    while position < cd_offset - 24:
        length, block_id = struct.unpack_from("<QI", data, position)
        pairs.append((block_id, position + 12, length - 4))
        position += 8 + length
    return start, pairs


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    """A copy of `data` with the bits of `mask` inverted in the byte at `offset`."""
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)
