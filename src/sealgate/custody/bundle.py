"""Signing bundles: what the online machine asks the offline custodian to sign, and what comes back.

A bundle is one ZIP file: `manifest.json` first, then one stored entry per payload (`payload/<id>` in a request,
`output/<id>` in a response), and nothing else. ZIP rather than tar because the project already has a strict ZIP
reader (`sealgate.ziparchive`) that refuses the constructs that let two parsers see different files (bytes before
the first entry, duplicate names, local headers that disagree with the central directory, overlapping entries),
and because the central directory gives random access: a payload is hashed or copied straight from the bundle
without unpacking the rest. Python's `tarfile` has none of those checks (member names with `..`, links, duplicate
members, pax headers that rename members), so every one of them would have to be re-done by hand. Bundles are
written with `zipfile` (stored entries, fixed timestamps) and only ever read back with the strict reader.

The request's manifest pins each payload's SHA-256 and size, so a flipped byte anywhere is found before the
custodian sees a summary. The SHA-256 of the manifest's exact bytes is the request's digest: the requester keeps
the request (or notes its digest), the response carries that digest and the request id, and `apply` refuses a
response whose digest is not the one of the request it holds (an edited manifest, a response to another request,
a replayed old response). The manifest is strict JSON: unknown fields, duplicate keys and wrong types are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from sealgate.custody.record import RecordEntry
from sealgate.durable import fsync_directory, unique_keys
from sealgate.errors import BundleError, RecordError, SealgateError, ZipFormatError
from sealgate.signing import SigningAlgorithm
from sealgate.ziparchive import ZipArchive, ZipEntry

REQUEST_FORMAT = "sealgate-signing-request"
RESPONSE_FORMAT = "sealgate-signing-response"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_SIZE = 16 * 1024 * 1024
#: Ed25519 signs whole messages, so a file signed with it is read into memory: keep that bounded.
MAX_ED25519_FILE = 64 * 1024 * 1024
CHUNK = 1024 * 1024

Kind = Literal["apk", "ota", "file", "digest", "target-files"]
KINDS: tuple[Kind, ...] = ("apk", "ota", "file", "digest", "target-files")
#: Kinds whose signed artifact comes back whole (not a detached signature), signed as its format prescribes.
SIGNED_IN_PLACE: tuple[Kind, ...] = ("apk", "ota", "target-files")
#: Kinds signed and checked by a handler an upper layer registers (`custody.kinds`).
HANDLED_KINDS: tuple[Kind, ...] = ("target-files",)
METADATA_KEYS = ("description", "version", "device", "previous_release", "changes")
DEFAULT_PURPOSE: dict[str, str] = {
    "apk": "apk",
    "ota": "ota-package",
    "file": "detached-signature",
    "digest": "detached-signature",
    "target-files": "target-files",
}

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ITEM_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ROLE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_PURPOSE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def new_bundle_id() -> str:
    """A random 128-bit id: two requests never share one, so a response can only answer the request it names."""
    return secrets.token_hex(16)


# -- the manifests ---------------------------------------------------------------------------------------------------


#: The `sealgate.apk.signing.ApkSigningOptions` fields a bundle can carry, with the JSON types each takes and whether
#: it may be null. A lineage is not among them: it is a file, and a bundle signs with the role's current key only.
APK_OPTIONS: dict[str, tuple[type, bool]] = {
    "v1": (bool, True),
    "v2": (bool, True),
    "v3": (bool, True),
    "v31": (bool, False),
    "min_sdk": (int, True),
    "max_sdk": (int, True),
    "rotation_min_sdk": (int, True),
    "alignment": (int, False),
    "page_alignment": (int, False),
}


def check_apk_options(options: Mapping[str, object], where: str = "apk_options") -> dict[str, bool | int | None]:
    """Options of the APK signer, type-checked; unknown names are refused rather than silently ignored."""
    checked: dict[str, bool | int | None] = {}
    for key, value in options.items():
        if key not in APK_OPTIONS:
            raise BundleError(f"{where}: unknown APK signing option {key!r} (known: {', '.join(APK_OPTIONS)})")
        kind, nullable = APK_OPTIONS[key]
        if value is None and nullable:
            checked[key] = None
            continue
        if (
            not isinstance(value, kind)
            or (kind is int and isinstance(value, bool))
            or (kind is int and isinstance(value, int) and value < 0)
        ):
            expected = "true or false" if kind is bool else "a non-negative integer"
            raise BundleError(f"{where}.{key} must be {expected}{' or null' if nullable else ''}, not {value!r}")
        checked[key] = value  # type: ignore[assignment]
    return checked


@dataclass(frozen=True, slots=True)
class ItemMetadata:
    """What a person needs to judge an item; none of it is trusted, it is shown."""

    description: str | None = None
    version: str | None = None
    device: str | None = None
    previous_release: str | None = None
    changes: str | None = None

    def to_json(self) -> dict[str, str]:
        return {key: value for key in METADATA_KEYS if (value := getattr(self, key)) is not None}

    @classmethod
    def from_json(cls, obj: object, where: str) -> ItemMetadata:
        fields = _object(obj, where)
        _only(fields, set(METADATA_KEYS), where, optional=frozenset(METADATA_KEYS))
        for key, value in fields.items():
            _string(value, f"{where}.{key}", allow_empty=True, limit=64 * 1024)
        return cls(**fields)


#: The fields an item of each kind has besides the common ones.
_KIND_FIELDS: dict[str, set[str]] = {
    "apk": {"apk_options"},
    "ota": set(),
    "file": {"algorithm"},
    "digest": {"algorithm"},
    "target-files": {"release_options"},
}


def check_release_options(options: Mapping[str, object], where: str = "release_options") -> dict[str, Any]:
    """Options of re-signing target files: `key_map` (apkcerts certificate name -> role, like --key-map) and
    `rollback_index` (vbmeta's, or null to keep it); unknown names are refused."""
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if key == "key_map":
            mapping = _object(value, f"{where}.key_map")
            checked[key] = {
                _string(name, f"{where}.key_map key", limit=1024): _match(
                    role, _ROLE, f"{where}.key_map[{name!r}]", "a key role such as releasekey"
                )
                for name, role in mapping.items()
            }
        elif key == "rollback_index":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64):
                raise BundleError(f"{where}.rollback_index must be a 64-bit unsigned integer or null, not {value!r}")
            checked[key] = value
        else:
            raise BundleError(f"{where}: unknown option {key!r} (known: key_map, rollback_index)")
    return checked


