"""Bundle kinds whose signing and checking live in a layer above custody (target files live in release/).

The offline session and `apply` only move bytes, unlock keys, record and check; what a target-files package is, how
it is re-signed and what makes the result right belong to `sealgate.release`, which custody must not import (arrows
point down). So such a kind is served by a handler the upper layer registers when it is loaded (the CLI loads it);
a session that meets a kind nobody registered refuses it with a sentence, before anything is signed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sealgate.apk.certificate import Certificate
from sealgate.errors import BundleError
from sealgate.signing import Signer


@dataclass(frozen=True)
class ArtifactPlan:
    """What the custodian is shown about an artifact, and every key role its signing needs."""

    roles: tuple[str, ...]
    lines: tuple[str, ...] = ()
    facts: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"roles": list(self.roles), "facts": dict(self.facts)}


class ArtifactHandler(Protocol):
    """Signs and checks one kind of artifact; every method raises a SealgateError with the reason to refuse."""

    #: What the record names the signing (ResponseItem.algorithm), e.g. "release-target-files".
    algorithm: str

    def check_request(self, path: Path, options: Mapping[str, Any]) -> None:
        """Online, when the request is made: refuse what is plainly not this kind of artifact."""

    def plan(self, path: Path, options: Mapping[str, Any]) -> ArtifactPlan:
        """Offline, before anything is unlocked: what the artifact declares and which roles will sign it."""

    def sign(self, source: Path, output: Path, signers: Mapping[str, Signer], options: Mapping[str, Any]) -> None:
        """Offline: write the signed artifact; `signers` holds every role `plan` named, unlocked."""

    def check(
        self, signed: Path, unsigned: Path, certificate: Callable[[str], Certificate], options: Mapping[str, Any]
    ) -> None:
        """Online: refuse unless `signed` is `unsigned` signed as it must be (`certificate(role)`: exported keys)."""


_HANDLERS: dict[str, ArtifactHandler] = {}


def register_handler(kind: str, handler: ArtifactHandler) -> None:
    _HANDLERS[kind] = handler


def handler_for(kind: str) -> ArtifactHandler:
    try:
        return _HANDLERS[kind]
    except KeyError:
        raise BundleError(
            f"this sealgate cannot handle {kind} items here: the code that signs and checks them is not loaded "
            "(use the sealgate command, which loads it)"
        ) from None
