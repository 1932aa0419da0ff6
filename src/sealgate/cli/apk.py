"""`sealgate apk ...`: verify and sign APKs, show what they declare, make proof-of-rotation lineages.

Signing keys come from an encrypted keystore (`--keystore DIR --key ROLE`) or a PKCS#11 token (`--pkcs11 URI`), never
from an unencrypted key file; the passphrase or PIN from --passphrase-fd, SEALGATE_PASSPHRASE or a prompt.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sealgate.apk.manifest import AndroidManifest, read_manifest
from sealgate.apk.verifier import verify_apk
from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.cli.signers import keystore_passphrase, keystore_signer, load_signers, open_keystore
from sealgate.errors import SealgateError, UsageError
from sealgate.ziparchive import ZipArchive

if TYPE_CHECKING:
    from sealgate.apk.lineage import Capability, Lineage
    from sealgate.custody.keystore import Keystore

EXIT_OK = 0
EXIT_FAILED = 1

_ON_OFF = click.Choice(["on", "off"])
_KEYSTORE_HELP = "Encrypted keystore directory (made by `sealgate keys init`)."
_CAPABILITIES_HELP = (
    "What the app keeps granting the old key: comma-separated installed-data, shared-user-id, permission, auth, "
    "rollback, or default (all but rollback) or none."
)


@click.group()
def apk() -> None:
    """Verify and sign APKs (v1, v2, v3, v3.1, v4), read manifests, manage rotation lineages."""


@apk.command("verify")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--min-sdk",
    type=click.IntRange(min=0),
    help="Lowest Android API level to verify for (default: the APK's minSdkVersion).",
)
@click.option(
    "--max-sdk", type=click.IntRange(min=0), help="Highest Android API level to verify for (default: the newest)."
)
@click.option(
    "--idsig",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="APK Signature Scheme v4 file to check too (one APK only).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, one per line.")
def verify_command(
    files: tuple[Path, ...], min_sdk: int | None, max_sdk: int | None, idsig: Path | None, as_json: bool
) -> int:
    """Verify each APK as Android would on every API level of the window.

    Exit status: 0 when every file verifies, 1 when any does not or is malformed, 2 on a usage error.
    With no FILE, verifies the bundled sample APK.
    """
    if min_sdk is not None and max_sdk is not None and min_sdk > max_sdk:
        raise UsageError(f"--min-sdk {min_sdk} is above --max-sdk {max_sdk}")
    if idsig is not None and len(files) != 1:
        raise UsageError("--idsig needs exactly one APK")
    targets = list(files) or [_sample_apk()]
    status = EXIT_OK
    for path in targets:
        line = _verify_one(path, min_sdk, max_sdk, idsig)
        if not line["verified"]:
            status = EXIT_FAILED
        click.echo(json.dumps(line, ensure_ascii=False) if as_json else _human(line))
    return status


def _verify_one(path: Path, min_sdk: int | None, max_sdk: int | None, idsig: Path | None) -> dict[str, Any]:
    try:
        report = verify_apk(path, min_sdk=min_sdk, max_sdk=max_sdk, idsig=idsig)
    except SealgateError as exc:  # per file, so one bad file (say, minSdkVersion above --max-sdk) stops no other
        return {
            "file": os.fspath(path),
            "verified": False,
            "schemes": [],
            "signers": [],
            "lineage": None,
            "sdk": [],
            "errors": [{"code": _error_code(exc), "message": str(exc)}],
            "warnings": [],
        }
    return report.to_json()


def _error_code(exc: SealgateError) -> str:
    name = type(exc).__name__.removesuffix("Error")
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper() + "_ERROR"


def _human(line: dict[str, Any]) -> str:
    verdict = "verified" if line["verified"] else "NOT VERIFIED"
    schemes = ", ".join("v3.1" if s == 31 else f"v{s}" for s in line["schemes"])
    out = [f"{line['file']}: {verdict}" + (f" ({schemes})" if schemes else "")]
    for signer in line["signers"]:
        out.append(f"  signer {signer['sha256']}  {signer['key']}  {signer['subject']}")
    if line.get("lineage"):
        out.append("  lineage (oldest first):")
        for node in line["lineage"]:
            out.append(f"    {node.get('sha256')}  {node.get('subject', '')}")
    for entry in line.get("sdk", []):
        top = "newest" if entry["max_sdk"] is None else entry["max_sdk"]
        scheme = "v3.1" if entry["scheme"] == 31 else f"v{entry['scheme']}"
        out.append(f"  SDK {entry['min_sdk']}..{top}: {scheme} {' '.join(s[:16] for s in entry['signers'])}")
    for issue in line["errors"]:
        out.append(f"  error {issue['code']}: {issue['message']}")
    for issue in line["warnings"]:
        out.append(f"  warning {issue['code']}: {issue['message']}")
    return "\n".join(out)


@apk.command("info")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--min-sdk", type=click.IntRange(min=0), help="Lowest API level for the signature check.")
@click.option("--max-sdk", type=click.IntRange(min=0), help="Highest API level for the signature check.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(file: Path, min_sdk: int | None, max_sdk: int | None, as_json: bool) -> int:
    """Show the manifest fields and the verified signers of an APK."""
    try:
        with ZipArchive.open(file) as archive:
            manifest = read_manifest(archive)
    except UsageError:
        raise
    except SealgateError as exc:
        raise SealgateError(f"{file}: {exc}") from exc
    line = _verify_one(file, min_sdk, max_sdk, None)
    document = {"file": os.fspath(file), "manifest": manifest_json(manifest), "verification": line}
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
    else:
        click.echo(_human_info(manifest))
        click.echo(_human(line))
    return EXIT_OK if line["verified"] else EXIT_FAILED


def manifest_json(manifest: AndroidManifest) -> dict[str, Any]:
    return {
        "package": manifest.package,
        "version_code": manifest.version_code,
        "version_name": manifest.version_name,
        "min_sdk": manifest.min_sdk,
        "target_sdk": manifest.target_sdk,
        "max_sdk": manifest.max_sdk,
        "permissions": [
            {"name": p.name, "max_sdk": p.max_sdk} for p in (*manifest.permissions, *manifest.permissions_sdk23)
        ],
        "features": [{"name": f.name, "required": f.required} for f in manifest.features],
        "native_abis": list(manifest.native_abis),
        "debuggable": manifest.debuggable,
        "test_only": manifest.test_only,
        "shared_user_id": manifest.shared_user_id,
        "label": manifest.label,
    }


def _human_info(manifest: AndroidManifest) -> str:
    lines = [
        f"package: {manifest.package}",
        f"version: {manifest.version_name or '-'} ({manifest.version_code})",
        f"sdk: min {manifest.min_sdk}, target {manifest.target_sdk or '-'}, max {manifest.max_sdk or '-'}",
    ]
    if manifest.label:
        lines.append(f"label: {manifest.label}")
    if manifest.native_abis:
        lines.append(f"native code: {' '.join(manifest.native_abis)}")
    if manifest.debuggable:
        lines.append("debuggable: yes")
    if manifest.test_only:
        lines.append("testOnly: yes")
    if manifest.shared_user_id:
        lines.append(f"sharedUserId: {manifest.shared_user_id}")
    for permission in (*manifest.permissions, *manifest.permissions_sdk23):
        lines.append(f"uses-permission: {permission.name}")
    return "\n".join(lines)


class _LineageGroup(click.Group):
    """`apk lineage FILE` shows a lineage file (as it always did); `apk lineage create|rotate ...` make one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((arg for arg in args if not arg.startswith("-")), None)
        if first is not None and first not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


