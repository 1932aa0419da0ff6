"""Where a keystore passphrase or a token PIN comes from: a file descriptor, the environment, or the terminal.

Never the command line: argv is visible to every user through /proc and lands in shell history. The order is the
most explicit source first: a descriptor the caller opened on purpose (`--passphrase-fd N`, as gpg does), then
SEALGATE_PASSPHRASE (scripts and CI), then a prompt on the controlling terminal. Without any of them the caller gets
an error that names all three, never a prompt read from a pipe by accident (getpass falls back to stdin when there
is no terminal, which would swallow a script's input).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping

from sealgate.errors import PassphraseError

ENV_VAR = "SEALGATE_PASSPHRASE"

#: A passphrase is a line, not a file: stop reading a descriptor long before it could exhaust memory.
_MAX_LENGTH = 4096


def read_passphrase(
    *,
    fd: int | None = None,
    environ: Mapping[str, str] | None = None,
    what: str = "keystore passphrase",
    confirm: bool = False,
) -> str:
    """The passphrase from the first available source; `confirm` asks twice when prompting (creating a keystore).

    `what` names the secret in prompts and errors ("keystore passphrase", "PIN for token X").
    """
    if fd is not None:
        return _from_fd(fd, what)
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR)
    if value is not None:
        if not value:
            raise PassphraseError(f"{ENV_VAR} is set but empty; it must hold the {what}")
        return value
    if not terminal_available():
        raise PassphraseError(
            f"no {what}: there is no terminal to prompt on; set {ENV_VAR} or pass --passphrase-fd N "
            "(an open file descriptor holding it)"
        )
    return _prompt(what, confirm)


def terminal_available() -> bool:
    """True when a controlling terminal can be opened for a prompt (getpass reads /dev/tty)."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def _from_fd(fd: int, what: str) -> str:
    # One line, read byte by byte so nothing after the newline is consumed (the descriptor may carry more).
    data = bytearray()
    try:
        while len(data) <= _MAX_LENGTH:
            chunk = os.read(fd, 1)
            if not chunk or chunk == b"\n":
                break
            data += chunk
    except OSError as exc:
        raise PassphraseError(f"cannot read the {what} from file descriptor {fd}: {exc.strerror}") from None
    if len(data) > _MAX_LENGTH:
        raise PassphraseError(f"file descriptor {fd} holds more than {_MAX_LENGTH} bytes before a newline")
    if data.endswith(b"\r"):
        del data[-1]
    if not data:
        raise PassphraseError(f"file descriptor {fd} gave an empty {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PassphraseError(f"the {what} from file descriptor {fd} is not UTF-8") from None


def _prompt(what: str, confirm: bool) -> str:
    try:
        first = getpass.getpass(f"{what[0].upper()}{what[1:]}: ")
        if not first:
            raise PassphraseError(f"empty {what}")
        if confirm and getpass.getpass(f"Repeat the {what}: ") != first:
            raise PassphraseError(f"the two entries of the {what} differ; nothing was changed")
    except EOFError:
        raise PassphraseError(f"no {what} entered") from None
    return first
