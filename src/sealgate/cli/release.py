"""`sealgate release ...`: OS releases (target files, factory images, verified boot, OTA channels).

Only the group and one line per subcommand module: each subcommand lives in its own cli module.
"""

from __future__ import annotations

import click


@click.group()
def release() -> None:
    """OS releases: sign target files, build factory images, verified boot, publish OTA channels."""


from sealgate.cli.release_avb import avb_info, avb_sign, avb_verify  # noqa: E402
from sealgate.cli.release_ota import ota_command  # noqa: E402
from sealgate.cli.release_publish import publish_command  # noqa: E402
from sealgate.cli.release_sign import factory_image_command, sign_target_files_command  # noqa: E402

release.add_command(publish_command, "publish")
release.add_command(ota_command, "ota")
release.add_command(sign_target_files_command, "sign-target-files")
release.add_command(factory_image_command, "factory-image")
release.add_command(avb_info)
release.add_command(avb_sign)
release.add_command(avb_verify)

__all__ = ["release"]
