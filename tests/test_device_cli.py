"""`sealgate device`: the --json contract {"package", "accepted", "action", "reason"} and exit 0 / 1 / 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import require_tool, vectors_path
from sealgate.cli.main import main
from signing_tools import apksigner_sign, make_key
from test_device import APP, FDROID, build_unsigned


@pytest.fixture(scope="module")
def apks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_tool("apksigner")
    work = tmp_path_factory.mktemp("device-cli")
    dev, stranger, store = (make_key(work / "keys", "ec-p256", label) for label in ("dev", "stranger", "store"))
    signed = {}
    for name, key, package, version in [
        ("v1", dev, APP, 1),
        ("v2", dev, APP, 2),
        ("v2-stranger", stranger, APP, 2),
        ("fdroid", store, FDROID, 1),
    ]:
        unsigned = build_unsigned(work / "unsigned", name, package, version_code=version)
        signed[name] = apksigner_sign(unsigned, work / f"{name}.apk", [key])
    unsigned = build_unsigned(work / "unsigned", "test-only", APP, test_only=True)
    signed["test-only"] = apksigner_sign(unsigned, work / "test-only.apk", [dev])
    unsigned = build_unsigned(work / "unsigned", "system-uid", "org.example.sys", shared_user="android.uid.system")
    signed["system-uid"] = apksigner_sign(unsigned, work / "system-uid.apk", [dev])
    signed["platform-cert"] = dev.cert_path
    (work / "store.sha256").write_text(store.cert_sha256)
    signed["store-digest"] = work / "store.sha256"
    return signed


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["device", *args])
    out, err = capsys.readouterr()
    return status, out, err


def damage(phone: str, directory: Path, statement: str) -> str:
    """A copy of the device at `phone` whose database a statement broke."""
    directory.mkdir()
    shutil.copy(Path(phone) / "device.db", directory / "device.db")
    connection = sqlite3.connect(directory / "device.db")
    connection.execute(statement)
    connection.commit()
    connection.close()
    return str(directory)


def verdict(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status, out, _ = run(capsys, *args, "--json")
    document = json.loads(out)
    assert set(document) == {"package", "accepted", "action", "reason"}
    return status, document


@pytest.fixture
def phone(tmp_path: Path, apks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> str:
    store = f"{FDROID}={apks['store-digest'].read_text()}:privileged"
    status, out, _ = run(capsys, "init", str(tmp_path / "phone"), "--sdk", "34", "--abi", "arm64-v8a", "--store", store)
    assert status == 0, out
    return str(tmp_path / "phone")


def test_install_update_and_refusal(phone: str, apks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, document = verdict(capsys, "check", phone, str(apks["v1"]))
    assert (status, document["package"], document["accepted"], document["action"]) == (0, APP, True, "install")
    assert json.loads(run(capsys, "list", phone, "--json")[1])["packages"] == []  # check changed nothing
    status, document = verdict(capsys, "install", phone, str(apks["v1"]))
    assert status == 0 and document["accepted"] is True and document["action"] == "install"
    status, document = verdict(capsys, "install", phone, str(apks["v2-stranger"]))
    assert status == 1 and document["accepted"] is False and document["action"] == "update"
    assert "signed by a different developer" in str(document["reason"])
    status, document = verdict(capsys, "check", phone, str(apks["v2"]))
    assert (status, document["accepted"], document["action"]) == (0, True, "update")
    status, out, _ = run(capsys, "list", phone, "--json")
    listed = json.loads(out)
    assert status == 0 and [(p["package"], p["version_code"]) for p in listed["packages"]] == [(APP, 1)]


def test_store_rules_through_the_cli(phone: str, apks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    status, document = verdict(capsys, "install", phone, str(apks["v1"]), "--as-store", FDROID)
    assert status == 1 and "not installed" in str(document["reason"])
    assert verdict(capsys, "install", phone, str(apks["fdroid"]))[0] == 0
    assert verdict(capsys, "install", phone, str(apks["v1"]), "--as-store", FDROID)[0] == 0
    status, document = verdict(capsys, "install", phone, str(apks["v2"]), "--as-store", FDROID)
    assert status == 1 and "automatic updates" in str(document["reason"])
    assert run(capsys, "auto-update", phone, FDROID, "on")[0] == 1  # the user did not confirm
    assert run(capsys, "auto-update", phone, FDROID, "on", "--confirm")[0] == 0
    assert verdict(capsys, "install", phone, str(apks["v2"]), "--as-store", FDROID)[0] == 0
    status, out, _ = run(capsys, "list", phone)
    assert status == 0 and f"by {FDROID}" in out and "auto-update on" in out


def test_uninstall(phone: str, apks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "install", phone, str(apks["v1"]))
    assert verdict(capsys, "uninstall", phone, APP)[0] == 0
    assert verdict(capsys, "uninstall", phone, APP)[0] == 1
    status, document = verdict(capsys, "install", phone, str(apks["v2-stranger"]))
    assert (status, document["action"]) == (0, "install")


def test_refusals_in_human_output(phone: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "install", phone, str(vectors_path("fdroid", "apks", "urzip-badsig.apk")))
    assert status == 1 and out.startswith("REFUSED [NOT_VERIFIED]")


def test_a_file_that_is_not_an_apk_is_refused(phone: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.apk"
    junk.write_bytes(b"not a zip" * 10)
    status, document = verdict(capsys, "install", phone, str(junk))
    assert status == 1 and document["package"] is None and document["accepted"] is False


@pytest.mark.parametrize(
    "args",
    [
        ("install", "{missing}", "{apk}"),
        ("install", "{phone}", "{missing_apk}"),
        ("init", "{phone}"),
        ("init", "{fresh}", "--store", "org.fdroid.fdroid=xyz"),
        ("init", "{fresh}", "--sdk", "0"),
        ("auto-update", "{phone}", FDROID, "maybe"),
        ("list", "{missing}"),
        ("init", "{fresh}", "--sdk", "99999999999999999999"),
        ("init", "{fresh}", "--abi", ""),
        ("list", "{damaged}"),
        ("list", "{badjson}"),
        ("check", "{damaged}", "{apk}"),
        ("uninstall", "{damaged}", APP),
    ],
)
def test_usage_errors_exit_2(
    phone: str, apks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    values = {
        "phone": phone,
        "apk": str(apks["v1"]),
        "missing": str(tmp_path / "missing"),
        "missing_apk": str(tmp_path / "missing.apk"),
        "fresh": str(tmp_path / "fresh"),
        "damaged": damage(phone, tmp_path / "damaged", "DROP TABLE packages"),
        "badjson": damage(phone, tmp_path / "badjson", "UPDATE device SET abis = 'notjson'"),
    }
    status, _, err = run(capsys, *(arg.format(**values) for arg in args))
    assert status == 2, err
    assert "Traceback" not in err


def test_a_damaged_device_is_exit_2_with_a_json_error(
    phone: str, apks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = damage(phone, tmp_path / "broken", "DROP TABLE packages")
    for command in ("check", "install"):
        status, out, err = run(capsys, command, broken, str(apks["v1"]), "--json")
        document = json.loads(out)
        assert status == 2 and "Traceback" not in err
        assert document["accepted"] is False and document["error"] == "DEVICE_UNAVAILABLE"
        assert "damaged" in str(document["reason"])


def test_store_flags_through_the_cli(phone: str, apks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert verdict(capsys, "install", phone, str(apks["fdroid"]))[0] == 0
    status, document = verdict(capsys, "install", phone, str(apks["test-only"]), "--as-store", FDROID, "--allow-test")
    assert status == 1 and "testOnly" in str(document["reason"])
    assert verdict(capsys, "install", phone, str(apks["test-only"]))[0] == 1
    assert verdict(capsys, "install", phone, str(apks["test-only"]), "--allow-test")[0] == 0


def test_platform_cert_option(apks: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    phone = str(tmp_path / "platform-phone")
    assert run(capsys, "init", phone, "--platform-cert", str(apks["platform-cert"]), "--json")[0] == 0
    assert verdict(capsys, "install", phone, str(apks["system-uid"]))[0] == 0
    other = str(tmp_path / "plain-phone")
    assert run(capsys, "init", other)[0] == 0
    status, document = verdict(capsys, "install", other, str(apks["system-uid"]))
    assert status == 1 and "android.uid.system" in str(document["reason"])
