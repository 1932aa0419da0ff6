"""Options several commands share, so they read and behave the same everywhere."""

from __future__ import annotations

import click

#: Passphrases and PINs never come from argv (other users can read it in the process list).
PASSPHRASE_FD = click.option(
    "--passphrase-fd",
    type=click.IntRange(min=0),
    metavar="N",
    help="Read the keystore passphrase (or token PIN) from this open file descriptor, up to the first newline; "
    "otherwise SEALGATE_PASSPHRASE, otherwise a prompt.",
)
JSON_OUTPUT = click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
