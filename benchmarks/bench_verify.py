"""Time `sealgate apk verify` against `openssl dgst -sha256` and `apksigner verify` on one large APK.

Not a pytest test: run it by hand (see benchmarks/README.md). It builds, once, a game-like APK (a real unsigned APK
from the apksig vectors, so the manifest is valid, plus a few large STORED incompressible asset packs and some
deflated files), signs it v1+v2+v3 with apksigner, and caches it in --workdir. Then, in one run and after a warm-up
read so every tool sees the file in the page cache, it times each command as a subprocess (start-up included),
best of --runs, and prints a table with the ratios to openssl (the floor: one SHA-256 pass over the file on one
core), the speed-up over apksigner and sealgate's peak RSS.
"""

from __future__ import annotations

import argparse
import base64
import compileall
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VECTORS = Path(os.environ.get("SEALGATE_VECTORS", PROJECT_ROOT.parent / "shared" / "vectors"))
BASE_APK = "golden-aligned-in.apk"  # minSdkVersion 23: apksigner signs v1, v2 and v3 by default
STORED_SHARE = 0.85  # the rest is deflated: code, text, uncompressed-friendly resources
STORED_PACKS = 4
DEFLATED_FILES = 24
WRITE_CHUNK = 8 << 20
#: GNU time, to learn a command's own peak RSS (see `time_once`); without it the peak includes this process's.
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None

#: (target name, description, check) evaluated on the measured rows.
TARGETS = (
    ("ours --min-sdk 24 <= 1.0x openssl", "sealgate --min-sdk 24", "ratio", 1.0),
    ("ours default <= 1.6x openssl", "sealgate", "ratio", 1.6),
    (">= 3x faster than apksigner --min-sdk-version 24", "sealgate --min-sdk 24", "speedup", 3.0),
    ("peak RSS < 100 MB", "sealgate", "rss", 100.0),
    ("peak RSS < 100 MB (--min-sdk 24)", "sealgate --min-sdk 24", "rss", 100.0),
)


@dataclass
class Row:
    label: str
    command: list[str]
    best_s: float = 0.0
    all_s: tuple[float, ...] = ()
    peak_rss_mb: float = 0.0
    exit_status: int = 0
    ratio_to_openssl: float | None = None
    speedup_over_apksigner: float | None = None


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)i?b?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"size {text!r} is not like 1G, 256M or 64M")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match.group(2)]
    size = int(float(match.group(1)) * scale)
    if size < 1 << 20:
        raise argparse.ArgumentTypeError("size must be at least 1M")
    return size


def _run_quietly(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.strip()}")


def _make_key(workdir: Path) -> tuple[Path, Path]:
    """A throwaway RSA-2048 key (PKCS#8 DER) and self-signed certificate, as apksigner --key/--cert take them."""
    key, cert = workdir / "bench.pk8", workdir / "bench.x509.pem"
    if key.exists() and cert.exists():
        return key, cert
    pem = workdir / "bench.key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"]
    _run_quietly([*request, "-subj", "/CN=sealgate benchmark", "-keyout", str(pem), "-out", str(cert)])
    _run_quietly(["openssl", "pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in", str(pem), "-out", str(key)])
    return key, cert