@dataclass(frozen=True, slots=True)
class RequestItem:
    """One thing to sign.

    kind "apk": sign the APK payload with the role's key (`apk_options` are `ApkSigningOptions` fields); the signed
    APK comes back. kind "ota": an OTA package whole-file signed with the role's key (`signapk -w`'s form, the hash
    the certificate names); the signed package comes back. kind "file": a detached signature over the payload with
    `algorithm`. kind "digest": a detached signature over `sha256` itself (the SHA-256 of data that stays online,
    e.g. TUF metadata), no payload.
    """

    id: str
    kind: Kind
    name: str
    sha256: str
    size: int | None
    role: str
    purpose: str
    algorithm: SigningAlgorithm | None = None
    apk_options: Mapping[str, bool | int | None] = field(default_factory=dict)
    metadata: ItemMetadata = field(default_factory=ItemMetadata)
    release_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def payload_name(self) -> str | None:
        return None if self.kind == "digest" else f"payload/{self.id}"

    @property
    def output_name(self) -> str:
        """The file `apply` writes: the signed APK or OTA package under its own name, a signature as NAME.sig."""
        return self.name if self.kind in SIGNED_IN_PLACE else f"{self.name}.sig"

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "sha256": self.sha256,
            "size": self.size,
            "role": self.role,
            "purpose": self.purpose,
            "metadata": self.metadata.to_json(),
        }
        if self.kind == "apk":
            obj["apk_options"] = dict(self.apk_options)
        elif self.kind == "target-files":
            obj["release_options"] = dict(self.release_options)
        elif self.kind != "ota":
            assert self.algorithm is not None
            obj["algorithm"] = self.algorithm.value
        return obj

    @classmethod
    def from_json(cls, obj: object, where: str) -> RequestItem:
        fields = _object(obj, where)
        kind = fields.get("kind")
        if kind not in KINDS:
            raise BundleError(f"{where}.kind must be one of {', '.join(KINDS)}, not {kind!r}")
        common = {"id", "kind", "name", "sha256", "size", "role", "purpose", "metadata"}
        _only(fields, common | _KIND_FIELDS[kind], where)
        item_id = _match(fields["id"], _ITEM_ID, f"{where}.id", "lowercase letters, digits, '-' and '_'")
        size = fields["size"]
        if kind == "digest":
            if size is not None:
                _size(size, f"{where}.size")
        else:
            size = _size(size, f"{where}.size")
        algorithm = None
        options: dict[str, bool | int | None] = {}
        release_options: dict[str, Any] = {}
        if kind == "apk":
            options = check_apk_options(_object(fields["apk_options"], f"{where}.apk_options"), f"{where}.apk_options")
        elif kind == "target-files":
            release_options = check_release_options(
                _object(fields["release_options"], f"{where}.release_options"), f"{where}.release_options"
            )
        elif kind != "ota":
            algorithm = parse_algorithm(fields["algorithm"], f"{where}.algorithm")
        item = cls(
            id=item_id,
            kind=kind,
            name=check_name(fields["name"], f"{where}.name"),
            sha256=_match(fields["sha256"], _HEX64, f"{where}.sha256", "64 lowercase hex digits"),
            size=size,
            role=_match(fields["role"], _ROLE, f"{where}.role", "a key role such as releasekey"),
            purpose=_match(fields["purpose"], _PURPOSE, f"{where}.purpose", "lowercase letters, digits, .:_-"),
            algorithm=algorithm,
            apk_options=options,
            metadata=ItemMetadata.from_json(fields["metadata"], f"{where}.metadata"),
            release_options=release_options,
        )
        item.check()
        return item

    def check(self) -> None:
        """Rules that hold between fields."""
        if self.kind == "digest" and self.algorithm is not None and self.algorithm.hash_name != "sha256":
            raise BundleError(
                f"item {self.id} ({self.name}): a SHA-256 digest can only be signed with a SHA-256 algorithm, "
                f"not {self.algorithm.value}"
            )
        if self.kind == "file" and self.algorithm is SigningAlgorithm.ED25519 and (self.size or 0) > MAX_ED25519_FILE:
            raise BundleError(
                f"item {self.id} ({self.name}): Ed25519 signs whole messages and the file is larger than "
                f"{MAX_ED25519_FILE // (1024 * 1024)} MiB; sign its digest with ECDSA or RSA instead"
            )


