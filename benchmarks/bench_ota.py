"""Time `sealgate ota sign` against `signapk -w`, and `sealgate ota verify` against `openssl dgst -sha256`.

    .venv/bin/python benchmarks/bench_ota.py                                   # ~2 GB package, work files in /tmp
    .venv/bin/python benchmarks/bench_ota.py --size 256M                       # quick run
    .venv/bin/python benchmarks/bench_ota.py --workdir /dev/shm/sealgate-bench # no disk: compute only

Not a pytest test (issue 6's benchmark acceptance). Needs `java` and Debian's signapk, `openssl`, and the `sealgate`
console script in the venv. The package is built once and cached in --workdir: an A/B OTA package as
ota_from_target_files lays it out, a STORED payload.bin of incompressible bytes (a CrAU header, then random data:
what a full payload of compressed partition images looks like to a signer), payload_properties.txt with its hashes,
care_map.pb, and META-INF/com/android/metadata naming the property files' offsets.

Two pairs of rows, each pair alternated run by run so a busy moment on the machine hits both tools, best of --runs:
`java -jar signapk.jar -w` (key from a PKCS#8 file) against `sealgate ota sign` (key from an encrypted keystore,
scrypt included, with its check of the output and the fsync before the rename; signapk does neither), and `openssl
dgst -sha256` over the signed package (one SHA-256 pass on one core: the floor) against `sealgate ota verify`.
Start-up is included. Peak RSS is the child's `ru_maxrss`. Then each output is checked: ours with `openssl cms
-verify` over the signed range, signapk's with our verifier.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sign import PASSPHRASE, Row, measure, prepare_keystore
from bench_verify import (
    WRITE_CHUNK,
    _make_key,
    _run_quietly,
    benchmark_arguments,
    compile_sources,
    find_sealgate,
    warm_up,
)

SIGNAPK = Path("/usr/share/signapk/signapk.jar")
DEFAULT_SIZE = "2000M"
TARGET_SIGN_SPEEDUP = 3.0
TARGET_VERIFY_RATIO = 1.2
TARGET_RSS_MB = 150.0
#: Python's zipfile writes a ZIP64 record for entries from 2 GiB on; recovery's packages stay below 4 GiB without.
_MAX_PAYLOAD = (1 << 31) - 1
_KEY_ROLE = "releasekey"


def build_package(target: Path, size: int) -> None:
    """An unsigned A/B package of about `size` bytes, as ota_from_target_files stores one (entries STORED)."""
    payload_size = min(size - 64 * 1024, _MAX_PAYLOAD)
    header = b"CrAU" + struct.pack(">QQI", 2, 0, 0)  # magic, version 2, manifest and metadata-signature sizes
    payload_hash = hashlib.sha256()
    with zipfile.ZipFile(target, "w") as out:
        info = _stored("payload.bin", payload_size)
        with out.open(info, "w") as entry:
            entry.write(header)
            payload_hash.update(header)
            left = payload_size - len(header)
            while left:
                data = os.urandom(min(left, WRITE_CHUNK))
                entry.write(data)
                payload_hash.update(data)
                left -= len(data)
        properties = (
            f"FILE_HASH={_b64(payload_hash.digest())}\nFILE_SIZE={payload_size}\n"
            f"METADATA_HASH={_b64(hashlib.sha256(header).digest())}\nMETADATA_SIZE={len(header)}\n"
        ).encode()
        out.writestr(_stored("payload_properties.txt", len(properties)), properties)
        out.writestr(_stored("care_map.pb", 4096), os.urandom(4096))
        tokens = ",".join(
            f"{item.filename}:{_data_offset(item)}:{item.file_size}"
            for item in out.infolist()
            if item.filename in ("payload.bin", "payload_properties.txt", "care_map.pb")
        )
        metadata = (
            "ota-required-cache=0\nota-type=AB\npost-build=sealgate/bench/bench:14/UQ1A.240105.004/1:user/release-keys\n"
            "post-security-patch-level=2024-01-05\npost-timestamp=1704412800\npre-device=bench\n"
            f"ota-streaming-property-files={tokens}\n"
        ).encode()
        out.writestr(_stored("META-INF/com/android/metadata", len(metadata)), metadata)


def _stored(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(2009, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    return info


def _data_offset(info: zipfile.ZipInfo) -> int:
    return info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def prepare_package(workdir: Path, size: int) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    package = workdir / f"ota-{size >> 20}M-unsigned.zip"
    if not package.exists():
        print(f"building {package}; this happens once", file=sys.stderr)
        partial = package.with_suffix(".partial")
        build_package(partial, size)
        partial.rename(package)
    return package


def openssl_cms_verifies(package: Path, certificate: Path) -> bool:
    """`openssl cms -verify` of a whole-file signature over its signed range, streamed to it (never in memory)."""
    size = package.stat().st_size
    with package.open("rb") as handle:
        footer = os.pread(handle.fileno(), 6, size - 6)
        signature_start, comment_size = footer[0] | footer[1] << 8, footer[4] | footer[5] << 8
        block = os.pread(handle.fileno(), signature_start - 6, size - signature_start)
        with tempfile.NamedTemporaryFile(suffix=".p7b") as signature:
            signature.write(block)
            signature.flush()
            command = [
                "openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", signature.name,
                "-content", "/dev/stdin", "-CAfile", str(certificate), "-purpose", "any", "-out", "/dev/null",
            ]  # fmt: skip
            cms = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert cms.stdin is not None
            offset, end = 0, size - comment_size - 2
            with contextlib.suppress(BrokenPipeError):
                while offset < end:
                    data = os.pread(handle.fileno(), min(WRITE_CHUNK, end - offset), offset)
                    cms.stdin.write(data)
                    offset += len(data)
                cms.stdin.close()
            assert cms.stderr is not None
            errors = cms.stderr.read()
            cms.wait()
    if cms.returncode != 0:
        print(errors.decode(errors="replace"), file=sys.stderr)
    return cms.returncode == 0


def cross_check(sealgate: str, ours: Path, theirs: Path, our_cert: Path, their_cert: Path) -> dict[str, bool]:
    verify = subprocess.run([sealgate, "ota", "verify", str(theirs), "--certs", str(their_cert)], capture_output=True)
    return {
        "openssl cms verifies sealgate's signature over the signed range": openssl_cms_verifies(ours, our_cert),
        "sealgate verifies signapk's output": verify.returncode == 0,
    }


def spread(row: Row) -> float:
    """How noisy the row's runs were: (slowest - fastest) / fastest."""
    return (max(row.times) - row.best) / row.best if row.best else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_arguments(__doc__, artifact="OTA package", size=DEFAULT_SIZE)
    parser.add_argument("--keep", action="store_true", help="keep the signed packages (2 x size) in --workdir")
    args = parser.parse_args(argv)
    for tool in ("java", "openssl"):
        if subprocess.run(["which", tool], capture_output=True, check=False).returncode != 0:
            sys.exit(f"{tool} is not installed")
    if not SIGNAPK.is_file():
        sys.exit(f"{SIGNAPK} is missing (apt-get install signapk)")
    os.environ["SEALGATE_PASSPHRASE"] = PASSPHRASE
    sealgate = args.sealgate or find_sealgate()
    compile_sources()
    workdir: Path = args.workdir
    package = prepare_package(workdir, args.size)
    key, cert = _make_key(workdir)
    keystore = prepare_keystore(workdir)
    our_cert = keystore / f"{_KEY_ROLE}.x509.pem"
    ours, theirs = workdir / "ota-signed-by-sealgate.zip", workdir / "ota-signed-by-signapk.zip"
    signing = (
        Row("signapk -w", ["java", "-jar", str(SIGNAPK), "-w", str(cert), str(key), str(package), str(theirs)], theirs),
        Row("sealgate ota sign", [sealgate, "ota", "sign", str(package), str(ours), "--keystore", str(keystore),
                                  "--key", _KEY_ROLE], ours),
    )  # fmt: skip
    warm_up(package)
    measure(signing, max(1, args.runs))
    if signing[1].exit_status != 0:
        _run_quietly(signing[1].command)  # prints why
    verifying = (
        Row("openssl dgst -sha256", ["openssl", "dgst", "-sha256", str(ours)]),
        Row("sealgate ota verify", [sealgate, "ota", "verify", str(ours), "--certs", str(our_cert)]),
    )
    warm_up(ours)
    measure(verifying, max(1, args.runs))
    checks = cross_check(sealgate, ours, theirs, our_cert, cert)
    if not args.keep:
        ours.unlink()
        theirs.unlink()
    sign_speedup = signing[0].best / signing[1].best if signing[1].best else 0.0
    verify_ratio = verifying[1].best / verifying[0].best if verifying[0].best else 0.0
    # Signing hashes the signed range in one sequential pass (it cannot be split across cores), so one SHA-256 pass
    # is its floor: how close it comes shows what is left to gain, whatever signapk does.
    sign_to_floor = signing[1].best / verifying[0].best if verifying[0].best else 0.0
    targets = {
        f"sign >= {TARGET_SIGN_SPEEDUP:g}x faster than signapk -w": sign_speedup >= TARGET_SIGN_SPEEDUP,
        f"verify <= {TARGET_VERIFY_RATIO:g}x openssl dgst -sha256": verify_ratio <= TARGET_VERIFY_RATIO,
        f"sign peak RSS < {TARGET_RSS_MB:g} MB": signing[1].peak_rss_mb < TARGET_RSS_MB,
        f"verify peak RSS < {TARGET_RSS_MB:g} MB": verifying[1].peak_rss_mb < TARGET_RSS_MB,
        "every command exits 0": all(row.exit_status == 0 for row in (*signing, *verifying)),
        **checks,
    }
    rows = (*signing, *verifying)
    size = package.stat().st_size
    if args.json:
        report = {"package": str(package), "size": size, "runs": args.runs, "cpus": os.cpu_count()}
        rows_json = [{**asdict(row), "best": row.best, "spread": spread(row)} for row in rows]
        ratios = {"sign_speedup": sign_speedup, "verify_ratio": verify_ratio, "sign_to_one_hash_pass": sign_to_floor}
        print(json.dumps({**report, "rows": rows_json, **ratios, "targets": targets}, indent=2, default=str))
        return 0 if all(targets.values()) else 1
    size_mb = size / (1 << 20)
    print(f"{package} ({size_mb:.0f} MiB), best of {args.runs}, {os.cpu_count()} CPUs, start-up included")
    header = f"{'command':<22} {'best s':>7} {'median':>7} {'spread':>7} {'MB/s':>6} {'peak RSS':>9} exit  runs"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.label:<22} {row.best:7.2f} {statistics.median(row.times):7.2f} {spread(row):6.0%} "
            f"{size_mb / row.best if row.best else 0:6.0f} {row.peak_rss_mb:7.0f}MB {row.exit_status:4d}  {row.times}"
        )
    print(f"\nsealgate ota sign is {sign_speedup:.2f}x faster than signapk -w")
    print(f"sealgate ota verify takes {verify_ratio:.2f}x openssl dgst -sha256's time")
    print(f"sealgate ota sign takes {sign_to_floor:.2f}x one SHA-256 pass (openssl dgst), the floor for signing")
    for name, met in targets.items():
        print(f"  [{'met ' if met else 'MISS'}] {name}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
