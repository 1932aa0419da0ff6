"""`sealgate keys ...` as scripts and custodians use it: exit statuses, JSON, and where secrets may come from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from asn1crypto import pem as asn1_pem

from conftest import require_tool
from sealgate.cli.keys import keys as keys_group
from sealgate.cli.main import main
from sealgate.custody import passphrase as passphrase_module
from sealgate.custody.keystore import Keystore
from sealgate.custody.roles import KeySpec
from test_keystore import PASSPHRASE, openssl_pkey
from test_token import PIN, SoftHsm, softhsm  # noqa: F401 - softhsm is a fixture used by the token tests below


@pytest.fixture
def env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    Keystore.create(
        directory, PASSPHRASE, roles=["releasekey", "root"], key_overrides={"releasekey": KeySpec.parse("rsa-2048")}
    )
    return directory


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cert_sha256(path: Path) -> str:
    return hashlib.sha256(asn1_pem.unarmor(path.read_bytes())[2]).hexdigest()


# -- the ceremony ------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("env_passphrase")
def test_init_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "keys"
    status, out, err = run(
        capsys, "keys", "init", str(directory), "--roles", "root,releasekey", "--key-size", "2048",
        "--distribution", "ExampleOS", "--json",
    )  # fmt: skip
    assert status == 0, err
    document = json.loads(out)
    assert document["distribution"] == "ExampleOS"
    assert [(role["name"], role["key_type"]) for role in document["roles"]] == [
        ("releasekey", "rsa-2048"),
        ("root", "ed25519"),
    ]
    assert "[ 1/2] generating releasekey (rsa-2048)" in err and "[ 2/2] generating root (ed25519)" in err
    for role in document["roles"]:
        assert role["certificate_sha256"] == cert_sha256(directory / f"{role['name']}.x509.pem")
        assert stat.S_IMODE((directory / f"{role['name']}.key.pem").stat().st_mode) == 0o600
    public = Path(document["public"])
    assert public == directory / "public"
    exported = json.loads((public / "keys.json").read_text())
    assert {name: entry["certificate_sha256"] for name, entry in exported["roles"].items()} == {
        role["name"]: role["certificate_sha256"] for role in document["roles"]
    }
    assert openssl_pkey(directory / "releasekey.key.pem", PASSPHRASE).returncode == 0


@pytest.mark.usefixtures("env_passphrase")
def test_init_prints_fingerprints_and_exports_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "keys", "init", str(tmp_path / "keys"), "--roles", "ota", "--key-type", "ec-p256",
        "--export", str(tmp_path / "online"),
    )  # fmt: skip
    assert status == 0
    fingerprint = cert_sha256(tmp_path / "keys" / "ota.x509.pem")
    assert f"ota  ec-p256    SHA-256 {fingerprint}" in out
    assert f"exported to {tmp_path / 'online'}" in out
    assert sorted(path.name for path in (tmp_path / "online").iterdir()) == ["keys.json", "ota.x509.pem"]
    assert not (tmp_path / "keys" / "public").exists()


def test_init_reads_the_passphrase_from_a_descriptor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEALGATE_PASSPHRASE", raising=False)
    read_end, write_end = os.pipe()
    os.write(write_end, b"passphrase from fd\n")
    os.close(write_end)
    try:
        status, _, err = run(
            capsys, "keys", "init", str(tmp_path / "keys"), "--roles", "root", "--passphrase-fd", str(read_end)
        )
    finally:
        os.close(read_end)
    assert status == 0, err
    assert openssl_pkey(tmp_path / "keys" / "root.key.pem", "passphrase from fd").returncode == 0
    assert openssl_pkey(tmp_path / "keys" / "root.key.pem", PASSPHRASE).returncode != 0


def test_init_without_any_passphrase_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SEALGATE_PASSPHRASE", raising=False)
    monkeypatch.setattr(passphrase_module, "terminal_available", lambda: False)
    status, out, err = run(capsys, "keys", "init", str(tmp_path / "keys"))
    assert status == 1 and out == ""
    assert "no new keystore passphrase: there is no terminal to prompt on; set SEALGATE_PASSPHRASE" in err
    assert "Traceback" not in err
    assert not (tmp_path / "keys").exists()


def test_no_command_takes_a_secret_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "keys", "init", str(tmp_path / "keys"), "--passphrase", "hunter22")
    assert status == 2 and "No such option" in err
    assert not (tmp_path / "keys").exists()
    for command in keys_group.commands.values():
        for param in command.params:
            if isinstance(param, click.Option):
                for name in param.opts:
                    assert "pin" not in name.split("-"), f"{command.name} {name}"
                    assert "passphrase" not in name or name == "--passphrase-fd", f"{command.name} {name}"


@pytest.mark.usefixtures("env_passphrase")
def test_init_refuses_a_non_empty_directory_and_bad_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("x")
    status, _, err = run(capsys, "keys", "init", str(tmp_path / "taken"), "--roles", "root")
    assert status == 1 and "is not empty" in err
    status, _, err = run(capsys, "keys", "init", str(tmp_path / "new"), "--roles", "root,nosuch")
    assert status == 2 and "unknown key role 'nosuch'" in err
    status, _, err = run(capsys, "keys", "init", str(tmp_path / "new"), "--key-type", "rsa-512")
    assert status == 2 and "at least 2048 bits" in err
    assert not (tmp_path / "new").exists()


def test_init_in_a_real_process_without_a_terminal(tmp_path: Path) -> None:
    """The console script, detached from any terminal: the environment works, nothing else is tried."""
    sealgate = shutil.which("sealgate", path=str(Path(sys.executable).parent))
    assert sealgate is not None
    env = {key: value for key, value in os.environ.items() if key != "SEALGATE_PASSPHRASE"}
    command = [sealgate, "keys", "init", str(tmp_path / "a"), "--roles", "root"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, start_new_session=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.startswith("sealgate: no new keystore passphrase: there is no terminal")
    accepted = subprocess.run(
        command, env={**env, "SEALGATE_PASSPHRASE": PASSPHRASE}, capture_output=True, text=True,
        start_new_session=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr


# -- list, export, rotate ----------------------------------------------------------------------------------------------


def test_list(small_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "keys", "list", str(small_store), "--json")
    assert status == 0
    document = json.loads(out)
    assert [role["name"] for role in document["roles"]] == ["releasekey", "root"]
    assert document["kdf"] == {"name": "scrypt", "n": 16384, "r": 8, "p": 5}
    status, out, _ = run(capsys, "keys", "list", str(small_store))
    assert status == 0 and f"root        ed25519    SHA-256 {cert_sha256(small_store / 'root.x509.pem')}" in out
    status, _, err = run(capsys, "keys", "list", str(small_store.parent))
    assert status == 1 and "has no keystore.json" in err


def test_export_public(small_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "keys", "export-public", str(small_store), str(tmp_path / "out"), "--json")
    assert status == 0
    files = [Path(name).name for name in json.loads(out)["files"]]
    assert files == ["releasekey.x509.pem", "root.x509.pem", "keys.json"]
    for path in (tmp_path / "out").iterdir():
        assert b"PRIVATE" not in path.read_bytes()


@pytest.mark.usefixtures("env_passphrase")
def test_rotate(small_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = cert_sha256(small_store / "releasekey.x509.pem")
    status, out, err = run(capsys, "keys", "rotate", str(small_store), "releasekey", "--json")
    assert status == 0, err
    document = json.loads(out)
    assert document["old_certificate_sha256"] == before
    assert document["new_certificate_sha256"] == cert_sha256(small_store / "releasekey.x509.pem") != before
    assert (document["old_generation"], document["new_generation"], document["signs_apks"]) == (1, 2, True)
    assert cert_sha256(small_store / "releasekey.1.x509.pem") == before

    status, out, _ = run(capsys, "keys", "rotate", str(small_store), "root")
    assert status == 0 and "rotated root: generation 1 -> 2" in out and "proof-of-rotation" not in out


def test_rotate_refreshes_the_default_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "keys"
    Keystore.create(directory, PASSPHRASE, roles=["root"]).export_public(directory / "public")
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE.encode() + b"\n")
    os.close(write_end)
    try:
        status, out, _ = run(capsys, "keys", "rotate", str(directory), "root", "--passphrase-fd", str(read_end))
    finally:
        os.close(read_end)
    assert status == 0 and "public export in" in out
    exported = json.loads((directory / "public" / "keys.json").read_text())
    assert exported["roles"]["root"]["certificate_sha256"] == cert_sha256(directory / "root.x509.pem")
    assert exported["roles"]["root"]["retired"][0]["certificate"] == "root.1.x509.pem"


def test_rotate_errors(small_store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", "not the passphrase")
    status, _, err = run(capsys, "keys", "rotate", str(small_store), "releasekey")
    assert status == 1 and "wrong passphrase for keystore" in err and "Traceback" not in err
    assert not (small_store / "releasekey.1.key.pem").exists()
    status, _, err = run(capsys, "keys", "rotate", str(small_store), "nosuch")
    assert status == 2 and "unknown key role" in err


@pytest.fixture
def locked_store(small_store: Path) -> Iterator[Path]:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(small_store / "keystore.lock"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield small_store
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.mark.usefixtures("env_passphrase")
def test_locked_keystore(locked_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "keys", "rotate", str(locked_store), "root")
    assert status == 1 and "is locked by another process" in err
    status, _, err = run(capsys, "keys", "list", str(locked_store))
    assert status == 1 and "is locked by another process" in err


# -- tokens ------------------------------------------------------------------------------------------------------------


def test_token_init(
    softhsm: SoftHsm,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PIN)  # the PIN comes from the passphrase sources
    status, out, err = run(
        capsys, "keys", "token-init", "--pkcs11", softhsm.uri("ota-token"), "--role", "ota",
        "--key-type", "ec-p256", "--cert-out", str(tmp_path / "ota.pem"), "--json",
    )  # fmt: skip
    assert status == 0, err
    document = json.loads(out)
    assert document["label"] == "ota-token" and document["role"] == "ota"
    assert document["protection"] == {
        "sensitive": True,
        "extractable": False,
        "always_sensitive": True,
        "never_extractable": True,
        "local": True,
    }
    assert document["certificate_sha256"] == cert_sha256(tmp_path / "ota.pem")
    openssl = require_tool("openssl")
    pem = str(tmp_path / "ota.pem")
    assert subprocess.run([openssl, "verify", "-CAfile", pem, pem], capture_output=True).returncode == 0

    status, _, err = run(capsys, "keys", "token-init", "--pkcs11", softhsm.uri("ota-token"), "--role", "ota")
    assert status == 1 and "never replaced" in err


def test_token_init_errors(
    softhsm: SoftHsm,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", "999999")
    status, _, err = run(capsys, "keys", "token-init", "--pkcs11", softhsm.uri("x"), "--role", "root")
    assert status == 1 and f"wrong PIN for token {softhsm.label}" in err
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PIN)
    uri = f"pkcs11:token=absent?module-path={softhsm.module}"
    status, _, err = run(capsys, "keys", "token-init", "--pkcs11", uri, "--role", "root")
    assert status == 1 and "no token absent" in err
    uri = "pkcs11:token=absent?module-path=/nonexistent/libpkcs11.so"
    status, _, err = run(capsys, "keys", "token-init", "--pkcs11", uri, "--role", "root")
    assert status == 1 and "PKCS#11 module /nonexistent/libpkcs11.so not found" in err
    status, _, err = run(capsys, "keys", "token-init", "--pkcs11", uri + "&pin-value=1234", "--role", "root")
    assert status == 2 and "a PIN does not belong in a PKCS#11 URI" in err