@dataclass(frozen=True, slots=True)
class SigningRequest:
    bundle_id: str
    created_at: str
    requester: str
    items: tuple[RequestItem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REQUEST_FORMAT,
            "version": FORMAT_VERSION,
            "bundle_id": self.bundle_id,
            "created_at": self.created_at,
            "requester": self.requester,
            "items": [item.to_json() for item in self.items],
        }

    def manifest_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> SigningRequest:
        fields = _header(obj, REQUEST_FORMAT, {"requester", "items"})
        items = tuple(RequestItem.from_json(item, f"items[{i}]") for i, item in enumerate(_list(fields["items"])))
        request = cls(
            bundle_id=fields["bundle_id"],
            created_at=fields["created_at"],
            requester=_string(fields["requester"], "requester", limit=1024),
            items=items,
        )
        request.check()
        return request

    def check(self) -> None:
        if not self.items:
            raise BundleError("the request has no items: there is nothing to sign")
        check_unique_items(self.items)


def check_unique_items(items: Sequence[RequestItem]) -> None:
    """Item ids and the files `apply` will write must not collide (case-insensitively, for any filesystem)."""
    ids: set[str] = set()
    outputs: dict[str, str] = {}
    for item in items:
        if item.id in ids:
            raise BundleError(f"two items have the id {item.id!r}")
        ids.add(item.id)
        key = item.output_name.casefold()
        if key in outputs:
            raise BundleError(f"items {outputs[key]} and {item.id} would both be written as {item.output_name!r}")
        outputs[key] = item.id


