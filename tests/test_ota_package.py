"""The A/B package: every property-file token points at the right bytes (read with Python's zipfile, the reader
releasetools computes offsets with), before and after `ota sign`; the signed package verifies; signapk -w moves the
entries, so its output's tokens are stale; bad payloads, properties and names are refused with typed errors."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ota_device_tools import require_signapk
from sealgate.errors import OtaFormatError, UsageError
from sealgate.ota.info import read_info
from sealgate.ota.metadata import METADATA_NAME, METADATA_PROTO_NAME, ab_metadata, read_package_metadata
from sealgate.ota.package import build_ab_package, entry_data_range
from sealgate.ota.signer import OTACERT, sign_package
from sealgate.ota.whole_file import load_trusted_keys, verify_package
from test_ota_sign import _signer

SEALGATE = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]
MANIFEST, SIGNATURE = b"\x08\x02" + b"m" * 98, b"s" * 267


def _payload(directory: Path, data_size: int = 20000) -> tuple[Path, Path, bytes]:
    """A stand-in payload.bin (a real CrAU header, version 2, a manifest and metadata signature of known sizes)
    and the payload_properties.txt brillo_update_payload would write for it: base64 SHA-256 of the file and of its
    header+manifest (METADATA_SIZE excludes the metadata signature, as update_engine's PayloadProperties has it)."""
    payload = b"CrAU" + struct.pack(">QQI", 2, len(MANIFEST), len(SIGNATURE)) + MANIFEST + SIGNATURE
    payload += bytes(range(256)) * (data_size // 256)
    metadata_size = 24 + len(MANIFEST)
    properties = (
        f"FILE_HASH={base64.b64encode(hashlib.sha256(payload).digest()).decode()}\n"
        f"FILE_SIZE={len(payload)}\n"
        f"METADATA_HASH={base64.b64encode(hashlib.sha256(payload[:metadata_size]).digest()).decode()}\n"
        f"METADATA_SIZE={metadata_size}\n"
    )
    (directory / "payload.bin").write_bytes(payload)
    (directory / "payload_properties.txt").write_text(properties)
    return directory / "payload.bin", directory / "payload_properties.txt", payload


def _metadata(**changes: object) -> object:
    fields: dict[str, object] = {"device": "sargo", "post_build": "google/sargo/sargo:14/UQ1A/11:user/release-keys",
                                 "post_timestamp": 1700000000, "post_security_patch_level": "2024-01-05",
                                 "post_sdk_level": "34", "post_build_incremental": "11"}  # fmt: skip
    return ab_metadata(**{**fields, **changes})  # type: ignore[arg-type]


def _build(tmp_path: Path, **changes: object) -> tuple[Path, bytes]:
    payload, properties, data = _payload(tmp_path)
    (tmp_path / "care_map.pb").write_bytes(b"\x0a\x06system" * 5)
    (tmp_path / "apex_info.pb").write_bytes(b"\x0a\x03apx")
    out = tmp_path / "unsigned.zip"
    build_ab_package(out, payload=payload, payload_properties=properties, metadata=_metadata(**changes),  # type: ignore[arg-type]
                     extra_entries={"apex_info.pb": tmp_path / "apex_info.pb",
                                    "care_map.pb": tmp_path / "care_map.pb"})  # fmt: skip
    return out, data


def _check_tokens(path: Path, payload: bytes) -> dict[str, list[str]]:
    """Each token's bytes, read straight from the file, are the entry's content as zipfile reads it; the token
    offset is releasetools' GetZipEntryOffset (header offset + 30 + name and extra lengths of the local header)."""
    file_bytes = path.read_bytes()
    names: dict[str, list[str]] = {}
    with zipfile.ZipFile(path) as archive:
        text = archive.read(METADATA_NAME).decode()
        by_base = {info.filename.rsplit("/", 1)[-1]: info for info in archive.infolist()}
        values = dict(line.split("=", 1) for line in text.splitlines())
        for key in ("ota-property-files", "ota-streaming-property-files"):
            names[key] = []
            for token in values[key].strip().split(","):
                name, offset, size = token.rsplit(":", 2)
                start, length = int(offset), int(size)
                names[key].append(name)
                if name == "payload_metadata.bin":
                    _, _, manifest_size, signature_size = struct.unpack(">4sQQI", payload[:24])
                    assert file_bytes[start : start + length] == payload[: 24 + manifest_size + signature_size]
                    continue
                info = by_base[name]
                assert info.compress_type == zipfile.ZIP_STORED
                local = file_bytes[info.header_offset : info.header_offset + 30]
                name_length, extra_length = struct.unpack("<HH", local[26:30])
                assert start == info.header_offset + 30 + name_length + extra_length
                assert file_bytes[start : start + length] == archive.read(info.filename)
    return names


def test_package_layout_and_every_token(tmp_path: Path) -> None:
    out, payload = _build(tmp_path)
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["payload.bin", "payload_properties.txt", "care_map.pb", "apex_info.pb",
                                      METADATA_PROTO_NAME, METADATA_NAME]  # fmt: skip
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert archive.read("payload.bin") == payload
    names = _check_tokens(out, payload)
    # StreamingPropertyFiles' order: required, then optional in its own order (apex_info.pb before care_map.pb),
    # then the metadata entries; AbOtaPropertyFiles leads with payload_metadata.bin.
    streaming = ["payload.bin", "payload_properties.txt", "apex_info.pb", "care_map.pb", "metadata", "metadata.pb"]
    assert names["ota-streaming-property-files"] == streaming
    assert names["ota-property-files"] == ["payload_metadata.bin", *streaming]
    metadata = read_package_metadata(out)
    assert metadata.post_build == ["google/sargo/sargo:14/UQ1A/11:user/release-keys"] and metadata.pre_device == [
        "sargo"
    ]
    # The strings are padded to the length of PropertyFiles.Compute's placeholders: the real tokens, then spaces
    # up to the length the 15-space placeholders of 'metadata:' and 'metadata.pb:' reserved.
    for key, value in metadata.property_files.items():
        real = value.strip()
        head = real.rsplit(",", 2)[0]
        assert len(value) == len(f"{head},metadata:{' ' * 15},metadata.pb:{' ' * 15}"), key
    assert entry_data_range(out, "payload.bin") == (len("payload.bin") + 30, len(payload))


def test_layout_equals_pythons_zipfile_for_the_same_entries(tmp_path: Path) -> None:
    """releasetools writes the package with Python's zipfile (ZIP_STORED, no extra field): the same entries in the
    same order land at the same data offsets, so our tokens are the ones releasetools computes."""
    out, _ = _build(tmp_path)
    copy = tmp_path / "by-zipfile.zip"
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(copy, "w") as target:
        for info in source.infolist():
            target.writestr(zipfile.ZipInfo(info.filename, info.date_time), source.read(info), zipfile.ZIP_STORED)
    with zipfile.ZipFile(out) as ours, zipfile.ZipFile(copy) as theirs:
        assert [(info.filename, info.header_offset, info.file_size) for info in ours.infolist()] == [
            (info.filename, info.header_offset, info.file_size) for info in theirs.infolist()
        ]
    assert out.read_bytes()[: ours.start_dir] == copy.read_bytes()[: ours.start_dir]


def test_same_inputs_same_bytes(tmp_path: Path) -> None:
    first, _ = _build(tmp_path)
    data = first.read_bytes()
    second, _ = _build(tmp_path)
    assert second.read_bytes() == data


def test_tokens_still_right_after_ota_sign_and_the_package_verifies(tmp_path: Path) -> None:
    out, payload = _build(tmp_path)
    signer, pem, _ = _signer("rsa", tmp_path)
    signed = tmp_path / "signed.zip"
    result = sign_package(out, signed, signer)
    assert result.verified
    _check_tokens(signed, payload)
    with zipfile.ZipFile(out) as before, zipfile.ZipFile(signed) as after:
        assert [(i.filename, i.header_offset) for i in before.infolist()] == [
            (i.filename, i.header_offset) for i in after.infolist()[:-1]
        ]
        assert after.namelist()[-1] == OTACERT
    info = read_info(signed)
    assert all(token.matches for tokens in info.property_files.values() for token in tokens)
    assert info.metadata_source == "metadata.pb" and info.ota_metadata == read_package_metadata(out)
    assert verify_package(signed, load_trusted_keys([pem])).verified
    verified = subprocess.run([*SEALGATE, "ota", "verify", str(signed), "--certs", str(pem), "--json"],
                              capture_output=True, text=True)  # fmt: skip
    assert verified.returncode == 0 and json.loads(verified.stdout)["verified"] is True


def test_signapk_moves_entries_so_its_tokens_go_stale(tmp_path: Path) -> None:
    """signapk -w sorts the entries by name and re-aligns STORED data (releasetools signs twice for that reason):
    the metadata entries move to the front, so the offsets computed before signing no longer hold. The package
    still verifies; `ota info` reports the stale tokens."""
    signapk = require_signapk()
    out, _ = _build(tmp_path)
    _, pem, pk8 = _signer("rsa", tmp_path)
    signed = tmp_path / "by-signapk.zip"
    subprocess.run([*signapk, "-w", str(pem), str(pk8), str(out), str(signed)], check=True,
                   capture_output=True)  # fmt: skip
    assert verify_package(signed, load_trusted_keys([pem])).verified
    with zipfile.ZipFile(signed) as archive:
        assert archive.namelist().index(METADATA_NAME) < archive.namelist().index("payload.bin")
    info = read_info(signed)
    stale = [token.name for token in info.property_files["ota-streaming-property-files"] if not token.matches]
    assert "payload.bin" in stale


def test_wipe_adds_powerwash_as_releasetools_does(tmp_path: Path) -> None:
    out, _ = _build(tmp_path, downgrade=True)
    with zipfile.ZipFile(out) as archive:
        assert archive.read("payload_properties.txt").decode().endswith("METADATA_SIZE=124\nPOWERWASH=1\n")
        text = archive.read(METADATA_NAME).decode()
    assert "ota-downgrade=yes\n" in text and "ota-wipe=yes\n" in text
    payload, properties, _ = _payload(tmp_path)
    properties.write_text(properties.read_text() + "POWERWASH=1\n")
    with pytest.raises(UsageError, match="POWERWASH"):
        build_ab_package(tmp_path / "x.zip", payload=payload, payload_properties=properties, metadata=_metadata())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda payload, properties: payload.write_bytes(b"NOPE" + payload.read_bytes()[4:]), "CrAU"),
        (lambda payload, properties: payload.write_bytes(payload.read_bytes() + b"x"), "FILE_SIZE"),
        (lambda payload, properties: payload.write_bytes(payload.read_bytes()[:-1] + b"x"), "FILE_HASH"),
        (
            lambda payload, properties: payload.write_bytes(
                payload.read_bytes()[:30] + b"X" + payload.read_bytes()[31:]
            ),
            "METADATA_HASH",
        ),
        (lambda payload, properties: payload.write_bytes(b"CrAU" + struct.pack(">QQI", 2, 10**9, 0)), "more metadata"),
        (lambda payload, properties: payload.write_bytes(b"CrAU" + struct.pack(">QQI", 1, 0, 0)), "major version 1"),
        (lambda payload, properties: properties.write_bytes(b"\xff\xfe"), "not ASCII"),
        (lambda payload, properties: properties.write_text("FILE_HASH\n"), "KEY=value"),
    ],
)
def test_bad_payload_or_properties_is_refused_and_nothing_is_written(tmp_path: Path, damage: object,
                                                                      message: str) -> None:  # fmt: skip
    payload, properties, _ = _payload(tmp_path)
    damage(payload, properties)  # type: ignore[operator]
    out = tmp_path / "out.zip"
    with pytest.raises(OtaFormatError, match=message):
        build_ab_package(out, payload=payload, payload_properties=properties, metadata=_metadata())  # type: ignore[arg-type]
    assert not out.exists() and list(tmp_path.glob(".out.zip.*")) == []


