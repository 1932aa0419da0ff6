"""Differential tests: our verify_apk against Debian's `apksigner verify` on APKs that apksigner itself signs.

Every case signs a small real APK with fresh keys, then asks both verifiers about the same SDK window and demands the
same verdict, the same signer certificates and the same verified schemes (v1, v2, v3: apksigner 31 prints no v3.1, and
v4 needs an .idsig that apksigner 31 never consults). Tampered copies must fail in both.

Deliberately absent, because Debian's apksigner 31.0.2 is older than the rules the apksig vectors encode (the vectors
are the reference where they disagree): more than 10 signers (apksigner 31 has no limit; v1-only-11-signers.apk and
v2-only-11-signers.apk must fail) and v3.1 blocks (apksigner 31 can neither write nor read them).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_tool, vectors_path
from sealgate.apk.verifier import verify_apk
from sealgate.errors import SealgateError
from signing_tools import (
    KEY_TYPES,
    ApksignerVerdict,
    KeyRing,
    SignerKey,
    apk_layout,
    apksigner_rotate,
    apksigner_sign,
    apksigner_verify,
    flip,
    share_jvm_classes,
    unsigned_apk,
)

#: Schemes whose verdicts we compare: apksigner 31 cannot see v3.1, and its verify never reads an .idsig (v4).
_COMPARABLE_SCHEMES = {1, 2, 3}

_SCHEME_SETS: dict[str, tuple[bool, bool, bool]] = {
    "v1": (True, False, False),
    "v2": (False, True, False),
    "v3": (False, False, True),
    "v1v2": (True, True, False),
    "v2v3": (False, True, True),
    "v1v3": (True, False, True),
    "v1v2v3": (True, True, True),
}


@dataclass(frozen=True)
class Case:
    """One APK to sign and one window to verify it at; `signers` are KeyRing names, oldest first."""

    schemes: str | None
    signers: tuple[str, ...]
    sign_min_sdk: int | None = None
    verify_min_sdk: int | None = None
    verify_max_sdk: int | None = None
    rotation: bool = False
    base: str = "golden-aligned-in.apk"

    @property
    def id(self) -> str:
        parts = [self.schemes or "default", "+".join(self.signers)]
        if self.rotation:
            parts.append("rotated")
        if self.sign_min_sdk is not None:
            parts.append(f"signmin{self.sign_min_sdk}")
        if self.verify_min_sdk is not None or self.verify_max_sdk is not None:
            parts.append(f"window{self.verify_min_sdk or ''}-{self.verify_max_sdk or ''}")
        if self.base != "golden-aligned-in.apk":
            parts.append(self.base.removesuffix(".apk"))
        return ",".join(parts)


def _scheme_key_cases() -> list[Case]:
    """Every key type with all three schemes and with v1 alone (v1 is where key types differ most: PKCS#7)."""
    cases = [Case("v1v2v3", (key,)) for key in KEY_TYPES]
    cases += [Case("v1", (key,)) for key in ("rsa-1024", "rsa-4096", "ec-p521", "dsa-2048", "ec-p256")]
    others = {"v2": ("ec-p384", "rsa-3072"), "v3": ("dsa-1024", "ec-p521"), "v1v2": ("dsa-2048", "rsa-1024")}
    others |= {"v2v3": ("ec-p256", "rsa-4096"), "v1v3": ("rsa-2048", "ec-p384")}
    cases += [Case(schemes, (key,)) for schemes, keys in others.items() for key in keys]
    # The unaligned input has a STORED entry whose data is not 4-byte aligned: the digests must not care.
    cases += [Case("v1v2v3", ("ec-p256",), base="golden-unaligned-in.apk")]
    return cases


def _window_cases() -> list[Case]:
    """apksigner picks the schemes and algorithms for --min-sdk-version; both verifiers then use that window."""
    cases = [
        Case(None, (key,), sign_min_sdk=sdk, verify_min_sdk=sdk)
        # Not DSA-2048: below API 21 apksigner signs v1 with SHA1withDSA, which Java 17 refuses for 2048-bit keys.
        for key in ("rsa-3072", "ec-p256", "dsa-1024")
        for sdk in (None, 18, 24, 28)
    ]
    # Which schemes count depends on the window: v1 only below 24 (when v2+ exist), v2 only below 28 (with v3).
    cases += [
        Case("v2", ("rsa-2048",), verify_min_sdk=24),
        Case("v2", ("rsa-2048",), verify_min_sdk=18),
        Case("v3", ("ec-p256",), verify_min_sdk=28),
        Case("v3", ("ec-p256",), verify_min_sdk=24, verify_max_sdk=27),
        Case("v2v3", ("dsa-1024",), verify_min_sdk=24),
        Case("v1v2v3", ("rsa-2048",), sign_min_sdk=18, verify_min_sdk=18, verify_max_sdk=23),
        Case("v1v2v3", ("rsa-2048",), sign_min_sdk=18, verify_min_sdk=24, verify_max_sdk=27),
        Case("v1v2v3", ("ec-p384",), sign_min_sdk=18, verify_min_sdk=28),
        Case("v1", ("rsa-2048",), verify_min_sdk=24),
    ]
    return cases


def _rotation_cases() -> list[Case]:
    """Two (or three) signers linked by an `apksigner rotate` lineage: v1/v2 by the oldest, v3 by the newest."""
    return [
        Case("v3", ("rsa-2048", "rsa-2048_2"), rotation=True, verify_min_sdk=28),
        Case("v1v2v3", ("rsa-2048", "rsa-2048_2"), rotation=True),
        Case("v1v2v3", ("ec-p256", "rsa-3072"), rotation=True, verify_min_sdk=24),
        Case("v2v3", ("dsa-1024", "ec-p384"), rotation=True, verify_min_sdk=24),
        Case("v2v3", ("dsa-1024", "ec-p384"), rotation=True, verify_min_sdk=28),
        Case("v3", ("ec-p256", "rsa-3072"), rotation=True),  # window starts at 23: v3 alone is not enough
        Case("v1v2v3", ("rsa-2048", "ec-p256", "rsa-2048_2"), rotation=True),
    ]


def _multi_signer_cases() -> list[Case]:
    """Several independent signers are a v1/v2 feature (apksigner refuses them for v3 without a lineage)."""
    return [
        Case("v1", ("rsa-2048", "ec-p256")),
        Case("v1v2", ("rsa-2048", "ec-p256")),
        Case("v1", ("rsa-1024", "dsa-1024", "ec-p521")),
        Case("v1v2", ("rsa-1024", "dsa-1024", "ec-p521")),
        Case("v2", ("ec-p384", "rsa-2048_2"), verify_min_sdk=24),
        Case("v2", ("ec-p384", "rsa-2048_2")),  # minSdkVersion 23 still needs v1
        # targetSandboxVersion 2 demands a v2+ signature whatever the window, so v1 alone fails.
        Case("v1", ("rsa-2048",), base="unsigned-targetSandboxVersion-2.apk"),
        Case("v1v2", ("rsa-2048", "ec-p256"), base="unsigned-targetSandboxVersion-2.apk"),
    ]


@dataclass
class Outcome:
    """Our side of a comparison, in the terms apksigner prints."""

    verified: bool
    schemes: set[int]
    signers: set[str]
    #: SHA-256 of each certificate of the proof-of-rotation lineage, oldest first; None without a lineage.
    lineage: list[str] | None
    detail: str


def _ours(apk: Path, min_sdk: int | None, max_sdk: int | None) -> Outcome:
    """Run verify_apk; a SealgateError is a rejection (the CLI exits 1), anything else propagates and fails."""
    try:
        result = verify_apk(apk, min_sdk=min_sdk, max_sdk=max_sdk)
    except SealgateError as exc:
        return Outcome(False, set(), set(), None, f"raised {type(exc).__name__}: {exc}")
    document = result.to_json()
    lineage = document.get("lineage")
    history = None if not isinstance(lineage, list) else [str(node["sha256"]) for node in lineage]
    return Outcome(
        result.verified,
        set(result.schemes),
        {cert.sha256 for cert in result.signers},
        history,
        json.dumps(document, indent=1),
    )


class Workshop:
    """Signs APKs for the cases of one xdist worker and caches them, so tamper tests reuse the matrix's APKs."""

    def __init__(self, vectors: Path, directory: Path) -> None:
        self.vectors = vectors
        self.directory = directory
        self.keys = KeyRing(directory / "keys")
        self._built: dict[tuple[object, ...], Path] = {}

    def build(self, case: Case) -> Path:
        recipe = (case.schemes, case.signers, case.sign_min_sdk, case.rotation, case.base)
        if recipe not in self._built:
            self._built[recipe] = self._sign(case, self.directory / f"apk{len(self._built)}.apk")
        return self._built[recipe]

    def _sign(self, case: Case, out: Path) -> Path:
        signers = [self.keys[name] for name in case.signers]
        v1, v2, v3 = _SCHEME_SETS[case.schemes] if case.schemes else (None, None, None)
        lineage = self._lineage(signers, out.with_suffix(".lineage")) if case.rotation else None
        unsigned = unsigned_apk(self.vectors, self.directory, case.base)
        return apksigner_sign(unsigned, out, signers, v1=v1, v2=v2, v3=v3, min_sdk=case.sign_min_sdk, lineage=lineage)

    @staticmethod
    def _lineage(signers: list[SignerKey], out: Path) -> Path:
        previous = None
        for index, (old, new) in enumerate(itertools.pairwise(signers)):
            previous = apksigner_rotate(out.with_name(f"{out.name}.{index}"), old, new, previous)
        assert previous is not None, "a rotation case needs at least two signers"
        return previous


@pytest.fixture(scope="session")
def workshop(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> Workshop:
    require_tool("apksigner")
    base = tmp_path_factory.getbasetemp()
    # xdist workers each get basetemp/popen-gwN; their common parent belongs to this run only.
    share_jvm_classes((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jvm", apksig_vectors)
    return Workshop(apksig_vectors, tmp_path_factory.mktemp("differential"))


def _explain(apk: Path, case: Case, theirs: ApksignerVerdict, ours: Outcome) -> str:
    return (
        f"\nAPK {apk} ({case.id}), window min={case.verify_min_sdk} max={case.verify_max_sdk}\n"
        f"--- apksigner verify (verified={theirs.verified}, schemes={sorted(theirs.schemes)}):\n{theirs.output}"
        f"--- sealgate verify_apk (verified={ours.verified}, schemes={sorted(ours.schemes)}):\n{ours.detail}"
    )


def _compare(apk: Path, case: Case) -> tuple[ApksignerVerdict, Outcome]:
    theirs = apksigner_verify(apk, min_sdk=case.verify_min_sdk, max_sdk=case.verify_max_sdk)
    ours = _ours(apk, case.verify_min_sdk, case.verify_max_sdk)
    why = _explain(apk, case, theirs, ours)
    assert ours.verified == theirs.verified, "verdicts differ" + why
    if theirs.verified:
        assert ours.signers == set(theirs.signers), "signer certificates differ" + why
        assert ours.schemes & _COMPARABLE_SCHEMES == theirs.schemes & _COMPARABLE_SCHEMES, "schemes differ" + why
    return theirs, ours


_MATRIX = _scheme_key_cases() + _window_cases() + _rotation_cases() + _multi_signer_cases()


@pytest.mark.parametrize("case", _MATRIX, ids=[case.id for case in _MATRIX])
def test_same_verdict_as_apksigner(workshop: Workshop, case: Case) -> None:
    apk = workshop.build(case)
    theirs, ours = _compare(apk, case)
    if case.rotation and theirs.verified and 3 in theirs.schemes:
        # The lineage must name every certificate of the rotation, oldest to newest, as `apksigner rotate` chained them.
        expected = [workshop.keys[name].cert_sha256 for name in case.signers]
        assert ours.lineage == expected, f"lineage differs: {_explain(apk, case, theirs, ours)}"


def _stored_entry_byte(data: bytes) -> int:
    """A byte in the middle of classes.dex, a STORED entry every scheme protects."""
    entry = apk_layout(data).entry("classes.dex")
    return entry.data_offset + entry.compressed_size // 2


def _central_directory_byte(data: bytes) -> int:
    """The first character of classes.dex's name in the central directory (46 = fixed part of the record)."""
    return apk_layout(data).entry("classes.dex").central_offset + 46


def _signing_block_byte(block_id: int) -> Callable[[bytes], int]:
    """A byte in the middle of one scheme's block (inside its signed data, signatures or public key)."""

    def locate(data: bytes) -> int:
        pairs = {pair_id: (offset, length) for pair_id, offset, length in apk_layout(data).signing_block_pairs}
        offset, length = pairs[block_id]
        return offset + length // 2

    return locate


_V2_BLOCK, _V3_BLOCK = 0x7109871A, 0xF05368C0
_TAMPERINGS: dict[str, Callable[[bytes], int]] = {
    "stored-entry": _stored_entry_byte,
    "central-directory": _central_directory_byte,
    "v2-block": _signing_block_byte(_V2_BLOCK),
    "v3-block": _signing_block_byte(_V3_BLOCK),
}
_TAMPER_BASES = {
    "v1": Case("v1", ("rsa-2048",)),
    "v1v2": Case("v1v2", ("ec-p256",)),
    "v1v2v3": Case("v1v2v3", ("rsa-2048",)),
    "v3@28": Case("v3", ("ec-p384",), verify_min_sdk=28),
    "v2v3@24": Case("v2v3", ("rsa-3072",), verify_min_sdk=24),
}
_TAMPER_CASES = [
    (base, tampering)
    for base, case in _TAMPER_BASES.items()
    for tampering in _TAMPERINGS
    if not (tampering == "v2-block" and "v2" not in base) and not (tampering == "v3-block" and "v3" not in base)
]


@pytest.mark.parametrize(("base", "tampering"), _TAMPER_CASES, ids=[f"{b}-{t}" for b, t in _TAMPER_CASES])
def test_tampered_copies_fail_in_both(workshop: Workshop, tmp_path: Path, base: str, tampering: str) -> None:
    case = _TAMPER_BASES[base]
    data = workshop.build(case).read_bytes()
    offset = _TAMPERINGS[tampering](data)
    tampered = tmp_path / f"{base}-{tampering}.apk"
    tampered.write_bytes(flip(data, offset))
    theirs, ours = _compare(tampered, case)
    assert not theirs.verified, f"apksigner accepted a copy with byte {offset} flipped: {theirs.output}"
    assert not ours.verified


# --- Mutants we accept must be accepted by apksigner too (the direction that matters for security) ---

#: How many accepted mutants to cross-check, and how many mutants to try to find them (about 1 in 25 verifies).
_ACCEPTED_TO_CHECK = 30
_MUTANTS_TO_TRY = 1500


def _accepted_mutants(directory: Path) -> list[tuple[Path, str, tuple[int | None, int | None], Outcome]]:
    """Mutants from test_fuzz's strategies that verify_apk still accepts, in a fixed order from the fuzz seed.

    v3.1 bases are left out: apksigner 31 does not know v3.1 and even crashes on the intact v31 vectors at
    --min-sdk-version 28 ("APK verified, but has not verified using any of v1, v2 or v3 schemes").
    """
    import random

    from test_fuzz import BASES, SEED, STRATEGIES, WINDOWS, Base

    files = vectors_path("apksig", "files")
    bases = [
        Base(name, data, apk_layout(data), None)
        for name, idsig in BASES
        if idsig is None and not name.startswith("v31-")
        for data in [(files / name).read_bytes()]
    ]
    strategies = [name for name, (_, _, needs_idsig) in STRATEGIES.items() if not needs_idsig]
    found = []
    for index in range(_MUTANTS_TO_TRY):
        rng = random.Random(f"{SEED}:accepted:{index}")
        strategy = strategies[index % len(strategies)]
        base, window = rng.choice(bases), rng.choice(WINDOWS)
        mutant = STRATEGIES[strategy][0](base, rng)
        apk = directory / f"mutant-{index}.apk"
        apk.write_bytes(mutant.data)
        ours = _ours(apk, *window)
        if ours.verified:
            found.append((apk, f"{base.name}: {strategy}: {mutant.description}", window, ours))
            if len(found) == _ACCEPTED_TO_CHECK:
                break
        else:
            apk.unlink()
    return found


def test_mutants_we_accept_are_accepted_by_apksigner(workshop: Workshop, tmp_path: Path) -> None:
    accepted = _accepted_mutants(tmp_path)
    assert len(accepted) >= _ACCEPTED_TO_CHECK // 2, "too few mutants verify for this check to mean anything"
    disagreements = []
    for apk, description, (min_sdk, max_sdk), ours in accepted:
        theirs = apksigner_verify(apk, min_sdk=min_sdk, max_sdk=max_sdk)
        if not theirs.verified or set(theirs.signers) != ours.signers:
            disagreements.append(
                f"{apk} ({description}; min_sdk={min_sdk} max_sdk={max_sdk}): we accept with signers "
                f"{sorted(ours.signers)}, apksigner says verified={theirs.verified} {theirs.errors[:3]}"
            )
    assert not disagreements, "\n".join(disagreements)


def test_cli_json_matches_apksigner(workshop: Workshop, tmp_path: Path) -> None:
    """The console script prints, for each file, the verdict and signers apksigner gives, and exits 1 on any failure."""
    script = Path(sys.executable).with_name("sealgate")  # the venv's console script, whether or not PATH has it
    sealgate = [str(script)] if script.exists() else [sys.executable, "-m", "sealgate.cli.main"]
    good = workshop.build(Case("v1v2v3", ("rsa-2048",)))
    several = workshop.build(Case("v1v2", ("rsa-2048", "ec-p256")))
    tampered = tmp_path / "tampered.apk"
    tampered.write_bytes(flip(good.read_bytes(), _central_directory_byte(good.read_bytes())))
    files = [good, several, tampered]
    run = subprocess.run([*sealgate, "apk", "verify", "--json", *map(str, files)], capture_output=True, text=True)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert run.returncode == 1, run.stderr
    assert [line["file"] for line in lines] == [str(path) for path in files]
    for line, path in zip(lines, files, strict=True):
        theirs = apksigner_verify(path)
        assert line["verified"] == theirs.verified, f"{path}: {line} vs {theirs.output}"
        assert {signer["sha256"] for signer in line["signers"]} == set(theirs.signers), f"{path}: {line}"
        assert bool(line["errors"]) != theirs.verified, f"{path}: a rejection must carry errors: {line}"


@pytest.mark.parametrize("key", ["rsa-2048", "ec-p256"])
def test_v4_signature_written_by_apksigner_verifies(workshop: Workshop, tmp_path: Path, key: str) -> None:
    """apksigner 31 writes v4 .idsig files but its verify never reads them: check ours accepts them, and only them."""
    apk = apksigner_sign(
        unsigned_apk(workshop.vectors, tmp_path), tmp_path / "v4.apk", [workshop.keys[key]], v2=True, v3=True, v4=True
    )
    idsig = apk.with_name(apk.name + ".idsig")
    result = verify_apk(apk, idsig=idsig)
    assert result.verified, result.to_json()
    assert 4 in result.schemes and 3 in result.schemes
    assert {cert.sha256 for cert in result.signers} == {workshop.keys[key].cert_sha256}
    damaged = tmp_path / "damaged.idsig"
    data = idsig.read_bytes()
    # version, then length-prefixed hashing info, then length-prefixed signing info, which ends with the signature.
    hashing_size = int.from_bytes(data[4:8], "little")
    signing_size = int.from_bytes(data[8 + hashing_size : 12 + hashing_size], "little")
    damaged.write_bytes(flip(data, 12 + hashing_size + signing_size - 1))
    try:
        rejected = not verify_apk(apk, idsig=damaged).verified
    except SealgateError:
        rejected = True
    assert rejected, "an .idsig with a damaged signature was accepted"
