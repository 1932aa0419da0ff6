"""APK Signature Schemes v2, v3 and v3.1: parse the signer blocks and check them, as apksig does.

v2 and v3 share one layout (length-prefixed signers, each with signed data, signatures and a public key); v3 adds
per-signer SDK ranges and the proof-of-rotation lineage, and v3.1 is a v3 block under another ID that Android 13+
prefers, so all three are verified by one parser with a few scheme-specific rules. Verification has two phases so
that the orchestrator can hash the APK once for all schemes: `parse_scheme_block` checks everything that does not
need the file's contents and says which content digests it needs; `BlockVerification.finish` compares the
computed digests and applies the checks that span signers (SDK coverage, consistent lineages).

The order of checks and the issue codes follow apksig's V2SchemeVerifier / V3SchemeVerifier, so that a verdict and
its first reason match the reference on the same input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sealgate.apk import algorithms
from sealgate.apk.algorithms import ContentDigest, SignatureAlgorithm
from sealgate.apk.binary_reader import BinaryReader, Truncated
from sealgate.apk.certificate import Certificate, CertificateError, load_public_key
from sealgate.apk.lineage import Lineage, parse_lineage_attribute
from sealgate.apk.report import Scheme, SchemeResult, SignerResult
from sealgate.apk.signer_blocks import MIN_SDK_WITH_V31_SUPPORT, signatures_to_verify
from sealgate.errors import LineageFormatError

STRIPPING_PROTECTION_ATTR_ID = 0xBEEFF00D
PROOF_OF_ROTATION_ATTR_ID = 0x3BA06F8C
ROTATION_MIN_SDK_VERSION_ATTR_ID = 0x559F8B02
ROTATION_ON_DEV_RELEASE_ATTR_ID = 0xC2A6B3BA
MAX_V2_SIGNERS = 10


@dataclass(slots=True)
class _ParsedSigner:
    result: SignerResult
    #: (signature algorithm id, digest) as listed in the signed data.
    digests: list[tuple[int, bytes]] = field(default_factory=list)
    attribute_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class BlockVerification:
    """The first phase of a v2/v3/v3.1 verification; call `finish` once the content digests are known."""

    result: SchemeResult
    signers: list[_ParsedSigner]
    digests_needed: set[ContentDigest]
    min_sdk: int
    max_sdk: int
    rotation_min_sdk: int | None

    def finish(self, actual: dict[ContentDigest, bytes]) -> SchemeResult:
        result = self.result
        if result.all_errors():
            return result
        code = "V2_SIG_APK_DIGEST_DID_NOT_VERIFY" if result.scheme is Scheme.V2 else "V3_SIG_APK_DIGEST_DID_NOT_VERIFY"
        for signer in self.signers:
            for algorithm_id, expected in signer.digests:
                algorithm = algorithms.find(algorithm_id)
                if algorithm is None or algorithm.content_digest not in self.digests_needed:
                    continue
                computed = actual.get(algorithm.content_digest)
                if computed is None:
                    continue
                if computed != expected:
                    signer.result.error(
                        code,
                        f"APK contents do not match the {algorithm.content_digest.name} digest signed by signer "
                        f"#{signer.result.index + 1}: expected {expected.hex()}, computed {computed.hex()}",
                    )
                else:
                    result.content_digests[algorithm_id] = computed
                    signer.result.content_digests[algorithm_id] = computed
        if result.scheme is not Scheme.V2:
            self._check_v3_coverage()
        return result

    def _check_v3_coverage(self) -> None:
        result = self.result
        ordered = sorted(self.signers, key=lambda signer: signer.result.max_sdk or 0)
        first_min = 0
        last_max = 0
        last_lineage = 0
        lineages: list[Lineage] = []
        for signer in ordered:
            current_min = signer.result.min_sdk or 0
            current_max = signer.result.max_sdk or 0
            if first_min == 0:
                first_min = current_min
            elif current_min != last_max + 1 and not (
                current_min == last_max and ROTATION_ON_DEV_RELEASE_ATTR_ID in signer.attribute_ids
            ):
                result.error("V3_INCONSISTENT_SDK_VERSIONS", "v3 signers' SDK ranges overlap or leave a gap")
                break
            last_max = current_max
            lineage = signer.result.lineage
            if lineage is not None:
                if len(lineage.nodes) < last_lineage:
                    result.error("V3_INCONSISTENT_LINEAGES", "a v3 signer for newer platforms has a shorter lineage")
                    break
                last_lineage = len(lineage.nodes)
                lineages.append(lineage)
        needed_max = self.rotation_min_sdk - 1 if self.rotation_min_sdk is not None else self.max_sdk
        # A v3.1 block only serves the levels from its own signers' minimum up; below that the v3 block applies,
        # so only v3 must reach down to the window's bottom.
        # apksig checks a v3.1 block from the window's top only: v3.1 may start above the levels v3 covers.
        needed_min = self.min_sdk if result.scheme is Scheme.V3 else self.max_sdk
        if first_min > needed_min or last_max < needed_max:
            result.error(
                "V3_MISSING_SDK_VERSIONS",
                f"{result.scheme.label} signers cover SDK {first_min}-{last_max}, not all of {needed_min}-{needed_max}",
            )
        if lineages:
            longest = lineages[-1]
            for lineage in lineages[:-1]:
                if [n.certificate for n in lineage.nodes] != [
                    n.certificate for n in longest.nodes[: len(lineage.nodes)]
                ]:
                    result.error("V3_INCONSISTENT_LINEAGES", "v3 signers carry lineages that do not agree")
                    break
            result.lineage = longest


def parse_scheme_block(
    scheme: Scheme,
    block: bytes,
    min_sdk: int,
    max_sdk: int,
    *,
    found_scheme_ids: frozenset[int] = frozenset(),
    supported_scheme_ids: frozenset[int] = frozenset(),
    rotation_min_sdk: int | None = None,
) -> BlockVerification:
    """First phase of verifying one v2, v3 or v3.1 block over the SDK window [min_sdk, max_sdk]."""
    result = SchemeResult(scheme, present=True)
    verification = BlockVerification(result, [], set(), min_sdk, max_sdk, rotation_min_sdk)
    prefix = "V2" if scheme is Scheme.V2 else "V3"
    try:
        signers = BinaryReader(block).slice()
    except Truncated:
        result.error(f"{prefix}_SIG_MALFORMED_SIGNERS", f"the {scheme.label} block's signer list is malformed")
        return verification
    if not signers.remaining:
        result.error(f"{prefix}_SIG_NO_SIGNERS", f"the {scheme.label} block has no signers")
        return verification
    count = 0
    while signers.remaining:
        signer = _ParsedSigner(SignerResult(index=count))
        count += 1
        verification.signers.append(signer)
        result.signers.append(signer.result)
        if scheme is Scheme.V2 and count > MAX_V2_SIGNERS:
            result.error(
                "V2_SIG_MAX_SIGNATURES_EXCEEDED",
                f"the v2 block has more than {MAX_V2_SIGNERS} signers, which Android refuses",
            )
            return verification
        try:
            _parse_signer(scheme, signers.slice(), signer, verification, found_scheme_ids, supported_scheme_ids)
        except Truncated as exc:
            signer.result.error(f"{prefix}_SIG_MALFORMED_SIGNER", f"signer #{count} is malformed: {exc}")
            return verification
    return verification


def _parse_signer(
    scheme: Scheme,
    reader: BinaryReader,
    signer: _ParsedSigner,
    verification: BlockVerification,
    found_scheme_ids: frozenset[int],
    supported_scheme_ids: frozenset[int],
) -> None:
    out = signer.result
    prefix = "V2" if scheme is Scheme.V2 else "V3"
    label = scheme.label
    signed_data = reader.slice()
    signed_bytes = signed_data.data[signed_data.pos : signed_data.end]
    if scheme is not Scheme.V2:
        out.min_sdk = reader.i32()
        out.max_sdk = reader.i32()
        if out.min_sdk < 0 or out.min_sdk > out.max_sdk:
            out.error(
                "V3_SIG_INVALID_SDK_VERSIONS", f"signer declares an invalid SDK range {out.min_sdk}-{out.max_sdk}"
            )
    signatures = reader.slice()
    public_key_bytes = reader.length_prefixed()

    listed: list[tuple[int, bytes]] = []
    supported: list[tuple[SignatureAlgorithm, bytes]] = []
    while signatures.remaining:
        try:
            entry = signatures.slice()
            algorithm_id = entry.u32()
            signature = entry.length_prefixed()
        except Truncated:
            out.error(f"{prefix}_SIG_MALFORMED_SIGNATURE", f"signature record #{len(listed) + 1} is malformed")
            return
        listed.append((algorithm_id, signature))
        algorithm = algorithms.find(algorithm_id)
        if algorithm is None:
            out.warn(f"{prefix}_SIG_UNKNOWN_SIG_ALGORITHM", f"unknown signature algorithm {algorithm_id:#06x} ignored")
            continue
        supported.append((algorithm, signature))
    if not listed:
        out.error(f"{prefix}_SIG_NO_SIGNATURES", f"{label} signer #{out.index + 1} has no signatures")
        return

    if scheme is Scheme.V2:
        window = (verification.min_sdk, verification.max_sdk)
    else:
        window = (out.min_sdk or 0, out.max_sdk or 0)
    to_verify, problem = signatures_to_verify(supported, *window)
    if to_verify is None:
        out.error(f"{prefix}_SIG_NO_SUPPORTED_SIGNATURES", f"{label} signer #{out.index + 1}: {problem}")
        return
    for algorithm, signature in to_verify:
        try:
            public_key = load_public_key(public_key_bytes)
        except CertificateError as exc:
            out.error(f"{prefix}_SIG_MALFORMED_PUBLIC_KEY", f"{label} signer's public key is malformed: {exc}")
            return
        if algorithms.key_type_of(public_key) != algorithm.key_type:
            out.error(
                f"{prefix}_SIG_MALFORMED_PUBLIC_KEY",
                f"{label} signer's public key is not an {algorithm.key_type} key, as {algorithm.name} needs",
            )
            return
        if not algorithm.verify(public_key, signature, signed_bytes):
            out.error(f"{prefix}_SIG_DID_NOT_VERIFY", f"{label} signature ({algorithm.name}) did not verify")
            return
        out.verified_algorithms.append(f"{algorithm.id:#06x}")
        verification.digests_needed.add(algorithm.content_digest)

    digests = signed_data.slice()
    certificates = signed_data.slice()
    if scheme is not Scheme.V2:
        signed_min = signed_data.i32()
        if signed_min != out.min_sdk:
            out.error(
                "V3_MIN_SDK_VERSION_MISMATCH_BETWEEN_SIGNER_AND_SIGNED_DATA_RECORD",
                f"signed minSdkVersion {signed_min} differs from the signer record's {out.min_sdk}",
            )
        signed_max = signed_data.i32()
        if signed_max != out.max_sdk:
            out.error(
                "V3_MAX_SDK_VERSION_MISMATCH_BETWEEN_SIGNER_AND_SIGNED_DATA_RECORD",
                f"signed maxSdkVersion {signed_max} differs from the signer record's {out.max_sdk}",
            )
    attributes = signed_data.slice()

    index = 0
    while certificates.remaining:
        index += 1
        encoded = certificates.length_prefixed()
        try:
            out.certificates.append(Certificate.from_der(encoded))
        except CertificateError as exc:
            out.error(f"{prefix}_SIG_MALFORMED_CERTIFICATE", f"{label} certificate #{index} is malformed: {exc}")
            return
    if not out.certificates:
        out.error(f"{prefix}_SIG_NO_CERTIFICATES", f"{label} signer #{out.index + 1} has no certificates")
        return
    if not _same_public_key(out.certificates[0], public_key_bytes):
        out.error(
            f"{prefix}_SIG_PUBLIC_KEY_MISMATCH_BETWEEN_CERTIFICATE_AND_SIGNATURES_RECORD",
            f"the {label} signer's certificate holds a different public key than its signature record",
        )
        return

    while digests.remaining:
        try:
            entry = digests.slice()
            algorithm_id = entry.u32()
            signer.digests.append((algorithm_id, entry.length_prefixed()))
        except Truncated:
            out.error(f"{prefix}_SIG_MALFORMED_DIGEST", f"digest record #{len(signer.digests) + 1} is malformed")
            return
    if [a for a, _ in listed] != [a for a, _ in signer.digests]:
        out.error(
            f"{prefix}_SIG_SIG_ALG_MISMATCH_BETWEEN_SIGNATURES_AND_DIGESTS_RECORDS",
            f"the {label} signatures and digests records list different algorithms",
        )
        return
    _check_attributes(scheme, attributes, signer, verification, found_scheme_ids, supported_scheme_ids)


def _check_attributes(
    scheme: Scheme,
    attributes: BinaryReader,
    signer: _ParsedSigner,
    verification: BlockVerification,
    found_scheme_ids: frozenset[int],
    supported_scheme_ids: frozenset[int],
) -> None:
    out = signer.result
    prefix = "V2" if scheme is Scheme.V2 else "V3"
    rotation_attr_found = False
    count = 0
    while attributes.remaining:
        count += 1
        try:
            attribute = attributes.slice()
            attribute_id = attribute.u32()
        except Truncated:
            out.error(f"{prefix}_SIG_MALFORMED_ADDITIONAL_ATTRIBUTE", f"additional attribute #{count} is malformed")
            return
        value = attribute.rest()
        signer.attribute_ids.append(attribute_id)
        if scheme is Scheme.V2:
            if attribute_id == STRIPPING_PROTECTION_ATTR_ID and len(value) < 4:
                out.error("V2_SIG_MALFORMED_ADDITIONAL_ATTRIBUTE", f"additional attribute #{count} is too short")
                return
            if attribute_id == STRIPPING_PROTECTION_ATTR_ID:
                (referenced,) = struct.unpack_from("<I", value)
                if referenced in supported_scheme_ids:
                    if referenced not in found_scheme_ids:
                        out.error(
                            "V2_SIG_MISSING_APK_SIG_REFERENCED",
                            f"the v2 signature says the APK is also signed with scheme v{referenced}, but that "
                            "signature is missing: it was stripped",
                        )
                else:
                    out.warn("V2_SIG_UNKNOWN_APK_SIG_SCHEME_ID", f"v2 signer references unknown scheme {referenced}")
            else:
                out.warn("V2_SIG_UNKNOWN_ADDITIONAL_ATTRIBUTE", f"unknown v2 additional attribute {attribute_id:#x}")
            continue
        if attribute_id == PROOF_OF_ROTATION_ATTR_ID:
            _read_lineage(value, out)
        elif attribute_id == ROTATION_MIN_SDK_VERSION_ATTR_ID:
            rotation_attr_found = True
            if verification.max_sdk >= MIN_SDK_WITH_V31_SUPPORT and len(value) < 4:
                out.error("V3_SIG_MALFORMED_ADDITIONAL_ATTRIBUTE", f"additional attribute #{count} is too short")
                return
            if verification.max_sdk >= MIN_SDK_WITH_V31_SUPPORT:
                (declared,) = struct.unpack_from("<i", value)
                if verification.rotation_min_sdk is not None:
                    if declared != verification.rotation_min_sdk:
                        out.error(
                            "V31_ROTATION_MIN_SDK_MISMATCH",
                            f"v3 signer says rotation starts at SDK {declared}, but the v3.1 block starts at "
                            f"{verification.rotation_min_sdk}",
                        )
                else:
                    out.error(
                        "V31_BLOCK_MISSING",
                        f"v3 signer says a v3.1 block rotates the key from SDK {declared}, but there is no v3.1 "
                        "block: it was stripped",
                    )
        elif attribute_id == ROTATION_ON_DEV_RELEASE_ATTR_ID:
            if scheme is not Scheme.V31:
                out.warn(
                    "V31_ROTATION_TARGETS_DEV_RELEASE_ATTR_ON_V3_SIGNER",
                    "a v3.0 signer carries the v3.1 'targets development release' attribute",
                )
        else:
            out.warn("V3_SIG_UNKNOWN_ADDITIONAL_ATTRIBUTE", f"unknown v3 additional attribute {attribute_id:#x}")
    if verification.rotation_min_sdk is not None and not rotation_attr_found and scheme is Scheme.V3:
        out.warn(
            "V31_ROTATION_MIN_SDK_ATTR_MISSING",
            f"the v3 signer does not record that rotation starts at SDK {verification.rotation_min_sdk}",
        )


def _read_lineage(value: bytes, out: SignerResult) -> None:
    try:
        lineage = parse_lineage_attribute(value)
    except LineageFormatError as exc:
        out.error("V3_SIG_POR_DID_NOT_VERIFY", f"the proof-of-rotation lineage does not verify: {exc}")
        return
    out.lineage = lineage
    signer_certificate = out.certificates[0]
    if not lineage.nodes or lineage.nodes[-1].certificate != signer_certificate:
        out.error(
            "V3_SIG_POR_CERT_MISMATCH",
            "the proof-of-rotation lineage does not end with this signer's certificate",
        )


def _same_public_key(certificate: Certificate, public_key_bytes: bytes) -> bool:
    if certificate.public_key_der == public_key_bytes:
        return True
    try:
        left = load_public_key(certificate.public_key_der).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        right = load_public_key(public_key_bytes).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (CertificateError, ValueError):
        return False
    return left == right
