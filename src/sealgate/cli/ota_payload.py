"""`sealgate ota payload ...`: A/B payloads (update_engine's payload.bin).

`build` writes an unsigned full payload (or a delta one with --source) from a directory of `<partition>.img`
files; `sign` signs it as update_engine's tools do and writes payload_properties.txt; `info` shows the header and
manifest; `verify` checks both signatures against trusted certificates (exit 0 verified, 1 refused, 2 usage);
`apply` applies a payload the way update_engine does into a new directory of images, which appears only when
everything verified.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.cli.output import echo_signature_verdict
from sealgate.errors import PayloadError, UsageError

if TYPE_CHECKING:
    from sealgate.apk.certificate import Certificate
    from sealgate.ota.payload.properties import PayloadProperties

EXIT_OK = 0
EXIT_FAILED = 1

_CERTS = click.option("--certs", "certs", multiple=True, required=True,
                      type=click.Path(dir_okay=False, path_type=Path),
                      help="A trusted certificate (PEM) or otacerts.zip; repeatable.")  # fmt: skip
_PROPERTIES = click.option("--properties", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="payload_properties.txt to check the payload against.")  # fmt: skip


@click.group("payload")
def payload() -> None:
    """A/B payloads (payload.bin): build, sign, inspect, verify and apply them as update_engine does."""


@payload.command("build")
@click.argument("images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of the source build's images: write a delta payload from them.")  # fmt: skip
@click.option("--compression", type=click.Choice(["xz", "zstd", "none"]), default="xz", show_default=True)
@click.option("--max-timestamp", type=click.IntRange(min=0), default=0, help="The manifest's max_timestamp.")
@click.option("--security-patch-level", metavar="YYYY-MM-DD", help="The manifest's security_patch_level.")
@JSON_OUTPUT
def build_command(
    images_dir: Path,
    out: Path,
    source: Path | None,
    compression: str,
    max_timestamp: int,
    security_patch_level: str | None,
    as_json: bool,
) -> int:
    """Write an unsigned payload OUT from the <partition>.img files of IMAGES_DIR."""
    from sealgate.ota.payload.reader import read_payload
    from sealgate.ota.payload.writer import write_delta_payload, write_full_payload

    images = _images(images_dir)
    with _progress("building", enabled=not as_json) as report:
        if source is None:
            write_full_payload(images, out, compression=compression, max_timestamp=max_timestamp,
                               security_patch_level=security_patch_level, progress=report)  # fmt: skip
        else:
            write_delta_payload(_images(source), images, out, compression=compression, max_timestamp=max_timestamp,
                                security_patch_level=security_patch_level, progress=report)  # fmt: skip
    written = read_payload(out)
    if as_json:
        click.echo(json.dumps(written.to_json(), ensure_ascii=False))
    else:
        kind = "delta" if written.is_delta else "full"
        click.echo(f"wrote {out}: unsigned {kind} payload, {written.size} bytes, {len(images)} partition(s)")
    return EXIT_OK


@payload.command("sign")
@click.argument("input_payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path), help="Encrypted keystore directory.")
@click.option("--key", default="ota", show_default=True, help="The keystore role that signs OTA payloads.")
@click.option("--pkcs11", help="A token key (pkcs11: URI) instead of --keystore.")
@click.option("--properties", "properties_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write payload_properties.txt (default: beside OUT).")  # fmt: skip
@PASSPHRASE_FD
@JSON_OUTPUT
def sign_command(
    input_payload: Path,
    out: Path,
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    properties_path: Path | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Sign INPUT_PAYLOAD into OUT (metadata and payload signatures) and write its payload_properties.txt."""
    from sealgate.cli.signers import load_signers
    from sealgate.durable import replace_file
    from sealgate.ota.payload.signer import sign_payload

    properties_path = properties_path or out.parent / "payload_properties.txt"
    with contextlib.ExitStack() as stack:
        keys = (key,) if keystore is not None else ()
        signer = load_signers(stack, keystore, keys, (pkcs11,) if pkcs11 else (), passphrase_fd)[0]
        properties = sign_payload(input_payload, out, signer)
    try:
        replace_file(properties_path, properties.to_text().encode())
    except OSError as exc:
        raise UsageError(f"cannot write {properties_path}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps({"file": str(out), "properties_file": str(properties_path),
                               "signer": signer.certificate.sha256,
                               "properties": properties.to_text().splitlines()}, ensure_ascii=False))  # fmt: skip
    else:
        click.echo(f"signed {out} with {signer.certificate.sha256} ({signer.certificate.subject})")
        click.echo(f"wrote {properties_path}")
    return EXIT_OK


@payload.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Where the payload starts in FILE.")
@click.option("--size", type=click.IntRange(min=0), default=None, help="The payload's size (default: to the end).")
@JSON_OUTPUT
def info_command(file: Path, offset: int, size: int | None, as_json: bool) -> int:
    """Show a payload's header, manifest and signatures (not verified: see `verify`); FILE may be an OTA package."""
    from sealgate.ota.payload.reader import read_payload

    offset, size, _ = _locate(file, offset, size)
    info = read_payload(file, offset=offset, size=size).to_json()
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return EXIT_OK
    click.echo(
        f"{file}: {info['type']} payload, major version {info['major_version']}, minor version "
        f"{info['minor_version']}, {info['size']} bytes, block size {info['block_size']}"
    )
    click.echo(f"  metadata {info['metadata_size']} bytes, max_timestamp {info['max_timestamp']}")
    signatures = info["payload_signatures"]
    click.echo(f"  signatures: {len(info['metadata_signatures'])} metadata, {len(signatures)} payload"
               + ("" if signatures else " (unsigned)"))  # fmt: skip
    for partition in info["partitions"]:
        operations = ", ".join(f"{count} {name}" for name, count in partition["operations"].items())
        old = "" if partition["old_size"] is None else f" from {partition['old_size']} bytes"
        click.echo(f"  {partition['name']}: {partition['size']} bytes{old}, sha256 {partition['sha256']}")
        click.echo(f"    {operations}")
    return EXIT_OK


