"""`sealgate release publish`: signed OTA packages onto a channel, checked with tools we did not write (sha256sum,
os.stat, http.server + urllib), and every refusal leaves the web root byte-for-byte as it was."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import require_tool
from ota_device_tools import make_ota_key
from sealgate.cli.main import main
from sealgate.ota.channel import read_channel
from sealgate.ota.metadata import ab_metadata
from sealgate.ota.package import build_ab_package
from sealgate.ota.signer import sign_package
from sealgate.signing import PrivateKeySigner
from test_ota_package import _payload

DEVICE = "sargo"
FP1 = "google/sargo/sargo:14/AP1A.240105.004/1000:user/release-keys"
FP2 = "google/sargo/sargo:14/AP1A.240205.002/2000:user/release-keys"
FP3 = "google/sargo/sargo:14/AP1A.240305.019/3000:user/release-keys"
UNKNOWN = "google/sargo/sargo:14/AP1A.231205.001/999:user/release-keys"
T1, T2, T3 = 1704400000, 1707100000, 1709600000


def _signer(tmp_path: Path, name: str) -> tuple[PrivateKeySigner, Path]:
    key = make_ota_key(tmp_path, name)
    return key.signer, key.cert_path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[PrivateKeySigner, Path]]:
    directory = tmp_path_factory.mktemp("keys")
    return {"release": _signer(directory, "release"), "other": _signer(directory, "other")}


def _package(
    out: Path,
    signer: PrivateKeySigner,
    *,
    post_build: str,
    timestamp: int,
    spl: str,
    pre_build: str | None = None,
    device: str = DEVICE,
) -> Path:
    """A small A/B package as releasetools lays it out (metadata.pb and the text metadata, property files), with a
    stand-in payload, whole-file signed."""
    work = out.parent / f".{out.name}.work"
    work.mkdir()
    payload, properties, _ = _payload(work)
    metadata = ab_metadata(
        device=device,
        post_build=post_build,
        post_timestamp=timestamp,
        post_security_patch_level=spl,
        post_sdk_level="34",
        post_build_incremental=post_build.split("/")[4].split(":")[0],
        pre_build=[pre_build] if pre_build is not None else None,
    )
    build_ab_package(work / "unsigned.zip", payload=payload, payload_properties=properties, metadata=metadata)
    sign_package(work / "unsigned.zip", out, signer)
    shutil.rmtree(work)
    return out


def _publish(webroot: Path, cert: Path, *args: str, channel: str = "stable") -> int:
    return main(["release", "publish", *args, str(webroot), "--device", DEVICE, "--channel", channel,
                 "--certs", str(cert)])  # fmt: skip


def _snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under root with its type, mode and bytes (or link target)."""
    result = {}
    if not root.exists():
        return result
    for directory, folders, files in os.walk(root):
        for name in folders + files:
            path = Path(directory) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                result[relative] = ("link", 0, os.readlink(path).encode())
            elif path.is_dir():
                result[relative] = ("dir", path.stat().st_mode, b"")
            else:
                result[relative] = ("file", path.stat().st_mode, path.read_bytes())
    return result


def _sha256sum(path: Path) -> str:
    output = subprocess.run([require_tool("sha256sum"), str(path)], capture_output=True, text=True, check=True)
    return output.stdout.split()[0]


@pytest.fixture
def releases(tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]]) -> dict[str, Path]:
    signer = keys["release"][0]
    builds = tmp_path / "builds"
    builds.mkdir()
    return {
        "full1": _package(builds / "sargo-ota-1000.zip", signer, post_build=FP1, timestamp=T1, spl="2024-01-05"),
        "full2": _package(builds / "sargo-ota-2000.zip", signer, post_build=FP2, timestamp=T2, spl="2024-02-05"),
        "inc12": _package(
            builds / "sargo-incremental-1000-2000.zip",
            signer,
            post_build=FP2,
            timestamp=T2,
            spl="2024-02-05",
            pre_build=FP1,
        ),
        "full3": _package(builds / "sargo-ota-3000.zip", signer, post_build=FP3, timestamp=T3, spl="2024-03-05"),
    }