@pytest.mark.parametrize("name", ["payload.bin", "META-INF/com/android/otacert", "META-INF/CERT.SF", "../x",
                                  "/abs", "dir/", "a//b", ""])  # fmt: skip
def test_extra_entries_that_cannot_be_in_a_package(tmp_path: Path, name: str) -> None:
    payload, properties, _ = _payload(tmp_path)
    with pytest.raises(UsageError):
        build_ab_package(tmp_path / "o.zip", payload=payload, payload_properties=properties, metadata=_metadata(),  # type: ignore[arg-type]
                         extra_entries={name: properties})  # fmt: skip


def test_entry_data_range_refuses_compressed_or_missing_entries(tmp_path: Path) -> None:
    path = tmp_path / "deflated.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("payload.bin", b"CrAU" + bytes(1000))
    with pytest.raises(OtaFormatError, match="compressed"):
        entry_data_range(path, "payload.bin")
    with pytest.raises(OtaFormatError, match="no entry"):
        entry_data_range(path, "care_map.pb")
    with pytest.raises(OtaFormatError, match="not a ZIP"):
        entry_data_range(tmp_path / "payload.bin", "payload.bin")


def test_cli_package_sign_verify_info(tmp_path: Path) -> None:
    payload, properties, data = _payload(tmp_path)
    build_prop = tmp_path / "build.prop"
    build_prop.write_text(
        "# begin build properties\nro.build.id=UQ1A\nro.build.version.incremental=11\nro.build.version.sdk=34\n"
        "ro.build.version.security_patch=2024-01-05\nro.build.date.utc=1700000000\n"
        "ro.build.fingerprint=google/sargo/sargo:14/UQ1A/11:user/release-keys\nro.product.device=sargo\n"
    )
    out = tmp_path / "unsigned.zip"
    built = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(out), "--properties", str(properties),
                            "--build-prop", str(build_prop), "--json"], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert report["metadata"]["post_timestamp"] == 1700000000 and report["metadata"]["post_sdk_level"] == "34"
    assert report["entries"][0]["name"] == "payload.bin"
    # The same facts as options give the same package, byte for byte.
    again = tmp_path / "again.zip"
    by_options = subprocess.run(
        [*SEALGATE, "ota", "package", str(payload), str(again), "--properties", str(properties), "--device", "sargo",
         "--post-build", "google/sargo/sargo:14/UQ1A/11:user/release-keys", "--post-timestamp", "1700000000",
         "--post-spl", "2024-01-05", "--post-sdk", "34", "--post-incremental", "11"], capture_output=True, text=True,
    )  # fmt: skip
    assert by_options.returncode == 0, by_options.stderr
    assert again.read_bytes() == out.read_bytes()
    env = {"SEALGATE_PASSPHRASE": "ota package test passphrase", "PATH": "/usr/bin:/bin"}
    subprocess.run([*SEALGATE, "keys", "init", str(tmp_path / "ks"), "--roles", "ota", "--key-type", "rsa-2048"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    signed = tmp_path / "signed.zip"
    subprocess.run([*SEALGATE, "ota", "sign", str(out), str(signed), "--keystore", str(tmp_path / "ks")], env=env,
                   check=True, capture_output=True)  # fmt: skip
    certificate = tmp_path / "ks" / "public" / "ota.x509.pem"
    verified = subprocess.run([*SEALGATE, "ota", "verify", str(signed), "--certs", str(certificate)],
                              capture_output=True, text=True)  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    _check_tokens(signed, data)
    info = subprocess.run([*SEALGATE, "ota", "info", str(signed), "--json"], capture_output=True, text=True)
    shown = json.loads(info.stdout)
    assert shown["metadata_source"] == "metadata.pb" and shown["ota_metadata"]["post_device"] == ["sargo"]
    assert shown["metadata"]["ota-type"] == "AB"  # the existing keys are still there
    assert all(token["matches"] for tokens in shown["property_files"].values() for token in tokens)
    text = subprocess.run([*SEALGATE, "ota", "info", str(signed)], capture_output=True, text=True)
    assert text.returncode == 0 and "parsed from metadata.pb" in text.stdout


@pytest.mark.parametrize(
    ("arguments", "status", "message"),
    [
        (["--device", "sargo", "--post-build", "fp", "--post-timestamp", "1"], 2, "--post-spl"),
        (["--device", "sargo", "--post-build", "fp", "--post-timestamp", "1", "--post-spl", "Jan 2024"], 2, "date"),
        (["--device", "sargo", "--post-build", "fp", "--post-timestamp", "-5", "--post-spl", "2024-01-05"], 2, ""),
        (["--device", "a|b", "--post-build", "fp", "--post-timestamp", "1", "--post-spl", "2024-01-05"], 2, "'|'"),
        (
            [
                "--device",
                "d",
                "--post-build",
                "fp",
                "--post-timestamp",
                "1",
                "--post-spl",
                "2024-01-05",
                "--extra",
                "care_map.pb",
            ],
            2,
            "NAME=FILE",
        ),
    ],
)
def test_cli_package_usage_errors(tmp_path: Path, arguments: list[str], status: int, message: str) -> None:
    payload, properties, _ = _payload(tmp_path)
    result = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(tmp_path / "o.zip"), "--properties",
                             str(properties), *arguments], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == status and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.zip").exists()


def test_cli_package_refuses_a_payload_that_is_not_one(tmp_path: Path) -> None:
    payload, properties, _ = _payload(tmp_path)
    payload.write_bytes(b"not a payload")
    result = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(tmp_path / "o.zip"), "--properties",
                             str(properties), "--device", "d", "--post-build", "fp", "--post-timestamp", "1",
                             "--post-spl", "2024-01-05"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "CrAU" in result.stderr and "Traceback" not in result.stderr


def test_build_prop_fingerprint_is_calculated_when_absent() -> None:
    from sealgate.ota.build_prop import build_facts

    facts = build_facts({"ro.product.brand": "google", "ro.product.name": "sargo", "ro.product.vendor.device": "sargo",
                         "ro.build.version.release": "14", "ro.build.id": "UQ1A", "ro.build.version.incremental": "11",
                         "ro.build.type": "user", "ro.build.tags": "release-keys"})  # fmt: skip
    assert facts.fingerprint == "google/sargo/sargo:14/UQ1A/11:user/release-keys" and facts.device == "sargo"
    with pytest.raises(OtaFormatError, match=r"ro\.build\.date\.utc"):
        build_facts({"ro.build.date.utc": "yesterday"})


def test_cli_incremental_from_the_source_build_prop(tmp_path: Path) -> None:
    payload, properties, _ = _payload(tmp_path)
    source = tmp_path / "source.prop"
    source.write_text(
        "ro.build.fingerprint=google/sargo/sargo:14/UQ1A/10:user/release-keys\nro.build.version.incremental=10\n"
        "ro.build.date.utc=1690000000\nro.product.device=sargo\n"
    )
    common = ["--properties", str(properties), "--device", "sargo", "--post-build", "fp-11", "--post-spl", "2024-01-05",
              "--pre-build-prop", str(source)]  # fmt: skip
    out = tmp_path / "incremental.zip"
    result = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(out), *common, "--post-timestamp",
                             "1700000000"], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(out) as archive:
        text = archive.read(METADATA_NAME).decode()
    assert "pre-build=google/sargo/sargo:14/UQ1A/10:user/release-keys\npre-build-incremental=10\n" in text
    assert "ota-downgrade" not in text and read_package_metadata(out).pre_timestamp == 0  # releasetools omits it
    # HandleDowngradeMetadata: going back in time needs --downgrade, and --downgrade needs going back in time.
    older = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(tmp_path / "o.zip"), *common,
                            "--post-timestamp", "1600000000"], capture_output=True, text=True)  # fmt: skip
    assert older.returncode == 2 and "--downgrade" in older.stderr
    pointless = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(tmp_path / "o.zip"), *common,
                                "--post-timestamp", "1700000000", "--downgrade"],
                               capture_output=True, text=True)  # fmt: skip
    assert pointless.returncode == 2 and "not older" in pointless.stderr
    other_device = subprocess.run([*SEALGATE, "ota", "package", str(payload), str(tmp_path / "o.zip"), *common,
                                   "--post-timestamp", "1700000000", "--device", "bonito"], capture_output=True,
                                  text=True)  # fmt: skip
    assert other_device.returncode == 2 and "not bonito" in other_device.stderr


