"""Rebuilding IMAGES/boot.img while signing a target-files package: the input's boot.img is built here by Debian's
mkbootimg from BOOT/kernel, BOOT/cmdline and a ramdisk Debian's cpio and gzip made from the test-keys BOOT/RAMDISK/
(recovery's otacerts.zip and update_engine's payload key), with an AVB hash footer and a vbmeta.img describing it.
After sign-target-files, Debian's unpack_bootimg takes the new boot.img apart: the kernel and cmdline are the
package's, and Debian's cpio extracts exactly the signed BOOT/RAMDISK/ tree (the OTA certificate, modes from the
fs_config); `release avb-verify` accepts the images with the AVB key and refuses them with the test key."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import require_tool
from release_tools import (
    WIFI_CERT,
    BuildInputs,
    avb_release_inputs,
    otacerts,
    release_keys,
    role_signer,
    write_target_files,
)
from sealgate.avb.descriptors import HashDescriptor, PropertyDescriptor
from sealgate.avb.footer import read_image, read_image_vbmeta
from sealgate.avb.images import add_hash_footer
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import build_vbmeta, read_vbmeta
from sealgate.errors import ReleaseError
from sealgate.release.apkcerts import KeyMap
from sealgate.release.boot_images import write_ramdisk_cpio
from sealgate.release.partition_images import footer_args, parse_fs_config
from sealgate.release.report import SignReport
from sealgate.release.target_files import sign_target_files
from sealgate.signing import PrivateKeySigner
from sealgate.ziparchive import ZipArchive

BOOT_SIZE = 1024 * 1024
KERNEL = bytes(range(256)) * 40 + b"not really a kernel"
CMDLINE = "console=ttyMSM0,115200n8 androidboot.hardware=oriole"
BOOT_PROP = "com.android.build.boot.fingerprint"
TEST_FINGERPRINT = "google/oriole/oriole:14/AP2A/1:user/test-keys"
OTACERTS = "system/etc/security/otacerts.zip"
PAYLOAD_KEY = "system/etc/update_engine/update-payload-key.pub.pem"
BOOT_FS_CONFIG = (
    " 0 0 0755\ninit 0 2000 0750\nsystem 0 0 0755\nsystem/bin 0 2000 0751\nsystem/bin/sh 0 2000 0755\n"
    "system/etc 0 0 0755\nsystem/etc/security 0 0 0755\nsystem/etc/update_engine 0 0 0755\n"
    f"{OTACERTS} 0 0 0644\n{PAYLOAD_KEY} 0 0 0644\ndev 0 0 0755\nbin 0 0 0644\n"
)
Signed = tuple[Path, Path, SignReport]


@pytest.fixture(scope="module")
def inputs(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> BuildInputs:
    require_tool("apksigner")
    require_tool("mkbootimg")
    return avb_release_inputs(apksig_vectors, tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("boot-inputs"))


@pytest.fixture(scope="module")
def avb_test_key() -> PrivateKeySigner:
    return role_signer("avb-test-key")


def _keys(inputs: BuildInputs) -> KeyMap:
    return release_keys(inputs)


def _misc_info(extra: str = "") -> bytes:
    return (
        "default_system_dev_certificate=build/make/target/product/security/testkey\navb_enable=true\n"
        f"recovery_api_version=3\nboot_size={BOOT_SIZE}\n"
        f"avb_boot_add_hash_footer_args=--prop {BOOT_PROP}:{TEST_FINGERPRINT}\n{extra}"
    ).encode()


def _ramdisk_entries(inputs: BuildInputs) -> dict[str, bytes]:
    testkey_pem = inputs.test_keys["testkey"].cert_path.read_bytes()
    return {
        "BOOT/RAMDISK/init": b"\x7fELF first stage init",
        f"BOOT/RAMDISK/{OTACERTS}": otacerts(testkey_pem),
        f"BOOT/RAMDISK/{PAYLOAD_KEY}": b"-----BEGIN PUBLIC KEY-----\ntest key\n-----END PUBLIC KEY-----\n",
        "BOOT/RAMDISK/system/bin/sh": b"\x7fELF a shell",
        "BOOT/RAMDISK/.hidden": b"mkbootfs leaves dotfiles out",
    }


def _build_input(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, work: Path, misc_info: bytes | None = None
) -> Path:
    """A test-keys package whose boot.img really holds BOOT/ (Debian's cpio, gzip and mkbootimg build it)."""
    image = _boot_image(inputs, work)
    # make_vbmeta_image --include_descriptors_from_image boot.img: the hash descriptor and the property
    footer = read_vbmeta(read_image_vbmeta(image)[1]).descriptors
    vbmeta = build_vbmeta([*footer, PropertyDescriptor("other", b"kept")], avb_test_key, padding_size=4096)
    extra = {
        **_boot_entries(inputs, image),
        "META/misc_info.txt": misc_info if misc_info is not None else _misc_info(),
        "IMAGES/vbmeta.img": vbmeta,
    }
    package = write_target_files(work / "target_files.zip", inputs, extra=extra)
    _add_ramdisk_extras(package)
    return package


def _boot_entries(inputs: BuildInputs, image: Path) -> dict[str, bytes]:
    return {
        **_ramdisk_entries(inputs),
        "BOOT/kernel": KERNEL,
        "BOOT/cmdline": (CMDLINE + "\n").encode(),
        "META/boot_filesystem_config.txt": BOOT_FS_CONFIG.encode(),
        "IMAGES/boot.img": image.read_bytes(),
    }


def _add_ramdisk_extras(package: Path) -> None:
    with zipfile.ZipFile(package, "a") as archive:
        archive.writestr(zipfile.ZipInfo("BOOT/RAMDISK/dev/"), b"")  # an empty directory
        link = zipfile.ZipInfo("BOOT/RAMDISK/bin")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "system/bin")


