"""F-Droid's test APKs (../shared/vectors/fdroid): verdicts, signers and schemes as expected.tsv states them.

Several of these files were built to break F-Droid's signer pinning (issue-1128 proofs of concept, janus.apk):
the signer we name must be the one Android verifies, and a Janus file must be rejected.
"""

from __future__ import annotations

import pytest

from conftest import SHARED_VECTORS, read_tsv, vectors_path
from sealgate.apk.verifier import verify_apk
from sealgate.errors import SealgateError


def _rows() -> list[pytest.param]:  # type: ignore[valid-type]
    table = SHARED_VECTORS / "fdroid" / "expected.tsv"
    if not table.exists():
        return [pytest.param(None, id="vectors-missing")]
    return [pytest.param(row, id=row["file"]) for row in read_tsv(table)]


@pytest.mark.parametrize("row", _rows())
def test_fdroid_apk(row: dict[str, str] | None) -> None:
    apks = vectors_path("fdroid", "apks")
    if row is None:
        return
    path = apks / row["file"]
    if row["expected"] == "fail":
        try:
            report = verify_apk(path)
        except SealgateError:
            return
        assert not report.verified, f"{row['file']} must be rejected: {row['note']}"
        assert report.errors
        return
    report = verify_apk(path)
    assert report.verified, [issue.message for issue in report.errors]
    expected_signers = sorted(filter(None, row["signer_sha256"].split(",")))
    assert sorted(certificate.sha256 for certificate in report.signers) == expected_signers
    assert set(report.schemes) == {int(digit) for digit in row["schemes"]}


def test_janus_is_rejected_for_the_janus_reason() -> None:
    report = verify_apk(vectors_path("fdroid", "apks", "janus.apk"))
    assert not report.verified
    assert "ZIP_DATA_BEFORE_FIRST_ENTRY" in {issue.code for issue in report.errors}
