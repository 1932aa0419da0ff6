"""The app repository: configuration and metadata errors, the verification steps on hostile APKs, the archive
policy, reruns, diffs and signed index JARs, checked against fdroidserver's vectors and Java's jarsigner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool
from repo_tools import signed_app, throwaway_signer, unsigned_app
from sealgate.apk.lineage import create_lineage
from sealgate.errors import MetadataError, RepoError
from sealgate.repo.config import SigningConfig, load_config
from sealgate.repo.index_jar import read_index_jar, sign_index_jar
from sealgate.repo.index_v1 import dumps_v1
from sealgate.repo.index_v2 import dumps, merge_patch
from sealgate.repo.init import init_repository
from sealgate.repo.metadata import load_metadata
from sealgate.repo.update import UpdateOptions, update_repository
from sealgate.signing import PrivateKeySigner

URL = "https://example.org/fdroid/repo"
TIMESTAMP = 1_700_000_000


@pytest.fixture(scope="module")
def keys() -> dict[str, PrivateKeySigner]:
    return {name: throwaway_signer(name) for name in ("developer", "stranger", "rotated", "repo")}


def _repo(tmp_path: Path, *, archive_older: int = 0) -> Path:
    root = tmp_path / "fdroid"
    init_repository(root, url=URL, name="Test repo", description="Apps for tests.", archive_older=archive_older)
    return root


def _metadata(root: Path, package: str, text: str = "License: Apache-2.0\n") -> None:
    (root / "metadata" / f"{package}.yml").write_text(text, encoding="utf-8")


def _update(root: Path, signer: PrivateKeySigner | None, **options: object) -> object:
    return update_repository(load_config(root), signer, UpdateOptions(timestamp=TIMESTAMP, **options))  # type: ignore[arg-type]


def _index(root: Path, section: str = "repo") -> dict[str, object]:
    return json.loads((root / section / "index-v2.json").read_bytes())  # type: ignore[no-any-return]


def _indexed_files(root: Path, section: str = "repo") -> set[str]:
    index = _index(root, section)
    packages = index["packages"]
    assert isinstance(packages, dict)
    return {
        version["file"]["name"].lstrip("/") for package in packages.values() for version in package["versions"].values()
    }


# -- configuration and metadata ----------------------------------------------------------------------------------------


def test_metadata_errors_name_the_line(tmp_path: Path) -> None:
    cases = {
        "Name: App\nLicense: MIT\nAlowedAPKSigningKeys: abc\n": (3, "unknown field 'AlowedAPKSigningKeys'"),
        "Name: App\nName: Other\n": (2, "'Name' appears twice"),
        "AllowedAPKSigningKeys:\n  - 1234\n": (2, "not a SHA-256 certificate fingerprint"),
        "CurrentVersionCode: soon\n": (1, "CurrentVersionCode must be a whole number"),
        "Categories: {a: b}\n": (1, "Categories must be a list"),
        "Name: [unclosed\n": (2, "not valid YAML"),
        "a: &x [1]\nb: *x\n": (1, "aliases"),
    }
    for text, (line, message) in cases.items():
        path = tmp_path / "org.example.app.yml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(MetadataError, match=message) as raised:
            load_metadata(path)
        assert raised.value.line == line, (text, str(raised.value))
        assert str(raised.value).startswith(f"{path}:{line}: ")


def test_fdroiddata_metadata_reads_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "org.example.app.yml"
    path.write_text(
        "AntiFeatures:\n  Tracking:\n    en-US: analytics\n  NonFreeNet: {}\nCategories:\n  - Internet\n"
        "License: GPL-3.0-only\nWebSite: https://example.org\nSourceCode: https://example.org/src\n"
        "Donate: https://example.org/donate\nName: Example\nSummary: An example\nDescription: |-\n  Two\n  lines\n"
        "AllowedAPKSigningKeys: " + "AB" * 32 + "\nArchivePolicy: 2 versions\nCurrentVersionCode: 7\n"
        "RepoType: git\nRepo: https://example.org/src.git\nBuilds:\n  - versionName: '1'\n    versionCode: 1\n"
        "AutoUpdateMode: None\nUpdateCheckMode: Tags\n",
        encoding="utf-8",
    )
    metadata = load_metadata(path)
    assert metadata.package == "org.example.app"
    assert metadata.anti_features == {"Tracking": {"en-US": "analytics"}, "NonFreeNet": {}}
    assert metadata.allowed_signers == {"ab" * 32}
    assert (metadata.archive_policy, metadata.current_version_code) == (2, 7)
    assert metadata.description == "Two\nlines"


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    config_file = root / "config.yml"
    config_file.write_text('repo_name: "x"\nrepo_url: "ftp://example.org/repo"\n', encoding="utf-8")
    with pytest.raises(MetadataError, match=r"config.yml:2: 'ftp://example.org/repo' is not an http\(s\) address"):
        load_config(root)
    config_file.write_text("repo_name: x\narchive_older: -1\nrepo_url: https://example.org/fdroid/repo\n")
    with pytest.raises(MetadataError, match=r"config\.yml:2: archive_older"):
        load_config(root)
    with pytest.raises(RepoError, match=r"config\.yml is missing"):
        load_config(tmp_path / "nowhere")


# -- the verification steps --------------------------------------------------------------------------------------------


def test_hostile_apks_are_refused_with_their_reason_and_the_rest_is_indexed(
    tmp_path: Path, keys: dict[str, PrivateKeySigner], fdroid_vectors: Path
) -> None:
    root = _repo(tmp_path)
    apks = root / "repo"
    developer, stranger, rotated = keys["developer"], keys["stranger"], keys["rotated"]
    signed_app(apks / "org.example.app_1.apk", "org.example.app", 1, [developer])
    signed_app(apks / "org.example.app_2.apk", "org.example.app", 2, [developer])
    # Step 3: a signer change Android would refuse as an update.
    signed_app(apks / "org.example.app_3.apk", "org.example.app", 3, [stranger])
    # Step 3, the other way: a rotation with its proof is an update Android accepts.
    signed_app(apks / "org.example.rotating_1.apk", "org.example.rotating", 1, [developer])
    lineage = create_lineage(developer, rotated)
    signed_app(apks / "org.example.rotating_2.apk", "org.example.rotating", 2, [developer, rotated], lineage=lineage)
    # Step 2: the metadata pins the developer's key.
    signed_app(apks / "org.example.pinned_1.apk", "org.example.pinned", 1, [stranger])
    # Step 1: unsigned, and the Janus construct.
    unsigned_app(apks / "org.example.unsigned_1.apk", "org.example.unsigned", 1)
    shutil.copy(fdroid_vectors / "apks" / "janus.apk", apks / "janus.apk")
    # Step 4: the same file twice, another file with a taken version code, a lying file name.
    shutil.copy(apks / "org.example.app_1.apk", apks / "copy-of-app-1.apk")
    signed_app(apks / "other-build-of-app-2.apk", "org.example.app", 2, [developer], min_sdk=24)
    shutil.copy(apks / "org.example.app_2.apk", apks / "org.example.other_5.apk")
    for package in ("org.example.app", "org.example.rotating", "org.example.unsigned", "com.example"):
        _metadata(root, package)
    _metadata(root, "org.example.pinned", f"AllowedAPKSigningKeys: {developer.certificate.sha256}\n")

    report = _update(root, keys["repo"])

    refused = {refusal.name: refusal.code for refusal in report.refusals}  # type: ignore[attr-defined]
    assert refused == {
        "repo/org.example.app_3.apk": "SIGNER_CHANGE",
        "repo/org.example.pinned_1.apk": "SIGNER_NOT_ALLOWED",
        "repo/org.example.unsigned_1.apk": "VERIFY",
        "repo/janus.apk": "VERIFY",
        "repo/copy-of-app-1.apk": "DUPLICATE",
        "repo/other-build-of-app-2.apk": "DUPLICATE_VERSION",
        "repo/org.example.other_5.apk": "FILE_NAME_MISMATCH",
    }
    reasons = {refusal.code: refusal.reason for refusal in report.refusals}  # type: ignore[attr-defined]
    assert "version 3 (org.example.app_3.apk) cannot update version 1" in reasons["SIGNER_CHANGE"]
    assert "ZIP_DATA_BEFORE_FIRST_ENTRY" in reasons["VERIFY"] or "JAR_SIG" in reasons["VERIFY"]
    assert _indexed_files(root) == {
        "org.example.app_1.apk",
        "org.example.app_2.apk",
        "org.example.rotating_1.apk",
        "org.example.rotating_2.apk",
    }
    versions = _index(root)["packages"]["org.example.rotating"]["versions"]  # type: ignore[index]
    signers = {version["manifest"]["signer"]["sha256"][0] for version in versions.values()}
    assert signers == {developer.certificate.sha256, rotated.certificate.sha256}


def test_published_versions_are_settled_before_new_ones(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    """A new file with a lower version code and another key cannot push the published app out of the index."""
    root = _repo(tmp_path)
    _metadata(root, "org.example.app")
    signed_app(root / "repo" / "org.example.app_5.apk", "org.example.app", 5, [keys["developer"]])
    _update(root, None)
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["stranger"]])
    report = _update(root, None)
    assert [(r.name, r.code) for r in report.refusals] == [("repo/org.example.app_1.apk", "SIGNER_CHANGE")]  # type: ignore[attr-defined]
    assert _indexed_files(root) == {"org.example.app_5.apk"}


def test_apps_without_metadata_are_refused_or_get_a_pinned_file(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    root = _repo(tmp_path)
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    report = _update(root, None)
    assert [refusal.code for refusal in report.refusals] == ["NO_METADATA"]  # type: ignore[attr-defined]
    report = _update(root, None, create_metadata=True)
    assert report.refusals == []  # type: ignore[attr-defined]
    metadata = load_metadata(root / "metadata" / "org.example.app.yml")
    assert metadata.allowed_signers == {keys["developer"].certificate.sha256}
    assert _indexed_files(root) == {"org.example.app_1.apk"}


# -- archive policy, reruns, diffs -------------------------------------------------------------------------------------


def test_archive_policy_moves_old_versions_and_back(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    root = _repo(tmp_path, archive_older=2)
    _metadata(root, "org.example.app")
    for code in (1, 2, 3):
        signed_app(root / "repo" / f"org.example.app_{code}.apk", "org.example.app", code, [keys["developer"]])
    report = _update(root, keys["repo"])
    assert report.moved == [("repo/org.example.app_1.apk", "archive/org.example.app_1.apk")]  # type: ignore[attr-defined]
    assert _indexed_files(root, "repo") == {"org.example.app_2.apk", "org.example.app_3.apk"}
    assert _indexed_files(root, "archive") == {"org.example.app_1.apk"}
    assert _index(root, "archive")["repo"]["address"] == "https://example.org/fdroid/archive"  # type: ignore[index]
    read_index_jar(root / "archive" / "entry.jar", "entry.json", expected_fingerprint=keys["repo"].certificate.sha256)
    _metadata(root, "org.example.app", "ArchivePolicy: 3\n")
    report = _update(root, keys["repo"])
    assert report.moved == [("archive/org.example.app_1.apk", "repo/org.example.app_1.apk")]  # type: ignore[attr-defined]
    assert _indexed_files(root, "archive") == set()


def test_rerun_without_changes_writes_nothing_and_reads_no_apk(
    tmp_path: Path, keys: dict[str, PrivateKeySigner], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _repo(tmp_path)
    _metadata(root, "org.example.app")
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    _update(root, keys["repo"])
    before = {path.name: path.read_bytes() for path in (root / "repo").iterdir() if path.is_file()}

    import sealgate.repo.scan as scan_module

    def no_scan(*args: object) -> None:
        raise AssertionError("an unchanged APK was opened again")

    monkeypatch.setattr(scan_module, "scan_apk", no_scan)
    # A later clock: only the content decides whether the index changes, not the time.
    report = update_repository(load_config(root), keys["repo"], UpdateOptions(timestamp=TIMESTAMP + 3600))
    assert report.scanned == 0 and report.cached == 1
    assert [section.changed for section in report.sections] == [False]
    after = {path.name: path.read_bytes() for path in (root / "repo").iterdir() if path.is_file()}
    assert after == before


def test_a_change_publishes_a_merge_patch_diff(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    root = _repo(tmp_path)
    _metadata(root, "org.example.app", "Summary: first\n")
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    _update(root, keys["repo"])
    old = _index(root)
    _metadata(root, "org.example.app", "Summary: second\n")
    update_repository(load_config(root), keys["repo"], UpdateOptions(timestamp=TIMESTAMP + 60))
    new = _index(root)
    entry = json.loads(read_index_jar(root / "repo" / "entry.jar", "entry.json").data)
    assert list(entry["diffs"]) == [str(TIMESTAMP * 1000)]
    diff_file = root / "repo" / entry["diffs"][str(TIMESTAMP * 1000)]["name"].lstrip("/")
    patch = json.loads(diff_file.read_bytes())
    assert patch == {
        "repo": {"timestamp": (TIMESTAMP + 60) * 1000},
        "packages": {"org.example.app": {"metadata": {"summary": {"en-US": "second"}}}},
    }
    assert _apply_merge_patch(old, patch) == new
    assert entry["diffs"][str(TIMESTAMP * 1000)]["numPackages"] == 1


def _apply_merge_patch(target: object, patch: object) -> object:
    """RFC 7386 section 2, written from the RFC's pseudo-code (independently of `merge_patch`)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _apply_merge_patch(result.get(key), value)
    return result