@apk.group("lineage", cls=_LineageGroup)
def lineage_group() -> None:
    """Show, create or extend proof-of-rotation lineages (`apk lineage FILE` shows one)."""


@lineage_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as one JSON array.")
def lineage_command(file: Path, as_json: bool) -> int:
    """Verify a standalone proof-of-rotation lineage file and list its certificates, oldest first."""
    lineage = _read_lineage(file)
    if as_json:
        click.echo(json.dumps(lineage.to_json(), ensure_ascii=False))
        return EXIT_OK
    click.echo(_human_lineage(lineage))
    return EXIT_OK


@lineage_group.command("create")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), required=True, help=_KEYSTORE_HELP)
@click.option("--old", "old_key", required=True, metavar="ROLE[:GEN]", help="The key rotated away from.")
@click.option("--new", "new_key", required=True, metavar="ROLE[:GEN]", help="The key rotated to.")
@click.option("--capabilities", metavar="LIST", help=_CAPABILITIES_HELP)
@PASSPHRASE_FD
@JSON_OUTPUT
def lineage_create_command(
    out: Path,
    keystore: Path,
    old_key: str,
    new_key: str,
    capabilities: str | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Write a lineage OUT in which the --old key vouches for the --new key (both from the keystore).

    After `sealgate keys rotate DIR releasekey`, the old key is generation 1: `--old releasekey:1 --new releasekey`.
    """
    from sealgate.apk.lineage import DEFAULT_CAPABILITIES, create_lineage, write_lineage_file

    store = open_keystore(keystore)
    passphrase = keystore_passphrase(passphrase_fd)
    old = keystore_signer(store, old_key, passphrase)
    new = keystore_signer(store, new_key, passphrase)
    granted = _capabilities(capabilities) if capabilities is not None else DEFAULT_CAPABILITIES
    lineage = create_lineage(old, new, granted)
    write_lineage_file(lineage, out)
    return _report_lineage(out, lineage, as_json)


@lineage_group.command("rotate")
@click.argument("lineage_file", metavar="LINEAGE", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), required=True, help=_KEYSTORE_HELP)
@click.option("--new", "new_key", required=True, metavar="ROLE[:GEN]", help="The key rotated to.")
@click.option(
    "--current",
    "current_key",
    metavar="ROLE[:GEN]",
    help="The key of the lineage's newest certificate (default: found in the keystore by that certificate).",
)
@click.option("--capabilities", metavar="LIST", help=_CAPABILITIES_HELP + " Default: keep the current ones.")
@PASSPHRASE_FD
@JSON_OUTPUT
def lineage_rotate_command(
    lineage_file: Path,
    out: Path,
    keystore: Path,
    new_key: str,
    current_key: str | None,
    capabilities: str | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Extend LINEAGE with the --new key, signed by the lineage's newest key, into OUT."""
    from sealgate.apk.lineage import rotate_lineage, write_lineage_file

    lineage = _read_lineage(lineage_file)
    store = open_keystore(keystore)
    current_name = current_key or _keystore_role_of(store, lineage.nodes[-1].certificate.sha256, keystore)
    passphrase = keystore_passphrase(passphrase_fd)
    current = keystore_signer(store, current_name, passphrase)
    new = keystore_signer(store, new_key, passphrase)
    granted = _capabilities(capabilities) if capabilities is not None else None
    extended = rotate_lineage(lineage, current, new, granted)
    write_lineage_file(extended, out)
    return _report_lineage(out, extended, as_json)


@apk.command("sign")
@click.argument("input_apk", metavar="IN", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("output_apk", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help=_KEYSTORE_HELP)
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="ROLE[:GEN]",
    help="A keystore key to sign with; repeat for several signers (with --lineage: the old and the new key).",
)
@click.option(
    "--pkcs11",
    "uris",
    multiple=True,
    metavar="URI",
    help="A key on a PKCS#11 token instead of --keystore (pkcs11:token=T;object=KEY?module-path=...); repeatable.",
)
@click.option(
    "--lineage",
    "lineage_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Proof-of-rotation lineage: the oldest key signs v1/v2, the newest v3 (and v3.1).",
)
@click.option("--min-sdk", type=click.IntRange(min=1), help="Lowest API level to sign for (default: minSdkVersion).")
@click.option("--max-sdk", type=click.IntRange(min=1), help="Highest API level to sign for (default: the newest).")
@click.option("--v1", type=_ON_OFF, help="JAR signing (default: on below API 24).")
@click.option("--v2", type=_ON_OFF, help="APK Signature Scheme v2 (default: on).")
@click.option("--v3", type=_ON_OFF, help="APK Signature Scheme v3 (default: on for one signer or a lineage).")
@click.option("--v31", type=_ON_OFF, default="off", show_default=True, help="v3.1 block with the rotated key.")
@click.option("--rotation-min-sdk", type=click.IntRange(min=33), help="First API level of the v3.1 key (33).")
@PASSPHRASE_FD
@click.option(
    "--verify",
    "verify_output",
    is_flag=True,
    help="Verify OUT with the full verifier (every byte hashed again) instead of the signer's self-check.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verification of the signed APK as JSON.")
def sign_command(
    input_apk: Path,
    output_apk: Path,
    keystore: Path | None,
    keys: tuple[str, ...],
    uris: tuple[str, ...],
    lineage_file: Path | None,
    min_sdk: int | None,
    max_sdk: int | None,
    v1: str | None,
    v2: str | None,
    v3: str | None,
    v31: str,
    rotation_min_sdk: int | None,
    passphrase_fd: int | None,
    verify_output: bool,
    as_json: bool,
) -> int:
    """Sign IN into OUT with keys from a keystore (or tokens), and check OUT before it replaces anything.

    Like apksigner: v2 and v3 by default, v1 when the APK installs below API 24, stored entries aligned (native
    libraries to 16 KiB pages). The same input and RSA key always give the same bytes. The check re-reads the
    ZIP structure, signatures and signing identity of OUT and what was written after hashing; --verify runs the
    full verifier instead.
    """
    from sealgate.apk.signing import ApkSigningOptions, sign_apk

    if min_sdk is not None and max_sdk is not None and min_sdk > max_sdk:
        raise UsageError(f"--min-sdk {min_sdk} is above --max-sdk {max_sdk}")
    options = ApkSigningOptions(
        v1=_switch(v1),
        v2=_switch(v2),
        v3=_switch(v3),
        v31=v31 == "on",
        min_sdk=min_sdk,
        max_sdk=max_sdk,
        lineage=_read_lineage(lineage_file) if lineage_file is not None else None,
        rotation_min_sdk=rotation_min_sdk,
        verify_output=verify_output,
    )
    with contextlib.ExitStack() as stack:
        signers = load_signers(stack, keystore, keys, uris, passphrase_fd)
        report = sign_apk(input_apk, output_apk, signers, options)
    line = report.to_json()
    if as_json:
        click.echo(json.dumps(line, ensure_ascii=False))
    else:
        click.echo("signed " + _human(line))
    return EXIT_OK


def _switch(value: str | None) -> bool | None:
    return None if value is None else value == "on"


def _keystore_role_of(store: Keystore, certificate_sha256: str, path: Path) -> str:
    for role in store.roles():
        if role.certificate_sha256 == certificate_sha256:
            return role.name
        for old in role.retired:
            if old.certificate_sha256 == certificate_sha256:
                return f"{role.name}:{old.generation}"
    raise UsageError(
        f"the lineage's newest certificate ({certificate_sha256}) belongs to no key of keystore {path}; "
        "name its key with --current ROLE[:GEN]"
    )


def _capabilities(text: str) -> Capability:
    """A comma-separated list of capability names, or "default" (all but rollback), or "none"."""
    from sealgate.apk.lineage import DEFAULT_CAPABILITIES, Capability

    names = {
        "installed-data": Capability.INSTALLED_DATA,
        "shared-user-id": Capability.SHARED_USER_ID,
        "permission": Capability.PERMISSION,
        "rollback": Capability.ROLLBACK,
        "auth": Capability.AUTH,
    }
    granted = Capability(0)
    for name in (part.strip().lower() for part in text.split(",")):
        if name == "default":
            granted |= DEFAULT_CAPABILITIES
        elif name == "none" or not name:
            continue
        elif name in names:
            granted |= names[name]
        else:
            known = ", ".join([*names, "default", "none"])
            raise UsageError(f"unknown capability {name!r}; use a comma-separated list of: {known}")
    return granted


def _read_lineage(path: Path) -> Lineage:
    from sealgate.apk.lineage import read_lineage_file

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        return read_lineage_file(data)
    except SealgateError as exc:
        raise SealgateError(f"{path}: {exc}") from exc


def _report_lineage(out: Path, lineage: Lineage, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps({"file": os.fspath(out), "lineage": lineage.to_json()}, ensure_ascii=False))
    else:
        click.echo(f"wrote lineage {out} (oldest first):")
        click.echo(_human_lineage(lineage))
    return EXIT_OK


def _human_lineage(lineage: Lineage) -> str:
    lines = []
    for number, node in enumerate(lineage.nodes, start=1):
        certificate = node.certificate
        capabilities = ", ".join(node.capabilities.names) or "none"
        lines.append(f"{number}. {certificate.sha256}  {certificate.subject}\n   capabilities: {capabilities}")
    return "\n".join(lines)


def _sample_apk() -> Path:
    sample = Path(__file__).resolve().parent.parent / "samples" / "hello-signed.apk"
    if not sample.is_file():
        raise UsageError("name at least one APK file to verify")
    return sample


__all__ = ["apk"]
