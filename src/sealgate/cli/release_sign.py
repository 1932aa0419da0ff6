"""`sealgate release sign-target-files` and `release factory-image`.

sign-target-files INPUT OUTPUT signs a target-files package for release (`sealgate.release.target_files`): exit 0
when the signed package was written, 1 when the build was refused (not a user build: every reason is printed, and
with --json {"refused": true, "reasons": [{"code", "message"}]}) or cannot be signed, 2 on a usage error. Keys come
from one keystore (--keystore; each role is unlocked only when a package needs it) or from token keys given per
role (--pkcs11 ROLE=URI, one PIN).

factory-image SOURCE OUT writes the factory archive from a signed target-files package or a directory of images.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.errors import UsageError
from sealgate.signing import Signer

if TYPE_CHECKING:
    from sealgate.custody.keystore import Keystore

EXIT_OK = 0
EXIT_FAILED = 1


class _KeystoreSigners(Mapping[str, Signer]):
    """The keystore's roles as signers, each unlocked on first use (a build rarely needs every role)."""

    def __init__(self, store: Keystore, passphrase: str) -> None:
        self._store = store
        self._passphrase = passphrase
        self._roles = [info.name for info in store.roles()]
        self._signers: dict[str, Signer] = {}

    def __getitem__(self, role: str) -> Signer:
        if role not in self._roles:
            raise KeyError(role)
        if role not in self._signers:
            from sealgate.cli.signers import keystore_signer

            self._signers[role] = keystore_signer(self._store, role, self._passphrase)
        return self._signers[role]

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles)

    def __len__(self) -> int:
        return len(self._roles)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        left, separator, right = value.partition("=")
        if not separator or not left or not right:
            raise UsageError(f"{option} takes NAME=VALUE, not {value!r}")
        result[left] = right
    return result


@click.command("sign-target-files")
@click.argument("input_zip", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output_zip", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--pkcs11", "pkcs11", multiple=True, metavar="ROLE=URI",
              help="A token key for a role (releasekey, platform, ..., ota, avb); repeatable.")  # fmt: skip
@click.option("--key-map", "key_map", multiple=True, metavar="CERTNAME=ROLE",
              help="Sign packages whose apkcerts certificate is CERTNAME with ROLE (like -k); repeatable.")  # fmt: skip
