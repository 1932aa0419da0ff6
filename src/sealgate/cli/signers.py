"""Signing keys for commands: keystore roles or PKCS#11 token keys, with the passphrase or PIN read safely.

Shared by every command that signs (`apk sign`, `apk lineage`, `repo update`), so that keys are named, unlocked
and refused the same way everywhere. Keystore keys are decrypted on a background thread (`unlocking_signer`):
commands that hash before they sign do not wait for scrypt.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from sealgate.custody.passphrase import read_passphrase
from sealgate.errors import UsageError
from sealgate.signing import Signer

if TYPE_CHECKING:
    from sealgate.custody.keystore import Keystore


def load_signers(
    stack: contextlib.ExitStack,
    keystore: Path | None,
    keys: tuple[str, ...],
    uris: tuple[str, ...],
    passphrase_fd: int | None,
) -> list[Signer]:
    """Signers from one source: keystore keys (one passphrase) or token keys (one PIN); never both at once."""
    if uris and (keystore is not None or keys):
        raise UsageError("sign with --keystore and --key, or with --pkcs11, not both")
    if uris:
        from sealgate.custody.token import Pkcs11Uri, TokenSigner

        parsed = [Pkcs11Uri.parse(uri) for uri in uris]
        pin = read_passphrase(fd=passphrase_fd, what=f"PIN of token {parsed[0].token_name}")
        return [stack.enter_context(TokenSigner.open(uri, pin)) for uri in parsed]
    if keystore is None:
        raise UsageError("name the keys to sign with: --keystore DIR --key ROLE, or --pkcs11 URI")
    if not keys:
        raise UsageError("name at least one keystore key with --key ROLE")
    store = open_keystore(keystore)
    passphrase = keystore_passphrase(passphrase_fd)
    return [keystore_signer(store, key, passphrase) for key in keys]


def open_keystore(path: Path) -> Keystore:
    from sealgate.custody.keystore import Keystore

    return Keystore.open(path)


def keystore_passphrase(passphrase_fd: int | None) -> str:
    return read_passphrase(fd=passphrase_fd, what="keystore passphrase")


def keystore_signer(store: Keystore, key: str, passphrase: str) -> Signer:
    """`ROLE` (its current key) or `ROLE:GEN` (a generation kept after `keys rotate`)."""
    role, separator, generation_text = key.partition(":")
    generation: int | None = None
    if separator:
        if not generation_text.isdigit() or int(generation_text) < 1:
            raise UsageError(f"--key {key!r}: the generation after ':' must be a positive number")
        generation = int(generation_text)
    return store.unlocking_signer(role, passphrase, generation)
