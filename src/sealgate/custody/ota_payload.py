"""The payload inside an OTA package the custodian signs: signed offline with the package's key, then checked online.

An A/B package carries two signatures that devices check with different code: recovery (or the updater) checks
the whole-file signature against otacerts, and update_engine checks payload.bin's metadata and payload signatures
against /etc/update_engine/update-payload-key.pub.pem. AOSP signs both with the same key: ota_from_target_files
signs the payload with the package key (PayloadSigner in payload_signer.py, OPTIONS.package_key) and
sign_target_files_apks' ReplaceOtaKeys writes update-payload-key.pub.pem from the first OTA certificate. So when the
package the online side prepared carries an unsigned payload (`sealgate release ota` leaves it so), the offline
session signs the payload with the role's key, writes payload_properties.txt for the signed payload, rebuilds the
package with the same metadata and extras (`ota.package.build_ab_package` recomputes the property files, since
payload.bin changed size), and only then makes the whole-file signature.

Online, `check_signed_payload` decides whether what came back is exactly the package that was sent, with
signatures added: the signed payload must verify with the role's key and describe the same bytes (its signed hashes,
recomputed for the signature sizes it carries, equal those of the payload that was sent), payload_properties.txt
must describe it, the metadata must be the same apart from the property files, which must point at the entries, and
every other entry must be byte for byte the one that was sent.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from sealgate.apk.certificate import Certificate
from sealgate.errors import SealgateError
from sealgate.ota.metadata import METADATA_NAME, METADATA_PROTO_NAME, parse_property_files, read_package_metadata
from sealgate.ota.package import (
    AB_PROPERTY_FILES,
    PAYLOAD,
    PAYLOAD_PROPERTIES,
    STREAMING_PROPERTY_FILES,
    build_ab_package,
    property_tokens,
)
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.reader import parse_signatures, read_payload
from sealgate.ota.payload.signer import payload_hashes, sign_payload, signature_size
from sealgate.ota.payload.verify import check_payload_signatures
from sealgate.ota.signer import kept_entry
from sealgate.signing import Signer
from sealgate.ziparchive import METHOD_STORED, ZipArchive

PayloadState = Literal["unsigned", "signed", "unreadable", "absent"]
#: Entries the rebuilt package writes itself (everything else is carried over as an extra entry).
_REBUILT = frozenset({PAYLOAD, PAYLOAD_PROPERTIES, METADATA_NAME, METADATA_PROTO_NAME})
_CHUNK = 4 * 1024 * 1024


class PayloadCheckError(SealgateError):
    """The payload cannot be signed, or the signed package is not the one that was sent with its payload signed."""


def payload_state(package: Path) -> PayloadState:
    """Whether the package's payload.bin is unsigned, signed, not a payload update_engine reads, or absent."""
    try:
        with ZipArchive.open(package) as archive:
            entry = archive.entry(PAYLOAD)
            if entry is None:
                return "absent"
            if entry.method != METHOD_STORED:
                return "unreadable"
            offset, size = entry.data_offset, entry.uncompressed_size
        payload = read_payload(package, offset=offset, size=size)
    except SealgateError:
        return "unreadable"
    if payload.signed:
        return "signed"
    if payload.metadata_signature or payload.payload_signature:
        return "unreadable"  # half signed: not something to sign over
    return "unsigned"


def sign_package_payload(unsigned_package: Path, out: Path, signer: Signer, work: Path) -> PayloadProperties:
    """Write `unsigned_package` with its payload signed by `signer` (not yet whole-file signed) to `out`."""
    work.mkdir(parents=True, exist_ok=True)
    metadata = read_package_metadata(unsigned_package)
    payload = work / "payload.unsigned"
    extras, sent_text = _extract(unsigned_package, work, payload)
    sent = PayloadProperties.parse(sent_text)
    signed_payload = work / "payload.signed"
    # The install options the online side set (POWERWASH=1, ...) stay; the description is the signed payload's.
    properties = replace(sign_payload(payload, signed_payload, signer), headers=sent.headers)
    properties_file = work / "payload_properties.txt"
    properties_file.write_text(properties.to_text(), encoding="ascii")
    build_ab_package(out, payload=signed_payload, payload_properties=properties_file, metadata=metadata,
                     extra_entries=extras)  # fmt: skip
    payload.unlink()
    signed_payload.unlink()
    return properties