def test_merge_patch_removes_keys_with_null() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}, "e": [1]}) == {
        "a": None,
        "b": {"d": None},
        "e": [1],
    }


# -- index files and JARs against fdroidserver's vectors and Java ------------------------------------------------------


def test_signindex_vectors(fdroid_vectors: Path) -> None:
    signindex = fdroid_vectors / "signindex"
    # The fingerprint fdroidserver's own tests give for testy.jar, written the way F-Droid shows it.
    testy_fingerprint = "818E4694 65F96B70 4E27BE2F EE4C63AB 9F83DDF3 0E7A34C7 371A4728 D83B0BC1"
    testy = read_index_jar(signindex / "testy.jar", expected_fingerprint=testy_fingerprint)
    assert testy.fingerprint == testy_fingerprint.replace(" ", "").lower()
    assert testy.data.startswith(b"<?xml")
    assert read_index_jar(signindex / "guardianproject-v1.jar", "index-v1.json").fingerprint == (
        read_index_jar(signindex / "guardianproject.jar").fingerprint
    )
    with pytest.raises(RepoError, match="no signature"):
        read_index_jar(signindex / "unsigned.jar")


def test_golden_index_files_read_and_reserialise_byte_for_byte(fdroid_vectors: Path) -> None:
    golden = fdroid_vectors / "repo-golden"
    v1_json = (golden / "index-v1.json").read_bytes()
    jar = read_index_jar(golden / "index-v1.jar", "index-v1.json")
    assert jar.data == v1_json
    assert dumps_v1(json.loads(v1_json), pretty=True) == v1_json
    v2 = (golden / "index-v2.json").read_bytes()
    assert dumps(json.loads(v2), pretty=True) == v2
    entry = json.loads((golden / "entry.json").read_bytes())
    assert dumps(entry, pretty=True) == (golden / "entry.json").read_bytes()
    import hashlib

    assert entry["index"]["sha256"] == hashlib.sha256(v2).hexdigest() and entry["index"]["size"] == len(v2)