def test_info_checks_the_size_payload_metadata_bin_stands_for(tmp_path: Path) -> None:
    _, _, payload = _payload(tmp_path)
    metadata_total = 24 + len(MANIFEST) + len(SIGNATURE)
    for size, matches in ((metadata_total, True), (metadata_total + 1, False)):
        path = tmp_path / f"p{size}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("payload.bin", payload)
            offset = 30 + len("payload.bin")
            archive.writestr(METADATA_NAME, f"ota-property-files=payload_metadata.bin:{offset}:{size}\nota-type=AB\n")
        tokens = read_info(path).property_files["ota-property-files"]
        assert [(token.name, token.matches) for token in tokens] == [("payload_metadata.bin", matches)]


def test_ota_sign_refuses_to_move_entries_the_property_files_name(tmp_path: Path) -> None:
    """An old JAR signature file in front of payload.bin is dropped by signing, which would move payload.bin."""
    _, _, payload = _payload(tmp_path)
    path = tmp_path / "old-signature-first.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("META-INF/CERT.SF", "an old JAR signature file")
        archive.writestr("payload.bin", payload)
        info = archive.getinfo("payload.bin")
        offset = info.header_offset + 30 + len("payload.bin")
        archive.writestr(METADATA_NAME, f"ota-streaming-property-files=payload.bin:{offset}:{len(payload)}\n")
    assert read_info(path).property_files["ota-streaming-property-files"][0].matches
    signer, _, _ = _signer("rsa", tmp_path)
    with pytest.raises(OtaFormatError, match=r"would move entries the property files point at \(payload\.bin\)"):
        sign_package(path, tmp_path / "signed.zip", signer)
    assert not (tmp_path / "signed.zip").exists()


