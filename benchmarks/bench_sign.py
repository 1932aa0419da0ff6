"""Time `sealgate apk sign` against `apksigner sign` on one large APK, side by side in one run.

    .venv/bin/python benchmarks/bench_sign.py                 # ~1 GB APK, best of 3, work files in /tmp
    .venv/bin/python benchmarks/bench_sign.py --size 128M     # quick run
    .venv/bin/python benchmarks/bench_sign.py --workdir /dev/shm/sealgate-bench   # no disk: compute only

Not a pytest test. Needs `apksigner` and `openssl` (Debian packages), the `sealgate` console script in the venv and
the shared vectors. The unsigned APK is bench_verify's (a real unsigned APK from the apksig vectors, minSdkVersion
23, plus large STORED incompressible packs and deflated text-like files), built once and cached in --workdir.

Both tools sign it with v1, v2 and v3 and an RSA-2048 key: apksigner from a PKCS#8 file, sealgate from an encrypted
keystore. What each run includes is what a user waits for: start-up, for sealgate decrypting the key (scrypt),
its self-check of the signed APK (structure, signatures, identity; `--verify` would re-hash everything), and
fsyncing it before the rename (apksigner neither checks nor fsyncs; its output is still being written back to
disk when it exits). Dirty pages are flushed (untimed) before every run so no run pays for the previous one, runs
alternate between the tools, and the best of --runs counts.
The table gives the speed-up over apksigner and sealgate's peak RSS; each tool's output is then checked by the
other tool's verifier. On a slow disk the fsync of a 1 GB file dominates: --workdir on a tmpfs shows the compute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_verify import (
    _make_key,
    benchmark_arguments,
    build_unsigned,
    find_sealgate,
    time_once,
    warm_up,
)

PASSPHRASE = "sealgate benchmark passphrase (not a secret)"
TARGET_SPEEDUP = 3.0
TARGET_RSS_MB = 150.0
SCHEMES = ("v1", "v2", "v3")


@dataclass
class Row:
    label: str
    command: list[str]
    #: What the command writes, if anything; deleted (untimed) before each run.
    output: Path | None = None
    times: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    exit_status: int = 0

    @property
    def best(self) -> float:
        return min(self.times) if self.times else 0.0


def prepare_unsigned(workdir: Path, vectors: Path, size: int) -> Path:
    """bench_verify's unsigned APK for `size`, built on first use and then reused."""
    workdir.mkdir(parents=True, exist_ok=True)
    unsigned = workdir / f"bench-{size >> 20}M-unsigned-input.apk"
    if not unsigned.exists():
        print(f"building {unsigned}; this happens once", file=sys.stderr)
        partial = unsigned.with_suffix(".partial")
        build_unsigned(vectors, partial, size)
        partial.rename(unsigned)
    return unsigned


def prepare_keystore(workdir: Path) -> Path:
    """An encrypted keystore with an RSA-2048 releasekey, the same key type apksigner gets."""
    from sealgate.custody.keystore import Keystore
    from sealgate.custody.roles import KeySpec

    directory = workdir / "keystore"
    if not (directory / "keystore.json").exists():
        Keystore.create(
            directory, PASSPHRASE, roles=["releasekey"], key_overrides={"releasekey": KeySpec.parse("rsa-2048")}
        )
    return directory


def commands(unsigned: Path, workdir: Path, sealgate: str) -> tuple[Row, Row]:
    key, cert = _make_key(workdir)
    theirs = [
        "apksigner", "sign", "--v1-signing-enabled", "true", "--v2-signing-enabled", "true",
        "--v3-signing-enabled", "true", "--v4-signing-enabled", "false", "--key", str(key), "--cert", str(cert),
        "--out", str(workdir / "signed-by-apksigner.apk"), str(unsigned),
    ]  # fmt: skip
    ours = [
        sealgate, "apk", "sign", str(unsigned), str(workdir / "signed-by-sealgate.apk"),
        "--keystore", str(prepare_keystore(workdir)), "--key", "releasekey",
        *(arg for scheme in SCHEMES for arg in (f"--{scheme}", "on")),
    ]  # fmt: skip
    return (
        Row("apksigner sign (v1+v2+v3)", theirs, workdir / "signed-by-apksigner.apk"),
        Row("sealgate apk sign (v1+v2+v3)", ours, workdir / "signed-by-sealgate.apk"),
    )


