"""Signing the repository index on the offline machine: a signing request out, signatures back, JARs made here.

When the repo key is not on this machine, `repo update` writes the unsigned JSON and prepares each index JAR up
to its signature (`index_jar.prepare_index_jar`): MANIFEST.MF and the .SF file are fixed by the JSON, so the only
thing the custodian must produce is a signature over each .SF with the repo key. Those .SF files go to the
custodian as a standard signing request (custody bundles, kind "file", purpose "repo-index"), with a summary of
what each one commits to (section, index hash, number of apps). The response's detached signatures come back
through `bundle apply`, which checks them against the custodian's public keys; `complete_index_signing` then
assembles each JAR around its signature and verifies it as a client would before it replaces anything.

The prepared state is kept in .sealgate/pending/: if the index changes before the signatures come back (another
update), the old request is void and a new one is prepared; signatures for it are refused, not misapplied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealgate.durable import replace_file
from sealgate.errors import RepoError, UsageError
from sealgate.repo import index_jar
from sealgate.repo.config import RepoConfig
from sealgate.repo.index_v1 import INDEX_V1
from sealgate.repo.index_v2 import ENTRY
from sealgate.signing import SigningAlgorithm

REQUEST_FILE = "index-signing-request.zip"
PENDING_DIR = "pending"
PURPOSE = "repo-index"
_STATE = "state.json"
_FORMAT = "sealgate-pending-index-signatures"
#: (JSON entry, JAR, SHA-1 digests) for each JAR a section needs.
_JARS = ((ENTRY, index_jar.ENTRY_JAR, False), (INDEX_V1, index_jar.INDEX_V1_JAR, True))


@dataclass(frozen=True)
class PreparedRequest:
    path: Path
    digest: str
    items: list[str]


def prepare_signing_request(config: RepoConfig, sections: list[str], *, timestamp_ms: int) -> PreparedRequest:
    """Prepare the JARs of `sections` up to their signatures and write the request for the custodian."""
    from sealgate.custody.bundle import ItemMetadata, ItemSpec, create_request

    certificate = config.certificate()
    if certificate is None:
        raise RepoError(
            "the index is not signed and cannot be prepared for offline signing: config.yml names no "
            "repo_certificate (the repo key's certificate from the custodian's public bundle)"
        )
    pending = config.state_dir / PENDING_DIR
    pending.mkdir(parents=True, exist_ok=True)
    for stale in pending.glob("*"):
        if stale.is_file():
            stale.unlink()
    state: dict[str, Any] = {"format": _FORMAT, "certificate_sha256": certificate.sha256, "jars": []}
    specs = []
    for kind in sections:
        directory = config.root / kind
        entry = json.loads((directory / ENTRY).read_bytes())
        for entry_name, jar_name, sha1 in _JARS:
            data = (directory / entry_name).read_bytes()
            prepared = index_jar.prepare_index_jar(
                entry_name, data, certificate, key_name="repo", timestamp_ms=timestamp_ms, sha1=sha1
            )
            name = f"{kind}-{jar_name}.SF"
            (pending / name).write_bytes(prepared.signature_file)
            state["jars"].append(
                {
                    "section": kind,
                    "jar": jar_name,
                    "name": name,
                    "entry": entry_name,
                    "sha1": sha1,
                    "timestamp_ms": timestamp_ms,
                    "algorithm": prepared.signing.value,
                    "data_sha256": _sha256(data),
                }
            )
            specs.append(
                ItemSpec(
                    "file",
                    "repo",
                    path=pending / name,
                    name=name,
                    algorithm=prepared.signing,
                    purpose=PURPOSE,
                    metadata=ItemMetadata(
                        description=(
                            f"{config.name}: the signature file of {kind}/{jar_name}, committing to "
                            f"{kind}/{entry_name} with {prepared.digest} digests"
                        ),
                        version=str(entry.get("timestamp", timestamp_ms)),
                        changes=(
                            f"index-v2.json sha256 {entry['index']['sha256']}, {entry['index']['numPackages']} apps"
                        ),
                    ),
                )
            )
    request_path = config.root / REQUEST_FILE
    # An earlier request is void once the index changed: its signatures would be for files that are gone.
    request_path.unlink(missing_ok=True)
    request, digest = create_request(request_path, specs, requester=f"sealgate repo update ({config.url})")
    state["request_digest"] = digest
    replace_file(pending / _STATE, json.dumps(state, indent=2).encode("utf-8"))
    return PreparedRequest(request_path, digest, [item.name for item in request.items])


def complete_index_signing(config: RepoConfig, signatures: Path) -> list[Path]:
    """Assemble the pending JARs around the signatures in `signatures` (NAME.sig files, as `bundle apply` wrote
    them); each JAR is verified with the repo certificate before it replaces anything. Returns the JARs written."""
    pending = config.state_dir / PENDING_DIR
    try:
        state = json.loads((pending / _STATE).read_bytes())
    except (OSError, ValueError):
        raise RepoError(
            f"no index signatures are pending in {config.root} (run `repo update --nosign` first)"
        ) from None
    certificate = config.certificate()
    if certificate is None or certificate.sha256 != state.get("certificate_sha256"):
        raise RepoError("config.yml's repo_certificate changed since the signing request was made; make a new one")
    jars: list[tuple[Path, bytes]] = []
    for item in state["jars"]:
        directory = config.root / item["section"]
        data = (directory / item["entry"]).read_bytes()
        if _sha256(data) != item["data_sha256"]:
            raise RepoError(
                f"{directory / item['entry']} changed after the signing request was made (another update?); "
                "these signatures are for the old index: run `repo update --nosign` for a new request"
            )
        try:
            signature = (signatures / f"{item['name']}.sig").read_bytes()
        except OSError as exc:
            raise RepoError(f"no signature for {item['name']} in {signatures}: {exc.strerror}") from None
        prepared = index_jar.prepare_index_jar(
            item["entry"], data, certificate, key_name="repo", timestamp_ms=item["timestamp_ms"], sha1=item["sha1"]
        )
        signer = _OfflineSignature(certificate, prepared.signature_file, signature, prepared.signing)
        jar_bytes = index_jar.assemble_index_jar(prepared, signer)
        _verify(jar_bytes, item["entry"], certificate.sha256, directory / item["jar"])
        jars.append((directory / item["jar"], jar_bytes))
    written = []
    # index-v1.jar first, entry.jar last in each section: entry.jar is what makes a client look further.
    for path, data in sorted(jars, key=lambda pair: (pair[0].parent.name, pair[0].name == index_jar.ENTRY_JAR)):
        try:
            replace_file(path, data)
        except OSError as exc:
            raise RepoError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    (pending / _STATE).unlink()
    (config.root / REQUEST_FILE).unlink(missing_ok=True)
    return written


class _OfflineSignature:
    """A `Signer` that hands out one signature the custodian made offline, for exactly the bytes it was made over."""

    name = "repo"

    def __init__(self, certificate: Any, data: bytes, signature: bytes, algorithm: SigningAlgorithm) -> None:
        from sealgate.custody.signing_session import verify_signature

        self.certificate = certificate
        self.public_key = certificate.public_key()
        self._data, self._signature, self._algorithm = data, signature, algorithm
        if not verify_signature(certificate, algorithm, signature, digest=algorithm.digest(data), message=data):
            raise RepoError("a returned index signature does not verify with the repo certificate; nothing written")

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        return frozenset({self._algorithm})

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        if data != self._data or algorithm is not self._algorithm:
            raise UsageError("the offline signature was made over other bytes or with another algorithm")
        return self._signature

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        raise UsageError("an offline index signature is replayed over its data only")


def _verify(jar_bytes: bytes, entry: str, fingerprint: str, path: Path) -> None:
    """The assembled JAR must pass the client's check before it replaces the one in place."""
    index_jar.read_index_jar_bytes(jar_bytes, entry, expected_fingerprint=fingerprint, label=str(path))


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