@dataclass(frozen=True, slots=True)
class ResponseItem:
    """What was made for one request item: the signed APK or the detached signature, stored as `output/<id>`."""

    id: str
    kind: Kind
    role: str
    certificate_sha256: str
    #: A SigningAlgorithm value for detached signatures; "apk-v1+v2+v3"-style for APKs (the schemes signed).
    algorithm: str
    output_sha256: str
    output_size: int

    @property
    def output_entry(self) -> str:
        return f"output/{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "role": self.role,
            "certificate_sha256": self.certificate_sha256,
            "algorithm": self.algorithm,
            "output_sha256": self.output_sha256,
            "output_size": self.output_size,
        }

    @classmethod
    def from_json(cls, obj: object, where: str) -> ResponseItem:
        fields = _object(obj, where)
        _only(fields, {"id", "kind", "role", "certificate_sha256", "algorithm", "output_sha256", "output_size"}, where)
        if fields["kind"] not in KINDS:
            raise BundleError(f"{where}.kind must be one of {', '.join(KINDS)}")
        return cls(
            id=_match(fields["id"], _ITEM_ID, f"{where}.id", "an item id"),
            kind=fields["kind"],
            role=_match(fields["role"], _ROLE, f"{where}.role", "a key role"),
            certificate_sha256=_match(fields["certificate_sha256"], _HEX64, f"{where}.certificate_sha256", "hex"),
            algorithm=_string(fields["algorithm"], f"{where}.algorithm", limit=64),
            output_sha256=_match(fields["output_sha256"], _HEX64, f"{where}.output_sha256", "64 hex digits"),
            output_size=_size(fields["output_size"], f"{where}.output_size"),
        )


@dataclass(frozen=True, slots=True)
class SigningResponse:
    bundle_id: str
    created_at: str
    request_id: str
    #: SHA-256 of the request's manifest.json as the offline machine read it.
    request_sha256: str
    items: tuple[ResponseItem, ...]
    #: The signing-record entries this session appended, in order (a contiguous piece of the chain).
    record: tuple[RecordEntry, ...]
    #: True when the custodian signed with a network interface up (--allow-online): worth a warning online.
    signed_online: bool = False

    @property
    def record_head(self) -> str | None:
        return self.record[-1].hash if self.record else None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESPONSE_FORMAT,
            "version": FORMAT_VERSION,
            "bundle_id": self.bundle_id,
            "created_at": self.created_at,
            "request_id": self.request_id,
            "request_sha256": self.request_sha256,
            "signed_online": self.signed_online,
            "items": [item.to_json() for item in self.items],
            "record": [entry.to_json() for entry in self.record],
        }

    def manifest_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, obj: object) -> SigningResponse:
        fields = _header(obj, RESPONSE_FORMAT, {"request_id", "request_sha256", "signed_online", "items", "record"})
        items = tuple(ResponseItem.from_json(item, f"items[{i}]") for i, item in enumerate(_list(fields["items"])))
        if len({item.id for item in items}) != len(items):
            raise BundleError("the response lists an item twice")
        try:
            record = tuple(RecordEntry.from_json(entry) for entry in _list(fields["record"]))
        except RecordError as exc:
            raise BundleError(f"the response's record entries are malformed: {exc}") from exc
        if not isinstance(fields["signed_online"], bool):
            raise BundleError("signed_online must be true or false")
        return cls(
            bundle_id=fields["bundle_id"],
            created_at=fields["created_at"],
            request_id=_match(fields["request_id"], _HEX32, "request_id", "32 lowercase hex digits"),
            request_sha256=_match(fields["request_sha256"], _HEX64, "request_sha256", "64 lowercase hex digits"),
            items=items,
            record=record,
            signed_online=fields["signed_online"],
        )


# -- strict JSON helpers ---------------------------------------------------------------------------------------------


def _header(obj: object, expected_format: str, extra: set[str]) -> dict[str, Any]:
    fields = _object(obj, "the manifest")
    found = fields.get("format")
    if found != expected_format:
        raise BundleError(f"this is not a {expected_format.removeprefix('sealgate-')} bundle (format is {found!r})")
    if fields.get("version") != FORMAT_VERSION:
        raise BundleError(
            f"the bundle uses format version {fields.get('version')!r}; this sealgate reads version {FORMAT_VERSION}"
        )
    _only(fields, {"format", "version", "bundle_id", "created_at"} | extra, "the manifest")
    _match(fields["bundle_id"], _HEX32, "bundle_id", "32 lowercase hex digits")
    _match(fields["created_at"], _TIME, "created_at", "a UTC time like 2025-01-31T12:00:00Z")
    return fields


