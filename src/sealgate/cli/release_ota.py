"""`sealgate release ota TARGET_FILES OUT [--source OLD_TARGET_FILES]`: the unsigned A/B OTA package of a build.

The full payload (or, with --source, the delta from that build) of the partitions META/ab_partitions.txt names,
the metadata from the builds' SYSTEM/build.prop, and the package laid out as releasetools lays it out; nothing is
signed. The offline custodian signs payload and package through `bundle create --ota OUT ota` and `sealgate sign`.
Exit status 0 written, 1 the target files cannot make an OTA, 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealgate.cli.options import JSON_OUTPUT

EXIT_OK = 0
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("ota")
@click.argument("target_files", type=_FILE)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", type=_FILE, help="The target files of the build devices run now: an incremental OTA.")
@click.option(
    "--compression",
    type=click.Choice(["xz", "zstd", "none"]),
    default="xz",
    show_default=True,
    help="How the payload's REPLACE operations are compressed.",
)
@click.option("--downgrade", is_flag=True, help="The target build is older than the source; the device is wiped.")
@click.option("--wipe", is_flag=True, help="Wipe user data after the update (POWERWASH=1).")
@JSON_OUTPUT
def ota_command(
    target_files: Path,
    out: Path,
    source: Path | None,
    compression: str,
    downgrade: bool,
    wipe: bool,
    as_json: bool,
) -> int:
    """Write the unsigned A/B OTA package of TARGET_FILES to OUT (incremental from --source's build)."""
    from sealgate.release.ota_from_target_files import build_ota_from_target_files

    report = build_ota_from_target_files(
        target_files, out, source=source, compression=compression, downgrade=downgrade, wipe=wipe
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
        return EXIT_OK
    target = report.target.facts
    click.echo(f"wrote {out}: unsigned {report.kind} A/B OTA for {target.device}, {report.payload_size}-byte payload")
    if report.source is not None:
        click.echo(f"  from  {report.source.facts.fingerprint}")
    click.echo(f"  to    {target.fingerprint}")
    click.echo(f"        timestamp {target.timestamp}, security patch {target.security_patch_level}")
    click.echo(f"  partitions {', '.join(report.target.partitions)}")
    if report.care_map:
        checked = ", ".join(f"{entry.name} ({sum(b - a for a, b in entry.blocks)} blocks)" for entry in report.care_map)
        click.echo(f"  care map   {checked}: read through dm-verity on the first boot")
    click.echo(f"sign it offline: sealgate bundle create REQUEST.zip --ota {out} ota")
    return EXIT_OK


__all__ = ["ota_command"]
