"""Helpers that build small synthetic target-files packages for the release tests (not a test module).

The APKs inside are the apksig vectors' unsigned APK signed by Debian's apksigner with throwaway "test keys", so
the package looks like a build's: every APK signed with the key apkcerts.txt names, build.prop with test-keys, and
an otacerts.zip holding the test key's certificate.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.release.apkcerts import KeyMap
from sealgate.signing import PrivateKeySigner
from signing_tools import SignerKey, apksigner_sign, certified_signer, make_key, share_jvm_classes, unsigned_apk

DEV_KEYS = "build/make/target/product/security"
WIFI_CERT = "packages/modules/Wifi/service/resources-certs/com.android.wifi.resources"

#: path in the package -> (apkcerts certificate name, the test key that signs the input APK).
APKS = {
    "SYSTEM/priv-app/Settings/Settings.apk": (f"{DEV_KEYS}/platform", "platform"),
    "SYSTEM/priv-app/Contacts/Contacts.apk": (f"{DEV_KEYS}/shared", "shared"),
    "PRODUCT/app/Browser/Browser.apk": (f"{DEV_KEYS}/testkey", "testkey"),
    "VENDOR/app/MediaProvider/MediaProvider.apk": (f"{DEV_KEYS}/media", "media"),
    "SYSTEM_EXT/app/WifiRes/WifiRes.apk": (WIFI_CERT, "wifi"),
    "SYSTEM/app/Prebuilt/Prebuilt.apk": ("PRESIGNED", "vendor"),
}
#: The role each APK must be signed with afterwards (WifiRes through --key-map).
EXPECTED_ROLES = {
    "SYSTEM/priv-app/Settings/Settings.apk": "platform",
    "SYSTEM/priv-app/Contacts/Contacts.apk": "shared",
    "PRODUCT/app/Browser/Browser.apk": "releasekey",
    "VENDOR/app/MediaProvider/MediaProvider.apk": "media",
    "SYSTEM_EXT/app/WifiRes/WifiRes.apk": "networkstack",
}
RELEASE_ROLES = ("releasekey", "platform", "shared", "media", "networkstack", "ota")

SYSTEM_BUILD_PROP = """\
# begin build properties
ro.build.id=AP2A.240805.005
ro.build.display.id=AP2A.240805.005 test-keys
ro.build.version.incremental=eng.build.20240801
ro.build.version.sdk=34
ro.build.type=user
ro.build.tags=test-keys
ro.build.description=oriole-user 14 AP2A.240805.005 eng.build.20240801 test-keys
ro.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys
ro.system.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys
ro.system.build.thumbprint=14/AP2A.240805.005/eng.build.20240801:user/test-keys
ro.system.build.tags=test-keys
ro.product.device=oriole
ro.debuggable=0
# end build properties
"""
VENDOR_BUILD_PROP = """\
ro.vendor.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys
ro.vendor.build.tags=dev-keys,test-keys
ro.vendor.build.type=user
ro.bootimage.build.fingerprint=google/oriole/oriole:14/AP2A.240805.005/eng.build.20240801:user/test-keys
"""
PRODUCT_BUILD_PROP = "ro.product.build.fingerprint=google/oriole/oriole:14/AP2A/1:user/test-keys\n"


def role_signer(name: str) -> PrivateKeySigner:
    """A release key for `name`: RSA 2048 with a sha256WithRSA certificate (recovery loads it for OTA)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return certified_signer(name, key, f"sealgate release test {name}")[0]


@dataclass
class BuildInputs:
    """Input APKs signed with test keys, the test keys, and the release signers."""

    apks: dict[str, Path]
    test_keys: dict[str, SignerKey]
    signers: dict[str, PrivateKeySigner]


def make_inputs(vectors: Path, work: Path) -> BuildInputs:
    base = unsigned_apk(vectors, work)
    test_keys = {label: make_key(work / "keys", "rsa-2048", f"_{label}") for _, label in APKS.values()}
    apks = {}
    for path, (_, label) in APKS.items():
        out = work / "apks" / f"{label}.apk"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            apksigner_sign(base, out, [test_keys[label]])
        apks[path] = out
    signers = {role: role_signer(role) for role in RELEASE_ROLES}
    return BuildInputs(apks, test_keys, signers)


