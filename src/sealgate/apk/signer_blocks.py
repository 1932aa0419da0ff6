"""The layout of v2/v3/v3.1 signer blocks, readable without any cryptography.

Two things live here because the verifier needs them before it loads the (slow to import) cryptographic
libraries: apksig's length-prefixed reading rules, and apksig's choice of which signatures to verify for an SDK
window. With them the verifier knows which content digests the signatures will need and starts hashing the APK on
the other cores while the signatures themselves are being checked.
"""

from __future__ import annotations

import struct

from sealgate.apk import algorithms
from sealgate.apk.algorithms import ContentDigest, SignatureAlgorithm
from sealgate.apk.report import Scheme

ANDROID_N = 24
MIN_SDK_WITH_V31_SUPPORT = 33


class Malformed(Exception):
    """Internal: a length prefix or integer runs past its buffer."""


class Reader:
    """Little-endian reader over a bytes slice with apksig's length-prefix rules."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def u32(self) -> int:
        if self.remaining < 4:
            raise Malformed("integer runs past the end of its block")
        (value,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def i32(self) -> int:
        value = self.u32()
        return value - (1 << 32) if value >= 1 << 31 else value

    def slice(self) -> Reader:
        length = self.u32()
        if length >= 1 << 31:
            raise Malformed("negative length")
        if length > self.remaining:
            raise Malformed(f"length {length} runs past the {self.remaining} remaining bytes")
        start = self.pos
        self.pos += length
        return Reader(self.data, start, start + length)

    def bytes_lp(self) -> bytes:
        return self.slice().rest()

    def rest(self) -> bytes:
        value = self.data[self.pos : self.end]
        self.pos = self.end
        return value


def signatures_to_verify(
    supported: list[tuple[SignatureAlgorithm, bytes]], min_sdk: int, max_sdk: int
) -> tuple[list[tuple[SignatureAlgorithm, bytes]] | None, str]:
    """apksig's choice: the best signature for each platform level that introduced one of the algorithms.

    Every platform in the window must understand at least one signature, so the oldest algorithm offered must be
    known at `min_sdk`; then, per "first supported at" level, the strongest content digest wins.
    """
    best: dict[int, tuple[SignatureAlgorithm, bytes]] = {}
    oldest = None
    for algorithm, signature in supported:
        if algorithm.min_sdk > max_sdk:
            continue
        oldest = algorithm.min_sdk if oldest is None else min(oldest, algorithm.min_sdk)
        current = best.get(algorithm.min_sdk)
        if current is None or algorithms.is_better(algorithm, current[0]):
            best[algorithm.min_sdk] = (algorithm, signature)
    if oldest is not None and min_sdk < oldest:
        return None, f"no signature is understood by SDK {min_sdk} (the oldest algorithm offered needs SDK {oldest})"
    if not best:
        return None, "no supported signature"
    return sorted(best.values(), key=lambda item: item[0].id), ""


def planned_content_digests(scheme: Scheme, block: bytes, min_sdk: int, max_sdk: int) -> set[ContentDigest]:
    """The content digests a verification of `block` over [min_sdk, max_sdk] will compare, read from its layout.

    Only a plan: a malformed signer simply contributes nothing, and the real verification decides what is needed.
    """
    planned: set[ContentDigest] = set()
    try:
        signers = Reader(block).slice()
        while signers.remaining:
            signer = signers.slice()
            signer.slice()  # signed data
            window = (max(min_sdk, ANDROID_N), max_sdk)
            if scheme is not Scheme.V2:
                window = (signer.i32(), signer.i32())
            signatures = signer.slice()
            supported: list[tuple[SignatureAlgorithm, bytes]] = []
            while signatures.remaining:
                entry = signatures.slice()
                algorithm = algorithms.find(entry.u32())
                if algorithm is not None:
                    supported.append((algorithm, b""))
            chosen, _ = signatures_to_verify(supported, *window)
            planned.update(algorithm.content_digest for algorithm, _ in chosen or [])
    except Malformed:
        pass
    return planned
