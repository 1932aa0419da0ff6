"""Bounded fuzz of verify_apk: mutated APKs must give a report or a SealgateError, never any other exception.

About 1,500 mutations of valid apksig vector APKs, from a fixed seed so a failure is reproducible: bit flips anywhere
and concentrated in the parts parsers trust (signing block, central directory, EOCD, manifest entry), edits of the
binary manifest itself, truncations, duplicated and moved 4 KiB chunks, and edited size/offset/count fields. Every case
runs under a time limit so that a hang fails the test instead of stalling it.

SEALGATE_FUZZ_SEED=N picks another seed and SEALGATE_FUZZ_SCALE=K runs K times as many cases (for long runs by hand).
"""

from __future__ import annotations

import io
import json
import os
import random
import resource
import signal
import struct
import threading
import traceback
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sealgate.apk.verifier import ApkVerification, verify_apk
from sealgate.errors import SealgateError
from signing_tools import ApkLayout, apk_layout

SEED = int(os.environ.get("SEALGATE_FUZZ_SEED", "20240917"))
SCALE = int(os.environ.get("SEALGATE_FUZZ_SCALE", "1"))
#: Seconds one verify_apk call may take on a mutated ~20 KB APK before it counts as a hang.
CASE_TIME_LIMIT = 10
#: Extra address space one case may take; a parser that trusts a size field and allocates from it exceeds it.
#: Hashing threads reserve address space (stack and malloc arena) without using it, hence the share per core.
MEMORY_HEADROOM = (2 << 30) + (160 << 20) * (os.cpu_count() or 1)

#: Valid APKs covering every scheme, rotation, several signers, DSA/EC/RSA, and v4 with its .idsig.
BASES = (
    ("golden-aligned-v1v2v3-lineage-out.apk", None),
    ("original.apk", None),
    ("two-signers.apk", None),
    ("v1-only-with-ecdsa-sha256-1.2.840.10045.2.1-p256.apk", None),
    ("v2-only-with-dsa-sha256-1024.apk", None),
    ("v3-only-with-ecdsa-sha512-p256.apk", None),
    ("v31-rsa-2048_2-tgt-33-1-tgt-28.apk", None),
    ("v31-rsa-2048_2-tgt-10000-dev-release.apk", "v31-rsa-2048_2-tgt-10000-dev-release.apk.idsig"),
)

WINDOWS: tuple[tuple[int | None, int | None], ...] = (
    (None, None),
    (None, None),
    (None, None),
    (1, None),
    (18, 27),
    (24, None),
    (28, None),
    (33, None),
    (None, 23),
)


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes = field(repr=False)
    layout: ApkLayout = field(repr=False)
    idsig: bytes | None = field(repr=False)


@dataclass
class Mutant:
    """A mutated APK (and .idsig) plus a description precise enough to redo the mutation by hand."""

    data: bytes
    description: str
    idsig: bytes | None = None


Mutator = Callable[[Base, random.Random], Mutant]


def _flip_bits(data: bytes, rng: random.Random, start: int, end: int, count: int) -> tuple[bytes, str]:
    changed = bytearray(data)
    flips = []
    for _ in range(count):
        offset = rng.randrange(start, max(start + 1, end))
        bit = rng.randrange(8)
        changed[offset] ^= 1 << bit
        flips.append(f"{offset:#x}.{bit}")
    return bytes(changed), "flip bits " + ",".join(flips)


def _flips_in(region: Callable[[Base], tuple[int, int]]) -> Mutator:
    def mutate(base: Base, rng: random.Random) -> Mutant:
        start, end = region(base)
        data, what = _flip_bits(base.data, rng, start, end, rng.choice((1, 1, 2, 3, 8)))
        return Mutant(data, what, base.idsig)

    return mutate


def _whole_file(base: Base) -> tuple[int, int]:
    return 0, len(base.data)


def _signing_block(base: Base) -> tuple[int, int]:
    start = base.layout.signing_block_offset
    return (start, base.layout.cd_offset) if start is not None else (base.layout.cd_offset, base.layout.eocd_offset)


def _central_directory(base: Base) -> tuple[int, int]:
    return base.layout.cd_offset, base.layout.eocd_offset


def _eocd(base: Base) -> tuple[int, int]:
    return base.layout.eocd_offset, len(base.data)


def _manifest_entry(base: Base) -> tuple[int, int]:
    """The local header, name and (compressed) data of AndroidManifest.xml."""
    entry = base.layout.entry("AndroidManifest.xml")
    return entry.local_offset, entry.data_offset + entry.compressed_size


