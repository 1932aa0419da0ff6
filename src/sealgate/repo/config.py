"""A repository's config.yml: what it is called, where it is served, how it archives, which key signs its index.

The keys are fdroidserver's (repo_url, repo_name, repo_description, repo_icon, archive_older, archive_url,
archive_name, archive_description, mirrors), so an existing F-Droid repository's config.yml reads as it is; keys
fdroidserver has and sealgate does not use are reported as warnings, not errors, for the same reason. sealgate's
own keys say where the index signing key lives (`signing`: a keystore directory and role, or a PKCS#11 URI) and
which certificate the published index must be signed by (`repo_certificate`, the repo key's certificate from the
custodian's public bundle): the passphrase is never in the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sealgate.errors import RepoError
from sealgate.repo.yamlfile import YamlDocument, load_yaml

if TYPE_CHECKING:
    from sealgate.apk.certificate import Certificate

CONFIG_FILE = "config.yml"
#: fdroidserver 2.4.5's default when config.yml is silent: no archive, every version stays in repo/.
#: (`repo init` writes 3, the value of fdroidserver's example configuration.)
DEFAULT_ARCHIVE_OLDER = 0

#: fdroidserver configuration keys that sealgate accepts and ignores (build servers, deploy targets, tools).
_IGNORED_FDROID_KEYS = frozenset(
    {
        "sdk_path", "java_paths", "ant", "mvn3", "gradle", "gradle_version_dir", "build_server_always",
        "keystore", "keystorepass", "keypass", "repo_keyalias", "keydname", "keystore_type", "smartcardoptions",
        "make_current_version_link", "current_version_name_source", "update_stats", "stats_ignore",
        "serverwebroot", "servergitmirrors", "awsbucket", "awsaccesskeyid", "awssecretkey", "androidobservatory",
        "virustotal_apikey", "char_limits", "repo_maxage", "archive_icon", "install_list", "uninstall_list",
        "apksigner", "lint_licenses", "allow_disabled_algorithms", "scan_binary", "deploy_process_logs",
        "sync_from_local_copy_dir", "local_copy_dir", "git_mirror_size_limit", "cachedir", "repo_web_base_url",
        "binary_transparency_remote", "identity_file", "nonstandardwebroot", "ipfs_cid", "mirrors_from",
    }
)  # fmt: skip
_KNOWN_KEYS = frozenset(
    {
        "repo_url", "repo_name", "repo_description", "repo_icon", "archive_older", "archive_url", "archive_name",
        "archive_description", "mirrors", "repo_certificate", "signing",
    }
)  # fmt: skip


@dataclass(frozen=True)
class SigningConfig:
    """Where the index signing key is: a keystore role, or a token key. Neither means: write a signing bundle."""

    keystore: Path | None = None
    key: str = "repo"
    pkcs11: str | None = None


@dataclass(frozen=True)
class RepoConfig:
    """A repository's settings; `root` is the directory holding config.yml, repo/, archive/ and metadata/."""

    root: Path
    url: str
    name: str
    description: str
    icon: str = "icon.png"
    archive_older: int = DEFAULT_ARCHIVE_OLDER
    archive_url: str = ""
    archive_name: str = ""
    archive_description: str = ""
    mirrors: tuple[str, ...] = ()
    repo_certificate: Path | None = None
    signing: SigningConfig = field(default_factory=SigningConfig)
    warnings: tuple[str, ...] = ()

    @property
    def repo_dir(self) -> Path:
        return self.root / "repo"

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def metadata_dir(self) -> Path:
        return self.root / "metadata"

    @property
    def state_dir(self) -> Path:
        """sealgate's own state (the scan cache, earlier indexes for diffs); never published."""
        return self.root / ".sealgate"

    def certificate(self) -> Certificate | None:
        """The repo key's certificate the index must be signed with, when config.yml names one."""
        if self.repo_certificate is None:
            return None
        return read_certificate(self.repo_certificate)

    def to_yaml(self) -> str:
        """config.yml for `repo init`: fdroidserver's keys first, then sealgate's, with comments."""
        lines = [
            "# sealgate / F-Droid repository configuration (fdroidserver's config.yml keys).",
            f"repo_url: {_quote(self.url)}",
            f"repo_name: {_quote(self.name)}",
            f"repo_description: {_quote(self.description)}",
            f"repo_icon: {_quote(self.icon)}",
            "# Versions of each app kept in repo/; older ones move to archive/ (with its own index).",
            f"archive_older: {self.archive_older}",
            f"archive_url: {_quote(self.archive_url)}",
            f"archive_name: {_quote(self.archive_name)}",
            f"archive_description: {_quote(self.archive_description)}",
        ]
        lines.append("mirrors:" + ("" if self.mirrors else " []"))
        lines += [f"  - {_quote(mirror)}" for mirror in self.mirrors]
        lines.append(
            "# The repo key's certificate (from the custodian's public bundle): the index must be signed by it."
        )
        if self.repo_certificate is not None:
            lines.append(f"repo_certificate: {_quote(_relative(self.repo_certificate, self.root))}")
        lines.append("# Where the index signing key is; without it `repo update` writes a signing bundle instead.")
        signing = self.signing
        if signing.pkcs11 is not None:
            lines += ["signing:", f"  pkcs11: {_quote(signing.pkcs11)}"]
        elif signing.keystore is not None:
            keystore = _relative(signing.keystore, self.root)
            lines += ["signing:", f"  keystore: {_quote(keystore)}", f"  key: {_quote(signing.key)}"]
        return "\n".join(lines) + "\n"


