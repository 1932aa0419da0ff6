"""`sealgate device ota ...`: the simulated A/B device's OS updater (check, download, apply, boot, status).

Exit status: 0 when the step was done or accepted (an update found or none needed, a download finished, a package
applied, a boot that came up), 1 when it was refused or failed (a channel that cannot be read, an interrupted or
corrupted download, a package the device refuses, a new slot that failed to boot), 2 on a usage error or a device
directory that cannot be used; with --json the latter prints {"code": "DEVICE_UNAVAILABLE", "reason": ...}.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from sealgate.cli.options import JSON_OUTPUT
from sealgate.device.download import FetchError
from sealgate.device.ota_rules import DEFAULT_BOOT_TRIES, BuildInfo, OtaState, incremental_of
from sealgate.device.updater import BOOT_TRIES_RANGE, OtaSetup, Updater
from sealgate.errors import DeviceError, FormatError, UsageError
from sealgate.ota.whole_file import load_trusted_keys

EXIT_DONE = 0
EXIT_REFUSED = 1

_DIR = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
_CHANNEL = click.option(
    "--channel",
    metavar="URL_OR_FILE",
    help="The channel file (http://, https://, file:// or a path); default: the one the device was made with.",
)


_INIT_OPTIONS = (
    click.option(
        "--device-name",
        metavar="NAME",
        help="Make an A/B device that takes OS updates: its name (ro.product.device, what pre-device must say). "
        "Needs the --build-*, --spl, --otacerts and --images options too.",
    ),
    click.option("--build-fingerprint", metavar="FP", help="The installed build's fingerprint (ro.build.fingerprint)."),
    click.option(
        "--build-incremental", metavar="INC", help="ro.build.version.incremental (default: from the fingerprint)."
    ),
    click.option(
        "--build-timestamp", type=click.IntRange(min=1), metavar="N", help="ro.build.date.utc of the installed build."
    ),
    click.option("--spl", metavar="YYYY-MM-DD", help="The installed build's security patch level."),
    click.option(
        "--otacerts",
        multiple=True,
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        metavar="FILE",
        help="A certificate the system image trusts for OTA packages (PEM, or an otacerts.zip). Repeatable.",
    ),
    click.option(
        "--images",
        type=click.Path(file_okay=False, exists=True, path_type=Path),
        metavar="DIR",
        help="The factory images (<partition>.img) flashed into slot a.",
    ),
    click.option(
        "--boot-tries",
        type=click.IntRange(*BOOT_TRIES_RANGE),
        default=DEFAULT_BOOT_TRIES,
        show_default=True,
        help="Boot attempts an updated slot gets before the bootloader falls back to the old slot.",
    ),
    click.option(
        "--rollback-index",
        type=click.IntRange(min=0),
        metavar="N",
        help="The AVB rollback index the device stores (default: the factory vbmeta's, else 0).",
    ),
    click.option("--channel", "ota_channel", metavar="URL_OR_FILE", help="The OTA channel the device follows."),
)
_REQUIRED = ("build_fingerprint", "build_timestamp", "spl", "otacerts", "images")


def ota_init_options(command: Callable[..., int]) -> Callable[..., int]:
    """The `device init` options that make the device an A/B device with OTA state."""
    for option in reversed(_INIT_OPTIONS):
        command = option(command)
    return command


def ota_setup(**options: Any) -> OtaSetup | None:
    """The OtaSetup the init options describe; None when they ask for none (the device stays apps-only)."""
    name = options.get("device_name")
    given = [key for key in (*_REQUIRED, "build_incremental", "rollback_index", "ota_channel") if options.get(key)]
    if name is None:
        if given:
            flags = ", ".join("--" + key.replace("ota_", "").replace("_", "-") for key in given)
            raise UsageError(f"{flags} describe an A/B device's OS; give --device-name too")
        return None
    missing = [key for key in _REQUIRED if not options.get(key)]
    if missing:
        raise UsageError("an A/B device needs " + ", ".join("--" + key.replace("_", "-") for key in missing) + " too")
    fingerprint = str(options["build_fingerprint"])
    certificates = tuple(key.certificate for key in load_trusted_keys(options["otacerts"]))
    build = BuildInfo(
        fingerprint=fingerprint,
        incremental=options.get("build_incremental") or incremental_of(fingerprint),
        timestamp=int(options["build_timestamp"]),
        security_patch_level=str(options["spl"]),
        device=str(name),
    )
    return OtaSetup(
        device_name=str(name),
        build=build,
        images=options["images"],
        otacerts=certificates,
        boot_tries=int(options.get("boot_tries") or DEFAULT_BOOT_TRIES),
        rollback_index=options.get("rollback_index"),
        channel=options.get("ota_channel"),
    )


@click.group("ota")
def ota() -> None:
    """The device's OS updates: A/B slots, signed OTA packages, rollback on a failed boot."""


