"""The update rule end to end: APKs signed by Debian's apksigner, verified by us, judged by decide_update."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_tool
from sealgate.apk.update_rules import decide_update
from sealgate.apk.verifier import ApkVerification, verify_apk
from sealgate.errors import UsageError
from signing_tools import apksigner_rotate, apksigner_sign, make_key, unsigned_apk


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory, apksig_vectors: Path) -> dict[str, ApkVerification]:
    require_tool("apksigner")
    work = tmp_path_factory.mktemp("update")
    old = make_key(work / "keys", "rsa-2048", "old")
    new = make_key(work / "keys", "ec-p256", "new")
    stranger = make_key(work / "keys", "rsa-2048", "stranger")
    base = unsigned_apk(apksig_vectors, work)
    lineage = apksigner_rotate(work / "lineage", old, new)
    apks = {
        "old": apksigner_sign(base, work / "old.apk", [old]),
        "rotated": apksigner_sign(base, work / "rotated.apk", [old, new], lineage=lineage),
        "stranger": apksigner_sign(base, work / "stranger.apk", [stranger]),
    }
    reports = {name: verify_apk(path) for name, path in apks.items()}
    assert all(report.verified for report in reports.values()), {
        name: [issue.code for issue in report.errors] for name, report in reports.items()
    }
    return reports


def test_rotated_update_is_accepted_on_p_and_later(signed: dict[str, ApkVerification]) -> None:
    decision = decide_update(signed["old"].identity_at(30), signed["rotated"].identity_at(30))
    assert decision.accepted and decision.code == "ROTATION", decision.reason


def test_before_p_the_rotated_apk_still_carries_the_old_signer(signed: dict[str, ApkVerification]) -> None:
    # apksigner signs v1/v2 with the oldest key, which is what Android 8.1 and older compare.
    decision = decide_update(signed["old"].identity_at(26), signed["rotated"].identity_at(26))
    assert decision.accepted and decision.code == "SAME_SIGNERS"


def test_a_stranger_cannot_update(signed: dict[str, ApkVerification]) -> None:
    decision = decide_update(signed["old"].identity_at(30), signed["stranger"].identity_at(30))
    assert not decision.accepted and decision.code == "SIGNER_MISMATCH"


def test_rolling_back_to_the_old_key_needs_the_rollback_capability(signed: dict[str, ApkVerification]) -> None:
    decision = decide_update(signed["rotated"].identity_at(30), signed["old"].identity_at(30))
    assert not decision.accepted and decision.code == "ROLLBACK_NOT_GRANTED"


def test_identity_outside_the_window_is_a_usage_error(signed: dict[str, ApkVerification]) -> None:
    with pytest.raises(UsageError):
        signed["old"].identity_at(signed["old"].min_sdk - 1)