def check_signed_payload(signed_package: Path, unsigned_package: Path, certificate: Certificate, work: Path) -> None:
    """PayloadCheckError unless `signed_package` is `unsigned_package` with its payload signed by `certificate`'s
    key (and new property files); the whole-file signature is checked by the caller."""
    work.mkdir(parents=True, exist_ok=True)
    public_key = certificate.public_key()
    sent, came = work / "payload.sent", work / "payload.came"
    sent_entries = _entry_digests(unsigned_package, sent)
    came_entries = _entry_digests(signed_package, came)
    properties_text = came_entries.pop(PAYLOAD_PROPERTIES + "#text", "")
    sent_text = sent_entries.pop(PAYLOAD_PROPERTIES + "#text", "")
    try:
        properties = PayloadProperties.parse(properties_text)
        sent_properties = PayloadProperties.parse(sent_text)
        check_payload_signatures(came, [public_key], properties=properties)
        signatures = read_payload(came)
        blob = parse_signatures(signatures.payload_signature, "payload signature")
        sizes = tuple(len(signature.data) for signature in blob.signatures)
    except SealgateError as exc:
        raise PayloadCheckError(f"its payload does not verify with the role's key: {exc}") from None
    if sizes != (signature_size(public_key),):
        raise PayloadCheckError(f"its payload carries {len(sizes)} signature(s), not one by the role's key")
    if payload_hashes(came, sizes) != payload_hashes(sent, sizes):
        raise PayloadCheckError("its payload is not the payload that was sent, signed: the signed bytes differ")
    metadata_sent, metadata_came = read_package_metadata(unsigned_package), read_package_metadata(signed_package)
    if replace(metadata_sent, property_files={}) != replace(metadata_came, property_files={}):
        raise PayloadCheckError("its metadata is not the metadata that was sent")
    # update_engine's install options (POWERWASH=1, SWITCH_SLOT_ON_REBOOT=0) change what the device does: exactly
    # the ones sent, plus the POWERWASH=1 a wiping package gets, as build_ab_package appends it.
    expected = sent_properties.headers
    if metadata_sent.wipe and sent_properties.header("POWERWASH") is None:
        expected = (*expected, ("POWERWASH", "1"))
    if properties.headers != expected:
        raise PayloadCheckError(
            f"its {PAYLOAD_PROPERTIES} carries the install options {properties.headers}, not the {expected} sent"
        )
    with ZipArchive.open(signed_package, strict=True) as archive:
        for key in (AB_PROPERTY_FILES, STREAMING_PROPERTY_FILES):
            value = metadata_came.property_files.get(key)
            if value is None or parse_property_files(value, key=key) != property_tokens(archive, key):
                raise PayloadCheckError(f"its {key} do not point at the package's entries")
    for name in _REBUILT:
        sent_entries.pop(name, None)
        came_entries.pop(name, None)
    if sent_entries != came_entries:
        different = sorted(set(sent_entries) ^ set(came_entries) | {
            name for name in set(sent_entries) & set(came_entries) if sent_entries[name] != came_entries[name]
        })  # fmt: skip
        raise PayloadCheckError(f"its other entries differ from the package that was sent: {', '.join(different[:5])}")
    sent.unlink()
    came.unlink()


def _extract(package: Path, work: Path, payload: Path) -> tuple[Mapping[str, Path], str]:
    """Copy payload.bin to `payload` and every entry the rebuilt package carries over into `work`; those by name,
    and the text of payload_properties.txt."""
    extras: dict[str, Path] = {}
    with ZipArchive.open(package, strict=True) as archive:
        entry = archive.entry(PAYLOAD_PROPERTIES)
        if entry is None:
            raise PayloadCheckError(f"{package.name} has no {PAYLOAD_PROPERTIES}")
        properties_text = archive.read(entry, max_size=65536).decode("ascii", "replace")
        for index, entry in enumerate(archive.entries):
            if entry.is_directory or not kept_entry(entry.name) or entry.name in _REBUILT - {PAYLOAD}:
                continue
            target = payload if entry.name == PAYLOAD else work / f"extra-{index}"
            with open(target, "xb") as handle:
                for chunk in archive.iter_data(entry, max_size=2**40):
                    handle.write(chunk)
            if entry.name != PAYLOAD:
                extras[entry.name] = target
    return extras, properties_text


def _entry_digests(package: Path, payload_copy: Path) -> dict[str, str]:
    """SHA-256 of every entry signing keeps; payload.bin copied out to `payload_copy`, the properties' text kept."""
    digests: dict[str, str] = {}
    with ZipArchive.open(package, strict=True) as archive:
        for entry in archive.entries:
            if entry.is_directory or not kept_entry(entry.name):
                continue
            hasher = hashlib.sha256()
            text = b""
            with open(payload_copy, "xb") if entry.name == PAYLOAD else open(os.devnull, "wb") as handle:
                for chunk in archive.iter_data(entry, max_size=2**40):
                    hasher.update(chunk)
                    handle.write(chunk)
                    if entry.name == PAYLOAD_PROPERTIES and len(text) < 65536:
                        text += bytes(chunk)
            digests[entry.name] = hasher.hexdigest()
            if entry.name == PAYLOAD_PROPERTIES:
                digests[PAYLOAD_PROPERTIES + "#text"] = text.decode("ascii", "replace")
    if not payload_copy.exists():
        raise PayloadCheckError(f"{package.name} has no {PAYLOAD}")
    return digests
