"""How the commands that check a signature print their verdict, so `ota verify` and `ota payload verify` read alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import click

from sealgate.apk.report import Issue


class SignatureVerdict(Protocol):
    """A verification report: OtaVerification (whole-file) or PayloadVerification (payload)."""

    @property
    def verified(self) -> bool: ...

    @property
    def signer(self) -> Any: ...

    @property
    def errors(self) -> list[Issue]: ...

    def to_json(self) -> dict[str, Any]: ...


def echo_signature_verdict(file: Path, result: SignatureVerdict, as_json: bool) -> None:
    """One JSON object, or `FILE: verified, signed by SHA256 (SUBJECT)`, or `FILE: NOT VERIFIED` and its errors."""
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False))
    elif result.verified and result.signer is not None:
        click.echo(f"{file}: verified, signed by {result.signer.sha256} ({result.signer.subject})")
    else:
        click.echo(f"{file}: NOT VERIFIED")
        for issue in result.errors:
            click.echo(f"  error {issue.code}: {issue.message}")