def _boot_image(inputs: BuildInputs, work: Path) -> Path:
    """boot.img from the test-keys ramdisk, with an unsigned AVB hash footer (vbmeta.img describes it)."""
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "ramdisk"
    for name, data in _ramdisk_entries(inputs).items():
        path = tree / name.removeprefix("BOOT/RAMDISK/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=tree, capture_output=True, check=True).stdout
    cpio = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc"], cwd=tree, input=names, capture_output=True,
                          check=True).stdout  # fmt: skip
    (work / "ramdisk.gz").write_bytes(gzip.compress(cpio, mtime=0))
    (work / "kernel").write_bytes(KERNEL)
    image = work / "boot.img"
    subprocess.run(["mkbootimg", "--kernel", str(work / "kernel"), "--ramdisk", str(work / "ramdisk.gz"),
                    "--cmdline", CMDLINE, "--output", str(image)], check=True, capture_output=True)  # fmt: skip
    add_hash_footer(image, "boot", BOOT_SIZE, None, salt=bytes(32), properties={BOOT_PROP: TEST_FINGERPRINT.encode()})
    return image


@pytest.fixture(scope="module")
def signed(inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path_factory: pytest.TempPathFactory) -> Signed:
    work = tmp_path_factory.mktemp("boot")
    source = _build_input(inputs, avb_test_key, work)
    out = work / "signed.zip"
    return source, out, sign_target_files(source, out, _keys(inputs))


def _unpack(package: Path, work: Path) -> Path:
    """unpack_bootimg of the package's boot.img, its ramdisk extracted by cpio -idm into work/tree."""
    require_tool("unpack_bootimg")
    with zipfile.ZipFile(package) as archive:
        (work / "boot.img").write_bytes(archive.read("IMAGES/boot.img"))
    subprocess.run(["unpack_bootimg", "--boot_img", str(work / "boot.img"), "--out", str(work / "unpacked")],
                   check=True, capture_output=True)  # fmt: skip
    tree = work / "tree"
    tree.mkdir()
    cpio = gzip.decompress((work / "unpacked" / "ramdisk").read_bytes())
    subprocess.run(["cpio", "--quiet", "-idm", "--no-absolute-filenames"], cwd=tree, input=cpio, check=True,
                   capture_output=True)  # fmt: skip
    return work


