"""`sealgate bundle ...`: the online side of offline signing (create a request, show a bundle, apply a response)."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import Any

import click

from sealgate.custody.bundle import (
    REQUEST_FORMAT,
    ItemMetadata,
    ItemSpec,
    SigningRequest,
    SigningResponse,
    bundle_format,
    check_apk_options,
    create_request,
    open_request,
    open_response,
    parse_algorithm,
    parse_manifest,
)
from sealgate.custody.signing_session import PublicKeys, apply_response
from sealgate.errors import BundleError, UsageError
from sealgate.release import target_files_bundle  # noqa: F401  (registers the "target-files" kind)


@click.group()
def bundle() -> None:
    """Signing bundles: carry what must be signed to the offline custodian, and the signatures back."""


@bundle.command("create")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--apk",
    "apks",
    multiple=True,
    nargs=2,
    type=(click.Path(dir_okay=False, exists=True, path_type=Path), str),
    metavar="FILE ROLE",
    help="An APK to sign with ROLE's key (repeatable).",
)
@click.option(
    "--ota",
    "otas",
    multiple=True,
    nargs=2,
    type=(click.Path(dir_okay=False, exists=True, path_type=Path), str),
    metavar="FILE ROLE",
    help="An OTA package to whole-file sign (signapk -w's form) with ROLE's key, e.g. update.zip ota (repeatable).",
)
@click.option(
    "--target-files",
    "target_files",
    multiple=True,
    nargs=2,
    type=(click.Path(dir_okay=False, exists=True, path_type=Path), str),
    metavar="FILE ROLE",
    help="A target-files package to re-sign for release offline (sign-target-files), recorded under ROLE, e.g. "
    "target-files.zip releasekey (repeatable).",
)
@click.option(
    "--key-map",
    "key_maps",
    multiple=True,
    metavar="CERTNAME=ROLE",
    help="For --target-files: the role signing APKs built with an apkcerts certificate no test key name maps.",
)
@click.option("--rollback-index", type=click.IntRange(min=0), help="For --target-files: vbmeta's new rollback index.")
@click.option(
    "--file",
    "files",
    multiple=True,
    nargs=3,
    type=(click.Path(dir_okay=False, exists=True, path_type=Path), str, str),
    metavar="FILE ROLE ALGORITHM",
    help="A file to sign with a detached signature, e.g. ota.zip ota rsa-pkcs1-sha256 (repeatable).",
)
@click.option(
    "--digest",
    "digests",
    multiple=True,
    nargs=4,
    type=(str, str, str, str),
    metavar="NAME SHA256 ROLE ALGORITHM",
    help="A SHA-256 digest of data that stays online (NAME says what it is of) to sign (repeatable).",
)
@click.option(
    "--from",
    "items_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A JSON list of items ({kind, role, path|sha256, name, algorithm, purpose, apk_options, metadata}).",
)
@click.option(
    "--meta",
    "metas",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata for the items given with --apk/--ota/--file/--digest: description, version, device, "
    "previous_release, changes (repeatable).",
)
@click.option(
    "--apk-option",
    "apk_option_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="APK signing option for every --apk item: v1, v2, v3, v31 (on/off), min_sdk, max_sdk, ... (repeatable).",
)
@click.option("--purpose", help="Purpose recorded for every --apk/--ota/--file/--digest item (default by kind).")
@click.option("--requester", help="Who asks for the signatures (default: user@host).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def create_command(
    out: Path,
    apks: tuple[tuple[Path, str], ...],
    otas: tuple[tuple[Path, str], ...],
    target_files: tuple[tuple[Path, str], ...],
    key_maps: tuple[str, ...],
    rollback_index: int | None,
    files: tuple[tuple[Path, str, str], ...],
    digests: tuple[tuple[str, str, str, str], ...],
    items_file: Path | None,
    metas: tuple[str, ...],
    apk_option_args: tuple[str, ...],
    purpose: str | None,
    requester: str | None,
    as_json: bool,
) -> int:
    """Pack what must be signed into the request bundle OUT, for `sealgate sign` on the offline machine.

    Prints the request's digest: give it to the custodian by another channel (it is shown again before signing).
    """
    metadata = _metadata(metas)
    apk_options = check_apk_options(dict(_key_value(arg, "--apk-option") for arg in apk_option_args), "--apk-option")
    specs: list[ItemSpec] = []
    for path, role in apks:
        specs.append(ItemSpec("apk", role, path=path, purpose=purpose, apk_options=apk_options, metadata=metadata))
    for path, role in otas:
        specs.append(ItemSpec("ota", role, path=path, purpose=purpose, metadata=metadata))
    release_options: dict[str, object] = {"key_map": dict(_certificate_role(arg) for arg in key_maps)}
    if rollback_index is not None:
        release_options["rollback_index"] = rollback_index
    for path, role in target_files:
        specs.append(ItemSpec("target-files", role, path=path, purpose=purpose, metadata=metadata,
                              release_options=release_options))  # fmt: skip
    for path, role, algorithm in files:
        specs.append(
            ItemSpec("file", role, path=path, algorithm=parse_algorithm(algorithm), purpose=purpose, metadata=metadata)
        )
    for name, digest, role, algorithm in digests:
        specs.append(
            ItemSpec(
                "digest",
                role,
                digest=digest,
                name=name,
                algorithm=parse_algorithm(algorithm),
                purpose=purpose,
                metadata=metadata,
            )
        )
    if items_file is not None:
        specs += _specs_from_file(items_file)
    if not specs:
        raise UsageError("nothing to sign: give --apk, --ota, --target-files, --file, --digest or --from")
    request, digest = create_request(out, specs, requester=requester or _default_requester())
    if as_json:
        click.echo(json.dumps({"bundle": str(out), "request_sha256": digest, **request.to_json()}))
    else:
        click.echo(f"wrote {out}: signing request {request.bundle_id} with {len(request.items)} item(s)")
        click.echo(f"  digest {digest}   <- give this to the custodian")
        for item in request.items:
            click.echo(f"  [{item.id}] {item.name} ({item.kind}) for {item.role}  sha256 {item.sha256}")
    return 0


def _default_requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _key_value(arg: str, option: str) -> tuple[str, bool | int | str | None]:
    key, sep, value = arg.partition("=")
    if not sep or not key:
        raise UsageError(f"{option} takes KEY=VALUE, not {arg!r}")
    lowered = value.strip().lower()
    if lowered in ("on", "true", "yes"):
        return key, True
    if lowered in ("off", "false", "no"):
        return key, False
    if lowered in ("null", "none", "default"):
        return key, None
    if lowered.isdigit():
        return key, int(lowered)
    return key, value


def _certificate_role(arg: str) -> tuple[str, str]:
    name, sep, role = arg.partition("=")
    if not sep or not name or not role:
        raise UsageError(f"--key-map takes CERTNAME=ROLE, not {arg!r}")
    return name, role


def _metadata(metas: tuple[str, ...]) -> ItemMetadata:
    fields: dict[str, str] = {}
    for arg in metas:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UsageError(f"--meta takes KEY=VALUE, not {arg!r}")
        fields[key.strip().replace("-", "_")] = value
    return ItemMetadata.from_json(fields, "--meta")


def _specs_from_file(path: Path) -> list[ItemSpec]:
    try:
        document = parse_manifest(path.read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except BundleError as exc:
        raise UsageError(f"{path}: {str(exc).replace('manifest.json', 'items file')}") from exc
    if isinstance(document, dict) and "items" in document:
        document = document["items"]
    if not isinstance(document, list):
        raise UsageError(f"{path} must hold a JSON list of items (or an object with an 'items' list)")
    return [ItemSpec.from_json(obj, f"{path.name}[{index}]", path.parent) for index, obj in enumerate(document)]


@bundle.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_command(file: Path, as_json: bool) -> int:
    """Check a request or response bundle's integrity and show what it holds."""
    if bundle_format(file) == REQUEST_FORMAT:
        with open_request(file) as request_bundle:
            request, digest = request_bundle.request, request_bundle.sha256
        if as_json:
            click.echo(json.dumps({"bundle": str(file), "request_sha256": digest, **request.to_json()}))
        else:
            click.echo(_request_text(file, request, digest))
        return 0
    with open_response(file) as response_bundle:
        response, digest = response_bundle.response, response_bundle.sha256
    if as_json:
        click.echo(json.dumps({"bundle": str(file), "response_sha256": digest, **response.to_json()}))
    else:
        click.echo(_response_text(file, response, digest))
    return 0