def test_two_builds_full_and_incremental(
    tmp_path: Path,
    keys: dict[str, tuple[PrivateKeySigner, Path]],
    releases: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert = keys["release"][1]
    webroot = tmp_path / "www"
    assert _publish(webroot, cert, str(releases["full1"])) == 0
    first = (webroot / "ota" / DEVICE / "stable.json").read_bytes()
    assert read_channel(first).newest.fingerprint == FP1
    capsys.readouterr()

    assert _publish(webroot, cert, str(releases["full2"]), str(releases["inc12"]), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["published"] is True and report["newest"]["fingerprint"] == FP2 and report["copied"] == 2

    directory = webroot / "ota" / DEVICE
    data = (directory / "stable.json").read_bytes()
    document = json.loads(data)
    assert data == json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert document["device"] == DEVICE and document["channel"] == "stable"
    newest, earlier = document["builds"]
    assert (newest["fingerprint"], newest["timestamp"], newest["security_patch_level"]) == (FP2, T2, "2024-02-05")
    assert newest["incremental"] == "2000" and earlier["fingerprint"] == FP1
    listed = [(newest["full"], releases["full2"]), (newest["incrementals"][0], releases["inc12"]),
              (earlier["full"], releases["full1"])]  # fmt: skip
    assert newest["incrementals"][0]["pre_build"] == FP1 and "pre_build" not in newest["full"]
    for item, source in listed:
        published = directory / item["url"]
        assert item["size"] == os.stat(source).st_size == os.stat(published).st_size
        assert item["sha256"] == _sha256sum(source) == _sha256sum(published)
        assert item["url"] == f"packages/{item['sha256']}/{source.name}"
        assert published.read_bytes() == source.read_bytes()
        assert not os.access(published, os.W_OK) or os.geteuid() == 0
        assert published.stat().st_mode & 0o222 == 0
    leftovers = [path.name for path in webroot.rglob(".*") if path.name != ".publish.lock"]
    assert leftovers == []
    # Publishing the same set again changes nothing and copies nothing.
    before = _snapshot(webroot)
    assert _publish(webroot, cert, str(releases["full2"]), str(releases["inc12"]), "--json") == 0
    assert json.loads(capsys.readouterr().out)["copied"] == 0
    after = _snapshot(webroot)
    after.pop(f"ota/{DEVICE}/.publish.lock", None)
    before.pop(f"ota/{DEVICE}/.publish.lock", None)
    assert after == before


def test_a_directory_of_packages_is_published_as_one_set(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for name in ("full1", "full2", "inc12"):
        shutil.copy(releases[name], folder / releases[name].name)
    webroot = tmp_path / "www"
    assert _publish(webroot, keys["release"][1], str(folder), channel="beta") == 0
    channel = read_channel((webroot / "ota" / DEVICE / "beta.json").read_bytes())
    assert [build.fingerprint for build in channel.builds] == [FP2, FP1]
    assert channel.newest.incremental_from(FP1) is not None
    assert not (webroot / "ota" / DEVICE / "stable.json").exists()


def _refusal_cases(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> dict[str, tuple[list[str], str, str]]:
    other = keys["other"][0]
    return {
        "wrong device": (
            [str(_package(tmp_path / "walleye.zip", keys["release"][0], post_build=FP3, timestamp=T3,
                          spl="2024-03-05", device="walleye"))],
            "WRONG_DEVICE", "is for walleye, not for sargo",
        ),
        "bad signature": (
            [str(_package(tmp_path / "other-key.zip", other, post_build=FP3, timestamp=T3, spl="2024-03-05"))],
            "BAD_SIGNATURE", "does not verify",
        ),
        "tampered": (
            [str(_tampered(releases["full3"], tmp_path / "tampered.zip"))], "BAD_SIGNATURE", "does not verify",
        ),
        "incremental from an unknown build": (
            [str(releases["full3"]), str(_package(tmp_path / "inc-x-3.zip", keys["release"][0], post_build=FP3,
                                                  timestamp=T3, spl="2024-03-05", pre_build=UNKNOWN))],
            "BROKEN_CHAIN", "which is neither on the channel nor among the full OTAs given",
        ),
        "incremental to an older build": (
            [str(releases["full3"]), str(releases["inc12"])], "BROKEN_CHAIN", "not to the newest build",
        ),
        "no full OTA": ([str(releases["inc12"])], "NO_FULL_OTA", "no full OTA was given"),
        "metadata without a timestamp": (
            [str(_text_package(tmp_path / "old.zip", keys["release"][0], f"pre-device={DEVICE}\npost-build={FP3}\n"))],
            "BAD_METADATA", "has no post-timestamp",
        ),
        "rollback": ([str(releases["full1"])], "ROLLBACK", "is not newer"),
    }  # fmt: skip


def _text_package(out: Path, signer: PrivateKeySigner, metadata: str) -> Path:
    """A package with only the legacy text metadata, as older builds made them."""
    unsigned = out.with_suffix(".unsigned")
    with zipfile.ZipFile(unsigned, "w") as archive:
        archive.writestr("META-INF/com/android/metadata", metadata)
    sign_package(unsigned, out, signer)
    return out


def _tampered(source: Path, out: Path) -> Path:
    data = bytearray(source.read_bytes())
    data[100] ^= 1
    out.write_bytes(data)
    return out


@pytest.mark.parametrize(
    "case",
    ["wrong device", "bad signature", "tampered", "incremental from an unknown build", "incremental to an older build",
     "no full OTA", "metadata without a timestamp", "rollback"],
)  # fmt: skip
def test_refusals_leave_the_web_root_unchanged(
    tmp_path: Path,
    keys: dict[str, tuple[PrivateKeySigner, Path]],
    releases: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    cert = keys["release"][1]
    webroot = tmp_path / "www"
    assert _publish(webroot, cert, str(releases["full2"]), str(releases["full1"]), str(releases["inc12"])) == 0
    before = _snapshot(webroot)
    arguments, code, message = _refusal_cases(tmp_path, keys, releases)[case]
    capsys.readouterr()
    assert _publish(webroot, cert, *arguments) == 1
    err = capsys.readouterr().err
    assert f"error {code}:" in err and message in err and "unchanged" in err
    assert _snapshot(webroot) == before
    assert _publish(webroot, cert, *arguments, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["published"] is False and code in [error["code"] for error in report["errors"]]
    assert _snapshot(webroot) == before


def test_otacerts_zip_as_the_trusted_certificates(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> None:
    otacerts = tmp_path / "otacerts.zip"
    with zipfile.ZipFile(otacerts, "w") as archive:
        archive.write(keys["other"][1], "other.x509.pem")
        archive.write(keys["release"][1], "releasekey.x509.pem")
    assert _publish(tmp_path / "www", otacerts, str(releases["full1"])) == 0
    only_other = tmp_path / "only-other.zip"
    with zipfile.ZipFile(only_other, "w") as archive:
        archive.write(keys["other"][1], "other.x509.pem")
    assert _publish(tmp_path / "www2", only_other, str(releases["full1"])) == 1


def test_a_refused_first_publish_creates_nothing(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    assert _publish(webroot, keys["other"][1], str(releases["full1"])) == 1
    assert list(webroot.iterdir()) == []


def test_security_patch_level_rollback_is_refused(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path],
    capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    signer, cert = keys["release"]
    webroot = tmp_path / "www"
    assert _publish(webroot, cert, str(releases["full2"])) == 0
    newer_but_older_patch = _package(tmp_path / "spl.zip", signer, post_build=FP3, timestamp=T3, spl="2024-01-05")
    before = _snapshot(webroot)
    capsys.readouterr()
    assert _publish(webroot, cert, str(newer_but_older_patch)) == 1
    assert "security patch level would go back from 2024-02-05 to 2024-01-05" in capsys.readouterr().err
    assert _snapshot(webroot) == before


def test_allowed_rollback_is_loud_and_withdraws_the_newer_build(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path],
    capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    cert = keys["release"][1]
    webroot = tmp_path / "www"
    assert _publish(webroot, cert, str(releases["full1"])) == 0
    assert _publish(webroot, cert, str(releases["full2"])) == 0
    capsys.readouterr()
    assert _publish(webroot, cert, str(releases["full1"]), "--allow-rollback", "--json") == 0
    captured = capsys.readouterr()
    assert "WARNING: ROLLBACK" in captured.err and FP2 in captured.err
    report = json.loads(captured.out)
    assert report["rollback"] is True and report["withdrawn"] == [FP2]
    channel = read_channel((webroot / "ota" / DEVICE / "stable.json").read_bytes())
    assert [build.fingerprint for build in channel.builds] == [FP1]
    # The withdrawn build's package is still served: a device that read the older channel can finish its download.
    digest = _sha256sum(releases["full2"])
    assert (webroot / "ota" / DEVICE / "packages" / digest / releases["full2"].name).is_file()


def test_lineage_updater_list(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> None:
    webroot = tmp_path / "www"
    base = "https://updates.example.org/os"
    assert _publish(webroot, keys["release"][1], str(releases["full2"]), str(releases["full1"]),
                    str(releases["inc12"]), "--base-url", base, "--lineage-version", "21.0") == 0  # fmt: skip
    document = json.loads((webroot / "ota" / DEVICE / "lineage-stable.json").read_bytes())
    (update,) = document["response"]
    # Utils.parseJsonUpdate: getLong("datetime"), getString("filename"), getString("id"), getString("romtype"),
    # getLong("size"), getString("url"), getString("version"); org.json's getString refuses non-strings.
    types = {"datetime": int, "filename": str, "id": str, "romtype": str, "size": int, "url": str, "version": str}
    assert set(update) == set(types)
    for name, expected in types.items():
        assert type(update[name]) is expected, name
    assert update["datetime"] == T2 and update["version"] == "21.0" and update["romtype"] == "stable"
    assert update["size"] == os.stat(releases["full2"]).st_size and update["filename"] == releases["full2"].name
    digest = _sha256sum(releases["full2"])
    assert update["url"] == f"{base}/ota/{DEVICE}/packages/{digest}/{releases['full2'].name}"
    assert update["id"] == digest


def test_a_published_lineage_list_is_never_left_behind(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path],
    capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    webroot, cert = tmp_path / "www", keys["release"][1]
    lineage = ["--base-url", "https://x.example", "--lineage-version", "21.0"]
    assert _publish(webroot, cert, str(releases["full1"]), *lineage) == 0
    before = _snapshot(webroot)
    capsys.readouterr()
    assert _publish(webroot, cert, str(releases["full2"])) == 2
    assert "lineage-stable.json is published: give --base-url" in capsys.readouterr().err
    assert _snapshot(webroot) == before
    assert _publish(webroot, cert, str(releases["full2"]), *lineage) == 0
    (update,) = json.loads((webroot / "ota" / DEVICE / "lineage-stable.json").read_bytes())["response"]
    assert update["datetime"] == T2


def test_lineage_list_needs_a_version(
    tmp_path: Path, keys: dict[str, tuple[PrivateKeySigner, Path]], releases: dict[str, Path]
) -> None:
    webroot = tmp_path / "www"
    assert _publish(webroot, keys["release"][1], str(releases["full1"]), "--base-url", "https://x.example") == 2
    assert not webroot.exists()


@contextlib.contextmanager
def _python_server(webroot: Path) -> Iterator[str]:
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(webroot)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def _nginx(webroot: Path) -> Iterator[str]:
    """Debian's nginx as a CDN node would run it: static files from the web root, nothing of ours in between."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    binary = binary or require_tool("nginx")
    state = webroot.parent / "nginx"
    state.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (state / "nginx.conf").write_text(
        f"""daemon off;
master_process off;
pid {state}/nginx.pid;
error_log {state}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {state}/body; proxy_temp_path {state}/proxy; fastcgi_temp_path {state}/fastcgi;
  uwsgi_temp_path {state}/uwsgi; scgi_temp_path {state}/scgi;
  types {{ application/json json; application/zip zip; }}
  server {{ listen 127.0.0.1:{port}; root {webroot}; }}
}}
"""
    )
    process = subprocess.Popen([binary, "-p", str(state), "-c", str(state / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    error = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"nginx did not start: {error}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


@pytest.mark.parametrize("server", [_python_server, _nginx], ids=["http.server", "nginx"])
def test_served_channel_downloads_match(
    tmp_path: Path,
    keys: dict[str, tuple[PrivateKeySigner, Path]],
    releases: dict[str, Path],
    server: Callable[[Path], contextlib.AbstractContextManager[str]],
) -> None:
    webroot = tmp_path / "www"
    webroot.mkdir()
    with server(webroot) as base:
        _download_and_compare(webroot, base, keys["release"][1], releases)


def _download_and_compare(webroot: Path, base: str, cert: Path, releases: dict[str, Path]) -> None:
    assert _publish(webroot, cert, str(releases["full1"]), "--base-url", base, "--lineage-version", "21.0") == 0
    assert _publish(webroot, cert, str(releases["full2"]), str(releases["inc12"]), "--base-url", base,
                    "--lineage-version", "21.0") == 0  # fmt: skip
    channel_url = f"{base}/ota/{DEVICE}/stable.json"
    with urllib.request.urlopen(channel_url, timeout=10) as response:
        data = response.read()
    assert data == (webroot / "ota" / DEVICE / "stable.json").read_bytes()
    channel = read_channel(data)
    for item, source in ((channel.newest.full, releases["full2"]), (channel.newest.incrementals[0], releases["inc12"])):
        with urllib.request.urlopen(urllib.parse.urljoin(channel_url, item.url), timeout=10) as response:
            downloaded = response.read()
        assert downloaded == source.read_bytes() and len(downloaded) == item.size
    with urllib.request.urlopen(f"{base}/ota/{DEVICE}/lineage-stable.json", timeout=10) as response:
        (update,) = json.loads(response.read())["response"]
    with urllib.request.urlopen(update["url"], timeout=10) as response:
        assert response.read() == releases["full2"].read_bytes()