def avb_release_inputs(vectors: Path, base: Path, work: Path) -> BuildInputs:
    """make_inputs plus an `avb` role, for the tests that rebuild images and re-sign vbmeta; `base` is the session's
    temporary root, under which the JVM's class-data archive is shared between xdist workers."""
    share_jvm_classes((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jvm", vectors)
    made = make_inputs(vectors, work)
    made.signers["avb"] = role_signer("avb")
    return made


def release_keys(inputs: BuildInputs) -> KeyMap:
    """Every role's signer, with the Wi-Fi resources certificate mapped to networkstack (as `--key-map` would)."""
    return KeyMap(dict(inputs.signers), {WIFI_CERT: "networkstack"})


def apkcerts_text(apks: Mapping[str, tuple[str, str]]) -> str:
    lines = []
    for path, (cert, _) in apks.items():
        name = path.rsplit("/", 1)[1]
        if cert == "PRESIGNED":
            lines.append(f'name="{name}" certificate="PRESIGNED" private_key=""')
        else:
            lines.append(f'name="{name}" certificate="{cert}.x509.pem" private_key="{cert}.pk8"')
    # A package the build knows but did not install: apkcerts lists it, the package does not hold it.
    lines.append(
        f'name="NotInstalled.apk" certificate="{DEV_KEYS}/platform.x509.pem" private_key="{DEV_KEYS}/platform.pk8"'
    )
    return "\n".join(lines) + "\n"


def otacerts(certificate_pem: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{DEV_KEYS}/testkey.x509.pem", certificate_pem)
    return buffer.getvalue()


def mac_permissions(platform_der: bytes, media_der: bytes) -> str:
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n<policy>\n'
        f'    <signer signature="{platform_der.hex()}" ><seinfo value="platform" /></signer>\n'
        f'    <signer signature="{media_der.hex()}" ><seinfo value="media" /></signer>\n'
        "</policy>\n"
    )


def write_target_files(
    path: Path,
    inputs: BuildInputs,
    *,
    system_prop: str = SYSTEM_BUILD_PROP,
    extra: Mapping[str, bytes] | None = None,
    apkcerts: str | None = None,
    skip: tuple[str, ...] = (),
) -> Path:
    """A small target-files package; `extra` adds entries, `skip` leaves entries out."""
    testkey_pem = inputs.test_keys["testkey"].cert_path.read_bytes()
    entries: dict[str, bytes] = {
        "META/apkcerts.txt": (apkcerts if apkcerts is not None else apkcerts_text(APKS)).encode(),
        "META/misc_info.txt": (
            f"default_system_dev_certificate={DEV_KEYS}/testkey\navb_enable=true\n"
            "avb_system_add_hashtree_footer_args=--prop com.android.build.system.fingerprint="
            "google/oriole/oriole:14/AP2A/1:user/test-keys\nrecovery_api_version=3\n"
        ).encode(),
        "META/otakeys.txt": f"{DEV_KEYS}/testkey.x509.pem\n".encode(),
        "SYSTEM/build.prop": system_prop.encode(),
        "VENDOR/build.prop": VENDOR_BUILD_PROP.encode(),
        "PRODUCT/etc/build.prop": PRODUCT_BUILD_PROP.encode(),
        "SYSTEM/etc/security/otacerts.zip": otacerts(testkey_pem),
        "RECOVERY/RAMDISK/system/etc/security/otacerts.zip": otacerts(testkey_pem),
        "SYSTEM/etc/selinux/plat_mac_permissions.xml": mac_permissions(
            inputs.test_keys["platform"].cert_der, inputs.test_keys["media"].cert_der
        ).encode(),
        "SYSTEM/bin/sh": b"\x7fELF not really a shell",
        "IMAGES/system.img": bytes(range(256)) * 64,
        "IMAGES/boot.img": b"ANDROID!" + bytes(4088),
        "OTA/android-info.txt": b"require board=oriole\nrequire version-bootloader=slider-1.3\n"
        b"require version-baseband=g5123b-1\n",
        "RADIO/bootloader.img": b"bootloader " * 100,
        "RADIO/radio.img": b"radio " * 100,
    }
    for apk_path, file in inputs.apks.items():
        entries[apk_path] = file.read_bytes()
    entries.update(extra or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("SYSTEM/"), b"")
        for name, data in entries.items():
            if name in skip:
                continue
            stored = name.endswith((".apk", ".img", ".zip"))
            archive.writestr(name, data, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    return path
