"""fdroidserver 2.4.5 as the peer: it downloads and verifies our signed indexes from a loopback server, and
`fdroid update` and `sealgate repo update` index the same APKs the same way, except where listed and justified.

fdroidserver runs from its own virtual environment (.venv-fdroidserver, made by `make peers` from a hash-pinned
lock file), as a subprocess; nothing here touches a network beyond 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_ROOT, _in_ci, require_tool
from repo_tools import throwaway_signer
from sealgate.repo.config import load_config
from sealgate.repo.init import init_repository
from sealgate.repo.update import UpdateOptions, update_repository
from sealgate.signing import PrivateKeySigner

PEER_PYTHON = PROJECT_ROOT / ".venv-fdroidserver" / "bin" / "python"
CLIENT = Path(__file__).resolve().parent / "peers" / "fdroid_client.py"
TIMESTAMP = 1_700_000_000

#: Files of ../shared/vectors/fdroid/apks that the two tools index differently, and why sealgate is right to.
JUSTIFIED = {
    # fdroidserver aborts the whole run on a Janus APK ("possible Janus exploit"), so it is not given to it;
    # sealgate refuses that one file and indexes the rest (test_repo covers it).
    "janus.apk": "not given to fdroidserver",
    # Same package and version code as bad-unicode-...apk (same signer, different bytes): fdroidserver indexes
    # both; sealgate indexes one file per version code, so that "version 100" means one APK.
    "urzip-release.apk": "DUPLICATE_VERSION",
    # Signed with a certificate chain: fdroidserver needs oscrypto to pick the signer, and oscrypto cannot load
    # OpenSSL 3, so fdroidserver crashes on it; sealgate refuses it anyway as a second file for version 10 of
    # android.appsecurity.cts.tinyapp (DUPLICATE_VERSION beside issue-1128-poc1.apk).
    "issue-1128-poc3a.apk": "not given to fdroidserver",
    # Version 100 of info.guardianproject.urzip from another signer than the pinned one (fdroidserver indexes
    # both signers side by side; sealgate's metadata pins the first signer it saw, so this is refused).
    "urzip.apk": "SIGNER_NOT_ALLOWED",
}
#: Manifest fields where the two differ for a reason: Android's default minSdkVersion is 1 when the manifest has
#: none (sealgate reports what Android uses); fdroidserver writes aapt's legacy 3.
_MIN_SDK_DEFAULT = {"fdroidserver": 3, "sealgate": 1}


@pytest.fixture(scope="module")
def peer_python() -> Path:
    if not PEER_PYTHON.exists():
        message = f"fdroidserver is not installed in {PEER_PYTHON.parent.parent} (run `make peers`)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    require_tool("jarsigner")
    require_tool("apksigner")
    return PEER_PYTHON


@pytest.fixture(scope="module")
def repo_key() -> PrivateKeySigner:
    return throwaway_signer("repo")


@pytest.fixture(scope="module")
def our_repo(tmp_path_factory: pytest.TempPathFactory, fdroid_vectors: Path, repo_key: PrivateKeySigner) -> Path:
    root = tmp_path_factory.mktemp("ours") / "fdroid"
    init_repository(root, url="http://127.0.0.1/fdroid/repo", name="ours", description="d", archive_older=0)
    for apk in sorted((fdroid_vectors / "apks").glob("*.apk")):
        shutil.copy(apk, root / "repo" / apk.name)
    update_repository(load_config(root), repo_key, UpdateOptions(timestamp=TIMESTAMP, create_metadata=True))
    return root


@pytest.fixture(scope="module")
def served(our_repo: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(our_repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _client(peer_python: Path, url: str, fingerprint: str, cachedir: Path) -> dict[str, Any]:
    cachedir.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(peer_python), str(CLIENT), url, fingerprint, str(cachedir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_fdroidserver_downloads_and_verifies_our_index(
    peer_python: Path, served: str, our_repo: Path, repo_key: PrivateKeySigner, tmp_path: Path
) -> None:
    found = _client(peer_python, served, repo_key.certificate.sha256.upper(), tmp_path / "cache")
    ours = json.loads((our_repo / "repo" / "index-v2.json").read_bytes())
    expected = {package: sorted(value["versions"]) for package, value in ours["packages"].items()}
    assert found["v2"]["packages"] == expected
    assert found["v1"]["packages"] == expected
    assert sorted(found["v1"]["apps"]) == sorted(expected)
    assert found["v1"]["fingerprint"].lower() == repo_key.certificate.sha256


def test_fdroidserver_refuses_our_index_under_another_fingerprint(
    peer_python: Path, served: str, tmp_path: Path
) -> None:
    found = _client(peer_python, served, "00" * 32, tmp_path / "cache")
    assert "fingerprint does not match" in found["v2"]["error"]
    assert "fingerprint does not match" in found["v1"]["error"]


@pytest.fixture(scope="module")
def their_repo(peer_python: Path, fdroid_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fdroid update -c` over the same APKs, with a throwaway PKCS#12 keystore made by openssl."""
    openssl = require_tool("openssl")
    work = tmp_path_factory.mktemp("theirs")
    (work / "repo").mkdir()
    for apk in sorted((fdroid_vectors / "apks").glob("*.apk")):
        if JUSTIFIED.get(apk.name) != "not given to fdroidserver":
            shutil.copy(apk, work / "repo" / apk.name)
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
         "-days", "3650", "-subj", "/CN=peer test repo"], cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [openssl, "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-name", "repokey", "-passout",
         "pass:peer-test", "-out", "keystore.p12"], cwd=work, check=True, capture_output=True,
    )  # fmt: skip
    (work / "key.pem").unlink()
    (work / "config.yml").write_text(
        "repo_name: peer\nrepo_description: peer test repo\nrepo_keyalias: repokey\nkeystore: keystore.p12\n"
        "keystorepass: peer-test\nkeypass: peer-test\nkeydname: CN=peer test repo\n"
        f"apksigner: {shutil.which('apksigner')}\n"
    )
    (work / "config.yml").chmod(0o600)
    fdroid = peer_python.parent / "fdroid"
    result = subprocess.run(
        [str(fdroid), "update", "-c"], cwd=work, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HOME": str(work)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return work


def _versions(index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        sha256: {"package": package, **version}
        for package, value in index["packages"].items()
        for sha256, version in value["versions"].items()
    }


def test_differential_fdroid_update_and_sealgate_index_the_same(
    their_repo: Path, our_repo: Path, fdroid_vectors: Path
) -> None:
    theirs = _versions(json.loads((their_repo / "repo" / "index-v2.json").read_bytes()))
    archive = their_repo / "archive" / "index-v2.json"
    if archive.exists():
        theirs.update(_versions(json.loads(archive.read_bytes())))
    ours = _versions(json.loads((our_repo / "repo" / "index-v2.json").read_bytes()))
    only_theirs = {theirs[sha]["file"]["name"].lstrip("/") for sha in theirs.keys() - ours.keys()}
    only_ours = {ours[sha]["file"]["name"].lstrip("/") for sha in ours.keys() - theirs.keys()}
    assert only_ours == set(), "sealgate indexed files fdroidserver did not"
    assert only_theirs == {name for name, why in JUSTIFIED.items() if why != "not given to fdroidserver"}
    compared = 0
    for sha in theirs.keys() & ours.keys():
        mine, peer = ours[sha], theirs[sha]
        assert mine["package"] == peer["package"]
        assert mine["file"]["sha256"] == peer["file"]["sha256"] == sha
        assert mine["file"]["size"] == peer["file"]["size"]
        peer_manifest, my_manifest = dict(peer["manifest"]), dict(mine["manifest"])
        if (
            peer_manifest["usesSdk"]["minSdkVersion"]
            == _MIN_SDK_DEFAULT["fdroidserver"]
            != (my_manifest["usesSdk"]["minSdkVersion"])
        ):
            assert my_manifest["usesSdk"]["minSdkVersion"] == _MIN_SDK_DEFAULT["sealgate"]
            peer_manifest["usesSdk"] = my_manifest["usesSdk"]
        assert my_manifest == peer_manifest, mine["file"]["name"]
        compared += 1
    assert compared >= 9