def _object(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise BundleError(f"{where} must be a JSON object")
    return obj


def _list(obj: object) -> list[Any]:
    if not isinstance(obj, list):
        raise BundleError("expected a JSON list in the manifest")
    return obj


def _only(fields: dict[str, Any], allowed: set[str], where: str, *, optional: frozenset[str] = frozenset()) -> None:
    """Refuse unknown fields, and missing ones unless `optional`: a field nobody reads could hide anything."""
    extra = sorted(set(fields) - allowed)
    if extra:
        raise BundleError(f"{where} has unknown fields: {', '.join(extra)}")
    missing = sorted(allowed - optional - set(fields))
    if missing:
        raise BundleError(f"{where} lacks {', '.join(missing)}")


def _string(value: object, where: str, *, allow_empty: bool = False, limit: int = 4096) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise BundleError(f"{where} must be a {'' if allow_empty else 'non-empty '}string")
    if len(value) > limit:
        raise BundleError(f"{where} is longer than {limit} characters")
    return value


def _match(value: object, pattern: re.Pattern[str], where: str, expected: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise BundleError(f"{where} must be {expected}, not {value!r}")
    return value


def _size(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BundleError(f"{where} must be a non-negative integer")
    return value


def parse_algorithm(value: object, where: str = "algorithm") -> SigningAlgorithm:
    try:
        return SigningAlgorithm(value)
    except ValueError:
        names = ", ".join(algorithm.value for algorithm in SigningAlgorithm)
        raise BundleError(f"{where} must be one of {names}; not {value!r}") from None


def check_name(value: object, where: str = "name") -> str:
    """An item name becomes a file name on the online machine: one plain path component, nothing hidden."""
    name = _string(value, where, limit=255)
    if (
        name in (".", "..")
        or name.startswith(".")
        or any(ch in name for ch in "/\\:")
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name)
        or name != name.strip()
    ):
        raise BundleError(
            f"{where} {name!r} cannot be used as a file name: give a plain name without slashes, control "
            "characters, surrounding spaces or a leading dot"
        )
    return name


def _no_constant(name: str) -> Any:
    raise BundleError(f"the manifest contains {name}, which is not JSON")


def parse_manifest(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError("the bundle's manifest.json is not UTF-8") from exc
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_no_constant)
    except ValueError as exc:
        raise BundleError(f"the bundle's manifest.json is not valid JSON: {exc}") from exc


# -- reading ---------------------------------------------------------------------------------------------------------


class _Bundle:
    """A bundle opened with the strict ZIP reader, its entries checked against the manifest's list."""

    def __init__(self, path: Path, archive: ZipArchive, manifest: bytes):
        self.path = path
        self._archive = archive
        #: SHA-256 of manifest.json's exact bytes: the bundle's digest.
        self.sha256 = hashlib.sha256(manifest).hexdigest()

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> _Bundle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_entries(self, expected: Sequence[str]) -> None:
        names = [entry.name for entry in self._archive.entries]
        if names[1:] != list(expected):
            unexpected = sorted(set(names[1:]) - set(expected))
            missing = sorted(set(expected) - set(names[1:]))
            detail = (
                f"unexpected entries {', '.join(unexpected)}"
                if unexpected
                else f"missing {', '.join(missing)}"
                if missing
                else "entries out of order"
            )
            raise BundleError(f"{self.path} does not hold what its manifest lists ({detail})")

    def _entry(self, name: str) -> ZipEntry:
        entry = self._archive.entry(name)
        if entry is None:
            raise BundleError(f"{self.path} has no {name}")
        return entry

    def _iter(self, name: str, size: int, sha256: str, what: str) -> Iterator[bytes | memoryview]:
        """Yield an entry's bytes; raise BundleError at the end when they are not the `size` and `sha256` pinned."""
        entry = self._entry(name)
        if entry.uncompressed_size != size:
            raise BundleError(
                f"{what} in {self.path} is {entry.uncompressed_size} bytes, not the {size} its manifest pins: "
                "the bundle was tampered with or damaged"
            )
        digest = hashlib.sha256()
        try:
            for chunk in self._archive.iter_data(entry, max_size=size):
                digest.update(chunk)
                yield chunk
        except ZipFormatError as exc:
            raise BundleError(f"{what} in {self.path} cannot be read: {exc}") from exc
        if digest.hexdigest() != sha256:
            raise BundleError(
                f"{what} in {self.path} does not match the SHA-256 its manifest pins: the bundle was tampered "
                "with or damaged"
            )

    def _check(self, name: str, size: int, sha256: str, what: str) -> None:
        for _ in self._iter(name, size, sha256, what):
            pass

    def _copy(self, name: str, size: int, sha256: str, what: str, dest: IO[bytes]) -> None:
        for chunk in self._iter(name, size, sha256, what):
            dest.write(chunk)


class RequestBundle(_Bundle):
    """A request whose every payload was found to match the manifest when it was opened."""

    def __init__(self, path: Path, archive: ZipArchive, manifest: bytes, request: SigningRequest):
        super().__init__(path, archive, manifest)
        self.request = request
        self._check_entries([name for item in request.items if (name := item.payload_name) is not None])
        for item in request.items:
            if item.payload_name is not None and item.size is not None:
                self._check(item.payload_name, item.size, item.sha256, _what(item))

    def __enter__(self) -> RequestBundle:
        return self

    def iter_payload(self, item: RequestItem) -> Iterator[bytes | memoryview]:
        """The payload's bytes, checked again against the pinned hash as they stream (the file is re-read)."""
        if item.payload_name is None or item.size is None:
            raise BundleError(f"item {item.id} ({item.name}) is a digest and has no payload")
        return self._iter(item.payload_name, item.size, item.sha256, _what(item))

    def copy_payload(self, item: RequestItem, dest: IO[bytes]) -> None:
        for chunk in self.iter_payload(item):
            dest.write(chunk)


class ResponseBundle(_Bundle):
    """A response whose outputs were found to match its manifest when it was opened (nothing else is trusted)."""

    def __init__(self, path: Path, archive: ZipArchive, manifest: bytes, response: SigningResponse):
        super().__init__(path, archive, manifest)
        self.response = response
        self._check_entries([item.output_entry for item in response.items])
        for item in response.items:
            self._check(item.output_entry, item.output_size, item.output_sha256, f"the output of item {item.id}")

    def __enter__(self) -> ResponseBundle:
        return self

    def copy_output(self, item: ResponseItem, dest: IO[bytes]) -> None:
        self._copy(item.output_entry, item.output_size, item.output_sha256, f"the output of item {item.id}", dest)

    def read_output(self, item: ResponseItem, limit: int = 1024 * 1024) -> bytes:
        if item.output_size > limit:
            raise BundleError(f"the output of item {item.id} is {item.output_size} bytes; a signature is far smaller")
        return b"".join(
            bytes(chunk)
            for chunk in self._iter(
                item.output_entry, item.output_size, item.output_sha256, f"the output of item {item.id}"
            )
        )


def _what(item: RequestItem) -> str:
    return f"the payload of item {item.id} ({item.name})"


def _open_archive(path: Path) -> tuple[ZipArchive, bytes, Any]:
    try:
        archive = ZipArchive.open(path, strict=True)
    except ZipFormatError as exc:
        raise BundleError(f"{path} is not a well-formed signing bundle: {exc}") from exc
    try:
        if not archive.entries or archive.entries[0].name != MANIFEST_NAME:
            raise BundleError(f"{path} is not a signing bundle: its first entry is not {MANIFEST_NAME}")
        entry = archive.entries[0]
        if entry.uncompressed_size > MAX_MANIFEST_SIZE:
            raise BundleError(f"{path}: the manifest is larger than {MAX_MANIFEST_SIZE // (1024 * 1024)} MiB")
        try:
            manifest = archive.read(entry, max_size=MAX_MANIFEST_SIZE)
        except ZipFormatError as exc:
            raise BundleError(f"{path}: cannot read the manifest: {exc}") from exc
        return archive, manifest, parse_manifest(manifest)
    except BaseException:
        archive.close()
        raise


def bundle_format(path: str | os.PathLike[str]) -> str:
    """REQUEST_FORMAT or RESPONSE_FORMAT, from the manifest (nothing else is checked)."""
    archive, _, obj = _open_archive(Path(path))
    archive.close()
    found = obj.get("format") if isinstance(obj, dict) else None
    if found not in (REQUEST_FORMAT, RESPONSE_FORMAT):
        raise BundleError(f"{path} is not a sealgate signing bundle (format {found!r})")
    return str(found)


def open_request(path: str | os.PathLike[str]) -> RequestBundle:
    """Open a request bundle and check every payload against the manifest; BundleError says what is wrong."""
    archive, manifest, obj = _open_archive(Path(path))
    try:
        return RequestBundle(Path(path), archive, manifest, SigningRequest.from_json(obj))
    except BaseException:
        archive.close()
        raise


def open_response(path: str | os.PathLike[str]) -> ResponseBundle:
    """Open a response bundle and check every output against its manifest (the signatures are checked by apply)."""
    archive, manifest, obj = _open_archive(Path(path))
    try:
        return ResponseBundle(Path(path), archive, manifest, SigningResponse.from_json(obj))
    except BaseException:
        archive.close()
        raise


# -- writing ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    path: Path
    size: int
    sha256: str


def _write_bundle(out: Path, manifest: bytes, members: Sequence[_Member]) -> None:
    """Write the bundle to a temporary file beside `out`, check each copied payload, fsync, then rename."""
    if out.exists():
        raise BundleError(f"{out} already exists; choose another name (bundles are never overwritten)")
    directory = out.resolve().parent
    if not directory.is_dir():
        raise BundleError(f"the directory {directory} does not exist")
    temp = directory / f".{out.name}.{secrets.token_hex(4)}.partial"
    try:
        with open(temp, "xb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
                archive.writestr(_info(MANIFEST_NAME), manifest)
                for member in members:
                    _add_member(archive, member)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, out)
        fsync_directory(directory)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise BundleError(f"cannot write {out}: {exc.strerror or exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _add_member(archive: zipfile.ZipFile, member: _Member) -> None:
    digest = hashlib.sha256()
    copied = 0
    with (
        open(member.path, "rb") as source,
        archive.open(_info(member.name), "w", force_zip64=member.size >= 2**31) as dest,
    ):
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            copied += len(chunk)
            dest.write(chunk)
    if copied != member.size or digest.hexdigest() != member.sha256:
        raise BundleError(f"{member.path} changed while the bundle was being written; create the bundle again")


def hash_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror}") from exc
    return digest.hexdigest(), size


def write_request(out: Path, request: SigningRequest, payloads: Mapping[str, Path]) -> str:
    """Write `request` with the files in `payloads` (by item id); returns the request's digest."""
    request.check()
    members = []
    for item in request.items:
        if item.payload_name is None:
            continue
        assert item.size is not None
        members.append(_Member(item.payload_name, payloads[item.id], item.size, item.sha256))
    manifest = request.manifest_bytes()
    _write_bundle(out, manifest, members)
    return hashlib.sha256(manifest).hexdigest()


def write_response(out: Path, response: SigningResponse, outputs: Mapping[str, Path]) -> str:
    """Write `response` with the outputs in `outputs` (by item id); returns the response's digest."""
    members = [
        _Member(item.output_entry, outputs[item.id], item.output_size, item.output_sha256) for item in response.items
    ]
    manifest = response.manifest_bytes()
    _write_bundle(out, manifest, members)
    return hashlib.sha256(manifest).hexdigest()


# -- building a request (online) -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """An item as the requester describes it: a file to sign (apk/file) or a digest, and who should sign it."""

    kind: Kind
    role: str
    path: Path | None = None
    digest: str | None = None
    name: str | None = None
    algorithm: SigningAlgorithm | None = None
    purpose: str | None = None
    apk_options: Mapping[str, bool | int | None] = field(default_factory=dict)
    metadata: ItemMetadata = field(default_factory=ItemMetadata)
    release_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: object, where: str, base: Path) -> ItemSpec:
        """One object of an items.json file; relative paths are taken from the file's own directory."""
        fields = _object(obj, where)
        allowed = {"kind", "role", "path", "sha256", "name", "algorithm", "purpose", "apk_options", "metadata",
                   "release_options"}  # fmt: skip
        _only(fields, allowed, where, optional=frozenset(allowed - {"kind", "role"}))
        kind = fields.get("kind")
        if kind not in KINDS:
            raise BundleError(f"{where}.kind must be one of {', '.join(KINDS)}, not {kind!r}")
        path = fields.get("path")
        if path is not None:
            path = base / _string(path, f"{where}.path")
        algorithm = fields.get("algorithm")
        options = fields.get("apk_options", {})
        return cls(
            kind=kind,
            role=_string(fields.get("role"), f"{where}.role"),
            path=path,
            digest=fields.get("sha256"),
            name=fields.get("name"),
            algorithm=None if algorithm is None else parse_algorithm(algorithm, f"{where}.algorithm"),
            purpose=fields.get("purpose"),
            apk_options=check_apk_options(_object(options, f"{where}.apk_options"), f"{where}.apk_options"),
            metadata=ItemMetadata.from_json(fields.get("metadata", {}), f"{where}.metadata"),
            release_options=check_release_options(
                _object(fields.get("release_options", {}), f"{where}.release_options"), f"{where}.release_options"
            ),
        )


def build_item(spec: ItemSpec, item_id: str) -> RequestItem:
    """Hash the spec's file (or take its digest) and check the item as the offline side will."""
    where = f"item {item_id}"
    if spec.kind == "digest":
        if spec.path is not None or spec.digest is None:
            raise BundleError(f"{where}: a digest item takes sha256 (the digest to sign), not a path")
        if spec.name is None:
            raise BundleError(f"{where}: a digest item needs a name (what the digest is of)")
        sha256, size = _match(spec.digest.lower(), _HEX64, f"{where} sha256", "64 hex digits"), None
    else:
        if spec.path is None or spec.digest is not None:
            raise BundleError(f"{where}: an {spec.kind} item takes a path to the file to sign")
        if not spec.path.is_file():
            raise BundleError(f"{where}: {spec.path} is not a file")
        sha256, size = hash_file(spec.path)
    if spec.kind == "apk":
        if spec.algorithm is not None:
            raise BundleError(f"{where}: an APK is signed with the schemes its options choose, not --algorithm")
        assert spec.path is not None
        _check_apk(spec.path)
    elif spec.kind == "ota":
        if spec.algorithm is not None or spec.apk_options:
            raise BundleError(f"{where}: an OTA package is signed with the hash its certificate names, not --algorithm")
        assert spec.path is not None
        _check_ota(spec.path)
    elif spec.kind in HANDLED_KINDS:
        if spec.algorithm is not None or spec.apk_options:
            raise BundleError(f"{where}: {spec.kind} items are signed as their format prescribes, not --algorithm")
        from sealgate.custody.kinds import handler_for

        assert spec.path is not None
        try:
            handler_for(spec.kind).check_request(spec.path, spec.release_options)
        except BundleError:
            raise
        except SealgateError as exc:
            raise BundleError(f"{where}: {spec.path} cannot be signed as {spec.kind}: {exc}") from exc
    elif spec.algorithm is None:
        raise BundleError(f"{where}: a {spec.kind} item needs a signature algorithm")
    item = RequestItem(
        id=item_id,
        kind=spec.kind,
        name=check_name(spec.name if spec.name is not None else (spec.path.name if spec.path else ""), f"{where} name"),
        sha256=sha256,
        size=size,
        role=_match(spec.role, _ROLE, f"{where} role", "a key role such as releasekey"),
        purpose=_match(spec.purpose or DEFAULT_PURPOSE[spec.kind], _PURPOSE, f"{where} purpose", "a short word"),
        algorithm=spec.algorithm,
        apk_options=check_apk_options(spec.apk_options, f"{where} APK options"),
        metadata=spec.metadata,
        release_options=check_release_options(spec.release_options, f"{where} release options"),
    )
    item.check()
    return item


def _check_apk(path: Path) -> None:
    try:
        with ZipArchive.open(path) as archive:
            if archive.entry("AndroidManifest.xml") is None:
                raise BundleError(f"{path} is not an APK: it has no AndroidManifest.xml")
    except ZipFormatError as exc:
        raise BundleError(f"{path} is not an APK: {exc}") from exc


def _check_ota(path: Path) -> None:
    from sealgate.ota.metadata import read_package_metadata

    try:
        read_package_metadata(path)
    except SealgateError as exc:
        raise BundleError(f"{path} is not an OTA package: {exc}") from exc


def create_request(
    out: Path, specs: Sequence[ItemSpec], *, requester: str, created_at: str | None = None
) -> tuple[SigningRequest, str]:
    """Build and write a request bundle for `specs`; returns it and its digest (to read out to the custodian)."""
    from sealgate.custody.record import utc_now

    if not specs:
        raise BundleError("give at least one item to sign")
    items = tuple(build_item(spec, str(index + 1)) for index, spec in enumerate(specs))
    request = SigningRequest(new_bundle_id(), created_at or utc_now(), _string(requester, "requester"), items)
    payloads = {spec_item.id: spec.path for spec, spec_item in zip(specs, items, strict=True) if spec.path is not None}
    digest = write_request(out, request, payloads)
    return request, digest
