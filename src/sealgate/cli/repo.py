"""`sealgate repo ...`: create, update and inspect an F-Droid-compatible app repository.

`repo update` runs inside the repository directory (or `--dir DIR`), signs the index with the key config.yml
names (the passphrase from --passphrase-fd, SEALGATE_PASSPHRASE or a prompt), and reports every APK it refused
with the reason; refusals never stop the run. The exit status is 0 when the indexes are written, also with
refusals, so that one bad upload does not block a repository; `--strict` makes refusals exit 1.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from sealgate.cli.options import JSON_OUTPUT, PASSPHRASE_FD
from sealgate.errors import RepoError, UsageError
from sealgate.signing import Signer

EXIT_OK = 0
EXIT_FAILED = 1
_DIR_OPTION = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The repository directory (holding config.yml).",
)


@click.group()
def repo() -> None:
    """An F-Droid-compatible app repository: APKs verified in several steps, index signed offline or here."""
    # A repo command is one short process that builds many acyclic objects (imports, scans, index documents): the
    # cyclic collector would only re-walk them (see `repo.update._collector_paused`). Reference counting frees.
    import gc

    gc.disable()


@repo.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--url", required=True, help="Where repo/ will be served, e.g. https://example.org/fdroid/repo.")
@click.option("--name", default="My F-Droid repository", show_default=True, help="The repository's name.")
@click.option("--description", default="", help="A sentence or two about the repository.")
@click.option("--archive-older", type=click.IntRange(min=0), default=3, show_default=True,
              help="Versions per app kept in repo/; older ones go to archive/ (0: keep all).")  # fmt: skip
@click.option("--mirror", "mirrors", multiple=True, help="A mirror's address (its fdroid/ folder); repeatable.")
@click.option("--certificate", type=click.Path(exists=True, path_type=Path),
              help="The repo key's certificate, or the public bundle directory holding repo.x509.pem.")  # fmt: skip
@click.option("--keystore", type=click.Path(file_okay=False, path_type=Path),
              help="Sign the index here with this keystore's key (an operator's own key).")  # fmt: skip
@click.option("--key", default="repo", show_default=True, help="The keystore role that signs the index.")
@click.option("--pkcs11", help="Sign the index here with this token key (pkcs11: URI) instead of a keystore.")
@JSON_OUTPUT
def init_command(
    directory: Path,
    url: str,
    name: str,
    description: str,
    archive_older: int,
    mirrors: tuple[str, ...],
    certificate: Path | None,
    keystore: Path | None,
    key: str,
    pkcs11: str | None,
    as_json: bool,
) -> int:
    """Create a repository in DIRECTORY: config.yml, repo/, archive/, metadata/."""
    from sealgate.repo.config import SigningConfig, config_fields
    from sealgate.repo.init import init_repository

    if keystore is not None and pkcs11 is not None:
        raise UsageError("sign with --keystore or with --pkcs11, not both")
    if keystore is not None and certificate is None:
        certificate = _keystore_certificate(keystore, key, directory)
    config = init_repository(
        directory,
        url=url,
        name=name,
        description=description or f"Apps from {name}.",
        archive_older=archive_older,
        mirrors=mirrors,
        certificate=certificate,
        signing=SigningConfig(keystore=keystore, key=key, pkcs11=pkcs11),
    )
    fingerprint = certificate_or_none(config)
    if as_json:
        click.echo(json.dumps({**config_fields(config), "fingerprint": fingerprint}))
        return EXIT_OK
    click.echo(f"repository created in {directory}: put APKs in {config.repo_dir}, then run `sealgate repo update`")
    if fingerprint:
        click.echo(f"fingerprint (clients pin this): {fingerprint}")
    return EXIT_OK


def certificate_or_none(config: Any) -> str | None:
    certificate = config.certificate()
    return certificate.sha256 if certificate is not None else None


def _keystore_certificate(keystore: Path, key: str, directory: Path) -> Path:
    """The keystore role's certificate file (public), to record as the repo certificate."""
    from sealgate.cli.signers import open_keystore

    store = open_keystore(keystore)
    store.role(key)  # an unknown role is an error now, not at the first update
    return keystore / f"{key}.x509.pem"


