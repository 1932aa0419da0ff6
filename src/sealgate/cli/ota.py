"""`sealgate ota ...`: OTA update packages.

`ota verify FILE... --certs CERT...` gives recovery's verdict on each package against the trusted certificates (PEM
files or otacerts.zip; a package verifies if any one of them verifies it). Exit status 0 when every package verifies,
1 when any is refused, 2 on a usage error (a certificate recovery would not load, no certificate at all).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.cli.ota_payload import payload
from sealgate.cli.output import echo_signature_verdict

EXIT_OK = 0
EXIT_FAILED = 1


@click.group()
def ota() -> None:
    """OTA update packages: whole-file signatures as recovery checks them."""


@ota.command("sign")
@click.argument("input_zip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output_zip", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--key", default="ota", show_default=True, help="The keystore role that signs OTA packages.")
@click.option("--pkcs11", help="A token key (pkcs11: URI) instead of --keystore.")
@PASSPHRASE_FD
@JSON_OUTPUT
def sign_command(
    input_zip: Path,
    output_zip: Path,
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Sign INPUT_ZIP into OUTPUT_ZIP with a whole-file signature (signapk -w's form), checked before it is written."""
    import contextlib

    from sealgate.cli.signers import load_signers
    from sealgate.ota.signer import sign_package

    with contextlib.ExitStack() as stack:
        keys = (key,) if keystore is not None else ()
        signer = load_signers(stack, keystore, keys, (pkcs11,) if pkcs11 else (), passphrase_fd)[0]
        result = sign_package(input_zip, output_zip, signer)
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    elif result.signer is not None:
        click.echo(f"signed {output_zip}: verified, signer {result.signer.sha256} ({result.signer.subject})")
    return EXIT_OK


@ota.command("verify")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--certs", "certs", multiple=True, required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A trusted certificate (PEM) or otacerts.zip; repeatable.")  # fmt: skip
@JSON_OUTPUT
def verify_command(files: tuple[Path, ...], certs: tuple[Path, ...], as_json: bool) -> int:
    """Verify the whole-file signature of each FILE as Android's recovery does."""
    from sealgate.ota.whole_file import load_trusted_keys, verify_package

    keys = load_trusted_keys(certs)
    status = EXIT_OK
    for file in files:
        result = verify_package(file, keys)
        if not result.verified:
            status = EXIT_FAILED
        echo_signature_verdict(file, result, as_json)
    return status


@ota.command("info")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@JSON_OUTPUT
def info_command(file: Path, as_json: bool) -> int:
    """Show an OTA package's metadata, its property files (checked against the entries) and its claimed signer."""
    from sealgate.ota.info import read_info

    info = read_info(file)
    if as_json:
        click.echo(json.dumps(info.to_json(), ensure_ascii=False))
        return EXIT_OK
    click.echo(f"{file}: {len(info.entries)} entries")
    for key, value in sorted(info.metadata.items()):
        if key not in info.property_files:
            click.echo(f"  {key}={value}")
    for key, tokens in info.property_files.items():
        click.echo(f"  {key}:")
        for token in tokens:
            state = "ok" if token.matches else "DOES NOT MATCH the entry"
            click.echo(f"    {token.name} at {token.offset}, {token.size} bytes: {state}")
    if info.ota_metadata is not None:
        click.echo(f"  parsed from {info.metadata_source}: {_describe(info.ota_metadata.to_json())}")
    if info.claimed_signer is not None:
        click.echo(f"  whole-file signature claims {info.claimed_signer.sha256} (verify with `ota verify`)")
    elif not info.whole_file_signed:
        click.echo("  no whole-file signature")
    return EXIT_OK


def _describe(metadata: dict[str, object]) -> str:
    """The metadata's fields that are set, `name=value` on one line (property files are listed above)."""
    shown = [f"{key}={value}" for key, value in metadata.items() if value not in (None, [], {}, False, 0)]
    return ", ".join(item for item in shown if not item.startswith("property_files="))


from sealgate.cli.ota_package import package_command  # noqa: E402  (registered here: one line, see COMMON)

ota.add_command(package_command)
ota.add_command(payload)  # `ota payload ...`: A/B payloads

__all__ = ["ota"]
