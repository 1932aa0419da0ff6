"""`sealgate release publish PACKAGE... WEBROOT --device NAME --channel stable|beta --certs CERT...`.

Checks the signed OTA packages (files, or directories of *.zip) and publishes them as the device's channel under
WEBROOT (layout and checks in sealgate.release.channels). Exit status 0 published, 1 refused (every reason is
printed; the web root is unchanged), 2 usage error. A rollback, when allowed with --allow-rollback, is announced on
standard error whatever the output format.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealgate.cli.options import JSON_OUTPUT

EXIT_OK = 0
EXIT_REFUSED = 1


@click.command("publish")
@click.argument("packages", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.argument("webroot", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--device", required=True, help="The device the channel is for (ro.product.device, the packages' pre-device)."
)
@click.option("--channel", required=True, type=click.Choice(["stable", "beta"]), help="The channel to publish.")
@click.option(
    "--certs",
    "certs",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The OTA certificate (PEM) or otacerts.zip packages must verify against; repeatable.",
)
@click.option("--base-url", help="Absolute URL WEBROOT is served at; also writes LineageOS Updater's list.")
@click.option("--android-version", help="The Android version of the newest build (recorded in the channel).")
@click.option("--lineage-version", help="ro.lineage.build.version of the newest build (default: --android-version).")
@click.option("--romtype", help="ro.lineage.releasetype for the Lineage list (default: the channel name).")
@click.option(
    "--allow-rollback", is_flag=True, help="Publish a build older than the channel's current one, on purpose."
)
@JSON_OUTPUT
def publish_command(
    packages: tuple[Path, ...],
    webroot: Path,
    device: str,
    channel: str,
    certs: tuple[Path, ...],
    base_url: str | None,
    android_version: str | None,
    lineage_version: str | None,
    romtype: str | None,
    allow_rollback: bool,
    as_json: bool,
) -> int:
    """Publish signed OTA PACKAGES (files or directories) as DEVICE's CHANNEL under WEBROOT."""
    from sealgate.ota.whole_file import load_trusted_keys
    from sealgate.release.channels import PublishRefused, publish_channel

    keys = load_trusted_keys(certs)
    try:
        report = publish_channel(
            list(packages), webroot, device=device, channel=channel, trusted_keys=keys, base_url=base_url,
            android_version=android_version, lineage_version=lineage_version, romtype=romtype,
            allow_rollback=allow_rollback,
        )  # fmt: skip
    except PublishRefused as refused:
        if as_json:
            errors = [issue.to_json() for issue in refused.issues]
            click.echo(json.dumps({"published": False, "device": device, "channel": channel, "errors": errors}))
        else:
            click.echo(f"not published: {len(refused.issues)} problem(s); {webroot} is unchanged", err=True)
            for issue in refused.issues:
                click.echo(f"  error {issue.code}: {issue.message}", err=True)
        return EXIT_REFUSED
    if report.rollback:
        click.echo(
            f"WARNING: ROLLBACK of {device} {channel} to {report.newest.fingerprint}; withdrawn from the channel: "
            f"{', '.join(report.withdrawn) or 'none'}",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
        return EXIT_OK
    click.echo(f"published {device} {channel}: {report.newest.fingerprint} ({report.channel_file})")
    click.echo(f"  {len(report.packages)} package(s), {report.copied} copied ({report.copied_bytes} bytes)")
    if report.lineage_file is not None:
        click.echo(f"  LineageOS Updater list: {report.lineage_file}")
    return EXIT_OK


__all__ = ["publish_command"]