@repo.command("update")
@_DIR_OPTION
@click.option("--nosign", is_flag=True, help="Write the unsigned index only (to be signed on the offline machine).")
@click.option("--pretty", is_flag=True, help="Indent the JSON index files (fdroidserver's --pretty).")
@click.option("--create-metadata", "-c", is_flag=True,
              help="Start metadata/<package>.yml, signer pinned, for apps that have none.")  # fmt: skip
@click.option("--strict", is_flag=True, help="Exit 1 when any APK is refused (the indexes are still written).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Scan with this many processes (default: one per core).")
@PASSPHRASE_FD
@JSON_OUTPUT
def update_command(
    directory: Path,
    nosign: bool,
    pretty: bool,
    create_metadata: bool,
    strict: bool,
    jobs: int | None,
    passphrase_fd: int | None,
    as_json: bool,
) -> int:
    """Verify and index every APK in repo/ (and archive/), apply the archive policy, sign the index."""
    from sealgate.repo.config import load_config
    from sealgate.repo.update import UpdateOptions, update_repository

    config = load_config(directory)
    signing = not nosign and (config.signing.keystore is not None or config.signing.pkcs11 is not None)
    with contextlib.ExitStack() as stack:
        # The key is unlocked only if there is something to sign: an unchanged rerun asks for no passphrase.
        signer = functools.partial(_repo_signer, stack, config, passphrase_fd) if signing else None
        progress = stack.enter_context(_progress(enabled=not as_json))
        options = UpdateOptions(pretty=pretty, create_metadata=create_metadata, workers=jobs, progress=progress)
        report = update_repository(config, signer, options)
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_report(report, signed=signing)
    return EXIT_FAILED if strict and (report.refusals or report.metadata_errors) else EXIT_OK


def _repo_signer(stack: contextlib.ExitStack, config: Any, passphrase_fd: int | None) -> Signer:
    from sealgate.cli.signers import load_signers

    signing = config.signing
    uris = (signing.pkcs11,) if signing.pkcs11 is not None else ()
    keys = (signing.key,) if signing.keystore is not None else ()
    return load_signers(stack, signing.keystore, keys, uris, passphrase_fd)[0]


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Any:
    """A progress bar on stderr for long scans (only on a terminal; scripts get the summary alone)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield report


def _print_report(report: Any, *, signed: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    for error in report.metadata_errors:
        console.print(f"[red]metadata error[/red] {error}")
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow] {warning}")
    if report.refusals:
        console.print(f"{len(report.refusals)} APK(s) refused, not indexed:")
        for refusal in report.refusals:
            console.print(f"  [red]{refusal.code}[/red] {refusal.name}: {refusal.reason}", markup=True)
    for source, target in report.moved:
        console.print(f"moved {source} -> {target}")
    for path in report.created_metadata:
        console.print(f"created {path} (review it: the signer is pinned to what this APK was signed with)")
    summary = Table(title_justify="left")
    for column in ("section", "apps", "versions", "index"):
        summary.add_column(column)
    for section in report.sections:
        state = ("signed" if section.signed else "unsigned") if section.changed else "unchanged"
        summary.add_row(section.kind, str(section.apps), str(section.versions), state)
    console.print(summary)
    console.print(f"{report.scanned} APK(s) scanned, {report.cached} unchanged, in {report.seconds:.2f} s")
    if report.signing_request:
        console.print(
            f"the index is unsigned; the signing request for the offline machine is {report.signing_request}:\n"
            f"  offline:  sealgate sign {report.signing_request}\n"
            "  here:     sealgate repo apply RESPONSE --public PUBLIC-KEYS-DIR"
        )
    elif not signed:
        console.print("the index is not signed: no signing key is configured or --nosign was given")


@repo.command("apply")
@click.argument("response", type=click.Path(dir_okay=False, path_type=Path))
@_DIR_OPTION
@click.option("--public", "public_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The custodian's public keys (`sealgate keys export-public`).")  # fmt: skip
@JSON_OUTPUT
def apply_command(response: Path, directory: Path, public_dir: Path, as_json: bool) -> int:
    """Finish an offline-signed index: check the custodian's RESPONSE and sign entry.jar and index-v1.jar with it."""
    from sealgate.repo.config import load_config

    config = load_config(directory)
    written = apply_index_response(config, response, public_dir)
    if as_json:
        click.echo(json.dumps({"written": [str(path) for path in written]}))
    else:
        for path in written:
            click.echo(f"signed {path}")
    return EXIT_OK


