"""`sealgate release ...`: OS releases. The group only; each subcommand module registers its commands on it."""

from __future__ import annotations

import click


@click.group()
def release() -> None:
    """OS releases: sign target-files packages, build factory images, verified-boot keys."""


from sealgate.cli import release_sign  # noqa: E402, F401 - sign-target-files, factory-image
