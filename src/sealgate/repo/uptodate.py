"""Whether `repo update` has anything to do, decided as a build system decides it: from file metadata alone.

A rerun on a repository of thousands of APKs must not parse thousands of metadata files and rebuild the index to
learn that nothing changed. After each successful update the inputs (every APK, metadata file, icon and config.yml
by path, size, mtime and inode, plus the signing certificate and the options) are hashed into one digest and
stored with the report and the stat keys of every file the update wrote. The next run recomputes the digest with
one directory listing and a stat per file: if it matches and every output is still the file that was written, the
stored report is the answer and nothing is read or written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from sealgate import __version__
from sealgate.durable import replace_file
from sealgate.repo.config import CONFIG_FILE, RepoConfig

STATE_FILE = "last-update.json"
_FORMAT = "sealgate-last-update"
#: Bump when what an update writes changes for the same inputs, so that stored results are not reused.
_VERSION = 1


def input_digest(config: RepoConfig, signer_sha256: str | None, options: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([_FORMAT, _VERSION, __version__, signer_sha256, options], sort_keys=True).encode())
    lines = []
    for path in _inputs(config):
        try:
            info = os.stat(path)
        except OSError:
            continue
        lines.append(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ino}\n")
    digest.update("".join(lines).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _inputs(config: RepoConfig) -> Iterable[str]:
    """The files an update reads, as strings in a fixed order (plain string work: this runs on every rerun)."""
    yield os.fspath(config.root / CONFIG_FILE)
    yield os.fspath(config.repo_dir / "icons" / config.icon)
    if config.repo_certificate is not None:
        yield os.fspath(config.repo_certificate)
    for directory, suffix in (
        (config.repo_dir, ".apk"),
        (config.archive_dir, ".apk"),
        (config.metadata_dir, ".yml"),
    ):
        try:
            names = sorted(name for name in os.listdir(directory) if name.endswith(suffix))
        except OSError:
            continue
        base = os.fspath(directory)
        yield from (f"{base}/{name}" for name in names)
    # Per-app folders (metadata/<package>/signatures/<versionCode>/): recorded developer signatures change the
    # order of versions in the index.
    try:
        folders = sorted(entry.path for entry in os.scandir(config.metadata_dir) if entry.is_dir())
    except OSError:
        folders = []
    for folder in folders:
        for directory_path, directories, files in os.walk(folder):
            directories.sort()
            yield from (os.path.join(directory_path, name) for name in sorted(files))


def stat_keys(paths: Iterable[str]) -> dict[str, list[int]] | None:
    """size, mtime and inode of each file; None when one is missing."""
    keys: dict[str, list[int]] = {}
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            return None
        keys[path] = [info.st_size, info.st_mtime_ns, info.st_ino]
    return keys


def load_result(config: RepoConfig, digest: str) -> dict[str, Any] | None:
    """The stored report when the inputs are `digest` and every output is as it was written, else None."""
    try:
        state = json.loads((config.state_dir / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != _FORMAT or state.get("inputs") != digest:
        return None
    outputs = state.get("outputs")
    if not isinstance(outputs, dict) or stat_keys(outputs) != outputs:
        return None
    report = state.get("report")
    return report if isinstance(report, dict) else None


def save_result(config: RepoConfig, digest: str, outputs: Iterable[str], report: dict[str, Any]) -> None:
    keys = stat_keys(outputs)
    if keys is None:
        return
    state = {"format": _FORMAT, "inputs": digest, "outputs": keys, "report": report}
    config.state_dir.mkdir(parents=True, exist_ok=True)
    replace_file(config.state_dir / STATE_FILE, json.dumps(state, ensure_ascii=False).encode("utf-8"))


def forget(config: RepoConfig) -> None:
    """Drop the stored result (before an update writes anything, so a crash cannot leave a stale one)."""
    (config.state_dir / STATE_FILE).unlink(missing_ok=True)