@click.option("--rollback-index", type=click.IntRange(min=0), help="AVB rollback index written into vbmeta.")
@click.option("--avb-algorithm", help="vbmeta algorithm, e.g. SHA256_RSA4096 (default: from the AVB key).")
@click.option(
    "--rebuild-images/--no-rebuild-images",
    default=None,
    help="Rebuild the changed EROFS images (default: when some are EROFS and mkfs.erofs is installed).",
)
@click.option(
    "--accept-root-owned",
    is_flag=True,
    help="When not run as root, build images whose files all belong to root instead of refusing.",
)
@PASSPHRASE_FD
@JSON_OUTPUT
def sign_target_files_command(
    input_zip: Path,
    output_zip: Path,
    keystore: Path | None,
    pkcs11: tuple[str, ...],
    key_map: tuple[str, ...],
    rollback_index: int | None,
    avb_algorithm: str | None,
    rebuild_images: bool | None,
    accept_root_owned: bool,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Re-sign INPUT_ZIP (a target-files package) for release into OUTPUT_ZIP."""
    from sealgate.custody.passphrase import read_passphrase
    from sealgate.errors import UnreleasableBuildError
    from sealgate.release.apkcerts import KeyMap
    from sealgate.release.target_files import sign_target_files

    if (keystore is None) == (not pkcs11):
        raise UsageError("sign with --keystore DIR or with --pkcs11 ROLE=URI options, one of the two")
    with contextlib.ExitStack() as stack:
        signers: Mapping[str, Signer]
        if keystore is not None:
            from sealgate.cli.signers import keystore_passphrase, open_keystore

            signers = _KeystoreSigners(open_keystore(keystore), keystore_passphrase(passphrase_fd))
        else:
            from sealgate.custody.token import Pkcs11Uri, TokenSigner

            uris = {role: Pkcs11Uri.parse(uri) for role, uri in _pairs(pkcs11, "--pkcs11").items()}
            pin = read_passphrase(fd=passphrase_fd, what=f"PIN of token {next(iter(uris.values())).token_name}")
            signers = {role: stack.enter_context(TokenSigner.open(uri, pin)) for role, uri in uris.items()}
        keys = KeyMap(signers, _pairs(key_map, "--key-map"))
        try:
            report = sign_target_files(
                input_zip, output_zip, keys, rollback_index=rollback_index, avb_algorithm=avb_algorithm,
                rebuild_images=rebuild_images, accept_root_owned=accept_root_owned,
            )  # fmt: skip
        except UnreleasableBuildError as exc:
            if not as_json:
                raise
            reasons = [{"code": code, "message": message} for code, message in exc.reasons]
            click.echo(json.dumps({"input": str(input_zip), "refused": True, "reasons": reasons}))
            return EXIT_FAILED
    if as_json:
        click.echo(json.dumps({**report.to_json(), "refused": False}, ensure_ascii=False))
        return EXIT_OK
    click.echo(f"signed {output_zip}: {len(report.signed)} APKs re-signed")
    for package in report.packages:
        role = f" with {package.role}" if package.role else ""
        click.echo(f"  {package.action}{role}: {package.path}")
    for name in report.props_rewritten:
        click.echo(f"  release-keys: {name}")
    for name in report.otacerts:
        click.echo(f"  OTA certificate {report.ota_certificate_sha256}: {name}")
    if report.vbmeta is not None:
        click.echo(
            f"  vbmeta re-signed ({report.vbmeta['algorithm']}, rollback index {report.vbmeta['rollback_index']})"
        )
    for note in report.notes:
        click.echo(f"  note {note.code}: {note.message}")
    return EXIT_OK


@click.command("factory-image")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", help="Device codename (default: ro.product.device of the package).")
@click.option("--build", "build_id", help="Build name (default: ro.build.id of the package, lower case).")
@click.option("--bootloader", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Bootloader image, instead of the package's RADIO/bootloader.img.")  # fmt: skip
@click.option("--bootloader-version", help="Its version (needed with --bootloader).")
@click.option("--radio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Radio image, instead of the package's RADIO/radio.img.")  # fmt: skip
@click.option("--radio-version", help="Its version (needed with --radio).")
@click.option("--avb-custom-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="avb_pkmd.bin to flash as avb_custom_key.")  # fmt: skip
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path),
              help="Flash the keystore's avb key as avb_custom_key (no passphrase needed).")  # fmt: skip
@JSON_OUTPUT
def factory_image_command(
    source: Path,
    out: Path,
    device: str | None,
    build_id: str | None,
    bootloader: Path | None,
    bootloader_version: str | None,
    radio: Path | None,
    radio_version: str | None,
    avb_custom_key: Path | None,
    keystore: Path | None,
    as_json: bool,
) -> int:
    """Write the factory archive OUT from SOURCE (a signed target-files package or a directory of images)."""
    from sealgate.release.factory_image import build_factory_image

    for file, version, option in ((bootloader, bootloader_version, "--bootloader"), (radio, radio_version, "--radio")):
        if (file is None) != (version is None):
            raise UsageError(f"{option} and {option}-version go together")
    custom_key = avb_custom_key.read_bytes() if avb_custom_key is not None else None
    if keystore is not None:
        if custom_key is not None:
            raise UsageError("give --avb-custom-key or --keystore, not both")
        from sealgate.avb.keys import public_key_metadata
        from sealgate.cli.signers import open_keystore

        custom_key = public_key_metadata(open_keystore(keystore).certificate("avb").public_key())
    image = build_factory_image(
        source,
        out,
        device=device,
        build=build_id,
        bootloader=(bootloader, bootloader_version) if bootloader and bootloader_version else None,
        radio=(radio, radio_version) if radio and radio_version else None,
        avb_custom_key=custom_key,
    )
    if as_json:
        click.echo(json.dumps(image.to_json()))
    else:
        click.echo(f"wrote {image.path} ({image.directory}/, sha256 {image.sha256})")
        for name, digest in image.files.items():
            click.echo(f"  {digest}  {name}")
    return EXIT_OK