def _manifest_content(base: Base, rng: random.Random) -> Mutant:
    """Flip bits in the inflated binary XML and rebuild the ZIP, so the manifest parser itself sees the damage."""
    source = zipfile.ZipFile(io.BytesIO(base.data))
    manifest, what = _flip_bits(source.read("AndroidManifest.xml"), rng, 0, len(source.read("AndroidManifest.xml")), 4)
    if rng.random() < 0.3:
        cut = rng.randrange(len(manifest))
        manifest, what = manifest[:cut], f"{what}, then cut at {cut:#x}"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as rebuilt:
        for info in source.infolist():
            content = manifest if info.filename == "AndroidManifest.xml" else source.read(info)
            rebuilt.writestr(info, content, compress_type=info.compress_type)
    return Mutant(out.getvalue(), f"manifest XML: {what}; ZIP rebuilt without signing block", base.idsig)


def _truncate(base: Base, rng: random.Random) -> Mutant:
    size = len(base.data)
    cut = rng.choice((rng.randrange(size), rng.randrange(max(0, size - 200), size), rng.randrange(64)))
    return Mutant(base.data[:cut], f"truncate to {cut:#x} of {size:#x} bytes", base.idsig)


def _chunks(base: Base, rng: random.Random) -> Mutant:
    """Duplicate or move a 4 KiB chunk (chunk boundaries are where v2+ digests split the file)."""
    data = base.data
    size = rng.choice((4096, 4096, rng.randrange(1, 4096)))
    source = rng.randrange(len(data))
    chunk = data[source : source + size]
    if rng.random() < 0.5:
        target = rng.randrange(len(data) + 1)
        copied = data[:target] + chunk + data[target:]
        return Mutant(copied, f"copy {size:#x} bytes from {source:#x} to {target:#x}", base.idsig)
    rest = data[:source] + data[source + size :]
    target = rng.randrange(len(rest) + 1)
    moved = rest[:target] + chunk + rest[target:]
    return Mutant(moved, f"move {size:#x} bytes from {source:#x} to {target:#x}", base.idsig)


def _header_fields(layout: ApkLayout) -> list[tuple[int, int, str]]:
    """(offset, width, name) of every size, offset, count and method field a ZIP/APK reader trusts."""
    eocd = layout.eocd_offset
    fields = [(eocd + 8, 2, "EOCD disk entries"), (eocd + 10, 2, "EOCD total entries"), (eocd + 12, 4, "EOCD CD size")]
    fields += [(eocd + 16, 4, "EOCD CD offset"), (eocd + 20, 2, "EOCD comment length")]
    for entry in layout.entries:
        central, local = entry.central_offset, entry.local_offset
        for delta, width, what in ((8, 2, "flags"), (10, 2, "method"), (16, 4, "CRC"), (20, 4, "compressed size")):
            fields.append((central + delta, width, f"CD {entry.name} {what}"))
        for delta, width, what in ((24, 4, "size"), (28, 2, "name length"), (30, 2, "extra length")):
            fields.append((central + delta, width, f"CD {entry.name} {what}"))
        fields += [(central + 32, 2, f"CD {entry.name} comment length"), (central + 42, 4, f"CD {entry.name} offset")]
        for delta, width, what in ((6, 2, "flags"), (8, 2, "method"), (18, 4, "compressed size"), (22, 4, "size")):
            fields.append((local + delta, width, f"local {entry.name} {what}"))
        fields += [(local + 26, 2, f"local {entry.name} name length"), (local + 28, 2, f"local {entry.name} extra")]
    if layout.signing_block_offset is not None:
        fields += [
            (layout.signing_block_offset, 8, "block size (head)"),
            (layout.cd_offset - 24, 8, "block size (tail)"),
        ]
        for block_id, value, length in layout.signing_block_pairs:
            fields += [(value - 12, 8, f"pair {block_id:#x} length"), (value - 4, 4, f"pair {block_id:#x} ID")]
            # The nested length prefixes of v2/v3 blocks: signers, signer, signed data, digests, first digest.
            fields += [(value + delta, 4, f"pair {block_id:#x} +{delta}") for delta in range(0, min(length, 24), 4)]
    return fields


def _edit_field(base: Base, rng: random.Random) -> Mutant:
    offset, width, name = rng.choice(_header_fields(base.layout))
    mask = (1 << (8 * width)) - 1
    original = int.from_bytes(base.data[offset : offset + width], "little")
    random_value, one_bit = rng.randrange(mask + 1), original ^ (1 << rng.randrange(8 * width))
    extremes = (0, 1, mask, mask >> 1, (mask >> 1) + 1, 4096, len(base.data))
    value = rng.choice((*extremes, original + 1, original - 1, original * 2, random_value, one_bit))
    value &= mask
    data = base.data[:offset] + value.to_bytes(width, "little") + base.data[offset + width :]
    return Mutant(data, f"set {name} at {offset:#x} from {original:#x} to {value:#x}", base.idsig)


