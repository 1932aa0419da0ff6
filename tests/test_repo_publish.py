"""Publishing and fetching: the web root switches atomically, a client's checks pass on what is served, and
killing `repo update` or `repo publish` at any filesystem step never leaves a served repository that a client
would refuse or that mixes two runs."""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repo_tools import signed_app, throwaway_signer
from sealgate.errors import RepoError
from sealgate.repo.config import load_config
from sealgate.repo.fetch import fetch_index
from sealgate.repo.index_jar import read_index_jar
from sealgate.repo.init import init_repository
from sealgate.repo.publish import KEEP_RELEASES, publish, published_sections
from sealgate.repo.update import UpdateOptions, update_repository
from sealgate.signing import PrivateKeySigner

URL = "https://example.org/fdroid/repo"
TIMESTAMP = 1_700_000_000
RUNNER = Path(__file__).resolve().parent / "fault_runner.py"
PASSPHRASE = "fault injection passphrase"


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKeySigner]:
    return {name: throwaway_signer(name) for name in ("developer", "repo", "other")}


def _working_copy(tmp_path: Path, keys: dict[str, PrivateKeySigner], versions: tuple[int, ...] = (1, 2)) -> Path:
    root = tmp_path / "work"
    init_repository(root, url=URL, name="t", description="d", archive_older=0)
    (root / "metadata" / "org.example.app.yml").write_text("License: MIT\n")
    for code in versions:
        signed_app(root / "repo" / f"org.example.app_{code}.apk", "org.example.app", code, [keys["developer"]])
    update_repository(load_config(root), keys["repo"], UpdateOptions(timestamp=TIMESTAMP))
    return root


def _served_files(dest: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(dest / "repo")): path.read_bytes()
        for path in sorted((dest / "repo").rglob("*"))
        if path.is_file()
    }