def _request_text(file: Path, request: SigningRequest, digest: str) -> str:
    lines = [
        f"{file}: signing request {request.bundle_id} (payloads intact)",
        f"  digest     {digest}",
        f"  from       {request.requester}, made {request.created_at}",
    ]
    for item in request.items:
        how: Any = item.algorithm.value if item.algorithm is not None else (dict(item.apk_options) or "defaults")
        if item.kind == "ota":
            how = "whole-file signature"
        lines.append(f"  [{item.id}] {item.name} ({item.kind}) for {item.role}, {how}, purpose {item.purpose}")
        lines.append(f"      sha256 {item.sha256}" + (f", {item.size} bytes" if item.size is not None else ""))
        for key, value in item.metadata.to_json().items():
            text = value.replace("\n", "\n" + " " * (len(key) + 8))
            lines.append(f"      {key}: {text}")
    return "\n".join(lines)


def _response_text(file: Path, response: SigningResponse, digest: str) -> str:
    lines = [
        f"{file}: signing response {response.bundle_id} (outputs match its manifest; signatures unchecked)",
        f"  digest     {digest}",
        f"  answers    request {response.request_id} (digest {response.request_sha256})",
        f"  made       {response.created_at}" + ("  (signed ONLINE)" if response.signed_online else ""),
    ]
    for item in response.items:
        lines.append(f"  [{item.id}] {item.kind} by {item.role} ({item.certificate_sha256[:16]}…), {item.algorithm}")
        lines.append(f"      output sha256 {item.output_sha256}, {item.output_size} bytes")
    lines.append(f"  record entries {', '.join(str(entry.seq) for entry in response.record)}")
    lines.append(f"  record head    {response.record_head}")
    return "\n".join(lines)


