"""`sealgate sign`: the custodian signs a request bundle on the offline machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sealgate.custody.keystore import Keystore
from sealgate.custody.offline import ensure_offline
from sealgate.custody.passphrase import read_passphrase
from sealgate.custody.signing_session import SigningSession
from sealgate.errors import UsageError
from sealgate.release import target_files_bundle  # noqa: F401  (registers the "target-files" kind)


@click.command("sign")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--keystore",
    "keystore_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The keystore directory made by `sealgate keys init`.",
)
@click.option(
    "--record",
    "record_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The signing record to append to (created on first use).",
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write the response."
)
@click.option("--yes", is_flag=True, help="Sign without asking (scripts); the summary is still printed.")
@click.option("--allow-online", is_flag=True, help="Sign even with a network interface up (tests only).")
@click.option(
    "--passphrase-fd",
    type=click.IntRange(min=0),
    metavar="N",
    help="Read the keystore passphrase from this open file descriptor (else SEALGATE_PASSPHRASE or a prompt).",
)
@click.option(
    "--expect-digest",
    metavar="SHA256",
    help="The request digest the requester gave you; signing is refused when the bundle's differs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary and the outcome as JSON objects.")
def sign(
    bundle: Path,
    keystore_dir: Path,
    record_file: Path,
    out: Path,
    yes: bool,
    allow_online: bool,
    passphrase_fd: int | None,
    expect_digest: str | None,
    as_json: bool,
) -> int:
    """Check BUNDLE, show exactly what will be signed, and sign it after confirmation.

    Refuses to run while any network interface other than loopback is up. Every signature is appended to the
    signing record; the response bundle for `sealgate bundle apply` is written to --out, and the record's new head
    is printed: write it down, `sealgate record verify --head` checks it later.
    """
    # Before anything else, and before the keystore is even opened: the machine must be offline.
    ensure_offline(allow_online)
    if out.exists():
        raise UsageError(f"{out} already exists; choose another name for the response")
    keystore = Keystore.open(keystore_dir)
    with SigningSession.prepare(
        bundle, keystore, record_file, allow_online=allow_online, expected_sha256=expect_digest, work_dir=out.parent
    ) as session:
        summary = session.summary
        if as_json:
            click.echo(json.dumps({"summary": summary.to_json()}))
        else:
            click.echo(summary.to_text())
            click.echo()
        if not summary.network.offline:
            click.echo(
                f"warning: signing ONLINE ({', '.join(summary.network.online_interfaces)} up): --allow-online is for "
                "tests only",
                err=True,
            )
        if not yes:
            _confirm(len(summary.items))
        passphrase = read_passphrase(fd=passphrase_fd)
        outcome = session.sign(passphrase, out)
    if as_json:
        click.echo(json.dumps({"outcome": outcome.to_json()}))
    else:
        click.echo(f"signed {len(outcome.response.items)} item(s); response written to {out}")
        click.echo(f"  response digest {outcome.response_sha256}")
        click.echo(f"  record head     {outcome.record_head}   <- write this down")
    return 0


def _confirm(count: int) -> None:
    if not sys.stdin.isatty():
        raise UsageError("confirmation needed but there is no terminal to ask on; check the summary and pass --yes")
    answer = click.prompt(f"Sign these {count} item(s)? Type 'yes' to sign", default="", show_default=False)
    if answer.strip().lower() != "yes":
        click.echo("nothing was signed", err=True)
        raise click.exceptions.Abort()