def apply_index_response(config: Any, response: Path, public_dir: Path) -> list[Path]:
    """`bundle apply` of the response to the repository's pending request, then the JARs assembled around it."""
    import shutil

    from sealgate.custody.signing_session import PublicKeys, apply_response
    from sealgate.repo.offline_index import PENDING_DIR, REQUEST_FILE, complete_index_signing

    request = config.root / REQUEST_FILE
    if not request.is_file():
        raise RepoError(f"no signing request is pending in {config.root} ({REQUEST_FILE} is missing)")
    signed = config.state_dir / PENDING_DIR / "signed"
    shutil.rmtree(signed, ignore_errors=True)
    apply_response(response, request, PublicKeys.load(public_dir), signed)
    written = complete_index_signing(config, signed)
    shutil.rmtree(signed, ignore_errors=True)
    return written


@repo.command("verify-build")
@click.argument("unsigned", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("signed", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_DIR_OPTION
@click.option("--record/--no-record", default=True, show_default=True,
              help="Keep a reproduced build's signature in metadata/<package>/signatures/<versionCode>/.")  # fmt: skip
@JSON_OUTPUT
def verify_build_command(unsigned: Path, signed: Path, directory: Path, record: bool, as_json: bool) -> int:
    """Whether UNSIGNED (an independent build) is what the developer signed in SIGNED (apksigcopier's check).

    Exit status 0 when the build is reproduced, 1 when it is not.
    """
    from sealgate.repo.reproducible import record_developer_signature, verify_build

    result = verify_build(unsigned, signed)
    recorded = None
    if result.reproducible and record:
        from sealgate.repo.config import load_config

        recorded = record_developer_signature(load_config(directory).metadata_dir, signed, result)
    if as_json:
        click.echo(json.dumps({**result.to_json(), "recorded": str(recorded) if recorded else None}))
    else:
        verdict = "reproduced" if result.reproducible else "NOT reproduced"
        click.echo(f"{result.package} {result.version_code}: {verdict}: {result.reason}")
        for difference in result.differences:
            click.echo(f"  differs: {difference}")
        if recorded:
            click.echo(f"developer signature recorded in {recorded}")
    return EXIT_OK if result.reproducible else EXIT_FAILED


@repo.command("publish")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_DIR_OPTION
@click.option("--new-key", is_flag=True, help="Allow an index signed by another key than the published one.")
@JSON_OUTPUT
def publish_command(dest: Path, directory: Path, new_key: bool, as_json: bool) -> int:
    """Switch the web root DEST to the repository's current state, atomically (DEST/repo, DEST/archive).

    The working copy is checked as a client would check it first; files earlier indexes named stay available.
    """
    from sealgate.repo.config import load_config
    from sealgate.repo.publish import publish

    config = load_config(directory)
    certificate = config.certificate()
    with _progress(enabled=not as_json) as progress:
        report = publish(
            config.root,
            dest,
            expected_fingerprint=certificate.sha256 if certificate is not None else None,
            allow_new_key=new_key,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        click.echo(
            f"published release {report.release} to {dest}: {report.files} files ({report.copied} new, "
            f"{report.copied_bytes} bytes copied), {report.kept_from_earlier} kept for earlier indexes, "
            f"signed by {report.fingerprint}"
        )
    return EXIT_OK


@repo.command("fetch")
@click.argument("url")
@click.option("--fingerprint", help="The repository's SHA-256 fingerprint (or put ?fingerprint= in URL).")
@click.option("--timeout", type=click.FloatRange(min=1), default=30.0, show_default=True, help="Seconds per request.")
@JSON_OUTPUT
def fetch_command(url: str, fingerprint: str | None, timeout: float, as_json: bool) -> int:
    """Download and verify a repository's index (ours or any F-Droid repository's) and list its apps."""
    from sealgate.repo.fetch import fetch_index, summarise

    fetched = fetch_index(url, fingerprint, timeout=timeout)
    rows = summarise(fetched)
    if as_json:
        click.echo(json.dumps({"address": fetched.address, "fingerprint": fetched.fingerprint, "apps": rows}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    name = fetched.index.get("repo", {}).get("name", {})
    table = Table(title=f"{name.get('en-US', fetched.address)}: {len(rows)} apps, verified", title_justify="left")
    for column in ("package", "name", "version", "versions", "signer"):
        table.add_column(column)
    for row in rows:
        version = f"{row['version_name']} ({row['version_code']})"
        table.add_row(row["package"], str(row["name"]), version, str(row["versions"]), (row["signer"] or "")[:16])
    Console(highlight=False).print(table)
    click.echo(f"index signed by {fetched.fingerprint}")
    return EXIT_OK


@repo.group("metadata")
def metadata_group() -> None:
    """Per-app metadata files (metadata/<package>.yml, fdroiddata's fields)."""


@metadata_group.command("new")
@click.argument("package_or_apk")
@_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace an existing metadata file.")
@JSON_OUTPUT
def metadata_new_command(package_or_apk: str, directory: Path, force: bool, as_json: bool) -> int:
    """Start metadata/<package>.yml from an APK (a path, or a package whose newest APK is in repo/).

    The signer of that APK is pinned in AllowedAPKSigningKeys: review it before the first update.
    """
    from sealgate.repo.config import load_config
    from sealgate.repo.metadata import metadata_path, new_metadata_yaml
    from sealgate.repo.scan import scan_apk

    config = load_config(directory)
    apk = _find_apk(config, package_or_apk)
    scan = scan_apk(apk, apk.name)
    if not scan.verified or not scan.signers:
        reason = "; ".join(scan.errors[:2]) or "it does not verify"
        raise RepoError(f"{apk} does not verify, so its signer cannot be pinned: {reason}")
    path = metadata_path(config.metadata_dir, scan.package)
    if path.exists() and not force:
        raise RepoError(f"{path} exists; --force replaces it")
    text = new_metadata_yaml(
        scan.package, name=scan.label or None, signer_sha256=scan.signers[0], version_code=scan.version_code
    )
    from sealgate.durable import replace_file

    config.metadata_dir.mkdir(parents=True, exist_ok=True)
    try:
        replace_file(path, text.encode("utf-8"))
    except OSError as exc:
        raise RepoError(f"cannot write {path}: {exc.strerror}") from None
    if as_json:
        click.echo(json.dumps({"file": str(path), "package": scan.package, "signer": scan.signers[0]}))
    else:
        click.echo(f"wrote {path}: {scan.package}, signer {scan.signers[0]} pinned")
    return EXIT_OK


def _find_apk(config: Any, text: str) -> Path:
    candidate = Path(text)
    if candidate.suffix == ".apk" and candidate.is_file():
        return candidate
    from sealgate.repo.scan import scan_apk

    matches = []
    for path in sorted(config.repo_dir.glob("*.apk")):
        scan = scan_apk(path, path.name)
        if scan.package == text and scan.verified:
            matches.append((scan.version_code, path))
    if not matches:
        raise RepoError(f"no verified APK of {text} in {config.repo_dir} (give an APK's path instead)")
    newest: Path = max(matches)[1]
    return newest


__all__ = ["repo"]
