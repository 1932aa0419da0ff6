"""`sealgate release avb-info` and `release avb-sign`: Android Verified Boot keys and vbmeta images.

`avb-info` with a key (--keystore/--key, --pkcs11 or --certificate) prints the key's verified-boot digest (the
SHA-256 of its AVB-format public key, androidboot.vbmeta.public_key_digest) and with --out writes avb_pkmd.bin for
`fastboot flash avb_custom_key`; exit 0. With --image it inspects a vbmeta.img or a partition image with an AVB
footer and checks its signature with the embedded key and, when a key is also given (or --pkmd), that the image
is signed by that key; exit 0 verified, 1 not verified or malformed, 2 usage error.

`avb-sign IMAGE OUTPUT` re-signs a vbmeta.img (padded to 4096 as the build pads it) or the vbmeta behind a
partition image's AVB footer (same offsets), keeping every descriptor; --rollback-index sets the rollback index,
--chain-key PARTITION=KEYFILE replaces a chained partition's public key.

`avb-verify DIRECTORY` checks a directory of `<partition>.img` files as a locked bootloader would (libavb's
avb_slot_verify): vbmeta.img signed by the trusted key, chained images by the keys their chain descriptors name, and
every hash and hash tree recomputed; exit 0 verified, 1 not, 2 usage error.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.errors import UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

EXIT_OK = 0
EXIT_FAILED = 1


@click.command("avb-info")
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--key", default="avb", show_default=True, help="The keystore role that signs vbmeta (ROLE[:GEN]).")
@click.option("--pkcs11", help="A token key (pkcs11: URI) instead of --keystore.")
@click.option("--certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A PEM certificate or PEM public key instead of a keystore or token.")  # fmt: skip
@click.option("--pkmd", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An avb_pkmd.bin to check --image against.")  # fmt: skip
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Inspect and verify this vbmeta.img or partition image with an AVB footer.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the key's avb_pkmd.bin here.")
@PASSPHRASE_FD
@JSON_OUTPUT
def avb_info(
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    certificate: Path | None,
    pkmd: Path | None,
    image: Path | None,
    out: Path | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Show an AVB key's digest and write its avb_pkmd.bin, or inspect and verify a vbmeta image."""
    sources = [source for source in (keystore, pkcs11, certificate, pkmd) if source is not None]
    if len(sources) > 1:
        raise UsageError("name one key: --keystore (with --key), --pkcs11, --certificate or --pkmd")
    public_key = _public_key(keystore, key, pkcs11, certificate, pkmd, passphrase_fd) if sources else None
    if image is not None:
        if out is not None:
            raise UsageError("--out writes a key's avb_pkmd.bin; it does not go with --image")
        return _inspect(image, public_key, as_json)
    if public_key is None:
        raise UsageError("name a key (--keystore, --pkcs11, --certificate) or an image (--image)")
    return _describe_key(public_key, out, as_json)


@click.command("avb-sign")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--key", default="avb", show_default=True, help="The keystore role that signs vbmeta (ROLE[:GEN]).")
@click.option("--pkcs11", help="A token key (pkcs11: URI) instead of --keystore.")
@click.option("--algorithm", help="SHA256_RSA4096 and the like; default: the image's, if it fits the key.")
@click.option("--rollback-index", type=click.IntRange(min=0, max=2**64 - 1), help="Set the rollback index.")
@click.option("--chain-key", "chain_keys", multiple=True, metavar="PARTITION=KEYFILE",
              help="Replace a chained partition's public key (PEM certificate, PEM key or avb_pkmd.bin).")  # fmt: skip
