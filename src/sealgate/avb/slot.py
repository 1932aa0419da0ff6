"""A directory of partition images as one verified-boot chain: re-sign it, and verify it as a bootloader would.

Partition images are `<partition>.img` files in one directory. The top-level vbmeta.img is signed by the key the
device trusts (built in, or avb_custom_key); its chain-partition descriptors name other partitions whose own vbmeta
(vbmeta_system.img, or the vbmeta behind boot.img's AVB footer) must be signed by the key the descriptor carries;
hash and hashtree descriptors, in the top-level image or a chained one, pin the content of the other partitions.

`verify_image_set` follows libavb's avb_slot_verify (libavb/avb_slot_verify.c): the top-level signature and key,
each chained image's signature and its key against the chain descriptor (chained images may not chain further),
every hash descriptor's digest and every hashtree descriptor's root digest recomputed from the images, and the
rollback index of each rollback index location, which the caller compares with the device's stored values.

`resign_image_set` re-signs the chained images with their own keys, then the top-level vbmeta.img with the chain
descriptors updated to those keys, so that the set verifies again under the distribution's keys.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealgate.apk.report import Issue
from sealgate.avb.descriptors import ChainPartitionDescriptor, HashDescriptor, HashtreeDescriptor
from sealgate.avb.footer import read_footer, read_image, resign_footer_image
from sealgate.avb.hashtree import write_hash_tree
from sealgate.avb.vbmeta import (
    FLAG_HASHTREE_DISABLED,
    FLAG_VERIFICATION_DISABLED,
    VbmetaImage,
    replace_chain_partition_keys,
    resign_vbmeta,
    verify_vbmeta,
)
from sealgate.durable import replace_file
from sealgate.errors import AvbFormatError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from sealgate.signing import Signer

TOP_LEVEL = "vbmeta"
_CHUNK = 1024 * 1024


@dataclass
class ImageSetVerification:
    """The verdict on a directory of images; `rollback_indexes` maps rollback index location to the image's index."""

    directory: str
    public_key_digest: str | None = None
    rollback_indexes: dict[int, int] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return not self.errors

    def fail(self, code: str, message: str) -> None:
        self.errors.append(Issue(code, message))

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "verified": self.verified,
            "public_key_digest": self.public_key_digest,
            "rollback_indexes": {str(location): index for location, index in sorted(self.rollback_indexes.items())},
            "checked": self.checked,
            "errors": [issue.to_json() for issue in self.errors],
        }


def verify_image_set(directory: Path, trusted_keys: Sequence[PublicKeyTypes | bytes]) -> ImageSetVerification:
    """Verify vbmeta.img and everything it vouches for in `directory`, as avb_slot_verify would on a locked device."""
    report = ImageSetVerification(str(directory))
    top = _load(directory, TOP_LEVEL, report)
    if top is None:
        return report
    verdict = verify_vbmeta(top, trusted_keys)
    report.public_key_digest = verdict.public_key_digest
    for issue in verdict.errors:
        report.fail(issue.code, f"vbmeta.img: {issue.message}")
    if not verdict.signature_valid:
        return report
    if top.flags & (FLAG_HASHTREE_DISABLED | FLAG_VERIFICATION_DISABLED):
        report.fail("verification-disabled", f"vbmeta.img sets flags {top.flags}: verity or verification is off")
    report.rollback_indexes[top.rollback_index_location] = top.rollback_index
    report.checked.append(TOP_LEVEL)
    _check_descriptors(directory, top, TOP_LEVEL, report, chained_allowed=True)
    return report


def resign_image_set(
    directory: Path,
    signer: Signer,
    *,
    chained: Mapping[str, Signer] | None = None,
    rollback_index: int | None = None,
    chained_rollback_indexes: Mapping[str, int] | None = None,
) -> ImageSetVerification:
    """Re-sign every chained image with its signer and vbmeta.img with `signer`, then verify the set.

    Every chain descriptor of vbmeta.img needs a signer in `chained` (a partition left signed by its old key, often
    a test key, would make the release trust that key); UsageError otherwise. Images are replaced durably one by
    one, chained ones first, so an interruption leaves a set that fails verification rather than a mixed one that
    passes.
    """
    chained = dict(chained or {})
    indexes = dict(chained_rollback_indexes or {})
    top_path = directory / f"{TOP_LEVEL}.img"
    _, top = read_image(top_path)
    chains = top.chain_partitions()
    unsigned = sorted(set(chains) - set(chained))
    if unsigned:
        raise UsageError(f"vbmeta.img chains to {', '.join(unsigned)}: name a signer for each chained partition")
    unknown = sorted(set(chained) - set(chains))
    if unknown:
        raise UsageError(f"vbmeta.img has no chain partition descriptor for {', '.join(unknown)}")
    for partition, chained_signer in sorted(chained.items()):
        path = directory / f"{partition}.img"
        if not path.is_file():
            raise UsageError(f"chained partition {partition} has no image {path}")
        if read_footer(path) is not None:
            resign_footer_image(path, chained_signer, rollback_index=indexes.get(partition))
        else:
            replace_file(path, resign_vbmeta(_small(path), chained_signer, rollback_index=indexes.get(partition)))
    keys = {partition: chained_signer.public_key for partition, chained_signer in chained.items()}
    replace_file(
        top_path,
        replace_chain_partition_keys(_small(top_path), keys, signer, rollback_index=rollback_index)
        if keys
        else resign_vbmeta(_small(top_path), signer, rollback_index=rollback_index),
    )
    return verify_image_set(directory, [signer.public_key])