def _write_entry(archive: zipfile.ZipFile, name: str, size: int, compress: int, text_like: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = compress
    info.file_size = size  # known up front, so zipfile writes no ZIP64 record for entries under 2 GiB
    with archive.open(info, "w") as entry:
        left = size
        while left:
            n = min(left, WRITE_CHUNK)
            # base64 of random bytes deflates to about 75 %, like real code and text; raw random does not deflate.
            entry.write(base64.b64encode(os.urandom(n))[:n] if text_like else os.urandom(n))
            left -= n


def build_unsigned(vectors: Path, target: Path, size: int) -> None:
    base = vectors / "apksig" / "files" / BASE_APK
    if not base.exists():
        sys.exit(f"{base} not found: set SEALGATE_VECTORS to the shared vectors folder")
    stored = int(size * STORED_SHARE) // STORED_PACKS
    deflated = (size - stored * STORED_PACKS) // DEFLATED_FILES
    with zipfile.ZipFile(base) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            if not info.filename.startswith("META-INF/"):
                out.writestr(info, source.read(info), compress_type=info.compress_type)
        for index in range(STORED_PACKS):
            _write_entry(out, f"assets/pack{index}.obb", stored, zipfile.ZIP_STORED, text_like=False)
        for index in range(DEFLATED_FILES):
            _write_entry(out, f"assets/data/level{index:02d}.json", deflated, zipfile.ZIP_DEFLATED, text_like=True)


def prepare_apk(workdir: Path, vectors: Path, size: int) -> Path:
    """The signed benchmark APK for `size`, built and signed on first use and then reused."""
    workdir.mkdir(parents=True, exist_ok=True)
    label = f"{size >> 20}M"
    signed = workdir / f"bench-{label}.apk"
    if signed.exists():
        return signed
    unsigned, aligned = workdir / f"bench-{label}-unsigned.apk", workdir / f"bench-{label}-aligned.apk"
    print(f"building {signed} ({label}); this happens once", file=sys.stderr)
    build_unsigned(vectors, unsigned, size)
    _run_quietly(["zipalign", "-f", "-p", "4", str(unsigned), str(aligned)])
    key, cert = _make_key(workdir)
    partial = signed.with_suffix(".partial")
    flags = ["--v1-signing-enabled", "true", "--v2-signing-enabled", "true", "--v3-signing-enabled", "true"]
    flags += ["--v4-signing-enabled", "false", "--key", str(key), "--cert", str(cert)]
    _run_quietly(["apksigner", "sign", *flags, "--out", str(partial), str(aligned)])
    partial.rename(signed)
    unsigned.unlink()
    aligned.unlink()
    return signed


def warm_up(path: Path) -> None:
    """Read the file once so that every tool is timed on the page cache, not on the disk."""
    with path.open("rb", buffering=0) as handle:
        while handle.read(WRITE_CHUNK):
            pass


def time_once(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MB) of the command and its exit status.

    Linux carries a process's peak RSS across exec, so a command forked straight from this Python process (tens of
    MB once it has imported sealgate for the keystore) would report at least that much. GNU time, when installed,
    starts the command from its own small image instead and writes the command's own ru_maxrss to a file.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        launcher = [TIME, "-q", "-f", "%M", "-o", report.name] if TIME else []
        start = time.perf_counter()
        process = subprocess.Popen([*launcher, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        peak_kib = usage.ru_maxrss
        if TIME:
            lines = [line for line in report.read().splitlines() if line.strip().isdigit()]
            peak_kib = int(lines[-1]) if lines else peak_kib
    return elapsed, peak_kib / 1024, process.returncode


def measure(rows: list[Row], runs: int) -> None:
    for row in rows:
        times = []
        for _ in range(runs):
            elapsed, rss, status = time_once(row.command)
            times.append(elapsed)
            row.peak_rss_mb = max(row.peak_rss_mb, rss)
            row.exit_status = row.exit_status or status
        row.all_s = tuple(round(t, 3) for t in times)
        row.best_s = min(times)
        print(f"  {row.label:<34} best {row.best_s:7.2f} s of {row.all_s}", file=sys.stderr)


def commands(apk: Path, sealgate: str) -> list[Row]:
    file = str(apk)
    return [
        Row("openssl dgst -sha256", ["openssl", "dgst", "-sha256", file]),
        Row("apksigner", ["apksigner", "verify", file]),
        Row("apksigner --min-sdk-version 24", ["apksigner", "verify", "--min-sdk-version", "24", file]),
        Row("sealgate", [sealgate, "apk", "verify", file]),
        Row("sealgate --min-sdk 24", [sealgate, "apk", "verify", "--min-sdk", "24", file]),
    ]


def derive(rows: list[Row]) -> None:
    by_label = {row.label: row for row in rows}
    floor = by_label["openssl dgst -sha256"].best_s
    for row in rows:
        row.ratio_to_openssl = row.best_s / floor if floor else None
    by_label["sealgate"].speedup_over_apksigner = by_label["apksigner"].best_s / by_label["sealgate"].best_s
    ours_24, theirs_24 = by_label["sealgate --min-sdk 24"], by_label["apksigner --min-sdk-version 24"]
    ours_24.speedup_over_apksigner = theirs_24.best_s / ours_24.best_s


def evaluate(rows: list[Row]) -> list[dict[str, object]]:
    by_label = {row.label: row for row in rows}
    results: list[dict[str, object]] = []
    for name, label, kind, limit in TARGETS:
        row = by_label[label]
        value = {"ratio": row.ratio_to_openssl, "speedup": row.speedup_over_apksigner, "rss": row.peak_rss_mb}[kind]
        met = value is not None and (value >= limit if kind == "speedup" else value <= limit)
        results.append({"target": name, "value": value, "met": met and row.exit_status == 0})
    return results


def print_table(apk: Path, rows: list[Row], targets: list[dict[str, object]], runs: int) -> None:
    size_mb = apk.stat().st_size / (1 << 20)
    print(f"{apk} ({size_mb:.0f} MiB), best of {runs}, {os.cpu_count()} CPUs, start-up included")
    header = f"{'command':<32} {'best s':>8} {'MB/s':>7} {'x openssl':>10} {'vs apksigner':>13} {'peak RSS':>9} exit"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row.ratio_to_openssl:.2f}x" if row.ratio_to_openssl is not None else "-"
        speedup = f"{row.speedup_over_apksigner:.1f}x faster" if row.speedup_over_apksigner else ""
        throughput = size_mb / row.best_s if row.best_s else 0.0
        print(
            f"{row.label:<32} {row.best_s:8.2f} {throughput:7.0f} {ratio:>10} {speedup:>13}"
            f" {row.peak_rss_mb:7.0f}MB {row.exit_status:4d}"
        )
    print()
    for target in targets:
        value = target["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else "-"
        print(f"  [{'met ' if target['met'] else 'MISS'}] {target['target']:<50} measured {shown}")


def find_sealgate() -> str:
    beside_python = Path(sys.executable).with_name("sealgate")
    found = str(beside_python) if beside_python.exists() else shutil.which("sealgate")
    if found is None:
        sys.exit("the sealgate console script is not installed (pip install -e . in the project's venv)")
    return found


def compile_sources() -> None:
    """Time sealgate as an installed tool runs: from byte-compiled modules (PYTHONDONTWRITEBYTECODE would otherwise
    make every run compile its sources again, which no installed copy does)."""
    compileall.compile_dir(str(PROJECT_ROOT / "src"), quiet=1)


def benchmark_arguments(description: str | None, artifact: str = "APK", size: str = "1G") -> argparse.ArgumentParser:
    """The options every benchmark takes (work directory, size, runs, vectors, which sealgate, --json)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    workdir = Path("/tmp/sealgate-bench")
    parser.add_argument("--workdir", type=Path, default=workdir, help=f"cache for built {artifact}s")
    parser.add_argument(
        "--size", type=parse_size, default=parse_size(size), help=f"{artifact} size: {size} (default), 128M..."
    )
    parser.add_argument("--runs", type=int, default=3, help="timed runs per command; the best counts (default 3)")
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS, help="the shared vectors folder")
    parser.add_argument("--sealgate", default=None, help="sealgate console script (default: the one beside python)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__).parse_args(argv)
    for tool in ("openssl", "apksigner", "zipalign"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    apk = prepare_apk(args.workdir, args.vectors, args.size)
    compile_sources()
    rows = commands(apk, args.sealgate or find_sealgate())
    warm_up(apk)
    measure(rows, max(1, args.runs))
    derive(rows)
    targets = evaluate(rows)
    if args.json:
        report = {"apk": str(apk), "size": apk.stat().st_size, "runs": args.runs, "cpus": os.cpu_count()}
        print(json.dumps({**report, "rows": [asdict(row) for row in rows], "targets": targets}, indent=2))
    else:
        print_table(apk, rows, targets, args.runs)
    return 0 if all(row.exit_status == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
