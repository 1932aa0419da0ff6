"""`sealgate keys ...`: the key ceremony, listing, public export, rotation, and keys generated on tokens.

Passphrases and PINs come from --passphrase-fd, SEALGATE_PASSPHRASE or the terminal; there is deliberately no
option that takes one on the command line. Progress goes to stderr so that stdout carries only the result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.custody.keystore import Keystore, RoleInfo, atomic_write
from sealgate.custody.passphrase import read_passphrase
from sealgate.custody.roles import KeySpec, RoleSpec, select_roles

EXIT_OK = 0


@click.group()
def keys() -> None:
    """Create and manage the distribution's signing keys (encrypted keystore or PKCS#11 token)."""


@keys.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--roles", "roles_text", metavar="A,B,...", help="Only these roles (default: every role).")
@click.option("--distribution", default="Android distribution", show_default=True, help="Named in each certificate.")
@click.option(
    "--key-type",
    metavar="TYPE",
    help="Give every role this key type (rsa-BITS, ec-p256, ed25519, ...) instead of its default; for tests.",
)
@click.option(
    "--key-size", type=click.IntRange(min=1024), metavar="BITS", help="RSA key size instead of 4096; for tests."
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the public bundle here (default: DIRECTORY/public).",
)
@PASSPHRASE_FD
@JSON_OUTPUT
def init_command(
    directory: Path,
    roles_text: str | None,
    distribution: str,
    key_type: str | None,
    key_size: int | None,
    export_dir: Path | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Key ceremony: generate a key and certificate for every role in a new encrypted keystore DIRECTORY.

    Prints each role's certificate SHA-256 fingerprint (write them down: they are what devices and clients pin)
    and exports the certificates for the online machine.
    """
    specs = select_roles(roles_text.split(",") if roles_text is not None else None)
    overrides = _overrides(specs, key_type, key_size)
    passphrase = read_passphrase(fd=passphrase_fd, what="new keystore passphrase", confirm=True)
    total = len(specs)
    counter = iter(range(1, total + 1))

    def progress(spec: RoleSpec) -> None:
        key = overrides.get(spec.name, spec.key)
        click.echo(f"[{next(counter):2}/{total}] generating {spec.name} ({key})", err=True)

    keystore = Keystore.create(
        directory,
        passphrase,
        roles=[spec.name for spec in specs],
        key_overrides=overrides,
        distribution=distribution,
        progress=progress,
    )
    public = export_dir if export_dir is not None else directory / "public"
    keystore.export_public(public)
    roles = keystore.roles()
    if as_json:
        document = _keystore_json(keystore, roles)
        document["public"] = os.fspath(public)
        click.echo(json.dumps(document, ensure_ascii=False))
        return EXIT_OK
    click.echo(f"keystore {directory} for {distribution}: {len(roles)} keys, encrypted with the passphrase")
    click.echo(_table(roles))
    click.echo(f"public certificates and keys.json exported to {public} (copy this directory to the online machine)")
    return EXIT_OK


@keys.command("list")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@JSON_OUTPUT
def list_command(directory: Path, as_json: bool) -> int:
    """List the roles of a keystore with their key types and certificate fingerprints (no passphrase needed)."""
    keystore = Keystore.open(directory)
    roles = keystore.roles()
    if as_json:
        click.echo(json.dumps(_keystore_json(keystore, roles), ensure_ascii=False))
        return EXIT_OK
    click.echo(f"keystore {keystore.path} for {keystore.distribution}, created {keystore.created}")
    click.echo(_table(roles))
    return EXIT_OK


@keys.command("export-public")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@JSON_OUTPUT
def export_public_command(directory: Path, dest: Path, as_json: bool) -> int:
    """Write every certificate (current and retired) and keys.json to DEST; no private key is read."""
    written = Keystore.open(directory).export_public(dest)
    if as_json:
        click.echo(json.dumps({"public": os.fspath(dest), "files": [os.fspath(path) for path in written]}))
    else:
        click.echo(f"exported {len(written) - 1} certificates and keys.json to {dest}")
    return EXIT_OK


@keys.command("rotate")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("role")
@click.option("--key-type", metavar="TYPE", help="Key type of the new key (default: the role's current type).")
@PASSPHRASE_FD
@JSON_OUTPUT
def rotate_command(directory: Path, role: str, key_type: str | None, passphrase_fd: int | None, as_json: bool) -> int:
    """Give ROLE a new key; the old one stays in the keystore as ROLE.N.key.pem."""
    keystore = Keystore.open(directory)
    key = KeySpec.parse(key_type) if key_type is not None else None
    passphrase = read_passphrase(fd=passphrase_fd, what="keystore passphrase")
    rotation = keystore.rotate(role, passphrase, key=key)
    old, new = rotation.old_signer.certificate.sha256, rotation.new_signer.certificate.sha256
    # The ceremony's default export would otherwise go stale silently; other exports are the custodian's to redo.
    default_export = directory / "public"
    refreshed = (default_export / "keys.json").is_file()
    if refreshed:
        keystore.export_public(default_export)
    if as_json:
        document = {
            "role": role,
            "old_generation": rotation.old_generation,
            "new_generation": rotation.new_generation,
            "old_certificate_sha256": old,
            "new_certificate_sha256": new,
            "signs_apks": rotation.signs_apks,
            "public": os.fspath(default_export) if refreshed else None,
        }
        click.echo(json.dumps(document))
        return EXIT_OK
    click.echo(f"rotated {role}: generation {rotation.old_generation} -> {rotation.new_generation}")
    click.echo(f"  old certificate SHA-256 {old}  (kept as {role}.{rotation.old_generation}.key.pem)")
    click.echo(f"  new certificate SHA-256 {new}")
    if rotation.signs_apks:
        click.echo(
            "  devices accept APKs signed with the new key only with a proof-of-rotation lineage signed by the old "
            f"key: make one from generation {rotation.old_generation} to {rotation.new_generation}"
        )
    if refreshed:
        click.echo(f"  public export in {default_export} updated; copy it to the online machine")
    else:
        click.echo(f"  run `sealgate keys export-public {directory} DEST` to give the online side the new certificate")
    return EXIT_OK


@keys.command("token-init")
@click.option("--pkcs11", "uri", required=True, metavar="URI", help="pkcs11:token=LABEL[;object=LABEL]?module-path=...")
@click.option("--role", "role_name", required=True, help="The key role to generate on the token.")
@click.option("--distribution", default="Android distribution", show_default=True, help="Named in the certificate.")
@click.option("--key-type", metavar="TYPE", help="Key type instead of the role's default (rsa-BITS, ec-p256, ...).")
@click.option("--key-size", type=click.IntRange(min=1024), metavar="BITS", help="RSA key size instead of 4096.")
@click.option(
    "--cert-out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the certificate (PEM) here."
)
@PASSPHRASE_FD
@JSON_OUTPUT
def token_init_command(
    uri: str,
    role_name: str,
    distribution: str,
    key_type: str | None,
    key_size: int | None,
    cert_out: Path | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Generate ROLE's key on a PKCS#11 token (never extractable) and store its self-signed certificate there."""
    from sealgate.custody.token import Pkcs11Uri, generate_on_token

    parsed = Pkcs11Uri.parse(uri)
    (spec,) = select_roles([role_name])
    key = _overrides([spec], key_type, key_size).get(spec.name)
    pin = read_passphrase(fd=passphrase_fd, what=f"PIN of token {parsed.token_name}")
    click.echo(f"generating {spec.name} ({key or spec.key}) on token {parsed.token_name}", err=True)
    with generate_on_token(parsed, spec.name, pin, key=key, distribution=distribution) as signer:
        certificate = signer.certificate
        protection = signer.key_protection()
    if cert_out is not None:
        _write_public_file(cert_out, certificate.der)
    if as_json:
        document: dict[str, Any] = {
            "role": spec.name,
            "label": signer.name,
            "certificate_sha256": certificate.sha256,
            "protection": protection,
        }
        if cert_out is not None:
            document["certificate"] = os.fspath(cert_out)
        click.echo(json.dumps(document))
        return EXIT_OK
    click.echo(f"{spec.name} generated on token {parsed.token_name} as {signer.name!r}")
    click.echo(f"  certificate SHA-256 {certificate.sha256}")
    click.echo("  key is " + ", ".join(f"{name}={'yes' if value else 'no'}" for name, value in protection.items()))
    if cert_out is not None:
        click.echo(f"  certificate written to {cert_out}")
    return EXIT_OK


def _overrides(specs: list[RoleSpec], key_type: str | None, key_size: int | None) -> dict[str, KeySpec]:
    overrides: dict[str, KeySpec] = {}
    forced = KeySpec.parse(key_type) if key_type is not None else None
    for spec in specs:
        key = forced or spec.key
        if key_size is not None:
            key = key.with_size(key_size)
        if key != spec.key:
            overrides[spec.name] = key
    return overrides


def _keystore_json(keystore: Keystore, roles: list[RoleInfo]) -> dict[str, Any]:
    return {
        "keystore": os.fspath(keystore.path),
        "distribution": keystore.distribution,
        "created": keystore.created,
        "kdf": {"name": "scrypt", "n": keystore.kdf.n, "r": keystore.kdf.r, "p": keystore.kdf.p},
        "roles": [info.to_json() for info in roles],
    }


def _table(roles: list[RoleInfo]) -> str:
    width = max((len(info.name) for info in roles), default=0)
    lines = []
    for info in roles:
        generation = f"  (generation {info.generation})" if info.generation > 1 else ""
        lines.append(f"  {info.name:<{width}}  {info.key_type:<9}  SHA-256 {info.certificate_sha256}{generation}")
    return "\n".join(lines)


def _write_public_file(path: Path, der: bytes) -> None:
    from asn1crypto import pem

    atomic_write(path, pem.armor("CERTIFICATE", der), mode=0o644)
