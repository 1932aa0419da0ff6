"""Re-signing a target-files package's verified-boot metadata: IMAGES/vbmeta.img and the partitions it chains to.

sign_target_files_apks re-signs vbmeta with --avb_vbmeta_key (ReplaceAvbSigningKeys, then add_img_to_target_files
rebuilds it); here the existing image is re-signed instead, its descriptors kept (`sealgate.avb.vbmeta`), the
rollback index set when one is given. A chained partition (vbmeta_system.img, or boot.img through its own AVB
footer) is signed by a key of its own that vbmeta's chain descriptor names: leaving it signed by the build's test
key would make every release trust that key. So each chained image is re-signed too, with the role
`avb_<partition>` when the key map has one, else the avb role, and vbmeta's chain descriptor is given the new key
(`replace_chain_partition_keys`). Every re-signed image is checked with `verify_vbmeta` against the key that signed
it before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealgate.avb.footer import read_footer, read_image, resign_footer_image
from sealgate.avb.vbmeta import read_vbmeta, replace_chain_partition_keys, resign_vbmeta, verify_vbmeta
from sealgate.errors import AvbFormatError, ReleaseError
from sealgate.release.apkcerts import KeyMap
from sealgate.signing import Signer
from sealgate.ziparchive import ZipArchive

AVB_ROLE = "avb"
VBMETA = "IMAGES/vbmeta.img"
#: libavb refuses vbmeta images over 64 KiB; a vbmeta partition image may carry padding up to its size.
_MAX_VBMETA = 1024 * 1024


@dataclass
class VerifiedBoot:
    """The re-signed vbmeta.img, the re-signed chained images (entry name -> file), and what the report says."""

    vbmeta: bytes
    algorithm: str
    rollback_index: int
    signer: Signer
    chained: dict[str, Path] = field(default_factory=dict)
    chained_signers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "rollback_index": self.rollback_index,
            "signer_sha256": self.signer.certificate.sha256,
            "public_key_digest": read_vbmeta(self.vbmeta).public_key_digest,
            "chained": self.chained_signers,
        }


def resign_verified_boot(
    archive: ZipArchive,
    keys: KeyMap,
    work: Path,
    *,
    algorithm: str | None = None,
    rollback_index: int | None = None,
) -> VerifiedBoot | None:
    """vbmeta.img and its chained images re-signed (chained ones written into `work`); None without vbmeta.img."""
    entry = archive.entry(VBMETA)
    if entry is None:
        return None
    signer = keys.signer(AVB_ROLE)
    if signer is None:
        raise ReleaseError(f"the package carries {VBMETA}: a signer for the role avb is needed to re-sign it")
    try:
        data = archive.read(entry, max_size=_MAX_VBMETA)
        chains = read_vbmeta(data).chain_partitions()
        result_chained: dict[str, Path] = {}
        chained_keys = {}
        chained_signers = {}
        for partition in sorted(chains):
            chained_signer = keys.signer(f"avb_{partition}") or signer
            name = f"IMAGES/{partition}.img"
            result_chained[name] = _resign_chained(archive, name, chained_signer, work)
            chained_keys[partition] = chained_signer.public_key
            chained_signers[partition] = chained_signer.certificate.sha256
        if chained_keys:
            new = replace_chain_partition_keys(data, chained_keys, signer, algorithm=algorithm,
                                               rollback_index=rollback_index)  # fmt: skip
        else:
            new = resign_vbmeta(data, signer, algorithm=algorithm, rollback_index=rollback_index)
        image = read_vbmeta(new)
        verdict = verify_vbmeta(image, [signer.public_key])
    except AvbFormatError as exc:
        raise ReleaseError(f"cannot re-sign {VBMETA}: {exc}") from exc
    if not verdict.verified:
        raise ReleaseError(f"the re-signed {VBMETA} does not verify with the avb key ({verdict.status})")
    return VerifiedBoot(new, image.algorithm.name, image.rollback_index, signer, result_chained, chained_signers)


def _resign_chained(archive: ZipArchive, name: str, signer: Signer, work: Path) -> Path:
    entry = archive.entry(name)
    if entry is None:
        raise ReleaseError(f"{VBMETA} chains to {name}, which the package does not hold")
    path = work / Path(name).name
    with open(path, "wb") as handle:
        for chunk in archive.iter_data(entry):
            handle.write(chunk)
    if read_footer(path) is not None:
        resign_footer_image(path, signer)
        _, image = read_image(path)
    else:
        if path.stat().st_size > _MAX_VBMETA:
            raise ReleaseError(f"{name} is chained by {VBMETA} but has neither an AVB footer nor vbmeta's size")
        new = resign_vbmeta(path.read_bytes(), signer)
        path.write_bytes(new)
        image = read_vbmeta(new)
    verdict = verify_vbmeta(image, [signer.public_key])
    if not verdict.verified:
        raise ReleaseError(f"the re-signed {name} does not verify with its key ({verdict.status})")
    return path