def _check_descriptors(
    directory: Path, vbmeta: VbmetaImage, owner: str, report: ImageSetVerification, *, chained_allowed: bool
) -> None:
    for descriptor in vbmeta.descriptors:
        if isinstance(descriptor, ChainPartitionDescriptor):
            if not chained_allowed:
                report.fail("nested-chain", f"{owner}.img chains to {descriptor.partition_name}; only vbmeta may chain")
                continue
            _check_chain(directory, descriptor, report)
        elif isinstance(descriptor, HashDescriptor):
            _check_hash(directory, descriptor, owner, report)
        elif isinstance(descriptor, HashtreeDescriptor):
            _check_hashtree(directory, descriptor, owner, report)


def _check_chain(directory: Path, descriptor: ChainPartitionDescriptor, report: ImageSetVerification) -> None:
    partition = descriptor.partition_name
    chained = _load(directory, partition, report)
    if chained is None:
        return
    verdict = verify_vbmeta(chained, [descriptor.public_key])
    for issue in verdict.errors:
        code = "chain-key-mismatch" if issue.code == "untrusted-key" else issue.code
        report.fail(code, f"{partition}.img: {issue.message} (vbmeta.img's chain descriptor names another key)"
                    if code == "chain-key-mismatch" else f"{partition}.img: {issue.message}")  # fmt: skip
    if not verdict.verified:
        return
    location = descriptor.rollback_index_location
    if location in report.rollback_indexes:
        report.fail("rollback-location-reused", f"{partition} reuses rollback index location {location}")
    report.rollback_indexes[location] = chained.rollback_index
    report.checked.append(partition)
    _check_descriptors(directory, chained, partition, report, chained_allowed=False)


def _check_hash(directory: Path, descriptor: HashDescriptor, owner: str, report: ImageSetVerification) -> None:
    path = _partition_path(directory, descriptor.partition_name, owner)
    if not path.is_file():
        report.fail("missing-partition", f"{owner}.img pins {descriptor.partition_name}, but {path.name} is missing")
        return
    try:
        hasher = hashlib.new(descriptor.hash_algorithm, descriptor.salt)
    except ValueError:
        report.fail("unknown-hash", f"{descriptor.partition_name}: unknown hash {descriptor.hash_algorithm!r}")
        return
    remaining = descriptor.image_size
    with path.open("rb") as file:
        while remaining > 0:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                break
            hasher.update(chunk)
            remaining -= len(chunk)
    if remaining:
        report.fail("partition-too-small", f"{path.name} is shorter than the {descriptor.image_size} bytes pinned")
    elif hasher.digest() != descriptor.digest:
        report.fail("digest-mismatch", f"{path.name}: content does not match the digest in {owner}.img")
    else:
        report.checked.append(descriptor.partition_name)


def _check_hashtree(directory: Path, descriptor: HashtreeDescriptor, owner: str, report: ImageSetVerification) -> None:
    path = _partition_path(directory, descriptor.partition_name, owner)
    if not path.is_file():
        report.fail("missing-partition", f"{owner}.img pins {descriptor.partition_name}, but {path.name} is missing")
        return
    block = descriptor.data_block_size
    if block < 512 or block & (block - 1) or block != descriptor.hash_block_size or descriptor.image_size % block:
        report.fail("bad-hashtree", f"{descriptor.partition_name}: block sizes {block}/{descriptor.hash_block_size} "
                    f"do not describe a dm-verity tree over {descriptor.image_size} bytes")  # fmt: skip
        return
    if path.stat().st_size < descriptor.image_size:
        report.fail("partition-too-small", f"{path.name} is shorter than the {descriptor.image_size} bytes pinned")
        return
    try:
        with path.open("rb") as data, tempfile.TemporaryFile() as tree:
            root = write_hash_tree(data, descriptor.image_size, tree, 0, block_size=descriptor.data_block_size,
                                   hash_algorithm=descriptor.hash_algorithm, salt=descriptor.salt)  # fmt: skip
    except UsageError as exc:
        report.fail("bad-hashtree", f"{descriptor.partition_name}: {exc}")
        return
    if root != descriptor.root_digest:
        report.fail("root-digest-mismatch", f"{path.name}: content does not match the hash tree root in {owner}.img")
    else:
        report.checked.append(descriptor.partition_name)


def _partition_path(directory: Path, partition: str, owner: str) -> Path:
    # A descriptor with an empty partition name describes the image that holds it (avbtool verify_image).
    return directory / f"{partition or owner}.img"


def _load(directory: Path, partition: str, report: ImageSetVerification) -> VbmetaImage | None:
    path = directory / f"{partition}.img"
    if not path.is_file():
        report.fail("missing-partition", f"{path.name} is missing")
        return None
    try:
        return read_image(path)[1]
    except AvbFormatError as exc:
        report.fail("malformed", f"{path.name}: {exc}")
        return None


def _small(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(_CHUNK)


__all__ = ["ImageSetVerification", "resign_image_set", "verify_image_set"]
