"""A/B payload speed: build (each compression), sign, verify and apply a payload of one partition image.

The image mixes what real partitions hold: a quarter random (already compressed or encrypted data), a quarter
zeros, half text-like. Each step runs `sealgate ota payload ...` as a subprocess, so start-up is included as a
user pays it; wall time and peak memory (from the child's rusage) are reported.

    .venv/bin/python benchmarks/bench_payload.py               # 64 MiB image
    .venv/bin/python benchmarks/bench_payload.py --size 512M --json
"""

from __future__ import annotations

import argparse
import datetime
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1024 * 1024
SEALGATE = [sys.executable, "-c", "import sys; from sealgate.cli.main import main; sys.exit(main())"]


def _size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _image(path: Path, size: int) -> None:
    generator = random.Random(1)
    text = b"".join(
        b"ro.build.fingerprint=sealgate/%d:14/UQ1A/%d:user/release-keys\n" % (n, n * 7) for n in range(40000)
    )
    with path.open("wb") as out:
        for index in range(size // (2 * MiB)):
            kind = index % 4
            if kind == 0:
                out.write(generator.randbytes(2 * MiB))
            elif kind == 1:
                out.write(bytes(2 * MiB))
            else:
                out.write((text * 2)[index % 1000 :][: 2 * MiB])


def _keystore(work: Path, env: dict[str, str]) -> Path:
    keystore = work / "ks"
    if not keystore.exists():
        subprocess.run([*SEALGATE, "keys", "init", str(keystore), "--roles", "ota", "--key-type", "rsa-2048"],
                       env=env, check=True, capture_output=True)  # fmt: skip
    return keystore


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one child (its own rusage, from wait4)."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        child = subprocess.Popen([*SEALGATE, *args], env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(args)} failed: {errors.read().decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64M", help="image size (K, M, G suffixes; a multiple of 2 MiB)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sealgate-bench-payload"))
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    size = _size(options.size)
    work = options.workdir
    (work / "images").mkdir(parents=True, exist_ok=True)
    image = work / "images" / "system.img"
    if not image.exists() or image.stat().st_size != size:
        _image(image, size)
    env = {**os.environ, "SEALGATE_PASSPHRASE": "benchmark passphrase"}
    keystore = _keystore(work, env)
    certificate = keystore / "public" / "ota.x509.pem"
    results: dict[str, dict[str, float]] = {}
    for compression in ("zstd", "xz", "none"):
        unsigned, signed = work / f"unsigned-{compression}.bin", work / f"payload-{compression}.bin"
        steps = {
            f"build {compression}": [
                "ota",
                "payload",
                "build",
                str(work / "images"),
                str(unsigned),
                "--compression",
                compression,
            ],
            f"sign {compression}": ["ota", "payload", "sign", str(unsigned), str(signed), "--keystore", str(keystore)],
            f"verify {compression}": ["ota", "payload", "verify", str(signed), "--certs", str(certificate)],
        }
        for name, args in steps.items():
            seconds, peak = _run(args, env)
            results[name] = {"seconds": round(seconds, 3), "MB/s": round(size / MiB / seconds, 1),
                             "peak_MiB": round(peak, 1)}  # fmt: skip
        target = work / f"applied-{compression}"
        shutil.rmtree(target, ignore_errors=True)
        seconds, peak = _run(["ota", "payload", "apply", str(signed), str(target), "--certs", str(certificate)], env)
        results[f"apply {compression}"] = {"seconds": round(seconds, 3), "MB/s": round(size / MiB / seconds, 1),
                                           "peak_MiB": round(peak, 1),
                                           "payload_MiB": round(signed.stat().st_size / MiB, 1)}  # fmt: skip
        assert filecmp.cmp(target / "system.img", image, shallow=False)
    if options.json:
        print(json.dumps({"image_MiB": size / MiB, "results": results}))
        return
    print(f"{size / MiB:.0f} MiB image, {os.cpu_count()} cores, {datetime.datetime.now():%Y-%m-%d %H:%M}")
    for name, values in results.items():
        extra = f", payload {values['payload_MiB']} MiB" if "payload_MiB" in values else ""
        print(f"  {name:12} {values['seconds']:7.2f} s  {values['MB/s']:7.1f} MB/s  peak {values['peak_MiB']:6.1f} MiB"
              + extra)  # fmt: skip


if __name__ == "__main__":
    main()