@bundle.command("apply")
@click.argument("response", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--request",
    "request_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The request bundle this response must answer (the one kept when it was sent).",
)
@click.option(
    "--public",
    "public_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The public keys exported with `sealgate keys export-public`.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to put the signed artifacts in.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def apply_command(response: Path, request_file: Path, public_dir: Path, out_dir: Path, as_json: bool) -> int:
    """Check every signature in RESPONSE and put the signed artifacts in --out (all of them, or nothing)."""
    result = apply_response(response, request_file, PublicKeys.load(public_dir), out_dir)
    completed = _complete_repository_index(request_file, out_dir)
    if as_json:
        click.echo(json.dumps({**result.to_json(), "index_jars": [str(path) for path in completed]}))
        return 0
    click.echo(f"applied response {result.response_id} to request {result.request_id}:")
    for item in result.items:
        click.echo(f"  {item.path}  ({item.kind}, {item.role} {item.certificate_sha256[:16]}…, {item.algorithm})")
    click.echo(f"  record head {result.record_head}")
    for path in completed:
        click.echo(f"  signed {path}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    return 0


def _complete_repository_index(request_file: Path, out_dir: Path) -> list[Path]:
    """A response to a repository's index request also signs the index JARs (what `repo apply` does)."""
    from sealgate.repo.offline_index import REQUEST_FILE, complete_index_signing

    root = request_file.resolve().parent
    if request_file.name != REQUEST_FILE or not (root / "config.yml").is_file():
        return []
    from sealgate.repo.config import load_config

    return complete_index_signing(load_config(root), out_dir)
