"""`sealgate apk ...`: verify APKs and show what they declare."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from sealgate.apk.manifest import AndroidManifest, read_manifest
from sealgate.apk.verifier import verify_apk
from sealgate.errors import SealgateError, UsageError
from sealgate.ziparchive import ZipArchive

EXIT_OK = 0
EXIT_FAILED = 1


@click.group()
def apk() -> None:
    """Verify APK signatures (v1, v2, v3, v3.1, v4) and read manifests."""


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
    except UsageError:
        raise
    except SealgateError as exc:
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


@apk.command("lineage")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the nodes as one JSON array.")
def lineage_command(file: Path, as_json: bool) -> int:
    """Verify a standalone proof-of-rotation lineage file and list its certificates, oldest first."""
    from sealgate.apk.lineage import read_lineage_file

    try:
        lineage = read_lineage_file(file.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from exc
    except SealgateError as exc:
        raise SealgateError(f"{file}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(lineage.to_json(), ensure_ascii=False))
        return EXIT_OK
    for number, node in enumerate(lineage.nodes, start=1):
        certificate = node.certificate
        capabilities = ", ".join(node.capabilities.names) or "none"
        click.echo(f"{number}. {certificate.sha256}  {certificate.subject}\n   capabilities: {capabilities}")
    return EXIT_OK


def _sample_apk() -> Path:
    sample = Path(__file__).resolve().parent.parent / "samples" / "hello-signed.apk"
    if not sample.is_file():
        raise UsageError("name at least one APK file to verify")
    return sample


__all__ = ["apk"]
