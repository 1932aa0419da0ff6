"""META/apkcerts.txt and META/apexkeys.txt of a target-files package, and which key role signs each package.

The build writes one apkcerts.txt line per APK it knows (build/make/core/Makefile, the apkcerts-list rule):

    name="Settings.apk" certificate="build/make/target/product/security/platform.x509.pem"
        private_key="build/make/target/product/security/platform.pk8"

(one line in the file), optionally followed by compressed="gz" and partition="system". The certificate and
private key name one key (the same path with .x509.pem and .pk8), or the certificate says PRESIGNED / EXTERNAL
and the private key is empty: such an APK is shipped exactly as it came. This follows releasetools'
common.ReadApkCerts, except that a line we cannot read is refused rather than skipped: a skipped line would only
surface later as an APK without a key.

A certificate name becomes a key role the way sign_target_files_apks' -d and -k options map it: the build's test
keys in the default dev-key directory (default_system_dev_certificate's directory in misc_info.txt, else
build/make/target/product/security) map to the roles of the same name, testkey and devkey to releasekey, and
`certificate_roles` (the --key-map option, like -k) maps any other certificate name to a role.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sealgate.errors import ReleaseError
from sealgate.signing import Signer

#: apkcerts values meaning "do not re-sign" (releasetools' SPECIAL_CERT_STRINGS).
SPECIAL_CERTIFICATES = ("PRESIGNED", "EXTERNAL")
CERTIFICATE_SUFFIX = ".x509.pem"
PRIVATE_KEY_SUFFIX = ".pk8"
DEFAULT_DEV_KEY_DIRECTORY = "build/make/target/product/security"
#: Where older trees (before build/make) kept the test keys; their target-files name these paths.
LEGACY_DEV_KEY_DIRECTORY = "build/target/product/security"
#: The test keys of AOSP's dev-key directory and the release role each one stands for.
DEV_KEY_ROLES = {
    "testkey": "releasekey",
    "devkey": "releasekey",
    "platform": "platform",
    "shared": "shared",
    "media": "media",
    "networkstack": "networkstack",
    "sdk_sandbox": "sdk_sandbox",
    "bluetooth": "bluetooth",
    "nfc": "nfc",
}

_APKCERTS_LINE = re.compile(
    r'^name="(?P<name>[^"]*)"\s+certificate="(?P<cert>[^"]*)"\s+private_key="(?P<key>[^"]*)"'
    r'(?:\s+compressed="(?P<compressed>[^"]*)")?(?:\s+partition="(?P<partition>[^"]*)")?$'
)
_APEXKEYS_FIELD = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class ApkCert:
    """One apkcerts.txt line: the package file name and the key it is signed with."""

    name: str
    #: The key's name without its suffix (".../platform"), or PRESIGNED / EXTERNAL.
    certificate: str
    compressed: str | None = None
    partition: str | None = None

    @property
    def presigned(self) -> bool:
        return self.certificate in SPECIAL_CERTIFICATES


def parse_apkcerts(text: str, where: str = "META/apkcerts.txt") -> dict[str, ApkCert]:
    """Every package of apkcerts.txt by file name; ReleaseError names the first line that cannot be read."""
    result: dict[str, ApkCert] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _APKCERTS_LINE.match(line)
        if match is None:
            raise ReleaseError(f"{where}:{number}: not an apkcerts line (name=, certificate=, private_key=): {line}")
        name, cert, key = match["name"], match["cert"], match["key"]
        if cert in SPECIAL_CERTIFICATES and not key:
            certificate = cert
        elif (
            cert.endswith(CERTIFICATE_SUFFIX)
            and key.endswith(PRIVATE_KEY_SUFFIX)
            and cert[: -len(CERTIFICATE_SUFFIX)] == key[: -len(PRIVATE_KEY_SUFFIX)]
        ):
            certificate = cert[: -len(CERTIFICATE_SUFFIX)]
        else:
            raise ReleaseError(
                f"{where}:{number}: the certificate and private key of {name} do not name one key ({cert}, {key})"
            )
        if name in result and result[name].certificate != certificate:
            raise ReleaseError(f"{where}:{number}: {name} is listed twice with different keys")
        result[name] = ApkCert(name, certificate, match["compressed"] or None, match["partition"] or None)
    return result


def compressed_extension(certs: Mapping[str, ApkCert], installed: set[str]) -> str | None:
    """The one extension (".gz") of the compressed APKs that are installed, as ReadApkCerts finds it."""
    found = {
        cert.compressed for cert in certs.values() if cert.compressed and f"{cert.name}.{cert.compressed}" in installed
    }
    if len(found) > 1:
        raise ReleaseError(f"apkcerts.txt uses several compressed extensions ({', '.join(sorted(found))})")
    return f".{found.pop()}" if found else None


@dataclass(frozen=True)
class ApexKey:
    """One apexkeys.txt line; only whether the container and payload are PRESIGNED matters here."""

    name: str
    container_certificate: str
    payload_private_key: str

    @property
    def presigned(self) -> bool:
        return self.container_certificate in SPECIAL_CERTIFICATES and self.payload_private_key in SPECIAL_CERTIFICATES


def parse_apexkeys(text: str) -> dict[str, ApexKey]:
    result: dict[str, ApexKey] = {}
    for raw in text.split("\n"):
        fields = dict(_APEXKEYS_FIELD.findall(raw))
        if "name" in fields:
            result[fields["name"]] = ApexKey(
                fields["name"], fields.get("container_certificate", ""), fields.get("private_key", "")
            )
    return result


@dataclass(frozen=True)
class KeyMap:
    """The signers of a release by role ("releasekey", "platform", ..., "ota", "avb"), and how certificate names
    of the build map to roles.

    `certificate_roles` maps an apkcerts certificate name (with or without .x509.pem) to a role: the --key-map
    option, like sign_target_files_apks' -k. It takes precedence over the dev-key defaults.
    """

    signers: Mapping[str, Signer]
    certificate_roles: Mapping[str, str] = field(default_factory=dict)

    def role_of(self, certificate: str, dev_key_directory: str = DEFAULT_DEV_KEY_DIRECTORY) -> str | None:
        """The role that signs packages built with `certificate`, or None when nothing maps it."""
        for name in (certificate, certificate + CERTIFICATE_SUFFIX):
            if name in self.certificate_roles:
                return self.certificate_roles[name]
        directory, _, base = certificate.rpartition("/")
        if directory in {dev_key_directory, DEFAULT_DEV_KEY_DIRECTORY, LEGACY_DEV_KEY_DIRECTORY}:
            return DEV_KEY_ROLES.get(base)
        return None

    def signer(self, role: str) -> Signer | None:
        return self.signers.get(role)