def test_the_rebuilt_boot_image_holds_the_signed_ramdisk(signed: Signed, inputs: BuildInputs, tmp_path: Path) -> None:
    _, out, report = signed
    assert report.images_rebuilt == ["IMAGES/boot.img", "IMAGES/vbmeta.img"]
    assert "IMAGES/boot.img" not in report.images_to_rebuild
    work = _unpack(out, tmp_path)
    unpacked, tree = work / "unpacked", work / "tree"
    assert (unpacked / "kernel").read_bytes() == KERNEL
    listing = subprocess.run(["unpack_bootimg", "--boot_img", str(work / "boot.img"), "--out", str(work / "listed")],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"command line args: {CMDLINE}" in listing
    got = {p.relative_to(tree).as_posix() for p in tree.rglob("*")}
    assert got == {"init", "system", "system/bin", "system/bin/sh", "system/etc", "system/etc/security", OTACERTS,
                   "system/etc/update_engine", PAYLOAD_KEY, "dev", "bin"}  # fmt: skip
    with zipfile.ZipFile(out) as archive:
        for name in ("init", "system/bin/sh", PAYLOAD_KEY, OTACERTS):
            assert (tree / name).read_bytes() == archive.read(f"BOOT/RAMDISK/{name}"), name
    with zipfile.ZipFile(tree / OTACERTS) as certificates:
        pem = certificates.read(certificates.namelist()[0])
    assert inputs.signers["ota"].certificate.der in _der_of(pem)
    assert b"test key" not in (tree / PAYLOAD_KEY).read_bytes()
    assert stat.S_IMODE((tree / "init").lstat().st_mode) == 0o750
    assert stat.S_IMODE((tree / "system/bin").lstat().st_mode) == 0o751
    assert os.readlink(tree / "bin") == "system/bin"
    # the footer's property is the release-keys fingerprint, its salt sha256(kernel) as _BuildBootableImage's
    _, footer = read_image(work / "boot.img")
    hash_descriptor = next(d for d in footer.descriptors if isinstance(d, HashDescriptor))
    assert hash_descriptor.salt == hashlib.sha256(KERNEL).digest()
    properties = {d.key: d.value for d in footer.descriptors if isinstance(d, PropertyDescriptor)}
    assert properties[BOOT_PROP] == TEST_FINGERPRINT.replace("test-keys", "release-keys").encode()


def _der_of(pem: bytes) -> bytes:
    done = subprocess.run(["openssl", "x509", "-outform", "DER"], input=pem, capture_output=True, check=True)
    return done.stdout


def test_avb_verify_accepts_the_boot_image_with_the_avb_key_only(
    signed: Signed, inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    from sealgate.cli.main import main

    source, out, _ = signed
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(out) as archive:
        for name in ("boot", "vbmeta"):
            (images / f"{name}.img").write_bytes(archive.read(f"IMAGES/{name}.img"))
    vbmeta = read_vbmeta((images / "vbmeta.img").read_bytes())
    assert PropertyDescriptor("other", b"kept") in vbmeta.descriptors
    avb, test = tmp_path / "avb.bin", tmp_path / "test.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    test.write_bytes(public_key_metadata(avb_test_key.public_key))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 0
    assert main(["release", "avb-verify", str(images), "--pkmd", str(test)]) == 1
    with zipfile.ZipFile(source) as archive:  # the old boot.img does not match the new hash descriptor
        (images / "boot.img").write_bytes(archive.read("IMAGES/boot.img"))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 1


def test_two_runs_give_identical_bytes(signed: Signed, inputs: BuildInputs, tmp_path: Path) -> None:
    source, out, _ = signed
    again = tmp_path / "again.zip"
    sign_target_files(source, again, _keys(inputs))
    assert again.read_bytes() == out.read_bytes()


def test_the_ramdisk_is_laid_out_as_mkbootfs_writes_it(signed: Signed, tmp_path: Path) -> None:
    """Byte order, a directory before its children, inodes from 300000, owner 0, mtime 0; cpio -tv agrees."""
    _, out, _ = signed
    with ZipArchive.open(out) as archive, open(tmp_path / "r.cpio", "wb") as handle:
        from sealgate.release.partition_images import parse_fs_config

        size = write_ramdisk_cpio(archive, "BOOT/RAMDISK/", parse_fs_config(BOOT_FS_CONFIG, "t"), handle)
    data = (tmp_path / "r.cpio").read_bytes()
    assert size == len(data) and size % 256 == 0
    assert data.startswith(b"070701" + b"%08x" % 300000)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True).stdout
    expected = ["bin", "dev", "init", "system", "system/bin", "system/bin/sh", "system/etc", "system/etc/security",
                OTACERTS, "system/etc/update_engine", PAYLOAD_KEY]  # fmt: skip
    assert listing.decode().split() == expected
    verbose = subprocess.run(["cpio", "-tv", "--quiet", "--numeric-uid-gid"], input=data, capture_output=True,
                             check=True, env={**os.environ, "TZ": "UTC"}).stdout.decode()  # fmt: skip
    lines = [line.split() for line in verbose.splitlines()]
    assert all(fields[1:4] == ["1", "0", "0"] and fields[7] == "1970" for fields in lines), verbose
    assert lines[0][0] == "lrw-r--r--" and lines[0][-3:] == ["bin", "->", "system/bin"]  # fs_config 0644, as mkbootfs
    assert lines[2][0] == "-rwxr-x---" and lines[2][-1] == "init"


def test_lz4_ramdisks_and_header_version_3(inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path) -> None:
    lz4 = require_tool("lz4")
    misc_info = _misc_info("lz4_ramdisks=true\nmkbootimg_args=--header_version 3\n")
    source = _build_input(inputs, avb_test_key, tmp_path / "in", misc_info)
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert "IMAGES/boot.img" in report.images_rebuilt
    with zipfile.ZipFile(out) as archive:
        (tmp_path / "boot.img").write_bytes(archive.read("IMAGES/boot.img"))
    header = (tmp_path / "boot.img").read_bytes()[:44]
    assert header[:8] == b"ANDROID!" and int.from_bytes(header[40:44], "little") == 3
    subprocess.run(["unpack_bootimg", "--boot_img", str(tmp_path / "boot.img"), "--out", str(tmp_path / "u")],
                   check=True, capture_output=True)  # fmt: skip
    ramdisk = (tmp_path / "u" / "ramdisk").read_bytes()
    assert ramdisk[:4] == bytes.fromhex("02214c18")  # the lz4 legacy frame magic
    cpio = subprocess.run([lz4, "-d", "-c"], input=ramdisk, capture_output=True, check=True).stdout
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=cpio, capture_output=True, check=True).stdout
    assert OTACERTS in listing.decode().split()


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("mkbootimg_args=--header_version 4\n", "boot image header version 4"),
        ("gki_signing_key_path=external/avb/test/data/testkey_rsa2048.pem\n", "GKI boot image certification"),
        ("init_boot=true\n", "without a ramdisk"),
    ],
)
def test_what_is_not_supported_is_refused_and_nothing_is_written(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path, extra: str, reason: str
) -> None:
    source = _build_input(inputs, avb_test_key, tmp_path / "in", _misc_info(extra))
    out = tmp_path / "out.zip"
    with pytest.raises(ReleaseError, match=f"IMAGES/boot.img: .*{reason}.*nothing was written"):
        sign_target_files(source, out, _keys(inputs))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_a_stale_vendor_boot_is_refused_when_rebuilding_is_insisted_on(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    source = _build_input(inputs, avb_test_key, tmp_path / "in")
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("VENDOR_BOOT/RAMDISK/system/etc/security/otacerts.zip",
                         otacerts(inputs.test_keys["testkey"].cert_path.read_bytes()))  # fmt: skip
        archive.writestr("IMAGES/vendor_boot.img", b"VNDRBOOT" + bytes(4088))
    with pytest.raises(ReleaseError, match=r"IMAGES/vendor_boot\.img: a vendor boot image"):
        sign_target_files(source, tmp_path / "out.zip", _keys(inputs), rebuild_images=True)
    # not insisting: boot.img is rebuilt, vendor_boot.img left for the report as before
    report = sign_target_files(source, tmp_path / "out.zip", _keys(inputs), rebuild_images=False)
    assert "IMAGES/vendor_boot.img" in report.images_to_rebuild and "IMAGES/boot.img" in report.images_to_rebuild
    report = sign_target_files(source, tmp_path / "out2.zip", _keys(inputs))
    assert "IMAGES/boot.img" in report.images_rebuilt


def test_the_cli_refuses_an_unsupported_boot_image_with_exit_1(
    inputs: BuildInputs,
    avb_test_key: PrivateKeySigner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sealgate.cli import release_sign
    from sealgate.cli.main import main

    source = _build_input(inputs, avb_test_key, tmp_path / "in", _misc_info("mkbootimg_args=--header_version 4\n"))
    monkeypatch.setattr(release_sign, "_KeystoreSigners", lambda store, passphrase: dict(inputs.signers))
    monkeypatch.setattr("sealgate.cli.signers.open_keystore", lambda path: None)
    monkeypatch.setattr("sealgate.cli.signers.keystore_passphrase", lambda fd: "")
    args = ["release", "sign-target-files", str(source), str(tmp_path / "out.zip"), "--keystore", str(tmp_path),
            "--key-map", f"{WIFI_CERT}=networkstack"]  # fmt: skip
    assert main(args) == 1
    assert "boot image header version 4" in capsys.readouterr().err and not (tmp_path / "out.zip").exists()
    assert main([*args, "--no-rebuild-images", "--json"]) == 0
    assert "IMAGES/boot.img" in json.loads(capsys.readouterr().out)["images_to_rebuild"]


def test_system_and_boot_rebuilt_together_one_vbmeta_describes_both(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    """An EROFS system.img (test_release_images' package) and boot.img both stale: both rebuilt, and the one
    vbmeta.img describing both is re-signed with both new descriptors."""
    from sealgate.cli.main import main
    from test_release_images import _build_input as build_erofs_input
    from test_release_images import _misc_info as erofs_misc_info

    require_tool("mkfs.erofs")
    erofs = build_erofs_input(inputs, avb_test_key, tmp_path / "erofs")
    image = _boot_image(inputs, tmp_path / "boot")
    with zipfile.ZipFile(erofs) as archive:
        old = read_vbmeta(archive.read("IMAGES/vbmeta.img")).descriptors
    boot_footer = read_vbmeta(read_image_vbmeta(image)[1]).descriptors
    replaced = {
        **_boot_entries(inputs, image),
        "IMAGES/vbmeta.img": build_vbmeta([*old, *boot_footer], avb_test_key, padding_size=4096),
        "META/misc_info.txt": erofs_misc_info("erofs").encode() + _misc_info().split(b"recovery_api_version=3\n")[1],
    }
    source = tmp_path / "both.zip"
    with zipfile.ZipFile(erofs) as original, zipfile.ZipFile(source, "w") as copy:
        for info in original.infolist():
            if info.filename not in replaced:
                copy.writestr(info, original.read(info))
        for name, data in replaced.items():
            copy.writestr(name, data)
    _add_ramdisk_extras(source)
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert report.images_rebuilt == ["IMAGES/system.img", "IMAGES/boot.img", "IMAGES/vbmeta.img"]
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(out) as archive:
        for name in ("system", "boot", "vbmeta"):
            (images / f"{name}.img").write_bytes(archive.read(f"IMAGES/{name}.img"))
    avb = tmp_path / "avb.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 0
    with zipfile.ZipFile(source) as archive:
        (images / "boot.img").write_bytes(archive.read("IMAGES/boot.img"))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 1


def test_recovery_img_is_rebuilt_with_its_own_mkbootimg_args(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    """RECOVERY/RAMDISK/ (release_tools' package keeps recovery's otacerts there): recovery_mkbootimg_args before
    mkbootimg_args, and vbmeta's hash descriptor for recovery (matching nothing of an old footer) replaced."""
    from sealgate.cli.main import main

    stale = HashDescriptor(4096, "sha256", "recovery", bytes(32), bytes(32))
    misc_info = _misc_info(
        "recovery_size=1048576\nrecovery_mkbootimg_args=--header_version 1\nmkbootimg_args=--header_version 3\n"
    )
    extra = {
        "RECOVERY/kernel": KERNEL,
        "RECOVERY/cmdline": b"androidboot.recovery=1\n",
        "META/recovery_filesystem_config.txt": b" 0 0 0755\nsystem 0 0 0750\nsystem/etc 0 0 0755\n"
        b"system/etc/security 0 0 0755\nsystem/etc/security/otacerts.zip 0 0 0600\n",
        "META/misc_info.txt": misc_info,
        "IMAGES/recovery.img": b"ANDROID!" + bytes(4088),
        "IMAGES/vbmeta.img": build_vbmeta([stale], avb_test_key, padding_size=4096),
    }
    source = write_target_files(tmp_path / "in.zip", inputs, extra=extra)
    out = tmp_path / "out.zip"
    report = sign_target_files(source, out, _keys(inputs))
    assert report.images_rebuilt == ["IMAGES/recovery.img", "IMAGES/vbmeta.img"]
    images = tmp_path / "images"
    images.mkdir()
    with zipfile.ZipFile(out) as archive:
        for name in ("recovery", "vbmeta"):
            (images / f"{name}.img").write_bytes(archive.read(f"IMAGES/{name}.img"))
    data = (images / "recovery.img").read_bytes()
    assert int.from_bytes(data[40:44], "little") == 1  # recovery_mkbootimg_args, not mkbootimg_args
    subprocess.run(["unpack_bootimg", "--boot_img", str(images / "recovery.img"), "--out", str(tmp_path / "u")],
                   check=True, capture_output=True)  # fmt: skip
    cpio = gzip.decompress((tmp_path / "u" / "ramdisk").read_bytes())
    tree = tmp_path / "tree"
    tree.mkdir()
    subprocess.run(["cpio", "--quiet", "-idm"], cwd=tree, input=cpio, check=True, capture_output=True)
    with zipfile.ZipFile(tree / OTACERTS) as certificates:
        pem = certificates.read(certificates.namelist()[0])
    assert inputs.signers["ota"].certificate.der in _der_of(pem)
    assert stat.S_IMODE((tree / OTACERTS).stat().st_mode) == 0o600
    vbmeta = read_vbmeta((images / "vbmeta.img").read_bytes())
    assert stale not in vbmeta.descriptors
    avb = tmp_path / "avb.bin"
    avb.write_bytes(public_key_metadata(inputs.signers["avb"].public_key))
    assert main(["release", "avb-verify", str(images), "--pkmd", str(avb)]) == 0
    assert (tmp_path / "u" / "kernel").read_bytes() == KERNEL
    extra["META/misc_info.txt"] = misc_info + b"exclude_kernel_from_recovery_image=true\n"
    source = write_target_files(tmp_path / "no-kernel.zip", inputs, extra=extra)
    with pytest.raises(ReleaseError, match="without a kernel"):
        sign_target_files(source, tmp_path / "refused.zip", _keys(inputs))


def test_the_offline_bundle_check_accepts_the_rebuilt_boot_image_only_as_vbmeta_vouches(
    signed: Signed, inputs: BuildInputs, tmp_path: Path
) -> None:
    """`bundle apply`'s check of a package signed offline: the rebuilt boot.img passes; one byte of its kernel
    changed in transit does not (the hash descriptor is recomputed from the bytes with the avb key)."""
    from sealgate.release.target_files_bundle import TargetFilesHandler

    source, out, _ = signed
    options = {"key_map": {WIFI_CERT: "networkstack"}}
    TargetFilesHandler().check(out, source, lambda role: inputs.signers[role].certificate, options)
    forged = tmp_path / "forged.zip"
    with zipfile.ZipFile(out) as signed_zip, zipfile.ZipFile(forged, "w") as copy:
        for info in signed_zip.infolist():
            data = signed_zip.read(info)
            if info.filename == "IMAGES/boot.img":
                data = data[:4096] + bytes([data[4096] ^ 1]) + data[4097:]  # the kernel's first byte
            copy.writestr(info, data)
    with pytest.raises(ReleaseError, match="do not verify with the avb key"):
        TargetFilesHandler().check(forged, source, lambda role: inputs.signers[role].certificate, options)


# -- review: misc_info and fs_config are the build machine's, so hostile input on the offline machine ------------


@pytest.mark.parametrize("argument", ["-o {victim}", "--out={victim}", "--kernel {victim}", "--dtb {victim}",
                                      "--sec {victim}", "--header_version 2 --output {victim}"])  # fmt: skip
def test_mkbootimg_arguments_that_name_files_are_refused_before_anything_runs(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path, argument: str
) -> None:
    victim = tmp_path / "keystore-file"
    victim.write_bytes(b"the custodian's secret")
    extra = f"mkbootimg_args={argument.format(victim=victim)}\n"
    source = _build_input(inputs, avb_test_key, tmp_path / "in", _misc_info(extra))
    out = tmp_path / "out.zip"
    with pytest.raises(ReleaseError, match="mkbootimg argument"):
        sign_target_files(source, out, _keys(inputs))
    assert victim.read_bytes() == b"the custodian's secret"
    assert not out.exists()


def test_an_allowed_mkbootimg_argument_still_passes(
    inputs: BuildInputs, avb_test_key: PrivateKeySigner, tmp_path: Path
) -> None:
    extra = (
        "mkbootimg_args=--board=oriole --pagesize 4096\n"
        "mkbootimg_version_args=--os_version 14 --os_patch_level 2024-03\n"
    )
    source = _build_input(inputs, avb_test_key, tmp_path / "in", _misc_info(extra))
    report = sign_target_files(source, tmp_path / "out.zip", _keys(inputs))
    assert "IMAGES/boot.img" in report.images_rebuilt


def test_fs_config_modes_cannot_change_the_kind_of_a_ramdisk_entry(tmp_path: Path) -> None:
    """020644 would make a regular file's newc mode 0o120644, a symlink: only the permission bits are taken."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("BOOT/RAMDISK/system/etc/security/otacerts.zip", b"zip bytes")
    config = parse_fs_config(
        " 0 0 0755\nsystem 0 0 0755\nsystem/etc 0 0 0755\nsystem/etc/security 0 0 0755\n"
        "system/etc/security/otacerts.zip 0 0 020644\n",
        "META/boot_filesystem_config.txt",
    )
    path = tmp_path / "ramdisk.zip"
    path.write_bytes(buffer.getvalue())
    with ZipArchive.open(path) as opened:
        out = io.BytesIO()
        write_ramdisk_cpio(opened, "BOOT/RAMDISK/", config, out)
    data = out.getvalue()
    name = b"system/etc/security/otacerts.zip\x00"
    header = data[data.index(name) - 110 : data.index(name)]
    mode = int(header[14:22], 16)
    assert mode == 0o100644, oct(mode)


@pytest.mark.parametrize("args", ['--prop "unbalanced', "--rollback_index ²"])
def test_malformed_footer_arguments_are_typed_errors(args: str) -> None:
    with pytest.raises(ReleaseError):
        footer_args(args, "avb_system_add_hashtree_footer_args")


def test_a_ramdisk_nested_past_any_real_one_is_a_typed_error(tmp_path: Path) -> None:
    deep = "BOOT/RAMDISK/" + "d/" * 1000 + "f"
    path = tmp_path / "deep.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(deep, b"x")
    config = parse_fs_config(" 0 0 0755\n", "META/boot_filesystem_config.txt")
    with ZipArchive.open(path) as opened, pytest.raises(ReleaseError, match="nests directories"):
        write_ramdisk_cpio(opened, "BOOT/RAMDISK/", config, io.BytesIO())
