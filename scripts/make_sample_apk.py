"""Rebuild src/sealgate/samples/hello-signed.apk, the APK `sealgate apk verify` checks when no file is named.

The sample is built from scratch (a manifest from sealgate's own writer, a text asset), aligned with zipalign and
signed v1+v2+v3 by Debian's apksigner with a throwaway RSA-2048 key made in a temporary directory and deleted
afterwards: only the public certificate survives, inside the APK. Needs apksigner and zipalign on PATH.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sealgate.apk.manifest_writer import manifest

OUTPUT = Path(__file__).resolve().parent.parent / "src" / "sealgate" / "samples" / "hello-signed.apk"


def main() -> int:
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        unsigned = work / "unsigned.apk"
        with zipfile.ZipFile(unsigned, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(
                "AndroidManifest.xml",
                manifest(
                    "org.sealgate.sample",
                    version_code=1,
                    version_name="1.0",
                    min_sdk=21,
                    target_sdk=34,
                    application={"label": "sealgate sample"},
                ),
            )
            archive.writestr("assets/README.txt", "A sample APK made by sealgate's scripts/make_sample_apk.py.\n")
        aligned = work / "aligned.apk"
        subprocess.run(["zipalign", "-f", "-p", "4", str(unsigned), str(aligned)], check=True)
        key, cert = _throwaway_key(work)
        subprocess.run(
            ["apksigner", "sign", "--key", str(key), "--cert", str(cert), "--v1-signing-enabled", "true",
             "--v2-signing-enabled", "true", "--v3-signing-enabled", "true", "--out", str(OUTPUT), str(aligned)],
            check=True,
        )  # fmt: skip
    OUTPUT.with_name(OUTPUT.name + ".idsig").unlink(missing_ok=True)
    print(f"wrote {OUTPUT}")
    return 0


def _throwaway_key(work: Path) -> tuple[Path, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sealgate sample (throwaway key)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * 30))
        .sign(private, hashes.SHA256())
    )
    key_path = work / "key.pk8"
    cert_path = work / "cert.pem"
    key_path.write_bytes(
        private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


if __name__ == "__main__":
    sys.exit(main())