def test_wrong_fingerprint_and_tampered_jar_are_refused(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    data = b'{"timestamp": 1}'
    jar_path = tmp_path / "entry.jar"
    jar_path.write_bytes(sign_index_jar("entry.json", data, keys["repo"], timestamp_ms=TIMESTAMP * 1000, sha1=False))
    assert read_index_jar(jar_path, "entry.json", expected_fingerprint=keys["repo"].certificate.sha256).data == data
    with pytest.raises(RepoError, match="not by the expected"):
        read_index_jar(jar_path, "entry.json", expected_fingerprint=keys["stranger"].certificate.sha256)
    tampered = tmp_path / "tampered.jar"
    other = sign_index_jar("entry.json", b'{"timestamp": 2}', keys["repo"], timestamp_ms=TIMESTAMP * 1000, sha1=False)
    # The signature files of one JAR with the entry of another: the digests no longer match.
    import zipfile

    with zipfile.ZipFile(jar_path) as signed, zipfile.ZipFile(tmp_path / "other.jar", "w") as out:
        for info in signed.infolist():
            out.writestr(info, signed.read(info) if info.filename != "entry.json" else b'{"timestamp": 2}')
    tampered.write_bytes((tmp_path / "other.jar").read_bytes())
    assert other != tampered.read_bytes()
    with pytest.raises(RepoError, match="does not verify"):
        read_index_jar(tampered, "entry.json")


def test_jarsigner_verifies_our_index_jars(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    jarsigner = require_tool("jarsigner")
    root = _repo(tmp_path)
    _metadata(root, "org.example.app")
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    _update(root, keys["repo"])
    # entry.jar: SHA-256 only, so it passes jarsigner's strict check (fdroidserver's verify_jar_signature).
    strict = subprocess.run(
        [jarsigner, "-verify", "-strict", str(root / "repo" / "entry.jar")], capture_output=True, text=True
    )
    assert "jar verified" in strict.stdout, strict.stdout + strict.stderr
    # index-v1.jar: SHA-1, as F-Droid clients require; Java accepts it once SHA-1 is allowed (fdroidserver's
    # verify_deprecated_jar_signature does the same with a java.security override).
    security = tmp_path / "java.security"
    security.write_text("jdk.jar.disabledAlgorithms=MD2, RSA keySize < 1024\n")
    legacy = subprocess.run(
        [
            jarsigner,
            f"-J-Djava.security.properties={security}",
            "-verify",
            "-strict",
            str(root / "repo" / "index-v1.jar"),
        ],
        capture_output=True,
        text=True,
    )
    assert "jar verified" in legacy.stdout, legacy.stdout + legacy.stderr
    with (root / "repo" / "index-v1.jar").open("rb") as handle:
        import zipfile

        manifest = zipfile.ZipFile(handle).read("META-INF/MANIFEST.MF").decode()
    assert "SHA1-Digest:" in manifest and "SHA-256" not in manifest


def test_cli_init_update_json(tmp_path: Path, keys: dict[str, PrivateKeySigner]) -> None:
    env = {**os.environ, "SEALGATE_PASSPHRASE": "a passphrase for tests"}
    sealgate = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
    subprocess.run([*sealgate, "keys", "init", str(tmp_path / "ks"), "--roles", "repo", "--key-type", "rsa-2048"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    root = tmp_path / "fdroid"
    created = subprocess.run(
        [*sealgate, "repo", "init", str(root), "--url", URL, "--keystore", str(tmp_path / "ks"), "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    fingerprint = json.loads(created.stdout)["fingerprint"]
    signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    (root / "metadata" / "org.example.bad.yml").write_text("Name: x\nLicence: MIT\n")
    result = subprocess.run(
        [*sealgate, "repo", "update", "-c", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["metadata_errors"] == ["metadata/org.example.bad.yml:2: unknown field 'Licence' "
                                         "(fields are fdroiddata's, such as Name, License)"]  # fmt: skip
    assert report["sections"][0]["signed"] and report["sections"][1]["apps"] == 0
    read_index_jar(root / "repo" / "entry.jar", "entry.json", expected_fingerprint=fingerprint)
    strict = subprocess.run(
        [*sealgate, "repo", "update", "--strict"], cwd=root, env=env, capture_output=True, text=True
    )
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    missing = subprocess.run([*sealgate, "repo", "update"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "config.yml is missing" in missing.stderr


def test_signing_with_another_key_than_the_configured_certificate_is_refused(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    certificate = tmp_path / "repo.x509.pem"
    from asn1crypto import pem

    certificate.write_bytes(pem.armor("CERTIFICATE", keys["repo"].certificate.der))
    root = tmp_path / "fdroid"
    init_repository(root, url=URL, name="t", description="d", archive_older=0, certificate=certificate,
                    signing=SigningConfig())  # fmt: skip
    with pytest.raises(RepoError, match="clients pinned to it would refuse"):
        _update(root, keys["stranger"])
    assert not (root / "repo" / "entry.jar").exists()


def test_touched_files_are_rescanned_and_damaged_outputs_rewritten(
    tmp_path: Path, keys: dict[str, PrivateKeySigner]
) -> None:
    root = _repo(tmp_path)
    _metadata(root, "org.example.app")
    apk = signed_app(root / "repo" / "org.example.app_1.apk", "org.example.app", 1, [keys["developer"]])
    _update(root, keys["repo"])
    index = (root / "repo" / "index-v2.json").read_bytes()
    # A touched APK (same bytes, new mtime) is scanned again, and the index stays the same bytes.
    os.utime(apk, ns=(apk.stat().st_atime_ns, apk.stat().st_mtime_ns + 1_000_000_000))
    report = _update(root, keys["repo"])
    assert report.scanned == 1 and [s.changed for s in report.sections] == [False]  # type: ignore[attr-defined]
    assert (root / "repo" / "index-v2.json").read_bytes() == index
    # A deleted or replaced output is not "up to date": the update writes the section again.
    (root / "repo" / "entry.jar").unlink()
    report = _update(root, keys["repo"])
    assert [s.changed for s in report.sections] == [True]  # type: ignore[attr-defined]
    read_index_jar(root / "repo" / "entry.jar", "entry.json", expected_fingerprint=keys["repo"].certificate.sha256)
    # Nothing changed since: answered from the record of the last update, without a scan.
    report = _update(root, keys["repo"])
    assert (report.scanned, report.cached) == (0, 1)  # type: ignore[attr-defined]


def test_launcher_icons_are_extracted_per_density(tmp_path: Path, fdroid_vectors: Path) -> None:
    """org.dyndns.fules.ck has its launcher icon at ldpi, mdpi and hdpi (resolved through resources.arsc)."""
    import zipfile

    root = _repo(tmp_path)
    apk = root / "repo" / "org.dyndns.fules.ck_20.apk"
    shutil.copy(fdroid_vectors / "apks" / apk.name, apk)
    _metadata(root, "org.dyndns.fules.ck")
    _update(root, None)
    with zipfile.ZipFile(apk) as archive:
        png = {dpi: archive.read(f"res/drawable-{name}-v4/icon_launcher.png")
               for dpi, name in ((120, "ldpi"), (160, "mdpi"), (240, "hdpi"))}  # fmt: skip
    name = "org.dyndns.fules.ck.20.png"
    expected = {120: png[120], 160: png[160], 240: png[240], 320: png[240], 480: png[240], 640: png[240]}
    assert {dpi: (root / "repo" / f"icons-{dpi}" / name).read_bytes() for dpi in expected} == expected
    assert (root / "repo" / "icons" / name).read_bytes() == png[240]
    import hashlib

    icon = _index(root)["packages"]["org.dyndns.fules.ck"]["metadata"]["icon"]  # type: ignore[index]
    assert icon == {"en-US": {"name": f"/icons/{name}", "sha256": hashlib.sha256(png[240]).hexdigest(),
                              "size": len(png[240])}}  # fmt: skip
    v1 = json.loads((root / "repo" / "index-v1.json").read_bytes())
    assert v1["apps"][0]["icon"] == name


def test_a_second_update_at_the_same_time_is_refused(tmp_path: Path) -> None:
    import fcntl

    root = _repo(tmp_path)
    state = root / ".sealgate"
    state.mkdir(exist_ok=True)
    with open(state / "update.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RepoError, match="another `repo update` is running"):
            _update(root, None)
    _update(root, None)  # and once the other one has finished, it runs