def test_publish_switches_atomically_and_keeps_what_earlier_indexes_name(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    work = _working_copy(tmp_path, keys)
    dest = tmp_path / "www"
    first = publish(work, dest)
    assert (dest / "repo").is_symlink() and os.readlink(dest / "repo") == ".sealgate/current/repo"
    [section] = published_sections(dest)
    assert section.fingerprint == keys["repo"].certificate.sha256
    assert {"org.example.app_1.apk", "org.example.app_2.apk", "entry.jar", "index-v2.json"} <= set(section.files)
    # Version 1 leaves the repository; a client holding the first index may still download it.
    (work / "repo" / "org.example.app_1.apk").unlink()
    update_repository(load_config(work), keys["repo"], UpdateOptions(timestamp=TIMESTAMP + 60))
    second = publish(work, dest)
    assert second.kept_from_earlier == 1 and second.release != first.release
    assert (dest / "repo" / "org.example.app_1.apk").is_file()
    [section] = published_sections(dest)
    assert "org.example.app_1.apk" not in section.files
    assert second.copied < second.files  # unchanged files are linked, not copied again


def test_publish_refuses_a_working_copy_a_client_would_refuse(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    work = _working_copy(tmp_path, keys)
    dest = tmp_path / "www"
    publish(work, dest)
    served = _served_files(dest)
    index = work / "repo" / "index-v2.json"
    original = index.read_bytes()
    index.write_bytes(original.replace(b'"License"', b'"license"') + b" ")
    with pytest.raises(RepoError, match=r"is not the file entry\.json names"):
        publish(work, dest)
    index.write_bytes(original)
    (work / "repo" / "org.example.app_2.apk").rename(tmp_path / "aside.apk")
    with pytest.raises(RepoError, match=r"named by index-v2\.json but missing"):
        publish(work, dest)
    (tmp_path / "aside.apk").rename(work / "repo" / "org.example.app_2.apk")
    update_repository(load_config(work), keys["other"], UpdateOptions(timestamp=TIMESTAMP + 60))
    with pytest.raises(RepoError, match="every client pinned to the published key would refuse it"):
        publish(work, dest)
    assert _served_files(dest) == served
    publish(work, dest, allow_new_key=True)
    assert published_sections(dest)[0].fingerprint == keys["other"].certificate.sha256


def test_old_releases_and_unreferenced_objects_are_collected(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    work = _working_copy(tmp_path, keys, versions=(1,))
    dest = tmp_path / "www"
    for step in range(KEEP_RELEASES + 2):
        (work / "metadata" / "org.example.app.yml").write_text(f"License: MIT\nSummary: step {step}\n")
        update_repository(load_config(work), keys["repo"], UpdateOptions(timestamp=TIMESTAMP + step))
        publish(work, dest)
    releases = [name for name in os.listdir(dest / ".sealgate" / "releases") if not name.startswith(".")]
    assert len(releases) == KEEP_RELEASES
    objects = os.listdir(dest / ".sealgate" / "objects")
    assert all(os.stat(dest / ".sealgate" / "objects" / name).st_nlink > 1 for name in objects)
    published_sections(dest)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/repo"
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_fetch_verifies_what_a_server_sends(
    tmp_path: Path, keys: dict[str, PrivateKeySigner], server: tuple[Path, str]
) -> None:
    dest, url = server
    work = _working_copy(tmp_path, keys)
    publish(work, dest)
    fingerprint = keys["repo"].certificate.sha256
    fetched = fetch_index(f"{url}?fingerprint={fingerprint.upper()}")
    assert sorted(fetched.index["packages"]) == ["org.example.app"]
    with pytest.raises(RepoError, match="not by the expected"):
        fetch_index(url, keys["other"].certificate.sha256)
    with pytest.raises(RepoError, match="answered 404"):
        fetch_index(url.replace("/repo", "/nothing"), fingerprint)
    # A server (or mirror) that alters the index after signing is caught by the signed hash.
    served_index = dest / "repo" / "index-v2.json"
    data = served_index.read_bytes()
    served_index.unlink()  # the published file is a read-only link into the store; replace it, as an attacker would
    served_index.write_bytes(data.replace(b"org.example.app_2.apk", b"org.example.app_1.apk"))
    with pytest.raises(RepoError, match=r"not the file the signed entry\.json names"):
        fetch_index(url, fingerprint)


# -- fault injection --------------------------------------------------------------------------------------------------


def _run(args: list[str], kill_at: int, cwd: Path) -> int:
    env = {**os.environ, "SEALGATE_PASSPHRASE": PASSPHRASE}
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(kill_at), *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


def _snapshot(dest: Path) -> dict[str, Any] | None:
    """What a client sees at `dest`: None when nothing is published yet; otherwise it must pass every check."""
    if not (dest / "repo" / "entry.jar").exists():
        return None
    sections = published_sections(dest)
    return {section.kind: section.files for section in sections}


@pytest.fixture
def keystore_repo(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> Path:
    env = {**os.environ, "SEALGATE_PASSPHRASE": PASSPHRASE}
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    subprocess.run([*sealgate, "keys", "init", str(tmp_path / "ks"), "--roles", "repo", "--key-type", "rsa-2048"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    root = tmp_path / "work"
    subprocess.run([*sealgate, "repo", "init", str(root), "--url", URL, "--keystore", str(tmp_path / "ks"),
                    "--archive-older", "1"], env=env, check=True, capture_output=True)  # fmt: skip
    (root / "metadata" / "org.example.app.yml").write_text("License: MIT\n")
    return root


def test_killing_update_or_publish_never_leaves_a_served_mix(
    tmp_path: Path, keys: dict[str, PrivateKeySigner], keystore_repo: Path
) -> None:
    work, dest = keystore_repo, tmp_path / "www"
    developer = keys["developer"]
    signed_app(work / "repo" / "org.example.app_1.apk", "org.example.app", 1, [developer])
    assert _run(["repo", "update"], 10**9, work) == 0
    assert _run(["repo", "publish", str(dest)], 10**9, work) == 0
    published = _snapshot(dest)
    rng = random.Random(20261128)
    states = [published]
    for version in (2, 3, 4):
        signed_app(work / "repo" / f"org.example.app_{version}.apk", "org.example.app", version, [developer])
        (work / "metadata" / "org.example.app.yml").write_text(f"License: MIT\nSummary: version {version}\n")
        # Kill the update at random steps, then try to publish what it left: refused, or a consistent release.
        for kill_at in sorted(rng.sample(range(1, 60), 4)):
            _run(["repo", "update"], kill_at, work)
            _run(["repo", "publish", str(dest)], 10**9, work)
            snapshot = _snapshot(dest)
            assert snapshot is not None
            if snapshot != states[-1]:
                states.append(snapshot)
        assert _run(["repo", "update"], 10**9, work) == 0
        # Kill the publish at every other step of its first 40 (a different half each round), then at random later.
        for kill_at in [*range(1 + version % 2, 40, 2), *rng.sample(range(40, 200), 5)]:
            status = _run(["repo", "publish", str(dest)], kill_at, work)
            snapshot = _snapshot(dest)
            assert snapshot in (states[-1], _expected_release(work)), f"publish killed at step {kill_at}: a mix"
            if status == 0:
                break
        assert _run(["repo", "publish", str(dest)], 10**9, work) == 0
        snapshot = _snapshot(dest)
        assert snapshot == _expected_release(work)
        states.append(snapshot)
    indexed = {
        name
        for name in json.loads((dest / "repo" / "index-v2.json").read_bytes())["packages"]["org.example.app"][
            "versions"
        ]
    }
    assert len(indexed) == 1 and _snapshot(dest) is not None
    archived = json.loads((dest / "archive" / "index-v2.json").read_bytes())["packages"]["org.example.app"]["versions"]
    assert len(archived) == 3


def _expected_release(work: Path) -> dict[str, Any]:
    """The file set the working copy would publish (what a completed publish must serve)."""
    from sealgate.repo.publish import check_section

    result = {}
    for kind in ("repo", "archive"):
        if (work / kind / "entry.jar").is_file():
            result[kind] = check_section(work / kind, kind).files
    return result


def test_a_killed_publish_leaves_no_debris_after_the_next_one(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    work = _working_copy(tmp_path, keys)
    dest = tmp_path / "www"
    for kill_at in (5, 15, 25):
        _run(["repo", "publish", str(dest), "--dir", str(work)], kill_at, tmp_path)
    assert _run(["repo", "publish", str(dest), "--dir", str(work)], 10**9, tmp_path) == 0
    store = dest / ".sealgate"
    assert not [name for name in os.listdir(store / "releases") if name.endswith(".partial")]
    assert not [name for name in os.listdir(store / "objects") if name.endswith(".partial")]
    shutil.rmtree(work / "repo")
    published_sections(dest)


# -- the index signed on the offline machine -------------------------------------------------------------------------


def _cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEALGATE_PASSPHRASE": PASSPHRASE}
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    result = subprocess.run([*sealgate, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert "Traceback" not in result.stderr, result.stderr
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _two_machines(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> tuple[Path, Path, Path]:
    """An offline machine with the repo key, an online one with its certificate and a repository with one APK."""
    offline, online = tmp_path / "offline", tmp_path / "online"
    offline.mkdir()
    online.mkdir()
    _cli("keys", "init", str(offline / "ks"), "--roles", "repo", "--key-type", "rsa-2048",
         "--export", str(online / "public"))  # fmt: skip
    root = online / "fdroid"
    _cli("repo", "init", str(root), "--url", URL, "--certificate", str(online / "public"))
    (root / "metadata" / "org.example.app.yml").write_text("License: MIT\n")
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    return offline, online, root


def _sign_offline(root: Path, offline: Path) -> None:
    """Carry the signing request to the offline machine and sign it there (the response is offline/response.zip)."""
    shutil.copy(root / "index-signing-request.zip", offline / "request.zip")
    _cli("sign", str(offline / "request.zip"), "--keystore", str(offline / "ks"), "--record",
         str(offline / "record.log"), "--out", str(offline / "response.zip"), "--yes", "--allow-online")  # fmt: skip


def test_index_signed_offline_round_trip(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    offline, online, root = _two_machines(tmp_path, keys)
    report = json.loads(_cli("repo", "update", "--json", cwd=root).stdout)
    request = Path(report["signing_request"])
    assert request == root / "index-signing-request.zip" or request == Path("index-signing-request.zip")
    assert not (root / "repo" / "entry.jar").exists()
    with pytest.raises(RepoError, match="not signed"):
        publish(root, tmp_path / "www")
    # The offline machine: the request travels there, the response comes back.
    _sign_offline(root, offline)
    applied = json.loads(_cli("repo", "apply", str(offline / "response.zip"), "--public", str(online / "public"),
                              "--json", cwd=root).stdout)  # fmt: skip
    written = sorted(f"{Path(path).parent.name}/{Path(path).name}" for path in applied["written"])
    assert written == ["archive/entry.jar", "archive/index-v1.jar", "repo/entry.jar", "repo/index-v1.jar"]
    fingerprint = json.loads((online / "public" / "keys.json").read_text())["roles"]["repo"]["certificate_sha256"]
    read_index_jar(root / "repo" / "entry.jar", "entry.json", expected_fingerprint=fingerprint)
    read_index_jar(root / "repo" / "index-v1.jar", "index-v1.json", expected_fingerprint=fingerprint)
    assert not request.exists() and not (root / "index-signing-request.zip").exists()
    publish(root, tmp_path / "www")
    assert published_sections(tmp_path / "www")[0].fingerprint == fingerprint
    # A rerun with nothing changed keeps the offline signatures and asks for nothing.
    report = json.loads(_cli("repo", "update", "--json", cwd=root).stdout)
    assert report["signing_request"] is None and report["sections"][0]["changed"] is False


def test_signatures_for_an_older_index_are_refused(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    offline, online, root = _two_machines(tmp_path, keys)
    _cli("repo", "update", cwd=root)
    _sign_offline(root, offline)
    (root / "metadata" / "org.example.app.yml").write_text("License: MIT\nSummary: changed meanwhile\n")
    _cli("repo", "update", cwd=root)
    refused = _cli("repo", "apply", str(offline / "response.zip"), "--public", str(online / "public"), cwd=root,
                   check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "it is a response to another request, or an old one replayed" in refused.stderr
    assert not (root / "repo" / "entry.jar").exists()


def test_fetch_reads_an_index_v1_only_repository_made_by_fdroidserver(
    server: tuple[Path, str], fdroid_vectors: Path
) -> None:
    """fdroidserver's own golden index-v1.jar, served without entry.jar, as an older repository serves it."""
    dest, url = server
    (dest / "repo").mkdir()
    shutil.copy(fdroid_vectors / "repo-golden" / "index-v1.jar", dest / "repo" / "index-v1.jar")
    golden = json.loads((fdroid_vectors / "repo-golden" / "index-v1.json").read_bytes())
    # repo_key_sha256 in fdroidserver's tests/config.yml: the key that signed its golden repository.
    fingerprint = "f49af3f11efddf20dffd70f5e3117b9976674167adca280e6b1932a0601b26f6"
    fetched = fetch_index(url, fingerprint)
    assert fetched.format == "v1" and fetched.index == golden
    from sealgate.repo.fetch import summarise

    rows = {row["package"]: row for row in summarise(fetched)}
    assert set(rows) == set(golden["packages"])
    assert rows["com.politedroid"]["version_code"] == 6
    with pytest.raises(RepoError, match="not by the expected"):
        fetch_index(url, "00" * 32)
