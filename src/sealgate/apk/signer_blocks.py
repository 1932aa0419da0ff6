"""The layout of v2/v3/v3.1 signer blocks, readable without any cryptography.

Two things live here because the verifier needs them before it loads the (slow to import) cryptographic
libraries: the walk over the signer records, and apksig's choice of which signatures to verify for an SDK
window. With them the verifier knows which content digests the signatures will need and starts hashing the APK on
the other cores while the signatures themselves are being checked.
"""

from __future__ import annotations

from sealgate.apk import algorithms
from sealgate.apk.algorithms import ContentDigest, SignatureAlgorithm
from sealgate.apk.binary_reader import BinaryReader, Truncated
from sealgate.apk.report import Scheme

ANDROID_N = 24
MIN_SDK_WITH_V31_SUPPORT = 33


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
        signers = BinaryReader(block).slice()
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
    except Truncated:
        pass
    return planned


def v3_signer_sdk_ranges(block: bytes) -> list[tuple[int, int]]:
    """The (minSdk, maxSdk) each signer of a v3/v3.1 block declares, read from the layout alone."""
    ranges: list[tuple[int, int]] = []
    try:
        signers = BinaryReader(block).slice()
        while signers.remaining:
            signer = signers.slice()
            signer.slice()  # signed data
            ranges.append((signer.i32(), signer.i32()))
    except Truncated:
        pass
    return ranges