def measure(rows: Sequence[Row], runs: int) -> None:
    """Alternate the tools so that a busy moment on the machine does not hit one tool's runs only.

    Before each run the previous output is deleted and the page cache's dirty data goes to disk (untimed), so no run
    pays for freeing or writing back what an earlier run wrote; what a run writes itself (sealgate fsyncs its
    output, apksigner does not) is part of its time.
    """
    for _ in range(runs):
        for row in rows:
            if row.output is not None:
                row.output.unlink(missing_ok=True)
            os.sync()
            elapsed, rss, status = time_once(row.command)
            row.times.append(round(elapsed, 3))
            row.peak_rss_mb = max(row.peak_rss_mb, rss)
            row.exit_status = row.exit_status or status
            print(f"  {row.label:<36} {elapsed:7.2f} s  {rss:6.0f} MB  exit {status}", file=sys.stderr)


def cross_check(workdir: Path, sealgate: str) -> dict[str, bool]:
    """Each tool's output must verify with the other tool (v1 included: the APK's minSdkVersion is 23)."""
    ours, theirs = workdir / "signed-by-sealgate.apk", workdir / "signed-by-apksigner.apk"
    apksigner = subprocess.run(["apksigner", "verify", str(ours)], capture_output=True, check=False)
    sealgate_run = subprocess.run([sealgate, "apk", "verify", str(theirs)], capture_output=True, check=False)
    return {
        "apksigner verifies sealgate's output": apksigner.returncode == 0,
        "sealgate verifies apksigner's output": sealgate_run.returncode == 0,
    }


def main(argv: list[str] | None = None) -> int:
    args = benchmark_arguments(__doc__).parse_args(argv)
    for tool in ("openssl", "apksigner"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            sys.exit(f"{tool} is not installed")
    os.environ["SEALGATE_PASSPHRASE"] = PASSPHRASE
    sealgate = args.sealgate or find_sealgate()
    unsigned = prepare_unsigned(args.workdir, args.vectors, args.size)
    rows = commands(unsigned, args.workdir, sealgate)
    warm_up(unsigned)
    measure(rows, max(1, args.runs))
    theirs, ours = rows
    speedup = theirs.best / ours.best if ours.best else 0.0
    checks = cross_check(args.workdir, sealgate)
    targets = {
        f">= {TARGET_SPEEDUP:g}x faster than apksigner": speedup >= TARGET_SPEEDUP,
        f"peak RSS < {TARGET_RSS_MB:g} MB": ours.peak_rss_mb < TARGET_RSS_MB,
        **checks,
    }
    ok = all(targets.values()) and theirs.exit_status == 0 and ours.exit_status == 0
    size_mb = unsigned.stat().st_size / (1 << 20)
    if args.json:
        report = {"apk": str(unsigned), "size": unsigned.stat().st_size, "runs": args.runs, "cpus": os.cpu_count()}
        rows_json = [{**asdict(row), "best": row.best} for row in rows]
        print(json.dumps({**report, "rows": rows_json, "speedup": speedup, "targets": targets}, indent=2))
        return 0 if ok else 1
    print(f"{unsigned} ({size_mb:.0f} MiB), best of {args.runs}, {os.cpu_count()} CPUs, start-up included")
    header = f"{'command':<32} {'best s':>8} {'MB/s':>7} {'peak RSS':>9} exit  runs"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.label:<32} {row.best:8.2f} {size_mb / row.best if row.best else 0:7.0f} {row.peak_rss_mb:7.0f}MB"
            f" {row.exit_status:4d}  {row.times}"
        )
    print(f"\nsealgate is {speedup:.1f}x faster than apksigner")
    for name, met in targets.items():
        print(f"  [{'met ' if met else 'MISS'}] {name}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