@PASSPHRASE_FD
@JSON_OUTPUT
def avb_sign(
    image: Path,
    output: Path,
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    algorithm: str | None,
    rollback_index: int | None,
    chain_keys: tuple[str, ...],
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Re-sign IMAGE (vbmeta.img, or a partition image with an AVB footer) into OUTPUT, keeping its descriptors."""
    from sealgate.avb.footer import read_footer, read_image, resign_footer_image
    from sealgate.avb.keys import load_key_file
    from sealgate.avb.vbmeta import read_vbmeta, replace_chain_partition_keys, resign_vbmeta, verify_vbmeta
    from sealgate.cli.signers import load_signers
    from sealgate.durable import replace_file

    chains: dict[str, PublicKeyTypes] = {}
    for item in chain_keys:
        partition, separator, path = item.partition("=")
        if not separator or not partition or not path:
            raise UsageError(f"--chain-key {item!r}: expected PARTITION=KEYFILE")
        chains[partition] = load_key_file(_read(Path(path)), path)
    with contextlib.ExitStack() as stack:
        keys = (key,) if keystore is not None else ()
        signer = load_signers(stack, keystore, keys, (pkcs11,) if pkcs11 else (), passphrase_fd)[0]
        if read_footer(image) is not None:
            if chains:
                raise UsageError("--chain-key applies to a standalone vbmeta.img, not to a partition image's footer")
            resign_footer_image(
                image, signer, output=None if output.resolve() == image.resolve() else output,
                algorithm=algorithm, rollback_index=rollback_index,
            )  # fmt: skip
            _, vbmeta = read_image(output)
        else:
            data = _read(image)
            if chains:
                signed = replace_chain_partition_keys(
                    data, chains, signer, algorithm=algorithm, rollback_index=rollback_index
                )
            else:
                signed = resign_vbmeta(data, signer, algorithm=algorithm, rollback_index=rollback_index)
            replace_file(output, signed)
            vbmeta = read_vbmeta(signed)
    verdict = verify_vbmeta(vbmeta, [signer.public_key])
    document = {"file": str(output), "vbmeta": vbmeta.to_json(), **verdict.to_json()}
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
    else:
        click.echo(
            f"signed {output}: {vbmeta.algorithm.name}, rollback index {vbmeta.rollback_index}, "
            f"key {vbmeta.public_key_digest}"
        )
    return EXIT_OK if verdict.verified else EXIT_FAILED


@click.command("avb-verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--key", default="avb", show_default=True, help="The keystore role that signs vbmeta (ROLE[:GEN]).")
@click.option("--certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trusted key as a PEM certificate or PEM public key.")  # fmt: skip
@click.option("--pkmd", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The trusted key as avb_pkmd.bin (what avb_custom_key holds).")  # fmt: skip
@JSON_OUTPUT
def avb_verify(
    directory: Path, keystore: Path | None, key: str, certificate: Path | None, pkmd: Path | None, as_json: bool
) -> int:
    """Verify DIRECTORY's vbmeta.img and every image it vouches for, as a locked bootloader would."""
    from sealgate.avb.slot import verify_image_set

    if sum(source is not None for source in (keystore, certificate, pkmd)) != 1:
        raise UsageError("name the trusted key: one of --keystore (with --key), --certificate or --pkmd")
    public_key = _public_key(keystore, key, None, certificate, pkmd, None)
    report = verify_image_set(directory, [public_key])
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.echo(f"{directory}: {'verified' if report.verified else 'NOT VERIFIED'} "
                   f"({', '.join(report.checked) or 'nothing checked'})")  # fmt: skip
        for location, index in sorted(report.rollback_indexes.items()):
            click.echo(f"  rollback index location {location}: {index}")
        for issue in report.errors:
            click.echo(f"  error {issue.code}: {issue.message}")
    return EXIT_OK if report.verified else EXIT_FAILED


def _public_key(
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    certificate: Path | None,
    pkmd: Path | None,
    passphrase_fd: int | None,
) -> PublicKeyTypes:
    """The public key named on the command line; a keystore's needs no passphrase (certificates are public)."""
    if keystore is not None:
        from sealgate.cli.signers import open_keystore

        role, _, generation = key.partition(":")
        if generation and not generation.isdigit():
            raise UsageError(f"--key {key!r}: the generation after ':' must be a number")
        return open_keystore(keystore).certificate(role, int(generation) if generation else None).public_key()
    if pkcs11 is not None:
        from sealgate.cli.signers import load_signers

        with contextlib.ExitStack() as stack:
            return load_signers(stack, None, (), (pkcs11,), passphrase_fd)[0].public_key
    from sealgate.avb.keys import load_key_file

    path = certificate if certificate is not None else pkmd
    assert path is not None
    return load_key_file(_read(path), str(path))


def _describe_key(public_key: PublicKeyTypes, out: Path | None, as_json: bool) -> int:
    from sealgate.avb import algorithms
    from sealgate.avb.keys import key_bits, public_key_digest, public_key_metadata
    from sealgate.durable import replace_file

    metadata = public_key_metadata(public_key)
    bits = key_bits(public_key)
    if out is not None:
        replace_file(out, metadata)
    document = {
        "key_bits": bits,
        "algorithm": algorithms.for_key_bits(bits).name,
        "public_key_digest": public_key_digest(public_key),
        "public_key_metadata_size": len(metadata),
        "out": str(out) if out is not None else None,
    }
    if as_json:
        click.echo(json.dumps(document))
        return EXIT_OK
    click.echo(f"AVB key: RSA {bits} ({document['algorithm']})")
    click.echo(f"verified-boot key digest (SHA-256 of avb_pkmd.bin): {document['public_key_digest']}")
    if out is not None:
        click.echo(f"wrote {out} ({len(metadata)} bytes) for `fastboot flash avb_custom_key`")
    return EXIT_OK


def _inspect(image: Path, public_key: PublicKeyTypes | None, as_json: bool) -> int:
    from sealgate.avb.footer import read_image
    from sealgate.avb.vbmeta import verify_vbmeta
    from sealgate.errors import AvbFormatError

    try:
        footer, vbmeta = read_image(image)
    except AvbFormatError as exc:
        if as_json:
            click.echo(json.dumps({"file": str(image), "verified": False, "footer": None, "vbmeta": None,
                                   "errors": [{"code": "malformed", "message": str(exc)}]}))  # fmt: skip
        else:
            click.echo(f"{image}: MALFORMED: {exc}")
        return EXIT_FAILED
    verdict = verify_vbmeta(vbmeta, [public_key] if public_key is not None else [])
    document: dict[str, Any] = {
        "file": str(image),
        "footer": footer.to_json() if footer is not None else None,
        "vbmeta": vbmeta.to_json(),
        **verdict.to_json(),
    }
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
        return EXIT_OK if verdict.verified else EXIT_FAILED
    state = "verified" if verdict.verified else "NOT VERIFIED"
    click.echo(f"{image}: {state} ({verdict.status})")
    if footer is not None:
        click.echo(f"  AVB footer: original size {footer.original_image_size}, vbmeta at {footer.vbmeta_offset}, "
                   f"{footer.vbmeta_size} bytes")  # fmt: skip
    h = vbmeta.header
    click.echo(f"  libavb {h.required_libavb_version_major}.{h.required_libavb_version_minor}, "
               f"{vbmeta.algorithm.name}, rollback index {h.rollback_index} at location "
               f"{h.rollback_index_location}, flags {h.flags}, release {h.release!r}")  # fmt: skip
    if vbmeta.public_key_digest:
        click.echo(f"  public key digest: {vbmeta.public_key_digest}")
    if verdict.key_trusted is not None:
        click.echo(f"  signed by the given key: {'yes' if verdict.key_trusted else 'NO'}")
    for descriptor in vbmeta.descriptors:
        fields = descriptor.to_json()
        kind = fields.pop("type")
        click.echo(f"  {kind}: " + ", ".join(f"{name}={value}" for name, value in fields.items()))
    for issue in verdict.errors:
        click.echo(f"  error {issue.code}: {issue.message}")
    return EXIT_OK if verdict.verified else EXIT_FAILED


def _read(path: Path) -> bytes:
    """Small inputs only (keys, vbmeta images); a partition image goes through sealgate.avb.footer."""
    try:
        with path.open("rb") as file:
            data = file.read(16 * 1024 * 1024 + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > 16 * 1024 * 1024:
        raise UsageError(f"{path} is larger than 16 MiB; expected a key or a vbmeta image")
    return data


__all__ = ["avb_info", "avb_sign", "avb_verify"]
