"""Helpers for the OS updater's tests (not a test module): OTA signing keys, factory images, and a loopback HTTP
server with Range support and fault injection (truncated responses, corrupted bytes, ignored or wrong ranges)."""

from __future__ import annotations

import hashlib
import http.server
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import _in_ci, require_tool
from sealgate.ota.signer import signed_range
from sealgate.signing import PrivateKeySigner
from signing_tools import certified_signer

#: Debian's build of AOSP's signapk (package signapk), the peer that signs OTA packages as releasetools does.
SIGNAPK = Path("/usr/share/signapk/signapk.jar")


def require_signapk() -> list[str]:
    """The command that runs signapk (`java -jar signapk.jar`); skips (or fails under CI) when it is missing."""
    java = require_tool("java")
    if not SIGNAPK.is_file():
        message = f"{SIGNAPK} is missing (.ci/run installs the Debian package signapk)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return [java, "-jar", str(SIGNAPK)]


def openssl_cms_verify(signed: Path, certificate: Path, work: Path) -> subprocess.CompletedProcess[str]:
    """OpenSSL's CMS verifier over a whole-file signed package's signed range, with `certificate` as the only trust
    anchor (an independent check of what recovery's rules accept); the signature and content go to `work`."""
    openssl = require_tool("openssl")
    data = signed.read_bytes()
    signature_start = data[-6] | data[-5] << 8
    (work / "content").write_bytes(signed_range(signed))
    (work / "sig.der").write_bytes(data[len(data) - signature_start : len(data) - 6])
    return subprocess.run(
        [openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", str(work / "sig.der"), "-content",
         str(work / "content"), "-CAfile", str(certificate), "-purpose", "any", "-out", "/dev/null"],
        capture_output=True, text=True,
    )  # fmt: skip


@dataclass(frozen=True)
class OtaKey:
    signer: PrivateKeySigner
    cert_path: Path
    #: The private key as PKCS#8 DER, for signapk (only ever inside a test's temporary directory).
    pk8_path: Path


def make_ota_key(directory: Path, label: str, kind: str = "rsa") -> OtaKey:
    """A throwaway OTA signing key and its self-signed certificate (sha256WithRSA or ecdsa-with-SHA256)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    signer, certificate = certified_signer(f"ota-{label}", key, f"ota {label}")
    pem = directory / f"{label}.x509.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pk8 = directory / f"{label}.pk8"
    pk8.write_bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))  # fmt: skip
    return OtaKey(signer, pem, pk8)


def write_images(directory: Path, seed: bytes, sizes: dict[str, int]) -> Path:
    """Partition images with content derived from `seed` (blocks differ between seeds, some blocks are zero)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        blocks = bytearray()
        index = 0
        while len(blocks) < size:
            if index % 5 == 3:
                blocks += bytes(4096)
            else:
                blocks += hashlib.sha256(seed + name.encode() + index.to_bytes(4, "big")).digest() * 128
            index += 1
        (directory / f"{name}.img").write_bytes(bytes(blocks[:size]))
    return directory


def snapshot(device: Path) -> dict[str, bytes]:
    """Every byte of the device's database and slots (downloads and work files aside)."""
    files = {}
    for path in sorted(device.rglob("*")):
        relative = path.relative_to(device).as_posix()
        if path.is_file() and not relative.startswith(("downloads/", "ota-work/")):
            files[relative] = path.read_bytes()
    return files


@dataclass
class Faults:
    """What the server does wrong on the next request(s)."""

    #: Send only this many body bytes of the next response, then close the connection.
    truncate_next: int | None = None
    #: The same for the next response for one path only (path -> bytes sent).
    truncate_path: dict[str, int] = field(default_factory=dict)
    #: Flip a byte of every response body.
    corrupt: bool = False
    ignore_range: bool = False
    wrong_content_range: bool = False
    ranges: list[str | None] = field(default_factory=list)


class RangeServer(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    faults: Faults

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        faults = self.server.faults
        data = self.server.files.get(self.path.lstrip("/"))
        header = self.headers.get("Range")
        faults.ranges.append(header)
        if data is None:
            self.send_error(404)
            return
        if faults.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and not faults.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            first = start + 1 if faults.wrong_content_range else start
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        path = self.path.lstrip("/")
        if path in faults.truncate_path:
            faults.truncate_next = faults.truncate_path.pop(path)
        if faults.truncate_next is not None:
            body, faults.truncate_next = body[: faults.truncate_next], None
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextmanager
def range_server(files: dict[str, bytes]) -> Iterator[RangeServer]:
    """A loopback HTTP server for `files` (path -> bytes), in a thread, with Range support written here."""
    server = RangeServer(("127.0.0.1", 0), _Handler)
    server.files = files
    server.faults = Faults()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
