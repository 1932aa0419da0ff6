"""`sealgate record ...`: check the custodian's signing record."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sealgate.custody.record import RecordReport, verify


@click.group()
def record() -> None:
    """The signing record: the hash-chained log of every signature the custodian made."""


@record.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--head",
    metavar="HASH",
    help="A head hash written down after an earlier signing session: it must still be in the chain.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify_command(file: Path, head: str | None, as_json: bool) -> int:
    """Check every entry's hash and its link to the one before; name the first bad line.

    A chain cannot show by itself that its last entries were cut off or that it was rewritten from some point on:
    give --head with a hash noted earlier (`sealgate sign` prints one after every session) to check that too.
    Exit status: 0 when the record is intact, 1 when it is not.
    """
    report = verify(file, head=head.lower() if head else None)
    click.echo(json.dumps(report.to_json()) if as_json else _human(report))
    return 0 if report.ok else 1


def _human(report: RecordReport) -> str:
    if report.ok:
        lines = [f"{report.path}: intact, {report.entries} entries"]
        lines.append(f"  head {report.head}" if report.head else "  (empty)")
        if report.expected_head is not None:
            after = report.entries_after_head or 0
            lines.append(
                "  the given head is the last entry"
                if after == 0
                else f"  the given head is in the chain; {after} entries were appended after it"
            )
        return "\n".join(lines)
    lines = [f"{report.path}: NOT INTACT"]
    if report.first_bad_line is not None:
        lines.append(f"  first bad line: {report.first_bad_line} ({report.entries} entries before it verified)")
    lines += [f"  {issue.code}: {issue.message}" for issue in report.issues]
    return "\n".join(lines)
