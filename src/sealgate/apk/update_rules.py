"""The rule Android applies when an update arrives for an installed package: may the new APK replace the old one?

Android (InstallPackageHelper / ReconcilePackageUtils, with SigningDetails.checkCapability) accepts an update when

    candidate.checkCapability(installed, INSTALLED_DATA)  or  installed.checkCapability(candidate, ROLLBACK)

where `X.checkCapability(old, flags)` holds when

* `old` has several signers and X has exactly the same signer set (several signers can never rotate), or
* `old`'s single signer is X's single current signer (the current signer has every capability), or
* `old`'s single signer is an older node of X's lineage (not its last node) that X grants all of `flags`.

So a new key is accepted when its lineage names the installed key and still grants it INSTALLED_DATA, and an older
key is accepted only when the installed app's lineage grants that older key ROLLBACK. This module is that decision as
a pure function over verified identities; it does not model upgrade key sets (`<upgrade-keyset>`) or the
rollback-manager exception for restoring a previous version, which need state a single pair of APKs does not have.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import Capability, Lineage, LineageNode
from sealgate.errors import UsageError


@dataclass(frozen=True)
class SigningIdentity:
    """The verified signing identity of one APK at the device's SDK level (built by the verifier's orchestrator)."""

    signers: tuple[Certificate, ...]
    lineage: Lineage | None = None

    def __post_init__(self) -> None:
        if not self.signers:
            raise UsageError("a signing identity needs at least one signer certificate")
        if self.lineage is not None and self.lineage.nodes:
            if len(self.signers) != 1:
                raise UsageError("only an APK with a single signer can carry a proof-of-rotation lineage")
            if self.lineage.nodes[-1].certificate != self.signers[0]:
                raise UsageError("the last certificate of a lineage must be the APK's current signer")

    @property
    def past_nodes(self) -> tuple[LineageNode, ...]:
        """Lineage nodes older than the current signer (the ones whose capabilities matter)."""
        return self.lineage.nodes[:-1] if self.lineage is not None else ()


@dataclass(frozen=True)
class UpdateDecision:
    accepted: bool
    reason: str
    #: SAME_SIGNERS, ROTATION or ROLLBACK when accepted; MULTIPLE_SIGNERS_MISMATCH, ROTATION_NOT_GRANTED,
    #: ROLLBACK_NOT_GRANTED or SIGNER_MISMATCH when rejected (Android's INSTALL_FAILED_UPDATE_INCOMPATIBLE).
    code: str


def decide_update(installed: SigningIdentity, candidate: SigningIdentity) -> UpdateDecision:
    """Whether Android lets `candidate` replace `installed`, and why."""
    if _check_capability(candidate, installed, Capability.INSTALLED_DATA):
        if _same_signers(candidate, installed):
            return UpdateDecision(
                True, "the update is signed by the same signer set as the installed app", "SAME_SIGNERS"
            )
        return UpdateDecision(
            True,
            f"the update's signer {_name(candidate.signers[0])} rotated from the installed signer "
            f"{_name(installed.signers[0])}, which its lineage still trusts with the app's installed data",
            "ROTATION",
        )
    if _check_capability(installed, candidate, Capability.ROLLBACK):
        return UpdateDecision(
            True,
            f"the update is signed by {_name(candidate.signers[0])}, an older key the installed app's lineage allows "
            "to roll back to",
            "ROLLBACK",
        )
    return _rejection(installed, candidate)


def _check_capability(subject: SigningIdentity, old: SigningIdentity, flags: Capability) -> bool:
    """SigningDetails.checkCapability: does `subject` trust `old`'s signer with `flags`?"""
    if len(old.signers) > 1:
        return _same_signers(subject, old)
    old_signer = old.signers[0]
    for node in subject.past_nodes:
        if node.certificate == old_signer and (node.capabilities & flags) == flags:
            return True
    return len(subject.signers) == 1 and subject.signers[0] == old_signer


def _same_signers(first: SigningIdentity, second: SigningIdentity) -> bool:
    """Signature.areExactMatch: the same certificates, order aside."""
    return len(first.signers) == len(second.signers) and set(first.signers) == set(second.signers)


def _rejection(installed: SigningIdentity, candidate: SigningIdentity) -> UpdateDecision:
    if len(installed.signers) > 1 or len(candidate.signers) > 1:
        return UpdateDecision(
            False,
            f"the installed app has {len(installed.signers)} signer(s) and the update {len(candidate.signers)}; an app "
            "signed by several signers cannot rotate keys, so an update must carry exactly the same signer set",
            "MULTIPLE_SIGNERS_MISMATCH",
        )
    old_signer, new_signer = installed.signers[0], candidate.signers[0]
    if any(node.certificate == old_signer for node in candidate.past_nodes):
        return UpdateDecision(
            False,
            f"the update's lineage names the installed signer {_name(old_signer)} but no longer grants it "
            "INSTALLED_DATA, so it cannot take over the installed app",
            "ROTATION_NOT_GRANTED",
        )
    if any(node.certificate == new_signer for node in installed.past_nodes):
        return UpdateDecision(
            False,
            f"the update is signed by {_name(new_signer)}, an older key of the installed app that its lineage does "
            "not grant ROLLBACK",
            "ROLLBACK_NOT_GRANTED",
        )
    return UpdateDecision(
        False,
        f"the update is signed by {_name(new_signer)}, which is neither the installed signer {_name(old_signer)} nor "
        "linked to it by a proof-of-rotation lineage",
        "SIGNER_MISMATCH",
    )


def _name(certificate: Certificate) -> str:
    return f"{certificate.subject} (SHA-256 {certificate.sha256[:16]}…)"