@payload.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_CERTS
@_PROPERTIES
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Where the payload starts in FILE.")
@click.option("--size", type=click.IntRange(min=0), default=None, help="The payload's size (default: to the end).")
@JSON_OUTPUT
def verify_command(
    file: Path, certs: tuple[Path, ...], properties: Path | None, offset: int, size: int | None, as_json: bool
) -> int:
    """Verify the metadata and payload signatures of FILE as update_engine does.

    FILE may be an A/B OTA package: its payload.bin is checked in place, against its payload_properties.txt.
    """
    from sealgate.ota.payload.verify import verify_payload

    keys = _trusted(certs)
    offset, size, embedded = _locate(file, offset, size)
    result = verify_payload(file, keys, offset=offset, size=size, properties=_read_properties(properties) or embedded)
    echo_signature_verdict(file, result, as_json)
    return EXIT_OK if result.verified else EXIT_FAILED


@payload.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("target_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Directory of the source images (for a delta payload).")  # fmt: skip
@_CERTS
@_PROPERTIES
@JSON_OUTPUT
def apply_command(
    file: Path,
    target_dir: Path,
    source: Path | None,
    certs: tuple[Path, ...],
    properties: Path | None,
    as_json: bool,
) -> int:
    """Apply FILE into TARGET_DIR (new or empty); it appears only when every hash and signature checked out.

    FILE may be an A/B OTA package: its payload.bin is applied in place, checked against its payload_properties.txt.
    """
    from sealgate.ota.payload.apply import apply_payload

    if target_dir.exists() and any(target_dir.iterdir()):
        raise UsageError(f"{target_dir} is not empty")
    keys = _trusted(certs)
    offset, size, embedded = _locate(file, 0, None)
    parsed = _read_properties(properties) or embedded
    try:
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target_dir.parent, prefix=f".{target_dir.name}.staging."))
    except OSError as exc:
        raise UsageError(f"cannot create a directory beside {target_dir}: {exc.strerror}") from None
    try:
        with _progress("applying", enabled=not as_json) as report:
            result = apply_payload(file, staging, public_keys=keys, source_dir=source, offset=offset, size=size,
                                   properties=parsed, progress=report)  # fmt: skip
        if target_dir.exists():
            target_dir.rmdir()
        staging.rename(target_dir)
    except PayloadError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not as_json:
            raise
        click.echo(json.dumps({"file": str(file), "applied": False, "errors": [{"code": "PAYLOAD_REFUSED",
                                                                               "message": str(exc)}]}))  # fmt: skip
        return EXIT_FAILED
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.target_dir = target_dir
    result.images = {name: target_dir / path.name for name, path in result.images.items()}
    if as_json:
        click.echo(json.dumps({"file": str(file), "applied": True, **result.to_json(), "errors": []}))
    else:
        click.echo(
            f"applied {file} to {target_dir}: {', '.join(result.images)} ({'delta' if result.is_delta else 'full'})"
        )
    return EXIT_OK


def _locate(file: Path, offset: int, size: int | None) -> tuple[int, int | None, PayloadProperties | None]:
    """The payload's range in FILE and, for an OTA package, the payload_properties.txt it carries."""
    try:
        with file.open("rb") as stream:
            stream.seek(offset)
            is_zip = stream.read(4) == b"PK\x03\x04"
    except OSError:
        return offset, size, None  # reported by the reader, as for any unreadable payload
    if not is_zip:
        return offset, size, None
    from sealgate.ota.package import entry_data_range
    from sealgate.ota.payload.properties import PayloadProperties
    from sealgate.ziparchive import ZipArchive

    payload_offset, payload_size = entry_data_range(file, "payload.bin")
    with ZipArchive.open(file) as archive:
        entry = archive.entry("payload_properties.txt")
        text = None if entry is None else archive.read(entry, max_size=4096)
    try:
        properties = None if text is None else PayloadProperties.parse(text.decode("ascii"))
    except UnicodeDecodeError:
        raise PayloadError(f"{file}: payload_properties.txt is not ASCII text") from None
    return payload_offset, payload_size, properties


def _images(directory: Path) -> dict[str, Path]:
    images = {path.name[: -len(".img")]: path for path in sorted(directory.glob("*.img")) if path.is_file()}
    if not images:
        raise UsageError(f"{directory} holds no <partition>.img files")
    return images


def _trusted(certs: tuple[Path, ...]) -> list[Certificate]:
    from sealgate.ota.whole_file import load_trusted_keys

    return [key.certificate for key in load_trusted_keys(certs)]


def _read_properties(path: Path | None) -> PayloadProperties | None:
    if path is None:
        return None
    from sealgate.ota.payload.properties import PayloadProperties

    try:
        return PayloadProperties.parse(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


@contextlib.contextmanager
def _progress(label: str, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for long work (only on a terminal; never with --json)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:  # fmt: skip
        task = bar.add_task(label, total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report


__all__ = ["payload"]
