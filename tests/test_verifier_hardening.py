"""Inputs found by review to break an earlier verifier: each must now give Android's verdict, quickly, typed."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import pytest

from conftest import vectors_path
from sealgate.apk.verifier import verify_apk
from sealgate.cli.main import main


def test_v31_signer_starting_above_the_window_is_not_used() -> None:
    # The v3.1 signer starts at SDK 34. On a window ending at 33 no platform picks it: Android 13 verifies the v3
    # block, so the APK installs with the v3 (pre-rotation) signer. apksig refuses this window outright; an earlier
    # version of ours accepted it but named the v3.1 signer, which no platform in the window uses.
    apk = vectors_path("apksig", "files", "v31-rsa-2048_2-tgt-34-1-tgt-28.apk")
    report = verify_apk(apk, max_sdk=33)
    assert report.verified, [issue.code for issue in report.errors]
    assert [c.subject for c in report.signers] == ["CN=rsa-2048"]
    assert report.identity_at(33).signers == report.identity_at(28).signers
    full = verify_apk(apk)
    assert [c.subject for c in full.signers] == ["CN=rsa-2048_2"]
    assert full.identity_at(34).signers == tuple(full.signers)


def test_overlapping_records_cannot_amplify_a_zip_bomb(tmp_path: Path) -> None:
    """Many central-directory records naming one 256 MiB deflate stream: refused without inflating anything."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = compressor.compress(bytes(256 * 1024 * 1024)) + compressor.flush()
    crc = zlib.crc32(bytes(256 * 1024 * 1024))
    name = b"AndroidManifest.xml"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(stream), 256 << 20, len(name), 0)
    body = local + name + stream
    records = b""
    count = 200
    for index in range(count):
        entry_name = name if index == 0 else f"assets/{index}.bin".encode()
        records += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(stream), 256 << 20, len(entry_name), 0, 0, 0, 0, 0, 0,
        ) + entry_name  # fmt: skip
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(records), len(body), 0)
    path = tmp_path / "amplified.apk"
    path.write_bytes(body + records + eocd)
    started = time.monotonic()
    report = verify_apk(path, min_sdk=24, max_sdk=25)
    assert time.monotonic() - started < 5
    assert not report.verified
    assert "ZIP_OVERLAPPING_ENTRIES" in {issue.code for issue in report.errors}


def test_min_sdk_above_window_is_a_line_not_an_abort(capsys: pytest.CaptureFixture[str]) -> None:
    files = vectors_path("apksig", "files")
    status = main(["apk", "verify", "--json", "--max-sdk", "20", str(files / "v1-only-with-rsa-2048.apk"),
                   str(files / "golden-aligned-v1-out.apk")])  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert len(lines) == 2
    assert "above --max-sdk 20" in lines[0]["errors"][0]["message"]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe.apk"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert main(["apk", "verify", "--json", str(fifo)]) == 1
    assert time.monotonic() - started < 5
    assert "not a regular file" in json.loads(capsys.readouterr().out)["errors"][0]["message"]
