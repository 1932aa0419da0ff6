"""`sealgate ota package PAYLOAD OUT ...`: an unsigned A/B OTA package, to be signed with `sealgate ota sign`.

The post-build facts come from options, or from the build's build.prop (`--build-prop`), options overriding it.
Exit status 0 when the package was written, 1 when the inputs are malformed (a payload that is not one, properties
that do not describe it), 2 on a usage error (a missing or invalid fact, a bad --extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealgate.cli.options import JSON_OUTPUT
from sealgate.errors import UsageError

EXIT_OK = 0
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("package")
@click.argument("payload", type=_FILE)
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--properties",
    "properties",
    required=True,
    type=_FILE,
    help="payload_properties.txt for PAYLOAD (FILE_HASH, FILE_SIZE, METADATA_HASH, METADATA_SIZE).",
)
@click.option("--build-prop", type=_FILE, help="The target build's build.prop: the post-build facts, device.")
@click.option("--device", help="ro.product.device of the devices the package is for.")
@click.option("--post-build", help="The target build's fingerprint (ro.build.fingerprint).")
@click.option("--post-timestamp", type=click.IntRange(min=0), help="The target build's ro.build.date.utc.")
@click.option("--post-spl", help="The target build's security patch level, YYYY-MM-DD.")
@click.option("--post-sdk", help="The target build's ro.build.version.sdk.")
@click.option("--post-incremental", help="The target build's ro.build.version.incremental.")
@click.option(
    "--pre-build",
    "pre_builds",
    multiple=True,
    help="Fingerprint of a build the (incremental) package applies to; repeatable.",
)
@click.option("--pre-incremental", help="The source build's ro.build.version.incremental.")
@click.option(
    "--pre-build-prop",
    type=_FILE,
    help="The source build's build.prop, for an incremental: its fingerprint, incremental and timestamp.",
)
@click.option("--downgrade", is_flag=True, help="The package goes back in time; it then also wipes the device.")
@click.option("--wipe", is_flag=True, help="Wipe user data after the update (POWERWASH=1).")
@click.option("--spl-downgrade", is_flag=True, help="The package lowers the security patch level.")
@click.option(
    "--extra",
    "extras",
    multiple=True,
    metavar="NAME=FILE",
    help="Another STORED entry (care_map.pb, apex_info.pb, ...); repeatable.",
)
@JSON_OUTPUT
def package_command(
    payload: Path,
    out: Path,
    properties: Path,
    build_prop: Path | None,
    device: str | None,
    post_build: str | None,
    post_timestamp: int | None,
    post_spl: str | None,
    post_sdk: str | None,
    post_incremental: str | None,
    pre_builds: tuple[str, ...],
    pre_incremental: str | None,
    pre_build_prop: Path | None,
    downgrade: bool,
    wipe: bool,
    spl_downgrade: bool,
    extras: tuple[str, ...],
    as_json: bool,
) -> int:
    """Write an unsigned A/B OTA package from PAYLOAD (payload.bin) to OUT; sign it with `sealgate ota sign`."""
    from sealgate.ota.build_prop import build_facts, read_build_prop
    from sealgate.ota.metadata import ab_metadata
    from sealgate.ota.package import build_ab_package

    if build_prop is not None:
        facts = build_facts(read_build_prop(build_prop), where=str(build_prop))
        device = device or facts.device
        post_build = post_build or facts.fingerprint
        post_timestamp = post_timestamp if post_timestamp is not None else facts.timestamp
        post_spl = post_spl or facts.security_patch_level
        post_sdk = post_sdk or facts.sdk_level
        post_incremental = post_incremental or facts.incremental
    pre_timestamp = None
    if pre_build_prop is not None:
        source = build_facts(read_build_prop(pre_build_prop), where=str(pre_build_prop))
        if source.fingerprint is None:
            raise UsageError(f"{pre_build_prop} defines no ro.build.fingerprint (nor the properties it is made of)")
        if device is not None and source.device is not None and source.device != device:
            raise UsageError(f"{pre_build_prop} is a build for {source.device}, not {device}")
        pre_builds = (*pre_builds, source.fingerprint) if source.fingerprint not in pre_builds else pre_builds
        pre_incremental = pre_incremental or source.incremental
        pre_timestamp = source.timestamp
    missing = [
        option
        for option, value in (
            ("--device", device),
            ("--post-build", post_build),
            ("--post-timestamp", post_timestamp),
            ("--post-spl", post_spl),
        )
        if value is None
    ]
    if missing:
        raise UsageError(f"the package needs {', '.join(missing)} (or a --build-prop that defines them)")
    assert device is not None and post_build is not None and post_timestamp is not None and post_spl is not None
    metadata = ab_metadata(
        device=device,
        post_build=post_build,
        post_timestamp=post_timestamp,
        post_security_patch_level=post_spl,
        post_sdk_level=post_sdk,
        post_build_incremental=post_incremental,
        pre_build=list(pre_builds),
        pre_build_incremental=pre_incremental,
        downgrade=downgrade,
        wipe=wipe,
        spl_downgrade=spl_downgrade,
        pre_timestamp=pre_timestamp,
    )
    built = build_ab_package(
        out, payload=payload, payload_properties=properties, metadata=metadata, extra_entries=_extras(extras)
    )
    if as_json:
        click.echo(json.dumps(built.to_json(), ensure_ascii=False))
        return EXIT_OK
    kind = "incremental" if metadata.is_incremental else "full"
    click.echo(f"wrote {out}: unsigned {kind} A/B package for {device}, {len(built.entries)} entries")
    for entry in built.entries:
        click.echo(f"  {entry.name} at {entry.offset}, {entry.size} bytes")
    click.echo(f"sign it with: sealgate ota sign {out} SIGNED.zip --keystore KEYS")
    return EXIT_OK


def _extras(values: tuple[str, ...]) -> dict[str, Path]:
    result: dict[str, Path] = {}
    for value in values:
        name, separator, file = value.partition("=")
        if not separator or not name or not file:
            raise UsageError(f"--extra takes NAME=FILE, not {value!r}")
        if name in result:
            raise UsageError(f"--extra names {name!r} twice")
        path = Path(file)
        if not path.is_file():
            raise UsageError(f"--extra {name}: {file} is not a file")
        result[name] = path
    return result
