"""`sealgate release ...`: OS releases (verified boot, target-files, factory images, OTA channels).

Only the group lives here; each part's commands live in their own module, which registers them on this group when
imported. Add one import line per module below.
"""

from __future__ import annotations

import click


@click.group()
def release() -> None:
    """OS releases: verified-boot keys and images, target-files, factory images, OTA channels."""


from sealgate.cli import release_avb  # noqa: E402, F401  (avb-info, avb-sign, avb-verify)
