"""Building small real APKs for repository tests: our manifest writer, our signer, throwaway keys.

Each APK is a genuine signed APK (v1+v2+v3 by default) that Android and apksigner accept, so the repository's
checks are exercised on what a hostile uploader could really produce: another key, a key change, no signature.
"""

from __future__ import annotations

import datetime
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import Lineage
from sealgate.apk.manifest_writer import manifest
from sealgate.apk.signing import ApkSigningOptions, sign_apk
from sealgate.signing import PrivateKeySigner


def throwaway_signer(name: str, key_size: int = 2048) -> PrivateKeySigner:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sealgate test {name}")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * 30))
        .sign(key, hashes.SHA256())
    )
    return PrivateKeySigner(name, key, Certificate.from_der(certificate.public_bytes(serialization.Encoding.DER)))


def unsigned_app(path: Path, package: str, version_code: int, *, label: str = "", min_sdk: int = 21) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "AndroidManifest.xml",
            manifest(
                package,
                version_code=version_code,
                version_name=f"{version_code}.0",
                min_sdk=min_sdk,
                target_sdk=34,
                permissions=("android.permission.INTERNET",),
                application={"label": label or package},
            ),
        )
        archive.writestr("assets/version.txt", f"{package} {version_code}\n")
    return path


def signed_app(
    path: Path,
    package: str,
    version_code: int,
    signers: list[PrivateKeySigner],
    *,
    lineage: Lineage | None = None,
    min_sdk: int = 21,
) -> Path:
    unsigned = unsigned_app(path.with_suffix(".unsigned"), package, version_code, min_sdk=min_sdk)
    sign_apk(unsigned, path, signers, ApkSigningOptions(lineage=lineage))
    unsigned.unlink()
    return path
