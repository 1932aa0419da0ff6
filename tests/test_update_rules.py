"""The package-update rule (SigningDetails.checkCapability both ways), with apksig's lineages and certificates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sealgate.apk.certificate import Certificate
from sealgate.apk.lineage import Capability, Lineage, read_lineage_file
from sealgate.apk.update_rules import SigningIdentity, UpdateDecision, decide_update
from sealgate.errors import UsageError

#: What apksigner grants a past signer by default (everything but ROLLBACK).
DEFAULT = Capability.INSTALLED_DATA | Capability.SHARED_USER_ID | Capability.PERMISSION | Capability.AUTH


@dataclasses.dataclass(frozen=True)
class World:
    """Vector certificates A -> B -> C (rsa-2048, _2, _3), an unrelated D (ec-p256), and apksig's lineages."""

    a: Certificate
    b: Certificate
    c: Certificate
    d: Certificate
    abc: Lineage  # all past nodes grant INSTALLED_DATA, SHARED_USER_ID, PERMISSION, AUTH (no ROLLBACK)
    abc_a_no_caps: Lineage  # the same, but A is granted nothing
    ab: Lineage
    bc: Lineage


def _cert(vectors: Path, name: str) -> Certificate:
    pem = (vectors / "files" / f"{name}.x509.pem").read_bytes()
    return Certificate.from_der(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))


def _lineage(vectors: Path, name: str) -> Lineage:
    return read_lineage_file((vectors / "files" / name).read_bytes())


@pytest.fixture(scope="module")
def w(apksig_vectors: Path) -> World:
    return World(
        a=_cert(apksig_vectors, "rsa-2048"),
        b=_cert(apksig_vectors, "rsa-2048_2"),
        c=_cert(apksig_vectors, "rsa-2048_3"),
        d=_cert(apksig_vectors, "ec-p256"),
        abc=_lineage(apksig_vectors, "rsa-2048-lineage-3-signers"),
        abc_a_no_caps=_lineage(apksig_vectors, "rsa-2048-lineage-3-signers-1-no-caps"),
        ab=_lineage(apksig_vectors, "rsa-2048-lineage-2-signers"),
        bc=_lineage(apksig_vectors, "rsa-2048-lineage-2-signers-2-3"),
    )


def _with_caps(lineage: Lineage, certificate: Certificate, capabilities: Capability) -> Lineage:
    """The lineage with one node's capabilities replaced (the rest of the node, signature included, is kept)."""
    nodes = tuple(
        dataclasses.replace(node, capabilities=capabilities) if node.certificate == certificate else node
        for node in lineage.nodes
    )
    return Lineage(nodes)


def _id(*signers: Certificate, lineage: Lineage | None = None) -> SigningIdentity:
    return SigningIdentity(tuple(signers), lineage)


def _accepts(decision: UpdateDecision, code: str) -> None:
    assert (decision.accepted, decision.code) == (True, code), decision.reason


def _rejects(decision: UpdateDecision, code: str) -> None:
    assert (decision.accepted, decision.code) == (False, code), decision.reason


def test_vector_lineages_are_the_chains_the_tests_assume(w: World) -> None:
    assert w.abc.certificates == (w.a, w.b, w.c)
    assert w.abc_a_no_caps.certificates == (w.a, w.b, w.c) and w.abc_a_no_caps.nodes[0].capabilities == 0
    assert Capability.ROLLBACK not in w.abc.nodes[0].capabilities
    assert w.ab.certificates == (w.a, w.b) and w.bc.certificates == (w.b, w.c)


# -- same signer --------------------------------------------------------------------------------------------------


def test_same_single_signer_is_accepted_with_or_without_lineage(w: World) -> None:
    _accepts(decide_update(_id(w.a), _id(w.a)), "SAME_SIGNERS")
    _accepts(decide_update(_id(w.c, lineage=w.abc), _id(w.c, lineage=w.abc)), "SAME_SIGNERS")
    # The current signer has every capability, whatever its own node says.
    _accepts(decide_update(_id(w.c), _id(w.c, lineage=_with_caps(w.abc, w.c, Capability(0)))), "SAME_SIGNERS")


def test_same_signer_set_in_another_order_is_accepted(w: World) -> None:
    _accepts(decide_update(_id(w.a, w.d), _id(w.d, w.a)), "SAME_SIGNERS")


# -- rotation -----------------------------------------------------------------------------------------------------


