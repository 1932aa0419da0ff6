"""The signing record: every kind of tampering is found and named by line, and appends are durable and serialised."""

from __future__ import annotations

import errno
import itertools
import json
import os
import threading
from pathlib import Path

import pytest

from sealgate.cli.main import main
from sealgate.custody import record
from sealgate.custody.record import GENESIS, RecordEntry
from sealgate.errors import RecordError


def _fields(index: int) -> dict[str, str]:
    return {
        "role": "releasekey",
        "certificate_sha256": "a" * 64,
        "artifact": f"App{index}.apk",
        "artifact_sha256": f"{index:064x}",
        "output_sha256": f"{index + 1000:064x}",
        "purpose": "apk",
        "algorithm": "apk-v2+v3",
        "bundle_id": "0" * 31 + "1",
    }


@pytest.fixture
def five(tmp_path: Path) -> tuple[Path, list[RecordEntry]]:
    path = tmp_path / "record.jsonl"
    entries = [record.append(path, **_fields(index)) for index in range(1, 6)]
    return path, entries


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def test_appended_entries_chain_and_verify(five: tuple[Path, list[RecordEntry]]) -> None:
    path, entries = five
    assert [entry.seq for entry in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev == GENESIS
    assert all(later.prev == earlier.hash for earlier, later in itertools.pairwise(entries))
    report = record.verify(path)
    assert report.ok and report.entries == 5 and report.head == entries[-1].hash
    assert report.first_bad_line is None
    # One canonical ASCII JSON object per line, whose hash covers every other field.
    for raw, entry in zip(_lines(path), entries, strict=True):
        obj = json.loads(raw)
        assert raw == entry.line() and raw.isascii()
        assert set(obj) == {*_fields(1), "seq", "time", "prev", "hash"}
    assert record.head(path) == entries[-1]


def test_edited_entry_is_found_on_its_line(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    lines = _lines(path)
    obj = json.loads(lines[2])
    obj["artifact_sha256"] = "f" * 64  # the hash field is left as it was
    lines[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    _write(path, lines)
    report = record.verify(path)
    assert not report.ok and report.first_bad_line == 3 and report.entries == 2
    assert report.issues[0].code == "EDITED"
    assert "line 3" in report.issues[0].message


def test_reformatted_entry_is_an_edit(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    lines = _lines(path)
    lines[1] = json.dumps(json.loads(lines[1]), indent=1).replace("\n", " ").encode() + b"\n"
    _write(path, lines)
    report = record.verify(path)
    assert report.first_bad_line == 2 and report.issues[0].code == "EDITED"


def test_removed_entry(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    lines = _lines(path)
    del lines[2]
    _write(path, lines)
    report = record.verify(path)
    assert report.first_bad_line == 3 and report.issues[0].code == "OUT_OF_SEQUENCE"
    assert "entry 4 where entry 3 belongs" in report.issues[0].message


def test_reordered_entries(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    _write(path, lines)
    report = record.verify(path)
    assert report.first_bad_line == 2 and report.issues[0].code == "OUT_OF_SEQUENCE"


def test_inserted_entries(five: tuple[Path, list[RecordEntry]]) -> None:
    path, entries = five
    original = _lines(path)
    # A copy of an earlier entry slipped in.
    _write(path, [*original[:3], original[1], *original[3:]])
    assert record.verify(path).first_bad_line == 4
    # A forged entry that chains onto entry 2 and carries a valid hash: the break shows on the next line.
    forged = RecordEntry.create(seq=3, prev=entries[1].hash, **_fields(99))
    _write(path, [*original[:2], forged.line(), *original[2:]])
    report = record.verify(path)
    assert report.first_bad_line == 4 and report.entries == 3
    assert report.issues[0].code == "OUT_OF_SEQUENCE"
    # Same, with every later entry renumbered: the chain link is what breaks.
    renumbered = []
    for raw in original[2:]:
        obj = json.loads(raw)
        obj["seq"] += 1
        body = {key: value for key, value in obj.items() if key != "hash"}
        renumbered.append(RecordEntry(**body, hash=record.entry_hash(body)).line())
    _write(path, [*original[:2], forged.line(), *renumbered])
    report = record.verify(path)
    assert report.first_bad_line == 4 and report.issues[0].code == "BROKEN_CHAIN"


def test_truncated_tail(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    report = record.verify(path)
    assert report.first_bad_line == 5 and report.issues[0].code == "TRUNCATED" and report.entries == 4
    # Appending onto a torn line would hide it behind a valid-looking entry: refused.
    with pytest.raises(RecordError, match="truncated"):
        record.append(path, **_fields(6))
    # Only the newline lost is a truncation too.
    path.write_bytes(data[:-1])
    assert record.verify(path).issues[0].code == "TRUNCATED"


def test_head_detects_entries_cut_off_or_rewritten(five: tuple[Path, list[RecordEntry]]) -> None:
    path, entries = five
    lines = _lines(path)
    head = entries[-1].hash
    # Intact, with the head noted after the session, and with an older head.
    assert record.verify(path, head=head).entries_after_head == 0
    assert record.verify(path, head=entries[2].hash).entries_after_head == 2
    # The last entry removed at a line boundary: the chain is fine but the noted head is gone.
    _write(path, lines[:-1])
    assert record.verify(path).ok
    report = record.verify(path, head=head)
    assert not report.ok and report.issues[0].code == "HEAD_NOT_FOUND"
    # Rewritten from entry 3 with every hash recomputed: only the head shows it.
    rewritten = lines[:2]
    previous = entries[1].hash
    for index in range(3, 6):
        entry = RecordEntry.create(seq=index, prev=previous, time=entries[index - 1].time, **_fields(index + 50))
        rewritten.append(entry.line())
        previous = entry.hash
    _write(path, rewritten)
    assert record.verify(path).ok
    assert record.verify(path, head=head).issues[0].code == "HEAD_NOT_FOUND"


def test_appending_onto_an_altered_last_entry_is_refused(five: tuple[Path, list[RecordEntry]]) -> None:
    path, _ = five
    lines = _lines(path)
    lines[-1] = lines[-1].replace(b"App5.apk", b"App6.apk")
    _write(path, lines)
    with pytest.raises(RecordError, match="altered"):
        record.append(path, **_fields(6))


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"

    def work(offset: int) -> None:
        for index in range(10):
            record.append(path, **_fields(offset * 100 + index))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = record.verify(path)
    assert report.ok and report.entries == 40


def test_empty_and_missing_records(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    report = record.verify(empty)
    assert report.ok and report.entries == 0 and report.head is None
    with pytest.raises(RecordError, match="no signing record"):
        record.verify(tmp_path / "missing.jsonl")
    assert record.head(tmp_path / "missing.jsonl") is None


def test_cli_record_verify(five: tuple[Path, list[RecordEntry]], capsys: pytest.CaptureFixture[str]) -> None:
    path, entries = five
    assert main(["record", "verify", str(path), "--head", entries[-1].hash]) == 0
    out = capsys.readouterr().out
    assert "intact, 5 entries" in out and entries[-1].hash in out
    lines = _lines(path)
    del lines[1]
    _write(path, lines)
    assert main(["record", "verify", "--json", str(path)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] is False and result["first_bad_line"] == 2 and result["entries"] == 1
    assert main(["record", "verify", str(path)]) == 1
    assert "first bad line: 2" in capsys.readouterr().out
    assert main(["record", "verify", str(path), "--head", "xyz"]) == 1
    assert "--head must be 64" in capsys.readouterr().err


def test_a_full_disk_leaves_the_record_as_it_was(
    five: tuple[Path, list[RecordEntry]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, entries = five
    before = path.read_bytes()

    def half_then_full(fd: int, data: bytes, name: str) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record, "_write_all", half_then_full)
    with pytest.raises(RecordError, match=r"No space left on device \(the disk is full\)"):
        record.append(path, **_fields(6))
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert record.append(path, **_fields(6)).prev == entries[-1].hash
    assert record.verify(path).entries == 6
