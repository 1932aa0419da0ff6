"""`repo init`: a new repository directory with its config.yml and folders.

The repo key's certificate is copied in from the custodian's public bundle (`keys export-public`, which holds
repo.x509.pem), so the online machine knows which key must sign the index without holding that key; a local
keystore (a repository operator's own key) or a token can instead be named for direct signing.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from sealgate.durable import replace_file
from sealgate.errors import RepoError, UsageError
from sealgate.repo.config import CONFIG_FILE, RepoConfig, SigningConfig, load_config, read_certificate

REPO_CERTIFICATE = "repo-key.x509.pem"


def init_repository(
    root: str | os.PathLike[str],
    *,
    url: str,
    name: str,
    description: str,
    archive_older: int,
    mirrors: tuple[str, ...] = (),
    certificate: Path | None = None,
    signing: SigningConfig = SigningConfig(),  # noqa: B008 - frozen
) -> RepoConfig:
    """Create the repository at `root` (new or empty directory); RepoError if one is there already."""
    base = Path(root)
    for address in (url, *mirrors):
        parts = urlsplit(address)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise UsageError(f"{address!r} is not an http(s) address")
    if (base / CONFIG_FILE).exists():
        raise RepoError(f"{base} is a repository already ({CONFIG_FILE} exists); nothing was changed")
    if base.exists() and not base.is_dir():
        raise RepoError(f"{base} exists and is not a directory")
    certificate_path: Path | None = None
    if certificate is not None:
        source = certificate / "repo.x509.pem" if certificate.is_dir() else certificate
        read_certificate(source)  # refuse anything that is not a certificate before writing
        certificate_path = base / REPO_CERTIFICATE
    config = RepoConfig(
        root=base,
        url=url.rstrip("/"),
        name=name,
        description=description,
        archive_older=archive_older,
        mirrors=mirrors,
        repo_certificate=certificate_path,
        signing=replace(signing, keystore=Path(os.path.abspath(signing.keystore)) if signing.keystore else None),
    )
    try:
        for folder in ("repo", "metadata", "repo/icons", *(("archive",) if archive_older > 0 else ())):
            (base / folder).mkdir(parents=True, exist_ok=True)
        if certificate is not None and certificate_path is not None:
            source = certificate / "repo.x509.pem" if certificate.is_dir() else certificate
            replace_file(certificate_path, source.read_bytes())
        replace_file(base / ".gitignore", b".sealgate/\n")
        replace_file(base / CONFIG_FILE, config.to_yaml().encode("utf-8"))
    except OSError as exc:
        raise RepoError(f"cannot create the repository in {base}: {exc.strerror}") from None
    return load_config(base)