def _idsig(base: Base, rng: random.Random) -> Mutant:
    """Damage the v4 .idsig that accompanies an intact APK (header fields are 32-bit little-endian)."""
    idsig = base.idsig or b""
    if rng.random() < 0.5 and len(idsig) >= 16:
        offset = 4 * rng.randrange(min(len(idsig), 64) // 4)
        value = rng.choice((0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(idsig), rng.randrange(1 << 32)))
        changed = idsig[:offset] + struct.pack("<I", value) + idsig[offset + 4 :]
        return Mutant(base.data, f"idsig: set u32 at {offset:#x} to {value:#x}", changed)
    if rng.random() < 0.3:
        cut = rng.randrange(len(idsig) + 1)
        return Mutant(base.data, f"idsig: truncate to {cut:#x}", idsig[:cut])
    changed, what = _flip_bits(idsig, rng, 0, len(idsig), rng.choice((1, 2, 8)))
    return Mutant(base.data, f"idsig: {what}", changed)


#: Strategy name -> (mutator, number of cases, whether only bases with an .idsig apply).
STRATEGIES: dict[str, tuple[Mutator, int, bool]] = {
    "flip-anywhere": (_flips_in(_whole_file), 200, False),
    "flip-signing-block": (_flips_in(_signing_block), 200, False),
    "flip-central-directory": (_flips_in(_central_directory), 150, False),
    "flip-eocd": (_flips_in(_eocd), 100, False),
    "flip-manifest-entry": (_flips_in(_manifest_entry), 100, False),
    "manifest-content": (_manifest_content, 150, False),
    "truncate": (_truncate, 150, False),
    "chunks": (_chunks, 150, False),
    "header-fields": (_edit_field, 250, False),
    "idsig": (_idsig, 50, True),
}


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` in the code under test can swallow it."""


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread; without xdist's main-thread runner there is no guard
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _Hang(f"verify_apk took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _memory_limit(headroom: int) -> Iterator[None]:
    """Cap the address space near current use, so an allocation sized by a corrupt field fails loudly."""
    if not os.path.exists("/proc/self/statm"):  # not Linux: run without the cap rather than guess the usage
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as statm:
        in_use = int(statm.read().split()[0]) * resource.getpagesize()
    limit = in_use + headroom if hard == resource.RLIM_INFINITY else min(hard, in_use + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _check_report(result: object) -> str | None:
    """What is wrong with a returned report, or None: it must be a coherent ApkVerification the CLI can print."""
    if not isinstance(result, ApkVerification):
        return f"returned {type(result).__name__}, not ApkVerification"
    json.dumps(result.to_json())
    if result.verified and (result.errors or not result.signers or not result.schemes):
        return f"verified with errors={result.errors} signers={result.signers} schemes={result.schemes}"
    if not result.verified and not result.errors:
        return "rejected without saying why (no errors)"
    return None


def _run_case(mutant: Mutant, directory: Path, window: tuple[int | None, int | None]) -> str | None:
    apk = directory / "mutant.apk"
    apk.write_bytes(mutant.data)
    idsig = None
    if mutant.idsig is not None:
        idsig = directory / "mutant.apk.idsig"
        idsig.write_bytes(mutant.idsig)
    try:
        with _time_limit(CASE_TIME_LIMIT), _memory_limit(MEMORY_HEADROOM):
            result = verify_apk(apk, min_sdk=window[0], max_sdk=window[1], idsig=idsig)
    except SealgateError:
        return None
    except _Hang as exc:
        return str(exc)
    except Exception:  # anything else is the bug this test exists to find
        return traceback.format_exc(limit=-6)
    try:
        return _check_report(result)
    except Exception:
        return "report cannot be serialised: " + traceback.format_exc(limit=-4)


@pytest.fixture(scope="module")
def bases(apksig_vectors: Path) -> list[Base]:
    files = apksig_vectors / "files"
    loaded = []
    for name, idsig in BASES:
        data = (files / name).read_bytes()
        loaded.append(Base(name, data, apk_layout(data), (files / idsig).read_bytes() if idsig else None))
    return loaded


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_mutants_give_a_report_or_a_sealgate_error(bases: list[Base], tmp_path: Path, strategy: str) -> None:
    mutate, count, needs_idsig = STRATEGIES[strategy]
    usable = [base for base in bases if base.idsig is not None or not needs_idsig]
    failures = []
    for index in range(count * SCALE):
        case_seed = f"{SEED}:{strategy}:{index}"
        rng = random.Random(case_seed)
        base = rng.choice(usable)
        window = rng.choice(WINDOWS)
        mutant = mutate(base, rng)
        problem = _run_case(mutant, tmp_path, window)
        if problem is not None:
            kept = tmp_path / f"failure-{index}.apk"
            (tmp_path / "mutant.apk").rename(kept)
            if mutant.idsig is not None:
                (tmp_path / "mutant.apk.idsig").rename(kept.with_name(kept.name + ".idsig"))
            failures.append(
                f"[seed {case_seed!r}] {base.name}, min_sdk={window[0]} max_sdk={window[1]}, {mutant.description}"
                f"\n  input kept at {kept}\n  {problem.strip()}"
            )
    assert not failures, f"{len(failures)} of {count * SCALE} mutants escaped:\n" + "\n".join(failures[:15])
