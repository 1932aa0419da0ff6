"""otacerts.zip: the certificates recovery and update_engine trust for OTA packages.

sign_target_files_apks -o (WriteOtacerts) replaces every "*/otacerts.zip" of the target-files package (the system
copy, and the recovery and boot ramdisk copies) with a new zip of the OTA certificates, STORED, stamped 2009-01-01;
recovery loads every entry whose name ends in "x509.pem" (`sealgate.ota.whole_file.load_trusted_keys` reads it the
same way). The zip is a few kilobytes, so it is built in memory.

A/B devices also carry update_engine's payload key, etc/update_engine/update-payload-key.pub.pem (in SYSTEM/ and,
on older devices, the boot ramdisk): ReplaceOtaKeys writes the first OTA certificate's public key there (PEM
SubjectPublicKeyInfo, what `openssl x509 -pubkey` prints), since update_engine checks the payload's signatures with
that key where it does not read otacerts.zip. Left alone, a device would keep trusting the test key for payloads.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

from asn1crypto import pem as asn1_pem

from sealgate.apk.certificate import Certificate

OTACERTS_SUFFIX = "/otacerts.zip"
PAYLOAD_KEY_SUFFIX = "etc/update_engine/update-payload-key.pub.pem"


def otacerts_zip(certificates: Sequence[tuple[str, Certificate]]) -> bytes:
    """A zip holding each (entry name ending in .x509.pem, certificate) as PEM."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, certificate in certificates:
            info = zipfile.ZipInfo(name, date_time=(2009, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            archive.writestr(info, bytes(asn1_pem.armor("CERTIFICATE", certificate.der)))
    return buffer.getvalue()


def is_otacerts(name: str) -> bool:
    return name.endswith(OTACERTS_SUFFIX)


def is_payload_key(name: str) -> bool:
    return name.endswith("/" + PAYLOAD_KEY_SUFFIX)


def payload_key_pem(certificate: Certificate) -> bytes:
    """The certificate's public key as update-payload-key.pub.pem holds it."""
    from cryptography.hazmat.primitives import serialization

    return certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
