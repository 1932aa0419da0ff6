"""The `sealgate apk` command-line contract that scripts depend on: output lines and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sealgate.cli.main import main

SAMPLE = Path(__file__).resolve().parent.parent / "src" / "sealgate" / "samples" / "hello-signed.apk"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sealgate.cli.main", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_sample_verifies_when_no_file_is_named() -> None:
    result = _run("apk", "verify", "--json")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert line["verified"] is True
    assert line["schemes"] == [1, 2, 3]
    assert len(line["signers"]) == 1
    assert line["signers"][0]["key"] == "RSA-2048"
    assert len(line["signers"][0]["sha256"]) == 64


def test_json_line_per_file_and_exit_1_when_any_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.apk"
    data = bytearray(SAMPLE.read_bytes())
    data[100] ^= 0xFF  # inside the first entry: every scheme's digest breaks
    broken.write_bytes(bytes(data))
    not_a_zip = tmp_path / "notes.txt"
    not_a_zip.write_text("hello")
    result = _run("apk", "verify", "--json", str(SAMPLE), str(broken), str(not_a_zip))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["verified"] for line in lines] == [True, False, False]
    assert set(lines[0]) >= {"file", "verified", "schemes", "signers", "lineage", "errors", "warnings"}
    assert lines[1]["errors"] and all({"code", "message"} <= set(e) for e in lines[1]["errors"])
    assert lines[2]["errors"][0]["code"] == "APK_FORMAT_ERROR"
    assert "not a ZIP archive" in lines[2]["errors"][0]["message"]


def test_min_sdk_window_changes_schemes() -> None:
    result = _run("apk", "verify", "--json", "--min-sdk", "28", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schemes"] == [3]


@pytest.mark.parametrize(
    "args",
    [
        ["apk", "verify", "--min-sdk", "30", "--max-sdk", "20", str(SAMPLE)],
        ["apk", "verify", "--min-sdk", "-1", str(SAMPLE)],
        ["apk", "verify", "--no-such-option", str(SAMPLE)],
        ["apk", "frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert main(args) == 2


def test_missing_file_is_a_failed_line_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apk", "verify", "--json", str(tmp_path / "absent.apk")]) == 1
    line = json.loads(capsys.readouterr().out)
    assert line["verified"] is False
    assert "cannot open" in line["errors"][0]["message"]


def test_human_output_names_signer_and_sdk_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apk", "verify", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "verified (v1, v2, v3)" in out
    assert "signer " in out and "RSA-2048" in out
    assert "SDK 21..23: v1" in out and "SDK 28..newest: v3" in out


def test_info_shows_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apk", "info", "--json", str(SAMPLE)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["manifest"]["package"] == "org.sealgate.sample"
    assert document["manifest"]["min_sdk"] == 21
    assert document["manifest"]["target_sdk"] == 34
    assert document["verification"]["verified"] is True


def test_lineage_command(apksig_vectors: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["apk", "lineage", "--json", str(apksig_vectors / "files" / "rsa-2048-lineage-3-signers")]) == 0
    nodes = json.loads(capsys.readouterr().out)
    assert len(nodes) == 3
    assert all(len(node["sha256"]) == 64 for node in nodes)
    assert main(["apk", "lineage", str(apksig_vectors / "files" / "rsa-2048-lineage-invalid-magic")]) == 1


def test_idsig_needs_one_apk(tmp_path: Path) -> None:
    idsig = tmp_path / "x.idsig"
    idsig.write_bytes(b"\0" * 16)
    assert main(["apk", "verify", "--idsig", str(idsig), str(SAMPLE), str(SAMPLE)]) == 2
