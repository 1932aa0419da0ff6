"""`sealgate device ...`: a simulated phone that publishers use in tests and CI to see what devices will do.

`install` and `check` print one verdict and exit 0 when it is accepted, 1 when it is refused (an APK that is not an
APK at all is refused too), 2 on a usage error; with --json the verdict is the object
{"package", "accepted", "action", "reason"} that scripts depend on.

A device directory that cannot be used (missing, damaged, or its database locked by another process for longer
than the wait) is exit 2, never 1, so a script can tell "refused" from "could not ask"; with --json the command also
prints {"package": null, "accepted": false, "action": null, "reason": ..., "error": "DEVICE_UNAVAILABLE"}.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import click

from sealgate.apk.certificate import Certificate
from sealgate.cli.device_ota import ota, ota_init_options, ota_setup
from sealgate.cli.options import JSON_OUTPUT
from sealgate.device import AllowedStore, Decision, Device
from sealgate.device.state import SDK_RANGE
from sealgate.device.stores import signing_certificates_digest
from sealgate.device.updater import Updater
from sealgate.errors import DeviceError, FormatError, SealgateError, UsageError

EXIT_ACCEPTED = 0
EXIT_REFUSED = 1

_DIR = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
_APK = click.argument("apk", type=click.Path(dir_okay=False, exists=True, path_type=Path))
_AS_STORE = click.option(
    "--as-store", metavar="PKG", help="Ask as this installed store (it must be on the allow-list); default: the user."
)
_CONFIRM = click.option("--confirm", is_flag=True, help="The user answers yes to the confirmation screen.")
_DOWNGRADE = click.option(
    "--allow-downgrade",
    is_flag=True,
    help="Request a versionCode downgrade, as `adb install -d` (only without --as-store, for a debuggable app).",
)
_ALLOW_TEST = click.option(
    "--allow-test",
    is_flag=True,
    help='Allow an android:testOnly="true" APK, as `adb install -t` (only without --as-store).',
)


def _install_options(command: Callable[..., int]) -> Callable[..., int]:
    """The arguments `install` and `check` share, so a check asks exactly what an install would."""
    for option in reversed((_DIR, _APK, _AS_STORE, _CONFIRM, _DOWNGRADE, _ALLOW_TEST, JSON_OUTPUT)):
        command = option(command)
    return command


@click.group()
def device() -> None:
    """Simulate a phone's install decisions: signer checks, SDK and ABI rules, the privileged installer."""


device.add_command(ota)


def _open(directory: Path) -> Device:
    try:
        return Device.open(directory)
    except DeviceError as exc:
        raise UsageError(str(exc)) from exc


def _unavailable(exc: DeviceError, as_json: bool) -> UsageError:
    """The device could not answer: exit 2 (see the module docstring), and a JSON line for --json scripts."""
    if as_json:
        document = {"package": None, "accepted": False, "action": None, "reason": str(exc)}
        click.echo(json.dumps({**document, "error": "DEVICE_UNAVAILABLE"}, ensure_ascii=False))
    return UsageError(str(exc))


def _emit(decision: Decision, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(decision.to_json(), ensure_ascii=False))
    else:
        verdict = f"accepted ({decision.action})" if decision.accepted and decision.action else "accepted"
        click.echo(f"{verdict if decision.accepted else 'REFUSED'} [{decision.code}]: {decision.reason}")
    return EXIT_ACCEPTED if decision.accepted else EXIT_REFUSED


@device.command("init")
@_DIR
@click.option(
    "--sdk",
    type=click.IntRange(*SDK_RANGE),
    default=34,
    show_default=True,
    help=f"The device's API level ({SDK_RANGE[0]}..{SDK_RANGE[1]}).",
)
@click.option(
    "--abi", "abis", multiple=True, metavar="ABI", help="A CPU ABI the device runs (repeatable; default arm64-v8a)."
)
@click.option(
    "--store",
    "stores",
    multiple=True,
    metavar="PKG=SHA256[:MODE]",
    help="Allow-list entry of the privileged installer: package name, SHA-256 of its signing certificates, and "
    "mode privileged (default) or user-confirmed. Repeatable.",
)
@click.option(
    "--platform-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The distribution's platform certificate (DER or PEM): only APKs signed by it may claim the platform's "
    "shared users (android.uid.system, ...). Without it the device refuses those shared users to every APK.",
)
@ota_init_options
@JSON_OUTPUT
def init_command(
    directory: Path,
    sdk: int,
    abis: tuple[str, ...],
    stores: tuple[str, ...],
    platform_cert: Path | None,
    as_json: bool,
    **ota_options: object,
) -> int:
    """Make a new device in DIRECTORY (an A/B device that takes OS updates with --device-name and its options)."""
    try:
        entries = tuple(AllowedStore.parse(text) for text in stores)
        platform = _read_certificate(platform_cert) if platform_cert is not None else None
        setup = ota_setup(**ota_options)
        made = Device.init(
            directory, sdk=sdk, abis=abis or ("arm64-v8a",), stores=entries, platform=platform, ota=setup
        )
    except DeviceError as exc:  # a bad entry, or a directory that already holds a device
        raise UsageError(str(exc)) from exc
    with made as dev:
        document: dict[str, object] = {
            "directory": str(directory),
            "sdk": dev.profile.sdk,
            "abis": list(dev.profile.abis),
            "stores": [{"package": s.package, "cert_sha256": s.cert_sha256, "mode": s.mode.value} for s in entries],
            "platform_cert_sha256": platform.sha256 if platform is not None else None,
        }
    if setup is not None:
        with Updater.open(directory) as updater:
            document["ota"] = updater.status().to_json()
    if as_json:
        click.echo(json.dumps(document))
    else:
        click.echo(f"device at {directory}: API level {sdk}, ABIs {' '.join(dev.profile.abis)}")
        for entry in entries:
            click.echo(f"  allowed store {entry.package} ({entry.mode.value}) {entry.cert_sha256}")
        if setup is not None:
            click.echo(f"  {setup.device_name} running {setup.build.fingerprint} in slot a")
    return EXIT_ACCEPTED


