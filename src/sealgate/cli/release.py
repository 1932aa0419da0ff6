"""`sealgate release ...`: OS releases (target files, factory images, verified boot, OTA channels).

Only the group and one line per subcommand module: each subcommand lives in its own cli module.
"""

from __future__ import annotations

import click


@click.group()
def release() -> None:
    """OS releases: sign target files, build factory images, publish OTA channels."""


from sealgate.cli.release_publish import publish_command  # noqa: E402

release.add_command(publish_command, "publish")

__all__ = ["release"]