def test_rotation_to_a_descendant_key_is_accepted(w: World) -> None:
    _accepts(decide_update(_id(w.a), _id(w.c, lineage=w.abc)), "ROTATION")
    _accepts(decide_update(_id(w.b, lineage=w.ab), _id(w.c, lineage=w.abc)), "ROTATION")
    _accepts(decide_update(_id(w.a), _id(w.b, lineage=w.ab)), "ROTATION")


def test_rotation_needs_installed_data_on_the_installed_signers_node(w: World) -> None:
    _rejects(decide_update(_id(w.a), _id(w.c, lineage=w.abc_a_no_caps)), "ROTATION_NOT_GRANTED")
    # B keeps its capabilities in that lineage, so an app installed with B may still move on to C.
    _accepts(decide_update(_id(w.b), _id(w.c, lineage=w.abc_a_no_caps)), "ROTATION")
    # INSTALLED_DATA alone suffices; every other capability without it does not.
    only_data = _with_caps(w.abc, w.a, Capability.INSTALLED_DATA)
    _accepts(decide_update(_id(w.a), _id(w.c, lineage=only_data)), "ROTATION")
    all_but_data = _with_caps(w.abc, w.a, Capability(0x1F) & ~Capability.INSTALLED_DATA)
    _rejects(decide_update(_id(w.a), _id(w.c, lineage=all_but_data)), "ROTATION_NOT_GRANTED")


def test_a_lineage_that_does_not_name_the_installed_signer_is_refused(w: World) -> None:
    _rejects(decide_update(_id(w.a), _id(w.c, lineage=w.bc)), "SIGNER_MISMATCH")
    _rejects(decide_update(_id(w.a), _id(w.d)), "SIGNER_MISMATCH")


# -- rollback to an older key -------------------------------------------------------------------------------------


def test_going_back_to_an_older_key_needs_rollback(w: World) -> None:
    # apksig's lineages grant no ROLLBACK: the installed app (now signed by C) refuses B and A.
    _rejects(decide_update(_id(w.c, lineage=w.abc), _id(w.b, lineage=w.ab)), "ROLLBACK_NOT_GRANTED")
    _rejects(decide_update(_id(w.c, lineage=w.abc), _id(w.a)), "ROLLBACK_NOT_GRANTED")
    rollback_to_b = _with_caps(w.abc, w.b, DEFAULT | Capability.ROLLBACK)
    _accepts(decide_update(_id(w.c, lineage=rollback_to_b), _id(w.b, lineage=w.ab)), "ROLLBACK")
    _accepts(decide_update(_id(w.c, lineage=rollback_to_b), _id(w.b)), "ROLLBACK")
    # The grant is per key: B's ROLLBACK says nothing about A.
    _rejects(decide_update(_id(w.c, lineage=rollback_to_b), _id(w.a)), "ROLLBACK_NOT_GRANTED")


def test_the_candidates_own_lineage_cannot_grant_itself_a_rollback(w: World) -> None:
    # Installed C without a lineage; the candidate B claims a lineage A -> B: only the installed app can grant it.
    _rejects(decide_update(_id(w.c), _id(w.b, lineage=_with_caps(w.ab, w.a, Capability(0x1F)))), "SIGNER_MISMATCH")


# -- several signers ----------------------------------------------------------------------------------------------


def test_multiple_signers_cannot_rotate(w: World) -> None:
    _rejects(decide_update(_id(w.a, w.d), _id(w.a)), "MULTIPLE_SIGNERS_MISMATCH")
    _rejects(decide_update(_id(w.a, w.d), _id(w.a, w.b)), "MULTIPLE_SIGNERS_MISMATCH")
    _rejects(decide_update(_id(w.a), _id(w.a, w.d)), "MULTIPLE_SIGNERS_MISMATCH")
    # Even a lineage from the installed signer does not let a single-signer app gain a second signer or vice versa.
    _rejects(decide_update(_id(w.a, w.d), _id(w.c, lineage=w.abc)), "MULTIPLE_SIGNERS_MISMATCH")


# -- inconsistent identities are caller errors --------------------------------------------------------------------


def test_identity_invariants(w: World) -> None:
    with pytest.raises(UsageError):
        SigningIdentity((), None)
    with pytest.raises(UsageError):
        SigningIdentity((w.a, w.d), w.ab)
    with pytest.raises(UsageError):
        SigningIdentity((w.a,), w.ab)  # the lineage ends with B, not the signer A
    assert SigningIdentity((w.a,), Lineage(())).past_nodes == ()
