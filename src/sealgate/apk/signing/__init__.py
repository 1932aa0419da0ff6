"""Signing APKs with APK Signature Schemes v1 (JAR), v2, v3 and v3.1, as apksigner signs them.

A format layer: it takes any `sealgate.signing.Signer` (a keystore key, a PKCS#11 token key, a test key) and never
touches key storage itself. `sign_apk` is the entry point; `ApkSigningOptions` chooses schemes, SDK window,
rotation lineage and alignment.
"""

from sealgate.apk.signing.apk_signer import sign_apk
from sealgate.apk.signing.options import ApkSigningOptions

__all__ = ["ApkSigningOptions", "sign_apk"]