def _open(directory: Path, as_json: bool) -> Updater:
    try:
        return Updater.open(directory)
    except DeviceError as exc:
        raise _unavailable(exc, as_json) from exc


def _unavailable(exc: Exception, as_json: bool) -> UsageError:
    if as_json:
        click.echo(json.dumps({"code": "DEVICE_UNAVAILABLE", "reason": str(exc)}, ensure_ascii=False))
    return UsageError(str(exc))


def _echo(document: Mapping[str, object], text: str, as_json: bool) -> None:
    click.echo(json.dumps(document, ensure_ascii=False) if as_json else text)


def _failed(code: str, reason: str, as_json: bool, **extra: object) -> int:
    _echo({"code": code, "reason": reason, **extra}, f"FAILED [{code}]: {reason}", as_json)
    return EXIT_REFUSED


@ota.command("status")
@_DIR
@JSON_OUTPUT
def status_command(directory: Path, as_json: bool) -> int:
    """The slots, the installed build, the slot that boots next and the stored rollback index."""
    with _open(directory, as_json) as updater:
        try:
            state = updater.status()
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    _echo(state.to_json(), _describe(state), as_json)
    return EXIT_DONE


def _describe(state: OtaState) -> str:
    lines = [f"{state.device_name}: running slot {state.current_slot}, booting slot {state.active_slot} next, "
             f"rollback index {state.rollback_index}"]  # fmt: skip
    for slot in state.slots:
        build = slot.build.fingerprint if slot.build is not None else "(empty)"
        lines.append(f"  slot {slot.name}: {slot.status.value:<10} {build}")
    return "\n".join(lines)


@ota.command("check")
@_DIR
@_CHANNEL
@JSON_OUTPUT
def check_command(directory: Path, channel: str | None, as_json: bool) -> int:
    """What the channel offers: the incremental from the installed build, else the full OTA, or up to date."""
    with _open(directory, as_json) as updater:
        try:
            installed = updater.status().installed
            offer = updater.check(channel)
        except (FetchError, FormatError) as exc:
            return _failed("CHANNEL_UNAVAILABLE", str(exc), as_json)
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    document = {"installed": installed.to_json(), **offer.to_json()}
    _echo(document, f"{offer.code}: {offer.reason}" + (f"\n  {offer.file.url}" if offer.file else ""), as_json)
    return EXIT_REFUSED if offer.code == "NO_BUILD_FOR_DEVICE" else EXIT_DONE


@ota.command("download")
@_DIR
@_CHANNEL
@JSON_OUTPUT
def download_command(directory: Path, channel: str | None, as_json: bool) -> int:
    """Fetch the offered OTA into the device (resuming a partial download); size and SHA-256 as the channel says."""
    with _open(directory, as_json) as updater:
        try:
            offer, result = updater.download(channel)
        except (FetchError, FormatError) as exc:
            return _failed("CHANNEL_UNAVAILABLE", str(exc), as_json)
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    document = {"offer": offer.to_json(), "download": result.to_json() if result is not None else None}
    if result is None:
        _echo(document, f"nothing to download: {offer.reason}", as_json)
        return EXIT_REFUSED if offer.code == "NO_BUILD_FOR_DEVICE" else EXIT_DONE
    text = f"{'downloaded' if result.ok else 'FAILED'} [{result.code}]: {result.reason}"
    _echo(document, text, as_json)
    return EXIT_DONE if result.ok else EXIT_REFUSED


@ota.command("apply")
@_DIR
@click.argument("package", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@JSON_OUTPUT
def apply_command(directory: Path, package: Path | None, as_json: bool) -> int:
    """Verify PACKAGE (default: the last download) and write it to the inactive slot, which then boots next."""
    with _open(directory, as_json) as updater:
        try:
            decision = updater.apply(package)
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    verdict = f"accepted [{decision.code}]" if decision.accepted else f"REFUSED [{decision.code}]"
    _echo(decision.to_json(), f"{verdict}: {decision.reason}", as_json)
    return EXIT_DONE if decision.accepted else EXIT_REFUSED


@ota.command("boot")
@_DIR
@click.option("--fail", is_flag=True, help="Test hook: the newly updated slot fails to boot (costs one try).")
@JSON_OUTPUT
def boot_command(directory: Path, fail: bool, as_json: bool) -> int:
    """Reboot: an updated slot is tried; success marks it and raises the rollback index, failure rolls back."""
    with _open(directory, as_json) as updater:
        try:
            outcome = updater.boot(fail=fail)
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    _echo(outcome.to_json(), f"{outcome.code}: {outcome.reason}", as_json)
    return EXIT_DONE if outcome.code in ("BOOTED", "BOOT_SUCCESSFUL") else EXIT_REFUSED