def load_config(root: str | os.PathLike[str]) -> RepoConfig:
    """Read DIR/config.yml; MetadataError with the line for a bad value, RepoError when it is not a repository."""
    base = Path(root)
    path = base / CONFIG_FILE
    if not path.is_file():
        raise RepoError(f"{base} is not a repository: {CONFIG_FILE} is missing (create one with `sealgate repo init`)")
    document = load_yaml(path)
    data = document.data
    if not isinstance(data, dict):
        raise document.error("the configuration must be a mapping of keys to values")
    warnings = [
        f"{path}:{document.line(key)}: {key!r} is not used by sealgate"
        for key in data
        if key not in _KNOWN_KEYS and key not in _IGNORED_FDROID_KEYS
    ]
    url = _text(document, "repo_url", required=True)
    _check_url(document, "repo_url", url)
    mirrors = _text_list(document, "mirrors")
    for index, mirror in enumerate(mirrors):
        _check_url(document, ("mirrors", index), mirror)
    archive_older = data.get("archive_older", DEFAULT_ARCHIVE_OLDER)
    if isinstance(archive_older, bool) or not isinstance(archive_older, int) or archive_older < 0:
        raise document.error(
            "archive_older must be a whole number of versions (0 keeps every version)", "archive_older"
        )
    certificate = data.get("repo_certificate")
    if certificate is not None and not isinstance(certificate, str):
        raise document.error("repo_certificate must be the path of a PEM or DER certificate", "repo_certificate")
    return RepoConfig(
        root=base,
        url=url.rstrip("/"),
        name=_text(document, "repo_name", required=True),
        description=_text(document, "repo_description"),
        icon=_text(document, "repo_icon") or "icon.png",
        archive_older=archive_older,
        archive_url=_text(document, "archive_url").rstrip("/"),
        archive_name=_text(document, "archive_name"),
        archive_description=_text(document, "archive_description"),
        mirrors=tuple(mirror.rstrip("/") for mirror in mirrors),
        repo_certificate=base / certificate if certificate else None,
        signing=_signing(document, base),
        warnings=tuple(warnings),
    )


def read_certificate(path: Path) -> Certificate:
    """A certificate file, PEM or DER."""
    from sealgate.apk.certificate import Certificate, CertificateError

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RepoError(f"cannot read the repo certificate {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        from asn1crypto import pem

        try:
            _, _, data = pem.unarmor(data)
        except ValueError as exc:
            raise RepoError(f"{path} is not a PEM certificate: {exc}") from None
    try:
        return Certificate.from_der(data)
    except CertificateError as exc:
        raise RepoError(f"{path} is not an X.509 certificate: {exc}") from None


def _signing(document: YamlDocument, base: Path) -> SigningConfig:
    value = document.data.get("signing")
    if value is None:
        return SigningConfig()
    if not isinstance(value, dict):
        raise document.error("signing must be a mapping: keystore and key, or pkcs11", "signing")
    unknown = set(value) - {"keystore", "key", "pkcs11"}
    if unknown:
        name = sorted(unknown)[0]
        raise document.error(f"signing.{name} is not a setting (keystore, key or pkcs11)", "signing", name)
    keystore, key, pkcs11 = value.get("keystore"), value.get("key", "repo"), value.get("pkcs11")
    for name, item in (("keystore", keystore), ("key", key), ("pkcs11", pkcs11)):
        if item is not None and not isinstance(item, str):
            raise document.error(f"signing.{name} must be text", "signing", name)
    if keystore is not None and pkcs11 is not None:
        raise document.error("signing names both a keystore and a PKCS#11 key; choose one", "signing")
    return SigningConfig(keystore=base / keystore if keystore else None, key=key, pkcs11=pkcs11)


def _text(document: YamlDocument, key: str, *, required: bool = False) -> str:
    value = document.text(key)
    if value is None and required:
        raise document.error(f"{key} is required")
    return value or ""


def _text_list(document: YamlDocument, key: str) -> list[str]:
    value = document.data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise document.error(f"{key} must be a list of addresses", key)
    return list(value)


def _check_url(document: YamlDocument, where: str | tuple[str, int], url: str) -> None:
    keys = (where,) if isinstance(where, str) else where
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise document.error(f"{url!r} is not an http(s) address", *keys)


def _quote(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def config_fields(config: RepoConfig) -> dict[str, Any]:
    """The settings as JSON (for `--json` output and the summary)."""
    return {
        "root": str(config.root),
        "url": config.url,
        "name": config.name,
        "archive_older": config.archive_older,
        "mirrors": list(config.mirrors),
        "signing": "pkcs11" if config.signing.pkcs11 else ("keystore" if config.signing.keystore else "bundle"),
    }
