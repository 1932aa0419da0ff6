"""The APK signer against the references: apksig's golden outputs, Debian's apksigner and zipalign, our verifier.

Byte-for-byte: with RSA keys (PKCS#1 v1.5 signatures are deterministic) our output equals the golden APKs apksig's
own test suite checks its signer against, and our lineages equal apksig's lineage vectors. Behaviour: every APK we
write is accepted by `apksigner verify --print-certs` (at the SDK window apksigner 31 understands: it predates v3.1)
and by our verifier, names exactly the signers we meant, and passes `zipalign -c -p 4`. The keys are apksig's public
test keys from the vectors, so no test pays for generating RSA-4096 or DSA keys.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_der_private_key

from conftest import require_tool
from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import (
    DEFAULT_CAPABILITIES,
    Capability,
    Lineage,
    create_lineage,
    read_lineage_file,
    rotate_lineage,
    write_lineage_file,
)
from sealgate.apk.signing import ApkSigningOptions, sign_apk
from sealgate.apk.update_rules import decide_update
from sealgate.apk.verifier import ApkVerification, verify_apk
from sealgate.errors import ApkFormatError, SealgateError, UsageError
from sealgate.signing import PrivateKeySigner
from signing_tools import (
    SignerKey,
    apk_layout,
    apksigner_sign,
    apksigner_verify,
    share_jvm_classes,
    unsigned_apk,
)
from test_token import PIN, SoftHsm, softhsm  # noqa: F401 - softhsm is a fixture used by the token test

BASE = "golden-aligned-in.apk"  # minSdkVersion 23, with a STORED classes.dex, resources.arsc and lib/.../fake.so


# -- keys and helpers ------------------------------------------------------------------------------------------------


class Keys:
    """apksig's test keys as Signers (for us) and as key files (for apksigner)."""

    def __init__(self, files: Path) -> None:
        self.files = files
        self._signers: dict[str, PrivateKeySigner] = {}

    def __getitem__(self, name: str) -> PrivateKeySigner:
        if name not in self._signers:
            self._signers[name] = self.signer(name, name)
        return self._signers[name]

    def signer(self, key: str, name: str) -> PrivateKeySigner:
        """The key file `key` under another signer name (the name decides the JAR file names)."""
        private_key = load_der_private_key((self.files / f"{key}.pk8").read_bytes(), None)
        pem = (self.files / f"{key}.x509.pem").read_bytes()
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        return PrivateKeySigner(name, private_key, Certificate.from_der(der))

    def files_of(self, name: str) -> SignerKey:
        signer = self[name]
        return SignerKey(name, self.files / f"{name}.pk8", self.files / f"{name}.x509.pem", signer.certificate.der)


@pytest.fixture(scope="session")
def keys(apksig_vectors: Path) -> Keys:
    return Keys(apksig_vectors / "files")


