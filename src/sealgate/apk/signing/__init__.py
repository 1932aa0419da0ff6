"""Signing APKs with APK Signature Schemes v1 (JAR), v2, v3 and v3.1, as apksigner signs them.

A format layer: it takes any `sealgate.signing.Signer` (a keystore key, a PKCS#11 token key, a test key) and never
touches key storage itself. `sign_apk` is the entry point; `ApkSigningOptions` chooses schemes, SDK window,
rotation lineage and alignment.

Both are imported on first use: the OTA signer and the repository's index signing use this package's ZIP writer
and JAR files without the APK signer, its verifier and its self-check (a third of `ota sign`'s start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sealgate.apk.signing.apk_signer import sign_apk
    from sealgate.apk.signing.options import ApkSigningOptions

__all__ = ["ApkSigningOptions", "sign_apk"]


def __getattr__(name: str) -> Any:
    if name == "sign_apk":
        from sealgate.apk.signing.apk_signer import sign_apk

        return sign_apk
    if name == "ApkSigningOptions":
        from sealgate.apk.signing.options import ApkSigningOptions

        return ApkSigningOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
