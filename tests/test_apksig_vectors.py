"""Conformance with AOSP apksig: every row of ../shared/vectors/apksig/expected.tsv.

Each row says what apksig decides for one file at one SDK window (see that folder's README). Our verdict must
equal it; where apksig names a failure, our report must name the same issue, because those names are what
people look up.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from conftest import SHARED_VECTORS, read_tsv, vectors_path
from sealgate.apk.verifier import ApkVerification, verify_apk
from sealgate.errors import SealgateError

VERDICT_ROWS = ("ok", "ok+warning", "fail")
#: Rows where we follow the device rather than apksig, and the issue we must report instead.
DEVICE_OVER_APKSIG = {
    # libziparchive's IsValidEntryName refuses a NUL in an entry name, so Android cannot install this APK,
    # while apksig (a Java ZIP reader) accepts it.
    "v1-only-with-nul-in-entry-name.apk": "ZIP_BAD_ENTRY_NAME",
}
OBSERVED_ROWS = ("observed:ok", "observed:fail", "observed:exception:ApkFormatException")


def _rows(kinds: tuple[str, ...]) -> list[pytest.param]:  # type: ignore[valid-type]
    table = SHARED_VECTORS / "apksig" / "expected.tsv"
    if not table.exists():
        return [pytest.param(None, id="vectors-missing")]
    rows = [row for row in read_tsv(table) if row["expected"] in kinds or row["expected"].startswith(kinds)]
    return [
        pytest.param(row, id=f"{row['file']}[{row['min_sdk'] or '-'}..{row['max_sdk'] or '-'}]#{index}")
        for index, row in enumerate(rows)
    ]


def _verify(row: dict[str, str]) -> ApkVerification:
    files = vectors_path("apksig", "files")
    idsig = files / row["v4_sig_file"] if row.get("v4_sig_file") else None
    return verify_apk(
        files / row["file"],
        min_sdk=int(row["min_sdk"]) if row["min_sdk"] else None,
        max_sdk=int(row["max_sdk"]) if row["max_sdk"] else None,
        idsig=idsig,
    )


def _describe(report: ApkVerification) -> str:
    errors = [issue.code for issue in report.errors]
    warnings = [issue.code for issue in report.warnings]
    return f"verified={report.verified} errors={errors} warnings={warnings}"


@pytest.mark.parametrize("row", _rows(VERDICT_ROWS))
def test_verdict_matches_apksig(row: dict[str, str] | None) -> None:
    if row is None:
        vectors_path("apksig")
        return
    report = _verify(row)
    expected_ok = row["expected"] in ("ok", "ok+warning")
    assert report.verified == expected_ok, _describe(report)
    key_issues = [code for code in row["key_issue"].split("|") if code]
    if expected_ok:
        assert report.signers, "a verified APK must name its signers"
        if row["expected"] == "ok+warning":
            assert set(key_issues) & {issue.code for issue in report.warnings}, _describe(report)
    elif key_issues:
        assert set(key_issues) & {issue.code for issue in report.errors}, _describe(report)


@pytest.mark.parametrize("row", _rows(("exception:",)))
def test_malformed_input_is_a_typed_error(row: dict[str, str] | None) -> None:
    if row is None:
        vectors_path("apksig")
        return
    with pytest.raises(SealgateError):
        _verify(row)


@pytest.mark.parametrize("row", _rows(OBSERVED_ROWS))
def test_observed_verdicts_of_apksig_main(row: dict[str, str] | None) -> None:
    """Rows no apksig test asserts, with the verdict apksig main printed at the default window."""
    if row is None:
        vectors_path("apksig")
        return
    observed = row["expected"].removeprefix("observed:")
    if row["file"] in DEVICE_OVER_APKSIG:
        report = _verify(row)
        assert not report.verified
        assert DEVICE_OVER_APKSIG[row["file"]] in {issue.code for issue in report.errors}
        return
    if observed.startswith("exception"):
        with pytest.raises(SealgateError):
            _verify(row)
        return
    report = _verify(row)
    assert report.verified == (observed == "ok"), _describe(report)
    if observed == "fail" and row["apksig_main_errors"]:
        expected_codes = set(row["apksig_main_errors"].split(","))
        assert expected_codes & {issue.code for issue in report.errors}, _describe(report)


@pytest.mark.parametrize("row", _rows(("no-crash",)))
def test_no_crash_rows(row: dict[str, str] | None) -> None:
    if row is None:
        vectors_path("apksig")
        return
    with contextlib.suppress(SealgateError):
        _verify(row)


def test_every_row_is_covered() -> None:
    """Guard against a new kind of row silently going untested."""
    rows = read_tsv(vectors_path("apksig", "expected.tsv"))
    handled = {"ok", "ok+warning", "fail", "cert", "key", "lineage-ok", "no-crash", "v4-idsig", "stamp-fail"}
    kinds = {row["expected"] for row in rows}
    unknown = {k for k in kinds if k not in handled and not k.startswith(("exception:", "observed:", "parse-fail:"))}
    assert not unknown


def test_sample_rows_exist(apksig_vectors: Path) -> None:
    assert len(read_tsv(apksig_vectors / "expected.tsv")) > 400