def test_output_cannot_replace_an_input_and_duplicate_entries_are_refused(tmp_path: Path) -> None:
    payload, properties, data = _payload(tmp_path)
    with pytest.raises(UsageError, match="its own inputs"):
        build_ab_package(payload, payload=payload, payload_properties=properties, metadata=_metadata())  # type: ignore[arg-type]
    assert payload.read_bytes() == data
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(twice, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("payload.bin", data)
        archive.writestr("payload.bin", b"CrAU" + bytes(100))
    with pytest.raises(OtaFormatError, match=r"payload\.bin"):
        entry_data_range(twice, "payload.bin")


def test_real_payload_end_to_end_when_the_payload_writer_is_there(tmp_path: Path) -> None:
    """With branch payload's writer and signer (sealgate.ota.payload): images -> signed payload -> package -> signed
    package; update_engine's way of reading it (payload.bin's data range, the properties entry) applies it."""
    pytest.importorskip("sealgate.ota.payload.writer", reason="the payload writer (branch payload) is not on main yet")
    from sealgate.ota.payload.apply import apply_payload
    from sealgate.ota.payload.properties import PayloadProperties
    from sealgate.ota.payload.signer import sign_payload
    from sealgate.ota.payload.writer import write_full_payload

    images = tmp_path / "images"
    images.mkdir()
    (images / "boot.img").write_bytes(bytes(range(256)) * 64)
    (images / "system.img").write_bytes(b"\x00" * 8192 + b"system" * 2000 + b"\x00" * (4096 - 12000 % 4096))
    signer, pem, _ = _signer("rsa", tmp_path)
    unsigned_payload, payload = tmp_path / "unsigned-payload.bin", tmp_path / "payload.bin"
    write_full_payload({"boot": images / "boot.img", "system": images / "system.img"}, unsigned_payload)
    properties = sign_payload(unsigned_payload, payload, signer)
    (tmp_path / "payload_properties.txt").write_text(properties.to_text())
    out = tmp_path / "unsigned.zip"
    build_ab_package(out, payload=payload, payload_properties=tmp_path / "payload_properties.txt",
                     metadata=_metadata())  # type: ignore[arg-type]  # fmt: skip
    signed = tmp_path / "signed.zip"
    assert sign_package(out, signed, signer).verified
    assert verify_package(signed, load_trusted_keys([pem])).verified
    _check_tokens(signed, payload.read_bytes())
    offset, size = entry_data_range(signed, "payload.bin")
    with zipfile.ZipFile(signed) as archive:
        in_package = PayloadProperties.parse(archive.read("payload_properties.txt").decode())
    target = tmp_path / "target"
    target.mkdir()
    apply_payload(signed, target, public_keys=[signer.certificate.public_key()], offset=offset, size=size,
                  properties=in_package)  # fmt: skip
    for name in ("boot.img", "system.img"):
        assert (target / name).read_bytes() == (images / name).read_bytes()