def _read_certificate(path: Path) -> Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DeviceError(f"cannot read the platform certificate {path}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" in data:
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise DeviceError(f"{path} is not a PEM certificate: {exc}") from exc
    try:
        return Certificate.from_der(data)
    except SealgateError as exc:
        raise DeviceError(f"{path} is not an X.509 certificate: {exc}") from exc


def _decide(directory: Path, apk: Path, as_store: str | None, flags: dict[str, bool], write: bool) -> Decision:
    with _open(directory) as dev:
        try:
            if write:
                return dev.install(apk, as_store=as_store, **flags)
            return dev.check(apk, as_store=as_store, **flags)
        except FormatError as exc:  # not an APK the device can even read: refused, not a usage error
            return Decision(None, False, None, f"{apk}: {exc}", "MALFORMED_APK")


def _verdict(
    directory: Path, apk: Path, as_store: str | None, flags: dict[str, bool], write: bool, as_json: bool
) -> int:
    try:
        decision = _decide(directory, apk, as_store, flags, write)
    except (DeviceError, UsageError) as exc:
        raise _unavailable(DeviceError(str(exc)), as_json) from exc
    return _emit(decision, as_json)


@device.command("install")
@_install_options
def install_command(
    directory: Path,
    apk: Path,
    as_store: str | None,
    confirm: bool,
    allow_downgrade: bool,
    allow_test: bool,
    as_json: bool,
) -> int:
    """Install or update APK on the device, if its rules accept it."""
    flags = {"confirm": confirm, "allow_downgrade": allow_downgrade, "allow_test": allow_test}
    return _verdict(directory, apk, as_store, flags, True, as_json)


@device.command("check")
@_install_options
def check_command(
    directory: Path,
    apk: Path,
    as_store: str | None,
    confirm: bool,
    allow_downgrade: bool,
    allow_test: bool,
    as_json: bool,
) -> int:
    """Would this install or update be accepted, and why (changes nothing)."""
    flags = {"confirm": confirm, "allow_downgrade": allow_downgrade, "allow_test": allow_test}
    return _verdict(directory, apk, as_store, flags, False, as_json)


@device.command("uninstall")
@_DIR
@click.argument("package")
@JSON_OUTPUT
def uninstall_command(directory: Path, package: str, as_json: bool) -> int:
    """Remove PACKAGE; a later install of it is a first install again."""
    with _open(directory) as dev:
        try:
            decision = dev.uninstall(package)
        except DeviceError as exc:
            raise _unavailable(exc, as_json) from exc
    return _emit(decision, as_json)


@device.command("auto-update")
@_DIR
@click.argument("store")
@click.argument("setting", type=click.Choice(["on", "off"]))
@_CONFIRM
@JSON_OUTPUT
def auto_update_command(directory: Path, store: str, setting: str, confirm: bool, as_json: bool) -> int:
    """Turn a store's automatic updates on (the user must --confirm) or off."""
    with _open(directory) as dev:
        try:
            decision = dev.set_auto_update(store, setting == "on", confirm=confirm)
        except DeviceError as exc:
            raise UsageError(str(exc)) from exc
        return _emit(decision, as_json)


@device.command("list")
@_DIR
@JSON_OUTPUT
def list_command(directory: Path, as_json: bool) -> int:
    """The installed packages, their versionCode, signers, lineage and installer of record."""
    with _open(directory) as dev:
        try:
            packages = dev.packages()
            stores = dev.stores()
        except DeviceError as exc:
            raise UsageError(str(exc)) from exc
    if as_json:
        rows = [
            {
                "package": p.package,
                "version_code": p.version_code,
                "signers": [c.sha256 for c in p.identity.signers],
                "lineage": p.identity.lineage.to_json() if p.identity.lineage is not None else None,
                "allow_list_digest": signing_certificates_digest(p.identity),
                "installer": p.installer,
                "installed_at": p.installed_at,
                "updated_at": p.updated_at,
                "shared_user_id": p.shared_user_id,
            }
            for p in packages
        ]
        allowed = [
            {"package": s.package, "cert_sha256": s.cert_sha256, "mode": s.mode.value, "auto_update": s.auto_update}
            for s in stores
        ]
        click.echo(json.dumps({"packages": rows, "stores": allowed}, ensure_ascii=False))
        return EXIT_ACCEPTED
    for p in packages:
        when = datetime.datetime.fromtimestamp(p.updated_at, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        signers = " ".join(c.sha256[:16] for c in p.identity.signers)
        click.echo(f"{p.package} {p.version_code}  signer {signers}  by {p.installer or 'the user'}  {when}")
    for store in stores:
        click.echo(f"store {store.package} ({store.mode.value}): auto-update {'on' if store.auto_update else 'off'}")
    if not packages:
        click.echo("no packages installed")
    return EXIT_ACCEPTED