@pytest.fixture(scope="session")
def apksigner(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """apksigner from a shared class-data archive (see signing_tools.share_jvm_classes)."""
    require_tool("apksigner")
    base = tmp_path_factory.getbasetemp()
    share_jvm_classes((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jvm", apksig_vectors)


def _zipalign_ok(apk: Path) -> None:
    zipalign = require_tool("zipalign")
    result = subprocess.run([zipalign, "-c", "-p", "4", str(apk)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"zipalign -c -p 4 refuses {apk}:\n{result.stdout}{result.stderr}"


def _sha256s(certificates: list[Certificate]) -> set[str]:
    return {certificate.sha256 for certificate in certificates}


def _entries(apk: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(apk) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _block_signed_data(apk: Path) -> dict[int, list[bytes]]:
    """The signed data of every signer of every scheme block: what a signature covers, minus the signature."""
    data = apk.read_bytes()
    layout = apk_layout(data)
    found: dict[int, list[bytes]] = {}
    for block_id, offset, _ in layout.signing_block_pairs:
        (signers_length,) = struct.unpack_from("<I", data, offset)
        position, end = offset + 4, offset + 4 + signers_length
        while position < end:
            (signer_length,) = struct.unpack_from("<I", data, position)
            (signed_length,) = struct.unpack_from("<I", data, position + 4)
            found.setdefault(block_id, []).append(data[position + 8 : position + 8 + signed_length])
            position += 4 + signer_length
    return found


# -- byte-for-byte against apksig -------------------------------------------------------------------------------------

_GOLDEN = ["v1", "v2", "v3", "v1v2", "v2v3", "v1v2v3", "v3-lineage", "v2v3-lineage", "v1v2v3-lineage"]


@pytest.mark.parametrize("schemes", _GOLDEN)
def test_output_equals_apksigs_golden_apk(keys: Keys, apksig_vectors: Path, tmp_path: Path, schemes: str) -> None:
    """apksig's ApkSignerTest golden files: same input, same key, same bytes (4 KiB page alignment, as then)."""
    files = apksig_vectors / "files"
    names = schemes.removesuffix("-lineage")
    rotated = schemes.endswith("-lineage")
    lineage = read_lineage_file((files / "rsa-2048-lineage-2-signers").read_bytes()) if rotated else None
    # The goldens were made for minSdkVersion 23 without v1; we refuse that (it fails below API 24), so say the
    # APK starts where those schemes work: the bytes do not depend on it.
    min_sdk = None if "v1" in names else 24 if "v2" in names else 28
    options = ApkSigningOptions(
        v1="v1" in names, v2="v2" in names, v3="v3" in names, lineage=lineage, min_sdk=min_sdk, page_alignment=4096
    )
    signers = [keys["rsa-2048"], keys["rsa-2048_2"]] if rotated else [keys["rsa-2048"]]
    out = tmp_path / "out.apk"
    report = sign_apk(files / BASE, out, signers, options)
    assert report.verified
    assert out.read_bytes() == (files / f"golden-aligned-{schemes}-out.apk").read_bytes()


@pytest.mark.parametrize("min_sdk", [1, 18, 24])
def test_jar_signature_equals_apksigs_for_each_min_sdk(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, min_sdk: int
) -> None:
    """SHA-1 below API 18, SHA-256 from 18: the JAR files equal apksig's (its goldens keep the old alignment, so
    only the signature files, not the whole APK, can be compared)."""
    files = apksig_vectors / "files"
    out = tmp_path / "out.apk"
    sign_apk(files / "original.apk", out, [keys["rsa-2048"]], ApkSigningOptions(v1=True, min_sdk=min_sdk))
    ours, golden = _entries(out), _entries(files / f"golden-rsa-minSdkVersion-{min_sdk}-out.apk")
    for name in ("META-INF/MANIFEST.MF", "META-INF/RSA-2048.SF", "META-INF/RSA-2048.RSA"):
        assert ours[name] == golden[name], name
    assert (b"SHA1-Digest" in ours["META-INF/MANIFEST.MF"]) == (min_sdk < 18)


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        ("rsa-2048-lineage-2-signers", ["rsa-2048", "rsa-2048_2"]),
        ("rsa-2048-lineage-3-signers", ["rsa-2048", "rsa-2048_2", "rsa-2048_3"]),
        ("rsa-2048-to-4096-lineage-2-signers", ["rsa-2048", "rsa-4096"]),
    ],
)
def test_lineage_equals_apksig_rotate(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, name: str, chain: list[str]
) -> None:
    lineage = create_lineage(keys[chain[0]], keys[chain[1]])
    for current, new in itertools.pairwise(chain[1:]):
        lineage = rotate_lineage(lineage, keys[current], keys[new])
    write_lineage_file(lineage, tmp_path / "lineage")
    assert (tmp_path / "lineage").read_bytes() == (apksig_vectors / "files" / name).read_bytes()


def test_lineage_records_capabilities_and_refuses_a_wrong_key(keys: Keys) -> None:
    lineage = create_lineage(keys["ec-p256"], keys["rsa-2048"], Capability.INSTALLED_DATA)
    assert [node.capabilities for node in lineage.nodes] == [Capability.INSTALLED_DATA, DEFAULT_CAPABILITIES]
    extended = rotate_lineage(lineage, keys["rsa-2048"], keys["dsa-2048"], Capability.ROLLBACK | DEFAULT_CAPABILITIES)
    assert [node.certificate for node in extended.nodes] == [
        keys[name].certificate for name in ("ec-p256", "rsa-2048", "dsa-2048")
    ]
    assert extended.nodes[1].capabilities & Capability.ROLLBACK
    with pytest.raises(UsageError, match="not the newest certificate"):
        rotate_lineage(lineage, keys["ec-p256"], keys["dsa-2048"])
    with pytest.raises(UsageError, match="already in the lineage"):
        rotate_lineage(lineage, keys["rsa-2048"], keys["ec-p256"])


# -- against apksigner and zipalign -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    signers: tuple[str, ...]
    min_sdk: int | None = None
    schemes: tuple[int, ...] = ()  # what our verifier must report at the window

    @property
    def id(self) -> str:
        return "+".join(self.signers) + (f",min{self.min_sdk}" if self.min_sdk is not None else "")


_CASES = [
    Case(("rsa-2048",), 14, (1, 2, 3)),
    Case(("rsa-2048",), 18, (1, 2, 3)),
    Case(("rsa-2048",), None, (1, 2, 3)),
    Case(("rsa-2048",), 24, (2, 3)),
    Case(("rsa-2048",), 28, (3,)),
    Case(("rsa-2048",), 33, (3,)),
    Case(("rsa-4096",), 21, (1, 2, 3)),
    Case(("ec-p256",), 18, (1, 2, 3)),
    Case(("ec-p256",), 24, (2, 3)),
    Case(("ec-p384",), None, (1, 2, 3)),
    Case(("dsa-2048",), 14, (1, 2, 3)),  # SHA1withDSA with a 2048-bit key: apksigner itself cannot make this
    Case(("dsa-2048",), 21, (1, 2, 3)),
    Case(("dsa-2048",), 28, (3,)),
    Case(("rsa-2048", "ec-p256"), None, (1, 2)),  # several signers: v1 and v2 (v3 takes one)
    Case(("rsa-4096", "dsa-2048", "ec-p384"), 24, (2,)),
]


@pytest.mark.parametrize("case", _CASES, ids=[case.id for case in _CASES])
def test_signed_apk_verifies_with_apksigner(
    keys: Keys, apksigner: None, apksig_vectors: Path, tmp_path: Path, case: Case
) -> None:
    out = tmp_path / "signed.apk"
    signers = [keys[name] for name in case.signers]
    report = sign_apk(unsigned_apk(apksig_vectors, tmp_path), out, signers, ApkSigningOptions(min_sdk=case.min_sdk))
    expected = {signer.certificate.sha256 for signer in signers}
    assert report.verified and _sha256s(report.signers) == expected
    assert tuple(report.schemes) == case.schemes
    assert report.path == os.fspath(out)
    again = verify_apk(out, min_sdk=case.min_sdk)
    assert again.verified and tuple(again.schemes) == case.schemes
    theirs = apksigner_verify(out, min_sdk=case.min_sdk)
    assert theirs.verified, theirs.output
    assert set(theirs.signers) == expected
    assert theirs.schemes == set(case.schemes), theirs.output
    _zipalign_ok(out)


def test_native_libraries_get_16k_pages_and_stored_data_4_bytes(
    keys: Keys, apksig_vectors: Path, tmp_path: Path
) -> None:
    out = tmp_path / "signed.apk"
    sign_apk(unsigned_apk(apksig_vectors, tmp_path), out, [keys["rsa-2048"]])
    layout = apk_layout(out.read_bytes())
    stored = [entry for entry in layout.entries if entry.method == 0]
    assert {entry.name for entry in stored} >= {"classes.dex", "resources.arsc", "lib/armeabi/fake.so"}
    for entry in stored:
        assert entry.data_offset % (16384 if entry.name.endswith(".so") else 4) == 0, entry
    assert layout.signing_block_offset is not None and layout.signing_block_offset % 4096 == 0
    assert (layout.cd_offset - layout.signing_block_offset) % 4096 == 0


def test_unaligned_input_comes_out_aligned(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    out = tmp_path / "signed.apk"
    sign_apk(unsigned_apk(apksig_vectors, tmp_path, "golden-unaligned-in.apk"), out, [keys["ec-p256"]])
    assert verify_apk(out).verified
    _zipalign_ok(out)


@pytest.mark.parametrize(("first", "second"), [("rsa-2048", "ec-p256"), ("dsa-2048", "rsa-4096")])
def test_resigning_an_apksigner_apk_replaces_its_signatures(
    keys: Keys, apksigner: None, apksig_vectors: Path, tmp_path: Path, first: str, second: str
) -> None:
    """Old JAR files, old signing block and old padding go; only the new signer remains, for both verifiers."""
    signed = apksigner_sign(
        unsigned_apk(apksig_vectors, tmp_path), tmp_path / "theirs.apk", [keys.files_of(first)], min_sdk=21
    )
    out = tmp_path / "ours.apk"
    report = sign_apk(signed, out, [keys[second]], ApkSigningOptions(min_sdk=21))
    assert report.verified and _sha256s(report.signers) == {keys[second].certificate.sha256}
    names = set(_entries(out))
    assert not any(name.startswith(f"META-INF/{first.upper()[:8]}") for name in names)
    assert f"META-INF/{second.upper()[:8]}.SF" in names
    theirs = apksigner_verify(out, min_sdk=21)
    assert theirs.verified and theirs.signers == [keys[second].certificate.sha256], theirs.output
    _zipalign_ok(out)


def test_several_signers_with_the_same_jar_name_are_numbered(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    first, second = keys.signer("rsa-2048", "releasekey"), keys.signer("ec-p256", "releasekey_old")
    out = tmp_path / "signed.apk"
    report = sign_apk(unsigned_apk(apksig_vectors, tmp_path), out, [first, second], ApkSigningOptions(v3=False))
    assert report.verified and len(report.signers) == 2
    assert {"META-INF/SIGNER1.RSA", "META-INF/SIGNER2.EC"} <= set(_entries(out))


# -- rotation ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rotation(keys: Keys, apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("rotation")
    base = unsigned_apk(apksig_vectors, work)
    lineage = create_lineage(keys["rsa-2048"], keys["ec-p256"])
    old, new, stranger = keys["rsa-2048"], keys["ec-p256"], keys["rsa-2048_2"]
    apks = {
        "old": work / "old.apk",
        "rotated": work / "rotated.apk",
        "rotated-v31": work / "rotated-v31.apk",
        "stranger": work / "stranger.apk",
    }
    sign_apk(base, apks["old"], [old])
    sign_apk(base, apks["rotated"], [old, new], ApkSigningOptions(lineage=lineage))
    sign_apk(base, apks["rotated-v31"], [new, old], ApkSigningOptions(lineage=lineage, v31=True))
    sign_apk(base, apks["stranger"], [stranger])
    return apks


def _verified(apk: Path) -> ApkVerification:
    report = verify_apk(apk)
    assert report.verified, [issue.code for issue in report.errors]
    return report


def test_rotated_apk_is_an_accepted_update_and_a_stranger_is_not(keys: Keys, rotation: dict[str, Path]) -> None:
    old = _verified(rotation["old"])
    for name in ("rotated", "rotated-v31"):
        rotated = _verified(rotation[name])
        assert decide_update(old.identity_at(34), rotated.identity_at(34)).accepted
        assert decide_update(old.identity_at(30), rotated.identity_at(30)).accepted
    stranger = _verified(rotation["stranger"])
    decision = decide_update(old.identity_at(34), stranger.identity_at(34))
    assert not decision.accepted and decision.code == "SIGNER_MISMATCH"


def test_rotation_uses_the_new_key_from_the_requested_sdk(keys: Keys, rotation: dict[str, Path]) -> None:
    old, new = keys["rsa-2048"].certificate, keys["ec-p256"].certificate
    v3 = verify_apk(rotation["rotated"])
    assert v3.identity_at(27).signers == (old,) and v3.identity_at(28).signers == (new,)
    assert v3.lineage is not None and v3.lineage.certificates == (old, new)
    v31 = verify_apk(rotation["rotated-v31"])
    assert v31.verified and 31 in v31.schemes
    assert v31.identity_at(32).signers == (old,) and v31.identity_at(33).signers == (new,)


def test_apksigner_accepts_the_rotated_apks(keys: Keys, apksigner: None, rotation: dict[str, Path]) -> None:
    theirs = apksigner_verify(rotation["rotated"])
    assert theirs.verified and theirs.signers == [keys["ec-p256"].certificate.sha256], theirs.output
    # apksigner 31 predates v3.1: below API 33 it sees the original key in the v3 block.
    theirs = apksigner_verify(rotation["rotated-v31"], max_sdk=32)
    assert theirs.verified and theirs.signers == [keys["rsa-2048"].certificate.sha256], theirs.output
    for apk in rotation.values():
        _zipalign_ok(apk)


# -- determinism ------------------------------------------------------------------------------------------------------


def test_same_input_and_rsa_key_give_the_same_bytes(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    base = unsigned_apk(apksig_vectors, tmp_path)
    outputs = [tmp_path / "a.apk", tmp_path / "b.apk"]
    for out in outputs:
        sign_apk(base, out, [keys["rsa-4096"]], ApkSigningOptions(min_sdk=14))
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


def test_with_ec_everything_but_the_signatures_is_the_same(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    """ECDSA signatures are randomized; everything else, including all that v2/v3 signatures cover, is not."""
    base = unsigned_apk(apksig_vectors, tmp_path)
    with_v1 = [tmp_path / "a.apk", tmp_path / "b.apk"]
    for out in with_v1:
        sign_apk(base, out, [keys["ec-p256"]])
    first, second = (_entries(out) for out in with_v1)
    assert first.keys() == second.keys()
    assert first["META-INF/EC-P256.EC"] != second["META-INF/EC-P256.EC"]
    del first["META-INF/EC-P256.EC"], second["META-INF/EC-P256.EC"]
    assert first == second
    # Without the JAR signature's randomized block in the contents, the v2/v3 signed data are equal too.
    without_v1 = [tmp_path / "c.apk", tmp_path / "d.apk"]
    for out in without_v1:
        sign_apk(base, out, [keys["ec-p256"]], ApkSigningOptions(min_sdk=24))
    assert _block_signed_data(without_v1[0]) == _block_signed_data(without_v1[1])
    layouts = [apk_layout(out.read_bytes()) for out in without_v1]
    assert layouts[0].signing_block_offset == layouts[1].signing_block_offset
    assert [entry.data_offset for entry in layouts[0].entries] == [entry.data_offset for entry in layouts[1].entries]


def test_signing_in_place(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    apk = unsigned_apk(apksig_vectors, tmp_path)
    report = sign_apk(apk, apk, [keys["rsa-2048"]])
    assert report.verified and verify_apk(apk).verified
    assert [path.name for path in tmp_path.iterdir()] == [apk.name]


# -- refusals ---------------------------------------------------------------------------------------------------------


def _no_leftovers(directory: Path, expected: set[str]) -> None:
    assert {path.name for path in directory.iterdir()} == expected


def test_corrupt_inputs_are_refused_and_nothing_is_written(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    base = unsigned_apk(apksig_vectors, tmp_path)
    data = base.read_bytes()
    layout = apk_layout(data)
    dex = layout.entry("classes.dex")
    damaged_dex = bytearray(data)
    damaged_dex[dex.data_offset + 10] ^= 0xFF
    inputs = {
        "not-a-zip.apk": (os.urandom(4096), ApkFormatError, "not a ZIP"),
        "truncated.apk": (data[: len(data) // 2], ApkFormatError, "not a ZIP"),
        "crc.apk": (bytes(damaged_dex), SealgateError, "CRC-32"),
        "janus.apk": (b"\0" * 64 + data, ApkFormatError, "precede the first local header|central directory"),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "existing.apk").write_bytes(b"keep me")
    for name, (content, error, message) in inputs.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(error, match=message):
            sign_apk(path, out_dir / "existing.apk", [keys["rsa-2048"]])
        with pytest.raises(error):
            sign_apk(path, out_dir / name, [keys["rsa-2048"]])
    _no_leftovers(out_dir, {"existing.apk"})
    assert (out_dir / "existing.apk").read_bytes() == b"keep me"


@pytest.mark.parametrize(
    ("signers", "options", "message"),
    [
        (("rsa-2048", "ec-p256"), ApkSigningOptions(v3=True), "v3 takes one signer"),
        (("rsa-2048",), ApkSigningOptions(v1=False), "below API 24 only check v1"),
        (("ec-p256",), ApkSigningOptions(min_sdk=14), "ECDSA JAR signatures only from API 18"),
        (("rsa-2048",), ApkSigningOptions(v1=False, v2=False, v3=False), "every signature scheme is switched off"),
        (("rsa-2048",), ApkSigningOptions(v31=True), "needs the lineage"),
        (("rsa-2048",), ApkSigningOptions(min_sdk=30, max_sdk=29), "above the maximum"),
        (("rsa-2048",), ApkSigningOptions(alignment=0), "alignment must be between"),
        ((), ApkSigningOptions(), "at least one signer"),
    ],
)
def test_impossible_options_are_usage_errors(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, signers: tuple[str, ...], options: ApkSigningOptions, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), tmp_path / "out.apk", [keys[n] for n in signers], options)
    assert not (tmp_path / "out.apk").exists()


def test_a_signer_outside_the_lineage_is_refused(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    lineage = create_lineage(keys["rsa-2048"], keys["ec-p256"])
    with pytest.raises(UsageError, match="not in the lineage"):
        sign_apk(
            unsigned_apk(apksig_vectors, tmp_path),
            tmp_path / "out.apk",
            [keys["rsa-2048"], keys["dsa-2048"]],
            ApkSigningOptions(lineage=lineage),
        )


def test_a_missing_output_directory_is_a_clear_error(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    with pytest.raises(SealgateError, match="cannot create a file in"):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), tmp_path / "nowhere" / "out.apk", [keys["rsa-2048"]])


def test_output_is_not_left_half_written_when_the_signer_fails(
    keys: Keys, apksig_vectors: Path, tmp_path: Path
) -> None:
    class Broken(PrivateKeySigner):
        def sign(self, data: bytes, algorithm: object) -> bytes:  # type: ignore[override]
            raise SealgateError("the token was unplugged")

    good = keys["rsa-2048"]
    broken = Broken("broken", load_der_private_key((keys.files / "rsa-2048.pk8").read_bytes(), None), good.certificate)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(SealgateError, match="unplugged"):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), out_dir / "out.apk", [broken])
    _no_leftovers(out_dir, set())


def test_hash_of_output_is_stable_across_identical_runs(keys: Keys, apksig_vectors: Path, tmp_path: Path) -> None:
    """Files that differ only in name and modification time sign to the same bytes (no clock is read)."""
    base = unsigned_apk(apksig_vectors, tmp_path)
    copy = tmp_path / "copy.apk"
    copy.write_bytes(base.read_bytes())
    os.utime(copy, (0, 0))
    digests = set()
    for source in (base, copy):
        out = tmp_path / f"{source.stem}-signed.apk"
        sign_apk(source, out, [keys["rsa-2048"]])
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_lineage_round_trips_through_its_file(keys: Keys, tmp_path: Path) -> None:
    lineage = create_lineage(keys["rsa-2048"], keys["ec-p384"])
    write_lineage_file(lineage, tmp_path / "lineage")
    assert read_lineage_file((tmp_path / "lineage").read_bytes()) == Lineage(lineage.nodes)


# -- the command line -------------------------------------------------------------------------------------------------

PASSPHRASE = "a long test passphrase, never a real one"


@pytest.fixture(scope="module")
def keystore(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A keystore whose releasekey was rotated once (generation 1 is the old key), plus a platform key."""
    from sealgate.custody.keystore import Keystore
    from sealgate.custody.roles import KeySpec

    directory = tmp_path_factory.mktemp("keystore") / "ks"
    small = {"releasekey": KeySpec.parse("rsa-2048"), "platform": KeySpec.parse("ec-p256")}
    store = Keystore.create(directory, PASSPHRASE, roles=["releasekey", "platform"], key_overrides=small)
    store.rotate("releasekey", PASSPHRASE, key=KeySpec.parse("ec-p256"))
    return directory


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, passphrase: str = PASSPHRASE) -> int:
    from sealgate.cli.main import main

    monkeypatch.setenv("SEALGATE_PASSPHRASE", passphrase)
    return main(args)


def test_cli_signs_with_a_keystore_key(
    keystore: Path,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sealgate.custody.keystore import Keystore

    out = tmp_path / "signed.apk"
    base = unsigned_apk(apksig_vectors, tmp_path)
    assert (
        _cli(
            ["apk", "sign", str(base), str(out), "--keystore", str(keystore), "--key", "releasekey", "--json"],
            monkeypatch,
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    expected = Keystore.open(keystore).certificate("releasekey").sha256
    assert line["verified"] and [signer["sha256"] for signer in line["signers"]] == [expected]
    assert line["file"] == os.fspath(out) and verify_apk(out).verified
    args = ["apk", "sign", str(base), str(tmp_path / "v2.apk"), "--keystore", str(keystore), "--key", "platform"]
    assert _cli([*args, "--min-sdk", "24", "--v1", "off", "--v3", "off"], monkeypatch) == 0
    assert "verified (v2)" in capsys.readouterr().out


def test_cli_rotates_with_lineage_create_sign_and_rotate(
    keystore: Path,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ["--keystore", str(keystore)]
    lineage = tmp_path / "releasekey.lineage"
    assert (
        _cli(
            ["apk", "lineage", "create", *store, "--old", "releasekey:1", "--new", "releasekey", str(lineage)],
            monkeypatch,
        )
        == 0
    )
    assert _cli(["apk", "lineage", "--json", str(lineage)], monkeypatch) == 0
    nodes = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(nodes) == 2 and nodes[0]["capabilities"] == ["INSTALLED_DATA", "SHARED_USER_ID", "PERMISSION", "AUTH"]

    base = unsigned_apk(apksig_vectors, tmp_path)
    old_apk, new_apk = tmp_path / "old.apk", tmp_path / "new.apk"
    assert _cli(["apk", "sign", str(base), str(old_apk), *store, "--key", "releasekey:1"], monkeypatch) == 0
    sign_new = ["apk", "sign", str(base), str(new_apk), *store, "--key", "releasekey:1", "--key", "releasekey"]
    assert _cli([*sign_new, "--lineage", str(lineage), "--v31", "on"], monkeypatch) == 0
    old_report, new_report = verify_apk(old_apk), verify_apk(new_apk)
    assert 31 in new_report.schemes
    assert decide_update(old_report.identity_at(34), new_report.identity_at(34)).accepted

    longer = tmp_path / "longer.lineage"
    rotate = ["apk", "lineage", "rotate", str(lineage), *store, "--new", "platform", str(longer)]
    assert _cli([*rotate, "--capabilities", "installed-data,rollback"], monkeypatch) == 0
    extended = read_lineage_file(longer.read_bytes())
    assert (
        len(extended.nodes) == 3 and extended.nodes[1].capabilities == Capability.INSTALLED_DATA | Capability.ROLLBACK
    )


def test_cli_refusals_exit_non_zero_and_write_nothing(
    keystore: Path,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = unsigned_apk(apksig_vectors, tmp_path)
    out = tmp_path / "out.apk"
    store = ["--keystore", str(keystore)]
    assert _cli(["apk", "sign", str(base), str(out), *store, "--key", "releasekey"], monkeypatch, "wrong") == 1
    two = ["--key", "releasekey", "--key", "platform", "--v3", "on"]
    assert _cli(["apk", "sign", str(base), str(out), *store, *two], monkeypatch) == 2
    assert _cli(["apk", "sign", str(base), str(out), *store], monkeypatch) == 2
    assert _cli(["apk", "sign", str(base), str(out), "--key", "releasekey"], monkeypatch) == 2
    assert _cli(["apk", "sign", str(base), str(out), *store, "--key", "releasekey:x"], monkeypatch) == 2
    garbage = tmp_path / "garbage.apk"
    garbage.write_bytes(b"PK" + os.urandom(100))
    assert _cli(["apk", "sign", str(garbage), str(out), *store, "--key", "releasekey"], monkeypatch) == 1
    errors = capsys.readouterr().err
    assert "Traceback" not in errors and "passphrase" in errors and "not a ZIP" in errors
    assert not out.exists()


def test_a_key_apks_cannot_use_fails_before_anything_is_written(apksig_vectors: Path, tmp_path: Path) -> None:
    import datetime

    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ed25519 test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    signer = PrivateKeySigner("tuf-root", key, Certificate.from_der(certificate.public_bytes(Encoding.DER)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(UsageError, match="need an RSA, EC or DSA key"):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), out_dir / "out.apk", [signer], ApkSigningOptions(min_sdk=24))
    _no_leftovers(out_dir, set())


def test_token_keys_sign_apks_through_the_same_signer_protocol(
    softhsm: SoftHsm,  # noqa: F811
    apksigner: None,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key generated on SoftHSM2 signs v1+v2+v3 from the API and from `apk sign --pkcs11`; it never leaves."""
    from sealgate.custody.roles import KeySpec
    from sealgate.custody.token import generate_on_token

    base = unsigned_apk(apksig_vectors, tmp_path)
    with generate_on_token(softhsm.uri(), "releasekey", PIN, key=KeySpec.parse("ec-p256")) as token_key:
        report = sign_apk(base, tmp_path / "api.apk", [token_key])
        assert report.verified and report.schemes == [1, 2, 3]
        assert token_key.key_protection()["extractable"] is False
        expected = token_key.certificate.sha256
        uri = softhsm.uri(token_key.name)
    theirs = apksigner_verify(tmp_path / "api.apk")
    assert theirs.verified and theirs.signers == [expected], theirs.output
    assert _cli(["apk", "sign", str(base), str(tmp_path / "cli.apk"), "--pkcs11", uri, "--json"], monkeypatch, PIN) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["verified"] and [signer["sha256"] for signer in line["signers"]] == [expected]


# -- the self-check and the full verification -------------------------------------------------------------------------


def _big_apk(apksig_vectors: Path, tmp_path: Path) -> Path:
    """The base APK plus a 40 MiB STORED entry, so that chunks are hashed while the copy is still going on."""
    big = tmp_path / "big.apk"
    big.write_bytes(unsigned_apk(apksig_vectors, tmp_path).read_bytes())
    with zipfile.ZipFile(big, "a") as archive:
        info = zipfile.ZipInfo("assets/big.bin", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, os.urandom(40 << 20), compress_type=zipfile.ZIP_STORED)
    return big


def _identity(report: ApkVerification) -> dict[str, object]:
    line = report.to_json()
    return {key: line[key] for key in ("verified", "schemes", "signers", "lineage", "sdk", "errors")}


@pytest.mark.parametrize(
    ("case", "signers"),
    [
        ("v1v2v3", ("rsa-2048",)),
        ("v2v3", ("ec-p256",)),
        ("v1v2-two", ("rsa-2048", "ec-p256")),
        ("lineage-v31", ("rsa-2048", "ec-p256")),
        ("big", ("rsa-2048",)),
    ],
)
def test_the_self_checks_report_is_the_verifiers(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, apksigner: None, case: str, signers: tuple[str, ...]
) -> None:
    """The report built from the self-check names what `verify_apk` names; the output verifies with apksigner."""
    base = _big_apk(apksig_vectors, tmp_path) if case == "big" else unsigned_apk(apksig_vectors, tmp_path)
    chosen = [keys[name] for name in signers]
    options = {
        "v2v3": ApkSigningOptions(min_sdk=24),
        "v1v2-two": ApkSigningOptions(v3=False),
    }.get(case, ApkSigningOptions())
    if case == "lineage-v31":
        options = ApkSigningOptions(lineage=create_lineage(chosen[0], chosen[1]), v31=True)
    out = tmp_path / "out.apk"
    report = sign_apk(base, out, chosen, options)
    full = verify_apk(out, min_sdk=report.min_sdk, max_sdk=report.max_sdk)
    assert full.verified, [issue.message for issue in full.errors]
    assert _identity(report) == _identity(full)
    if case != "lineage-v31":  # apksigner 31 predates v3.1
        verdict = apksigner_verify(out, min_sdk=report.min_sdk)
        assert verdict.verified, verdict.output


def _flip(fd: int, offset: int) -> None:
    byte = os.pread(fd, 1, offset)
    os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)


@pytest.mark.parametrize("where", ["jar files", "central directory", "signing block"])
def test_a_write_corrupted_after_hashing_fails_the_self_check(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A byte changed after it was hashed (or in what is written after hashing) is caught; nothing is written."""
    from sealgate.apk.signing import apk_signer, writer

    finish_digests = apk_signer._finish_digests
    write_at = writer.ZipWriter.write_at

    def corrupt_jar_files(stream: object, out_fd: int, layout: writer.Layout) -> object:
        result = finish_digests(stream, out_fd, layout)  # type: ignore[arg-type]
        _flip(out_fd, layout.entries_end - 1)  # the end of the last JAR file, MANIFEST.MF
        return result

    def corrupt_final_write(self: writer.ZipWriter, offset: int, data: bytes) -> None:
        if b"PK\x05\x06" in data and b"APK Sig Block 42" in data:
            changed = bytearray(data)
            position = data.index(b"PK\x01\x02") + 46 if where == "central directory" else 200
            changed[position] ^= 0xFF
            data = bytes(changed)
        write_at(self, offset, data)

    if where == "jar files":
        monkeypatch.setattr(apk_signer, "_finish_digests", corrupt_jar_files)
    else:
        monkeypatch.setattr(writer.ZipWriter, "write_at", corrupt_final_write)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "existing.apk").write_bytes(b"keep me")
    with pytest.raises(SealgateError, match="self-check"):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), out_dir / "existing.apk", [keys["rsa-2048"]])
    with pytest.raises(SealgateError, match="self-check"):
        sign_apk(unsigned_apk(apksig_vectors, tmp_path), out_dir / "new.apk", [keys["rsa-2048"]])
    _no_leftovers(out_dir, {"existing.apk"})
    assert (out_dir / "existing.apk").read_bytes() == b"keep me"


def test_verify_output_runs_the_full_verifier(
    keys: Keys, apksig_vectors: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify_output=True hashes everything again: it catches a byte changed in a chunk hashed during the copy,
    which only a full re-read can see."""
    from sealgate.apk.signing import apk_signer

    calls: list[str] = []

    def spy(path: str | os.PathLike[str], **kwargs: int) -> ApkVerification:
        calls.append(os.fspath(path))
        return verify_apk(path, **kwargs)

    monkeypatch.setattr(apk_signer, "verify_apk", spy)
    base = _big_apk(apksig_vectors, tmp_path)
    out = tmp_path / "out.apk"
    report = sign_apk(base, out, [keys["rsa-2048"]], ApkSigningOptions(verify_output=True))
    assert len(calls) == 1 and report.verified and report.path == os.fspath(out)
    assert _identity(report) == _identity(verify_apk(out))

    finish_digests = apk_signer._finish_digests

    def corrupt_early_chunk(stream: object, out_fd: int, layout: object) -> object:
        result = finish_digests(stream, out_fd, layout)  # type: ignore[arg-type]
        _flip(out_fd, 20 << 20)  # inside assets/big.bin, in a chunk hashed while the copy went on
        return result

    monkeypatch.setattr(apk_signer, "_finish_digests", corrupt_early_chunk)
    with pytest.raises(SealgateError, match="does not verify"):
        sign_apk(base, tmp_path / "corrupt.apk", [keys["rsa-2048"]], ApkSigningOptions(verify_output=True))
    assert not (tmp_path / "corrupt.apk").exists()


def test_cli_verify_flag_runs_the_full_verifier(
    keystore: Path,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sealgate.apk.signing import apk_signer

    calls: list[str] = []

    def spy(path: str | os.PathLike[str], **kwargs: int) -> ApkVerification:
        calls.append(os.fspath(path))
        return verify_apk(path, **kwargs)

    monkeypatch.setattr(apk_signer, "verify_apk", spy)
    out = tmp_path / "signed.apk"
    args = ["apk", "sign", str(unsigned_apk(apksig_vectors, tmp_path)), str(out), "--keystore", str(keystore)]
    assert _cli([*args, "--key", "releasekey", "--json"], monkeypatch) == 0
    assert calls == []
    assert _cli([*args, "--key", "releasekey", "--verify", "--json"], monkeypatch) == 0
    assert len(calls) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["verified"] for line in lines] == [True, True]
    assert lines[0]["signers"] == lines[1]["signers"] and lines[0]["sdk"] == lines[1]["sdk"]


def test_cli_wrong_passphrase_writes_nothing(
    keystore: Path,
    apksig_vectors: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = unsigned_apk(apksig_vectors, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["apk", "sign", str(base), str(out_dir / "out.apk"), "--keystore", str(keystore)]
    for keys in (["--key", "releasekey"], ["--key", "releasekey:1", "--key", "platform", "--v3", "off"]):
        assert _cli([*args, *keys], monkeypatch, "not the passphrase") == 1
        errors = capsys.readouterr().err
        assert "Traceback" not in errors and "wrong passphrase for keystore" in errors
        _no_leftovers(out_dir, set())
