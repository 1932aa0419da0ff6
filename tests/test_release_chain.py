"""The release chain of issue 6, end to end through the CLIs a person uses.

"The online side prepares a release, the custodian signs it offline through the bundle workflow, the online side
publishes it, and devices accept it only if it is genuine, meant for them, and not a downgrade." Separate
directories stand for the online machine, the offline machine, the web root (served over loopback HTTP) and the
phone: `keys init` on the offline machine (its public export carried online), two small synthetic builds N and N+1
as target files, `release ota` full and incremental (unsigned), `bundle create` -> `sign` offline (payload and
whole-file signatures) -> `bundle apply`, `release publish`, and a simulated A/B phone at build N that checks,
downloads, applies and boots into build N+1 with slot images identical to build N+1's. The signatures are checked
by OpenSSL too (the whole-file CMS signature and both payload signatures, against the exported certificate), and
every refusal along the chain is exercised: a package signed with another key (refused by `bundle apply`, by
`release publish` and by the phone), a payload byte flipped after signing, a payload tampered under a valid
whole-file signature, a package for another device, and a downgrade.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import struct
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_tool
from payload_tools import layout, manifest_signatures_range, raw_signatures
from sealgate.cli.main import main
from sealgate.ota.package import entry_data_range

PASSPHRASE = "release chain test passphrase"
DEVICE = "sargo"
BLOCK = 4096


@dataclass(frozen=True)
class Build:
    incremental: str
    timestamp: int
    spl: str
    seed: bytes
    device: str = DEVICE

    @property
    def fingerprint(self) -> str:
        return f"acme/{self.device}/{self.device}:14/AP1A.240305/{self.incremental}:user/release-keys"


BUILD_N = Build("1001", 1_700_001_000, "2024-03-05", b"N")
BUILD_N1 = Build("1002", 1_700_002_000, "2024-04-05", b"N+1")
#: Partition -> size in blocks; build N+1 changes some blocks of each.
PARTITIONS = {"boot": 16, "system": 96, "vendor": 32}


def images_of(build: Build) -> dict[str, bytes]:
    """Each partition: blocks derived from the build (N+1 differs from N in every third block), some all zero."""
    images = {}
    for name, blocks in PARTITIONS.items():
        data = bytearray()
        for index in range(blocks):
            if index % 7 == 5:
                data += bytes(BLOCK)
                continue
            seed = build.seed if index % 3 == 0 else b"common"
            data += hashlib.sha256(seed + name.encode() + index.to_bytes(4, "big")).digest() * (BLOCK // 32)
        images[name] = bytes(data)
    return images


def build_prop(build: Build) -> str:
    return (
        "# begin build properties\n"
        f"ro.build.id=AP1A.240305\nro.build.version.incremental={build.incremental}\nro.build.version.sdk=34\n"
        f"ro.build.version.security_patch={build.spl}\nro.build.date.utc={build.timestamp}\nro.build.type=user\n"
        f"ro.build.tags=release-keys\nro.build.fingerprint={build.fingerprint}\nro.product.device={build.device}\n"
        "ro.debuggable=0\n# end build properties\n"
    )


def write_target_files(path: Path, build: Build) -> Path:
    """A small target-files package of an A/B build: ab_partitions.txt, SYSTEM/build.prop, IMAGES/*.img."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META/ab_partitions.txt", "\n".join(PARTITIONS) + "\n")
        archive.writestr("META/misc_info.txt", "ab_update=true\navb_enable=false\n")
        archive.writestr("SYSTEM/build.prop", build_prop(build))
        for name, data in images_of(build).items():
            archive.writestr(f"IMAGES/{name}.img", data, compress_type=zipfile.ZIP_STORED)
    return path


@dataclass(frozen=True)
class World:
    online: Path
    offline: Path
    webroot: Path
    phones: Path
    public: Path
    other_public: Path

    @property
    def certificate(self) -> Path:
        return self.public / "ota.x509.pem"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status, out, err = run(capsys, *args, "--json")
    assert out, err
    return status, json.loads(out)


def carry(source: Path, machine: Path) -> Path:
    """The removable medium between the machines."""
    target = machine / source.name
    shutil.copyfile(source, target)
    return target


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The key ceremony on the offline machine (and a stranger's keystore): `keys init`, RSA 2048 for speed."""
    base = tmp_path_factory.mktemp("ceremony")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
        for name in ("keystore", "other-keystore"):
            export = str(base / f"{name}-public")
            status = main(["keys", "init", str(base / name), "--roles", "ota", "--key-size", "2048",
                           "--distribution", f"Release chain test ({name})", "--export", export])  # fmt: skip
            assert status == 0
    return base


@pytest.fixture
def world(tmp_path: Path, keys: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("SEALGATE_PASSPHRASE", PASSPHRASE)
    online, offline, webroot, phones = (tmp_path / name for name in ("online", "offline", "webroot", "phones"))
    for directory in (online, offline, webroot, phones):
        directory.mkdir()
    shutil.copytree(keys / "keystore", offline / "keystore")
    shutil.copytree(keys / "other-keystore", offline / "other-keystore")
    shutil.copytree(keys / "keystore-public", online / "public")
    shutil.copytree(keys / "other-keystore-public", online / "other-public")
    return World(online, offline, webroot, phones, online / "public", online / "other-public")


def prepare(capsys: pytest.CaptureFixture[str], w: World, build: Build, out: str, source: Build | None = None) -> Path:
    """Online: target files of `build` -> unsigned OTA (incremental from `source`)."""
    target = write_target_files(w.online / f"target-files-{build.device}-{build.incremental}.zip", build)
    args = ["release", "ota", str(target), str(w.online / out)]
    if source is not None:
        args += ["--source", str(write_target_files(w.online / f"target-files-{source.incremental}.zip", source))]
    status, report = run_json(capsys, *args)
    assert status == 0, report
    assert report["signed"] is False and report["kind"] == ("full" if source is None else "incremental")
    return w.online / out


def sign_offline(
    capsys: pytest.CaptureFixture[str], w: World, packages: list[Path], *, keystore: str = "keystore"
) -> tuple[Path, Path, str]:
    """bundle create (online) -> carry -> sign (offline) -> carry back; (request, response, the custodian's summary)."""
    request = w.online / "request.zip"
    request.unlink(missing_ok=True)
    args = ["bundle", "create", str(request), "--requester", "release-bot@build"]
    for package in packages:
        args += ["--ota", str(package), "ota"]
    status, _, err = run(capsys, *args, "--meta", f"device={DEVICE}")
    assert status == 0, err
    response = w.offline / "response.zip"
    response.unlink(missing_ok=True)
    status, summary, err = run(
        capsys, "sign", str(carry(request, w.offline)), "--keystore", str(w.offline / keystore),
        "--record", str(w.offline / "record.jsonl"), "--out", str(response), "--yes", "--allow-online",
    )  # fmt: skip
    assert status == 0, err
    return request, carry(response, w.online), summary


def apply_bundle(capsys: pytest.CaptureFixture[str], w: World, request: Path, response: Path) -> tuple[int, str]:
    status, out, err = run(capsys, "bundle", "apply", str(response), "--request", str(request),
                           "--public", str(w.public), "--out", str(w.online / "signed"))  # fmt: skip
    return status, out + err


def release(capsys: pytest.CaptureFixture[str], w: World) -> tuple[Path, Path]:
    """Build N+1's full and incremental OTAs, signed offline and applied online: the genuine release."""
    full = prepare(capsys, w, BUILD_N1, f"{DEVICE}-ota-{BUILD_N1.incremental}.zip")
    incremental = prepare(capsys, w, BUILD_N1, f"{DEVICE}-incremental-{BUILD_N.incremental}-{BUILD_N1.incremental}.zip",
                          source=BUILD_N)  # fmt: skip
    request, response, summary = sign_offline(capsys, w, [full, incremental])
    assert summary.count("payload.bin is unsigned: it will be signed with the ota key") == 2
    assert "payload signature (update_engine's) and whole-file OTA signature" in summary
    status, output = apply_bundle(capsys, w, request, response)
    assert status == 0, output
    return w.online / "signed" / full.name, w.online / "signed" / incremental.name


def publish(capsys: pytest.CaptureFixture[str], w: World, *packages: Path) -> tuple[int, dict[str, object]]:
    return run_json(capsys, "release", "publish", *map(str, packages), str(w.webroot), "--device", DEVICE,
                    "--channel", "stable", "--certs", str(w.certificate))  # fmt: skip


@pytest.fixture
def web(world: World) -> Iterator[str]:
    """The web root served over loopback HTTP (a plain static server, no Range support)."""
    handler = functools.partial(_QuietHandler, directory=str(world.webroot))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def make_phone(capsys: pytest.CaptureFixture[str], w: World, name: str, build: Build = BUILD_N) -> Path:
    """A simulated A/B phone running `build`, trusting the OTA certificate the public export holds."""
    factory = w.phones / f"factory-{name}"
    factory.mkdir()
    for partition, data in images_of(build).items():
        (factory / f"{partition}.img").write_bytes(data)
    phone = w.phones / name
    status, _, err = run(
        capsys, "device", "init", str(phone), "--device-name", build.device, "--build-fingerprint", build.fingerprint,
        "--build-timestamp", str(build.timestamp), "--build-incremental", build.incremental, "--spl", build.spl,
        "--otacerts", str(w.certificate), "--images", str(factory),
    )  # fmt: skip
    assert status == 0, err
    return phone


def phone_state(phone: Path) -> dict[str, bytes]:
    """Every byte of the phone's database and slots (downloads and work files aside)."""
    return {
        path.relative_to(phone).as_posix(): path.read_bytes()
        for path in sorted(phone.rglob("*"))
        if path.is_file() and not path.relative_to(phone).as_posix().startswith(("downloads/", "ota-work/"))
    }


def slot_images(phone: Path, slot: str) -> dict[str, bytes]:
    """The images of one slot (its directory is slots/<slot>-<generation>, one per slot)."""
    (directory,) = [path for path in (phone / "slots").iterdir() if path.name.startswith(f"{slot}-")]
    return {path.stem: path.read_bytes() for path in sorted(directory.glob("*.img"))}


def flip_payload_byte(package: Path, out: Path) -> Path:
    """A copy of `package` with one byte inside payload.bin's operation data changed."""
    offset, size = entry_data_range(package, "payload.bin")
    data = bytearray(package.read_bytes())
    head = layout(bytes(data[offset : offset + 24]))
    position = offset + head.data_start + 100
    assert position < offset + size
    data[position] ^= 0x01
    out.write_bytes(bytes(data))
    return out


# -- the genuine release ---------------------------------------------------------------------------------------------


def test_release_ota_signed_offline_verifies_with_openssl(
    capsys: pytest.CaptureFixture[str], world: World, tmp_path: Path
) -> None:
    w = world
    full, incremental = release(capsys, w)
    openssl = require_tool("openssl")
    public_key = tmp_path / "ota.pub.pem"
    extracted = subprocess.run([openssl, "x509", "-in", str(w.certificate), "-pubkey", "-noout"], check=True,
                               capture_output=True).stdout  # fmt: skip
    public_key.write_bytes(extracted)

    def openssl_verifies(signature: bytes, message: bytes) -> bool:
        (tmp_path / "sig").write_bytes(signature)
        (tmp_path / "msg").write_bytes(message)
        result = subprocess.run([openssl, "dgst", "-sha256", "-verify", str(public_key), "-signature",
                                 str(tmp_path / "sig"), str(tmp_path / "msg")], capture_output=True)  # fmt: skip
        return result.returncode == 0

    for package in (full, incremental):
        # Recovery's whole-file signature: OpenSSL's CMS verifier over the signed range, the certificate the anchor.
        data = package.read_bytes()
        comment_size = struct.unpack_from("<H", data, len(data) - 2)[0]
        signature_start = struct.unpack_from("<H", data, len(data) - 6)[0]
        (tmp_path / "content").write_bytes(data[: len(data) - comment_size - 2])
        (tmp_path / "pkcs7.der").write_bytes(data[len(data) - signature_start : len(data) - 6])
        cms = subprocess.run(
            [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(tmp_path / "pkcs7.der"),
             "-content", str(tmp_path / "content"), "-CAfile", str(w.certificate), "-purpose", "any",
             "-out", "/dev/null"], capture_output=True,
        )  # fmt: skip
        assert cms.returncode == 0, cms.stderr
        # update_engine's two payload signatures, read by hand from the layout and checked by OpenSSL.
        offset, size = entry_data_range(package, "payload.bin")
        payload = data[offset : offset + size]
        head = layout(payload)
        metadata = payload[: head.metadata_end]
        metadata_signatures = raw_signatures(payload[head.metadata_end : head.data_start])
        signatures_offset, signatures_size = manifest_signatures_range(payload[24 : head.metadata_end])
        data_end = head.data_start + signatures_offset
        payload_signatures = raw_signatures(payload[data_end : data_end + signatures_size])
        assert len(metadata_signatures) == len(payload_signatures) == 1
        assert openssl_verifies(metadata_signatures[0], metadata)
        assert openssl_verifies(payload_signatures[0], metadata + payload[head.data_start : data_end])
        assert not openssl_verifies(payload_signatures[0], metadata + payload[head.data_start : data_end - 1])
        # payload_properties.txt describes the signed payload, as brillo_update_payload writes it.
        with zipfile.ZipFile(package) as archive:
            properties = archive.read("payload_properties.txt").decode()
        assert f"FILE_SIZE={size}\n" in properties and f"METADATA_SIZE={head.metadata_end}\n" in properties
        # Our own verifiers, through the CLI, agree: the package and its payload.
        status, verdict = run_json(capsys, "ota", "verify", str(package), "--certs", str(w.certificate))
        assert status == 0 and verdict["verified"], verdict
        status, info = run_json(capsys, "ota", "info", str(package))
        assert status == 0
        property_files = info["property_files"]
        assert isinstance(property_files, dict) and len(property_files) == 2
        assert all(token["matches"] for files in property_files.values() for token in files), info
        status, verdict = run_json(capsys, "ota", "payload", "verify", str(package), "--certs", str(w.certificate),
                                   "--offset", str(offset), "--size", str(size))  # fmt: skip
        assert status == 0, verdict


def test_published_release_updates_a_phone_from_build_n_to_n_plus_1(
    capsys: pytest.CaptureFixture[str], world: World, web: str
) -> None:
    w = world
    # The channel already offers build N (its full OTA, through the same chain)...
    previous = prepare(capsys, w, BUILD_N, f"{DEVICE}-ota-{BUILD_N.incremental}.zip")
    request, response, _ = sign_offline(capsys, w, [previous])
    assert apply_bundle(capsys, w, request, response)[0] == 0
    shutil.move(w.online / "signed", w.online / "signed-n")
    status, published = publish(capsys, w, w.online / "signed-n" / previous.name)
    assert status == 0, published
    # ... and now build N+1, with the incremental from N.
    full, incremental = release(capsys, w)
    status, published = publish(capsys, w, full, incremental)
    assert status == 0, published
    newest = published["newest"]
    assert isinstance(newest, dict) and newest["fingerprint"] == BUILD_N1.fingerprint
    channel = f"{web}/ota/{DEVICE}/stable.json"

    phone = make_phone(capsys, w, "phone")
    status, offer = run_json(capsys, "device", "ota", "check", str(phone), "--channel", channel)
    assert status == 0 and offer["code"] == "INCREMENTAL", offer
    status, fetched = run_json(capsys, "device", "ota", "download", str(phone), "--channel", channel)
    assert status == 0 and fetched["download"]["ok"], fetched  # type: ignore[index]
    status, applied = run_json(capsys, "device", "ota", "apply", str(phone))
    assert status == 0 and applied["code"] == "UPDATE", applied
    status, booted = run_json(capsys, "device", "ota", "boot", str(phone))
    assert status == 0 and booted["code"] in ("BOOTED", "BOOT_SUCCESSFUL"), booted
    status, state = run_json(capsys, "device", "ota", "status", str(phone))
    assert status == 0
    assert BUILD_N1.fingerprint in json.dumps(state), state
    running = booted["booted_slot"]
    assert isinstance(running, str)
    assert slot_images(phone, running) == images_of(BUILD_N1)
    assert slot_images(phone, "a" if running == "b" else "b") == images_of(BUILD_N)  # the old slot, kept
    status, offer = run_json(capsys, "device", "ota", "check", str(phone), "--channel", channel)
    assert status == 0 and offer["code"] == "UP_TO_DATE", offer

    # A phone that missed build N's successor path gets the full OTA and ends at the same build.
    stranger = make_phone(capsys, w, "phone-full", Build("0999", 1_700_000_000, "2024-02-05", b"N-1"))
    status, offer = run_json(capsys, "device", "ota", "check", str(stranger), "--channel", channel)
    assert status == 0 and offer["code"] == "FULL", offer
    assert run_json(capsys, "device", "ota", "download", str(stranger), "--channel", channel)[0] == 0
    status, applied = run_json(capsys, "device", "ota", "apply", str(stranger))
    assert status == 0 and applied["code"] == "UPDATE", applied
    status, booted = run_json(capsys, "device", "ota", "boot", str(stranger))
    assert status == 0
    assert slot_images(stranger, str(booted["booted_slot"])) == images_of(BUILD_N1)


# -- refusals along the chain ----------------------------------------------------------------------------------------


def test_a_package_signed_with_another_key_is_refused_everywhere(
    capsys: pytest.CaptureFixture[str], world: World
) -> None:
    w = world
    unsigned = prepare(capsys, w, BUILD_N1, f"{DEVICE}-ota-{BUILD_N1.incremental}.zip")
    request, response, _ = sign_offline(capsys, w, [unsigned], keystore="other-keystore")
    status, output = apply_bundle(capsys, w, request, response)
    assert status == 1 and "not the ota certificate" in output, output
    assert not (w.online / "signed" / unsigned.name).exists()
    # The stranger's package, taken straight out of the response bundle.
    forged = w.online / "forged.zip"
    with zipfile.ZipFile(response) as archive:
        forged.write_bytes(archive.read("output/1"))
    status, refused = publish(capsys, w, forged)
    assert status == 1 and [error["code"] for error in refused["errors"]] == ["BAD_SIGNATURE"], refused  # type: ignore[union-attr]
    assert not any(w.webroot.iterdir())
    phone = make_phone(capsys, w, "phone")
    before = phone_state(phone)
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(forged))
    assert status == 1 and verdict["code"] == "NOT_VERIFIED", verdict
    assert phone_state(phone) == before


def test_tampered_payload_is_refused_by_the_phone(
    capsys: pytest.CaptureFixture[str], world: World, tmp_path: Path
) -> None:
    w = world
    full, _ = release(capsys, w)
    phone = make_phone(capsys, w, "phone")
    before = phone_state(phone)
    # One byte of the payload flipped after signing: recovery's whole-file check fails first.
    flipped = flip_payload_byte(full, tmp_path / "flipped.zip")
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(flipped))
    assert status == 1 and verdict["code"] == "NOT_VERIFIED", verdict
    assert phone_state(phone) == before
    # The same flip under a valid whole-file signature by the OTA key (as if the custodian had been tricked into
    # whole-file signing it): update_engine's payload signature check refuses it.
    from sealgate.custody.keystore import Keystore
    from sealgate.ota.signer import sign_package

    signer = Keystore.open(w.offline / "keystore").signer("ota", PASSPHRASE)
    rewrapped = tmp_path / "rewrapped.zip"
    sign_package(flipped, rewrapped, signer)
    status, verdict = run_json(capsys, "ota", "verify", str(rewrapped), "--certs", str(w.certificate))
    assert status == 0, verdict
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(rewrapped))
    assert status == 1 and verdict["code"] == "PAYLOAD_REFUSED", verdict
    assert phone_state(phone) == before


def test_a_package_for_another_device_is_refused(capsys: pytest.CaptureFixture[str], world: World) -> None:
    w = world
    other = Build("1002", 1_700_002_000, "2024-04-05", b"N+1", device="walleye")
    unsigned = prepare(capsys, w, other, "walleye-ota-1002.zip")
    request, response, summary = sign_offline(capsys, w, [unsigned])
    assert "device walleye" in summary
    assert apply_bundle(capsys, w, request, response)[0] == 0
    signed = w.online / "signed" / unsigned.name
    status, refused = publish(capsys, w, signed)
    assert status == 1 and [error["code"] for error in refused["errors"]] == ["WRONG_DEVICE"], refused  # type: ignore[union-attr]
    phone = make_phone(capsys, w, "phone")
    before = phone_state(phone)
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(signed))
    assert status == 1 and verdict["code"] == "WRONG_DEVICE", verdict
    assert phone_state(phone) == before


def test_an_older_build_is_refused_by_the_phone(capsys: pytest.CaptureFixture[str], world: World) -> None:
    w = world
    old = prepare(capsys, w, BUILD_N, f"{DEVICE}-ota-{BUILD_N.incremental}.zip")
    request, response, _ = sign_offline(capsys, w, [old])
    assert apply_bundle(capsys, w, request, response)[0] == 0
    phone = make_phone(capsys, w, "phone", BUILD_N1)
    before = phone_state(phone)
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(w.online / "signed" / old.name))
    assert status == 1 and verdict["code"] == "TIMESTAMP_DOWNGRADE", verdict
    assert phone_state(phone) == before


def test_a_declared_downgrade_is_accepted_with_a_wipe(capsys: pytest.CaptureFixture[str], world: World) -> None:
    """`release ota --downgrade` (incremental, as recovery demands): the phone goes back to N and wipes."""
    w = world
    target = write_target_files(w.online / "tf-n.zip", BUILD_N)
    source = write_target_files(w.online / "tf-n1.zip", BUILD_N1)
    unsigned = w.online / "downgrade.zip"
    status, report = run_json(capsys, "release", "ota", str(target), str(unsigned), "--source", str(source),
                              "--downgrade")  # fmt: skip
    assert status == 0 and report["metadata"]["downgrade"] and report["metadata"]["wipe"], report  # type: ignore[index]
    request, response, _ = sign_offline(capsys, w, [unsigned])
    assert apply_bundle(capsys, w, request, response)[0] == 0
    signed = w.online / "signed" / unsigned.name
    with zipfile.ZipFile(signed) as archive:
        assert archive.read("payload_properties.txt").decode().endswith("POWERWASH=1\n")
    phone = make_phone(capsys, w, "phone", BUILD_N1)
    status, verdict = run_json(capsys, "device", "ota", "apply", str(phone), str(signed))
    assert status == 0 and verdict["code"] == "DOWNGRADE_WITH_WIPE" and verdict["wipe"], verdict
    status, booted = run_json(capsys, "device", "ota", "boot", str(phone))
    assert status == 0 and booted["wiped"], booted
    assert slot_images(phone, str(booted["booted_slot"])) == images_of(BUILD_N)


def test_release_ota_refuses_what_cannot_make_an_ota(capsys: pytest.CaptureFixture[str], world: World) -> None:
    w = world
    target = write_target_files(w.online / "tf.zip", BUILD_N1)
    other = write_target_files(w.online / "tf-walleye.zip", Build("1001", 1, "2024-01-05", b"w", device="walleye"))
    status, _, err = run(capsys, "release", "ota", str(target), str(w.online / "x.zip"), "--source", str(other))
    assert status == 2 and "walleye" in err
    newer = write_target_files(w.online / "tf-newer.zip", Build("1003", 1_800_000_000, "2024-05-05", b"x"))
    status, _, err = run(capsys, "release", "ota", str(target), str(w.online / "x.zip"), "--source", str(newer))
    assert status == 2 and "downgrade" in err
    broken = w.online / "no-ab.zip"
    with zipfile.ZipFile(target) as source, zipfile.ZipFile(broken, "w") as out:
        for name in source.namelist():
            if name != "IMAGES/vendor.img":
                out.writestr(name, source.read(name))
    status, _, err = run(capsys, "release", "ota", str(broken), str(w.online / "x.zip"))
    assert status == 1 and "IMAGES/vendor.img" in err
    assert not (w.online / "x.zip").exists()
