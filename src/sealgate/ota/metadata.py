"""OTA package metadata: META-INF/com/android/metadata.pb and the legacy text META-INF/com/android/metadata.

Since Android 11, releasetools builds one `OtaMetadata` message (build/make/tools/releasetools/ota_metadata.proto)
and writes it twice: serialized as metadata.pb, and projected to sorted `key=value` lines as the text file older
clients read (`BuildLegacyOtaMetadata` and `WriteMetadata` in ota_utils.py). The projection is lossy (no post-device,
no pre-timestamp, no partition states) and fixed: ota-type only for AB and BLOCK, the yes/no flags only when set,
ota-required-cache, the post-* keys and pre-device always (empty when unknown), pre-build and pre-build-incremental
only for incrementals, lists joined with '|', then every property-files string under its own name. We write both
forms exactly so; reading prefers metadata.pb and refuses a package whose text says something the message does not.

Strings the proto leaves empty are None here (proto3 cannot tell the two apart, and neither can the text form).
Reading is strict about what each value means (an integer timestamp, a YYYY-MM-DD patch level, "yes" flags,
well-formed property-file tokens) because the device's update decisions rest on them; unknown keys and unknown
field numbers are tolerated, as newer releasetools may add them, but a known field with the wrong wire type is not.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from sealgate.errors import OtaFormatError, SealgateError, UsageError
from sealgate.ota.metadata_proto import OTA_TYPES, new_message
from sealgate.ziparchive import ZipArchive, not_a_zip_reason

METADATA_NAME = "META-INF/com/android/metadata"
METADATA_PROTO_NAME = "META-INF/com/android/metadata.pb"
#: The separator BuildLegacyOtaMetadata joins repeated values (devices, fingerprints) with.
SEPARATOR = "|"
_MAX_METADATA = 1024 * 1024
_SPL = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TOKEN = re.compile(r"^([^:,\s]+):([0-9]{1,19}):([0-9]{1,19})$")  # ASCII digits, below int()'s limit
_FLAGS = {
    "ota-wipe": "wipe",
    "ota-downgrade": "downgrade",
    "ota-retrofit-dynamic-partitions": "retrofit_dynamic_partitions",
    "spl-downgrade": "spl_downgrade",
}
#: Field numbers of each message, to tell a known field with the wrong wire type from a newer, unknown one.
_KNOWN_FIELDS = {
    "OtaMetadata": frozenset(range(1, 10)),
    "DeviceState": frozenset(range(1, 8)),
    "PartitionState": frozenset(range(1, 5)),
}


@dataclass
class PartitionState:
    """DeviceState.partition_state: the build of one partition (version is usually its ro.build.date.utc)."""

    partition_name: str
    device: list[str] = field(default_factory=list)
    build: list[str] = field(default_factory=list)
    version: str | None = None

    def __post_init__(self) -> None:
        if self.version == "":
            self.version = None


@dataclass
class OtaMetadata:
    """releasetools' OtaMetadata message, with the precondition (pre_*) and postcondition (post_*) flattened."""

    ota_type: str = "AB"
    wipe: bool = False
    downgrade: bool = False
    spl_downgrade: bool = False
    retrofit_dynamic_partitions: bool = False
    required_cache: int = 0
    pre_device: list[str] = field(default_factory=list)
    pre_build: list[str] = field(default_factory=list)
    pre_build_incremental: str | None = None
    pre_timestamp: int = 0
    pre_sdk_level: str | None = None
    pre_security_patch_level: str | None = None
    pre_partition_states: list[PartitionState] = field(default_factory=list)
    post_device: list[str] = field(default_factory=list)
    post_build: list[str] = field(default_factory=list)
    post_build_incremental: str | None = None
    post_timestamp: int = 0
    post_sdk_level: str | None = None
    #: YYYY-MM-DD, as ro.build.version.security_patch.
    post_security_patch_level: str | None = None
    post_partition_states: list[PartitionState] = field(default_factory=list)
    #: Property-files strings by name ("ota-property-files", "ota-streaming-property-files"), padding included.
    property_files: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("pre_build_incremental", "pre_sdk_level", "pre_security_patch_level", "post_build_incremental",
                     "post_sdk_level", "post_security_patch_level"):  # fmt: skip
            if getattr(self, name) == "":
                setattr(self, name, None)

    @property
    def is_incremental(self) -> bool:
        return bool(self.pre_build)

    # -- writing -------------------------------------------------------------------------------------------------

    def to_proto(self) -> bytes:
        """metadata.pb: the serialized message, fields in number order and map keys sorted."""
        self.check()
        message = new_message("OtaMetadata")
        message.type = OTA_TYPES[self.ota_type]
        message.wipe = self.wipe
        message.downgrade = self.downgrade
        for key, value in self.property_files.items():
            message.property_files[key] = value
        _fill_device_state(message.precondition, "pre", self)
        _fill_device_state(message.postcondition, "post", self)
        message.retrofit_dynamic_partitions = self.retrofit_dynamic_partitions
        message.required_cache = self.required_cache
        message.spl_downgrade = self.spl_downgrade
        return bytes(message.SerializeToString(deterministic=True))

    def legacy_dict(self) -> dict[str, str]:
        """The text form's keys and values, as BuildLegacyOtaMetadata derives them from the message."""
        self.check()
        result: dict[str, str] = {}
        if self.ota_type in ("AB", "BLOCK"):
            result["ota-type"] = self.ota_type
        for key, attribute in _FLAGS.items():
            if getattr(self, attribute):
                result[key] = "yes"
        result["ota-required-cache"] = str(self.required_cache)
        result["post-build"] = SEPARATOR.join(self.post_build)
        result["post-build-incremental"] = self.post_build_incremental or ""
        result["post-sdk-level"] = self.post_sdk_level or ""
        result["post-security-patch-level"] = self.post_security_patch_level or ""
        result["post-timestamp"] = str(self.post_timestamp)
        result["pre-device"] = SEPARATOR.join(self.pre_device)
        if self.pre_build:
            result["pre-build"] = SEPARATOR.join(self.pre_build)
            result["pre-build-incremental"] = self.pre_build_incremental or ""
        result.update(self.property_files)
        return result

    def to_text(self) -> str:
        """META-INF/com/android/metadata: `key=value` lines sorted by key, as WriteMetadata writes them."""
        return "".join(f"{key}={value}\n" for key, value in sorted(self.legacy_dict().items()))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        """UsageError for values the two forms cannot carry faithfully (they would be read back differently)."""
        if self.ota_type not in OTA_TYPES:
            raise UsageError(f"ota type {self.ota_type!r} is not one of {', '.join(OTA_TYPES)}")
        for name in ("required_cache", "pre_timestamp", "post_timestamp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise UsageError(f"{name} must be a non-negative integer, not {value!r}")
        for name in ("pre_security_patch_level", "post_security_patch_level"):
            value = getattr(self, name)
            if value is not None and not _SPL.match(value):
                raise UsageError(f"{name} must be a date like 2024-01-05, not {value!r}")
        for name in ("pre_device", "pre_build", "post_device", "post_build"):
            for item in getattr(self, name):
                _check_text(name, item, SEPARATOR)
                if not item:
                    raise UsageError(f"{name} holds an empty value")
        for name in ("pre_build_incremental", "pre_sdk_level", "post_build_incremental", "post_sdk_level"):
            _check_text(name, getattr(self, name) or "", "")
        for key, value in self.property_files.items():
            _check_text("a property-files name", key, "=")
            _check_text(key, value, "", padded=True)
            if key in _FLAG_AND_FIXED_KEYS:
                raise UsageError(f"{key!r} cannot be a property-files name: the text form uses it for another value")

    # -- reading -------------------------------------------------------------------------------------------------

    @classmethod
    def from_proto(cls, data: bytes) -> OtaMetadata:
        """Parse metadata.pb; OtaFormatError when it is not a well-formed OtaMetadata."""
        message = new_message("OtaMetadata")
        try:
            message.ParseFromString(data)
        except (DecodeError, ValueError) as exc:
            raise OtaFormatError(f"{METADATA_PROTO_NAME} is not an OtaMetadata message: {exc}") from None
        _refuse_wrong_wire_types(message, "OtaMetadata")
        type_names = {value: name for name, value in OTA_TYPES.items()}
        if message.type not in type_names:
            raise OtaFormatError(f"{METADATA_PROTO_NAME} names an unknown OTA type {message.type}")
        metadata = cls(
            ota_type=type_names[message.type],
            wipe=message.wipe,
            downgrade=message.downgrade,
            spl_downgrade=message.spl_downgrade,
            retrofit_dynamic_partitions=message.retrofit_dynamic_partitions,
            required_cache=message.required_cache,
            property_files=dict(sorted(message.property_files.items())),
        )
        _read_device_state(message.precondition, "pre", metadata)
        _read_device_state(message.postcondition, "post", metadata)
        _check_read(metadata, METADATA_PROTO_NAME)
        return metadata

    @classmethod
    def from_text(cls, text: str) -> OtaMetadata:
        """Parse the text form; what it cannot carry (post-device, partition states, ...) stays empty."""
        values = parse_text(text)
        metadata = cls(ota_type=values.get("ota-type", "UNKNOWN"))
        if metadata.ota_type not in OTA_TYPES:
            raise OtaFormatError(f"{METADATA_NAME}: unknown ota-type {metadata.ota_type!r}")
        for key, attribute in _FLAGS.items():
            if key in values:
                if values[key] != "yes":
                    raise OtaFormatError(f"{METADATA_NAME}: {key} must be 'yes' when present, not {values[key]!r}")
                setattr(metadata, attribute, True)
        metadata.required_cache = _integer(values, "ota-required-cache")
        metadata.post_timestamp = _integer(values, "post-timestamp")
        metadata.post_build = _list(values.get("post-build", ""))
        metadata.post_build_incremental = values.get("post-build-incremental") or None
        metadata.post_sdk_level = values.get("post-sdk-level") or None
        metadata.post_security_patch_level = values.get("post-security-patch-level") or None
        metadata.pre_device = _list(values.get("pre-device", ""))
        metadata.pre_build = _list(values.get("pre-build", ""))
        metadata.pre_build_incremental = values.get("pre-build-incremental") or None
        metadata.property_files = {key: value for key, value in values.items() if key.endswith("-property-files")}
        _check_read(metadata, METADATA_NAME)
        return metadata


_FLAG_AND_FIXED_KEYS = frozenset(
    {*_FLAGS, "ota-type", "ota-required-cache", "post-build", "post-build-incremental", "post-sdk-level",
     "post-security-patch-level", "post-timestamp", "pre-device", "pre-build", "pre-build-incremental"}
)  # fmt: skip


def parse_text(text: str) -> dict[str, str]:
    """`key=value` lines, keys and values trimmed as recovery trims them; OtaFormatError on anything else."""
    values: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        key, separator, value = line.partition("=")
        key = key.strip()
        if not separator or not key:
            raise OtaFormatError(f"{METADATA_NAME} line {number} is not key=value: {line[:80]!r}")
        if key in values:
            raise OtaFormatError(f"{METADATA_NAME} names {key!r} twice")
        values[key] = value.strip()
    return values


@dataclass(frozen=True)
class PropertyToken:
    """One `name:offset:size` token of a property-files string: where an entry's data lies in the package."""

    name: str
    offset: int
    size: int

    def __str__(self) -> str:
        return f"{self.name}:{self.offset}:{self.size}"


def parse_property_files(value: str, *, key: str = "property files") -> list[PropertyToken]:
    """The tokens of a property-files string (trailing padding ignored); OtaFormatError on a malformed one."""
    tokens = []
    for token in value.strip().split(","):
        match = _TOKEN.match(token.strip())
        if match is None:
            raise OtaFormatError(f"{key}: {token.strip()[:80]!r} is not a name:offset:size token")
        tokens.append(PropertyToken(match.group(1), int(match.group(2)), int(match.group(3))))
    return tokens


def open_package(path: str | os.PathLike[str]) -> ZipArchive:
    """An OTA package opened for reading; OtaFormatError when it is not a ZIP archive or breaks a rule that
    libziparchive enforces (duplicate names above all: which entry would a device read?)."""
    try:
        archive = ZipArchive.open(path)
    except SealgateError as exc:
        raise OtaFormatError(f"{os.fspath(path)}: {not_a_zip_reason(exc)}") from None
    if archive.violations:
        archive.close()
        raise OtaFormatError(f"{os.fspath(path)}: {archive.violations[0].message}")
    return archive


def read_package_metadata(path: str | os.PathLike[str]) -> OtaMetadata:
    """The package's metadata: metadata.pb when present, else the text file; both present must agree.

    "Agree" is releasetools' own relation between the two: the text must be exactly what BuildLegacyOtaMetadata
    derives from the message (values compared trimmed, as every reader trims them).
    """
    with open_package(path) as archive:
        proto_data = _read_entry(archive, METADATA_PROTO_NAME)
        text_data = _read_entry(archive, METADATA_NAME)
    if proto_data is None and text_data is None:
        raise OtaFormatError(f"{os.fspath(path)} has neither {METADATA_PROTO_NAME} nor {METADATA_NAME}")
    text = None
    if text_data is not None:
        try:
            text = text_data.decode("utf-8")
        except UnicodeDecodeError:
            raise OtaFormatError(f"{METADATA_NAME} is not UTF-8 text") from None
    if proto_data is None:
        assert text is not None
        return OtaMetadata.from_text(text)
    metadata = OtaMetadata.from_proto(proto_data)
    if text is not None:
        expected = {key: value.strip() for key, value in metadata.legacy_dict().items()}
        found = parse_text(text)
        if found != expected:
            differences = sorted(key for key in expected.keys() | found.keys() if expected.get(key) != found.get(key))
            shown = ", ".join(
                f"{key}: text {found.get(key)!r}, metadata.pb {expected.get(key)!r}" for key in differences[:3]
            )
            raise OtaFormatError(f"{METADATA_NAME} and {METADATA_PROTO_NAME} disagree ({shown})")
    return metadata


def ab_metadata(
    *,
    device: str,
    post_build: str,
    post_timestamp: int,
    post_security_patch_level: str,
    post_sdk_level: str | None = None,
    post_build_incremental: str | None = None,
    pre_build: list[str] | None = None,
    pre_build_incremental: str | None = None,
    downgrade: bool = False,
    wipe: bool = False,
    spl_downgrade: bool = False,
    pre_timestamp: int | None = None,
) -> OtaMetadata:
    """The metadata releasetools' GetPackageMetadata writes for an A/B package of one device and build.

    A full package's precondition names only the device; an incremental's also the build it applies to. A
    downgrade wipes the device, as `ota_from_target_files --downgrade` makes it. When the source build's
    timestamp is known (`pre_timestamp`, not written: releasetools leaves it out of the precondition too),
    HandleDowngradeMetadata's rule applies: a package that goes back in time must say downgrade, and one that
    says downgrade must go back in time.
    """
    if pre_timestamp is not None:
        if post_timestamp < pre_timestamp and not downgrade:
            raise UsageError(
                f"the target build ({post_timestamp}) is older than the source build ({pre_timestamp}); "
                "a package that goes back in time must say --downgrade (and then wipes the device)"
            )
        if downgrade and post_timestamp >= pre_timestamp:
            raise UsageError(
                f"--downgrade, but the target build ({post_timestamp}) is not older than the source ({pre_timestamp})"
            )
    metadata = OtaMetadata(
        ota_type="AB",
        wipe=wipe or downgrade,
        downgrade=downgrade,
        spl_downgrade=spl_downgrade,
        pre_device=[device],
        pre_build=sorted(pre_build or []),
        pre_build_incremental=pre_build_incremental if pre_build else None,
        post_device=[device],
        post_build=[post_build],
        post_build_incremental=post_build_incremental,
        post_timestamp=post_timestamp,
        post_sdk_level=post_sdk_level,
        post_security_patch_level=post_security_patch_level,
    )
    metadata.check()
    return metadata


# -- internals ----------------------------------------------------------------------------------------------------


def _check_text(name: str, value: str, forbidden: str, *, padded: bool = False) -> None:
    if not isinstance(value, str):
        raise UsageError(f"{name} must be text, not {value!r}")
    bad = {"\n", "\r", "\x00", *forbidden} & set(value)
    if bad:
        raise UsageError(f"{name} {value[:80]!r} contains {sorted(bad)[0]!r}, which the metadata text cannot carry")
    if (value.rstrip() if padded else value) != value.strip():
        raise UsageError(f"{name} {value[:80]!r} has surrounding spaces, which readers of the text form trim away")


def _fill_device_state(state: Any, prefix: str, metadata: OtaMetadata) -> None:
    state.device.extend(getattr(metadata, f"{prefix}_device"))
    state.build.extend(getattr(metadata, f"{prefix}_build"))
    state.build_incremental = getattr(metadata, f"{prefix}_build_incremental") or ""
    state.timestamp = getattr(metadata, f"{prefix}_timestamp")
    state.sdk_level = getattr(metadata, f"{prefix}_sdk_level") or ""
    state.security_patch_level = getattr(metadata, f"{prefix}_security_patch_level") or ""
    for partition in getattr(metadata, f"{prefix}_partition_states"):
        item = state.partition_state.add()
        item.partition_name = partition.partition_name
        item.device.extend(partition.device)
        item.build.extend(partition.build)
        item.version = partition.version or ""


def _read_device_state(state: Any, prefix: str, metadata: OtaMetadata) -> None:
    setattr(metadata, f"{prefix}_device", list(state.device))
    setattr(metadata, f"{prefix}_build", list(state.build))
    setattr(metadata, f"{prefix}_build_incremental", state.build_incremental or None)
    setattr(metadata, f"{prefix}_timestamp", state.timestamp)
    setattr(metadata, f"{prefix}_sdk_level", state.sdk_level or None)
    setattr(metadata, f"{prefix}_security_patch_level", state.security_patch_level or None)
    setattr(
        metadata,
        f"{prefix}_partition_states",
        [
            PartitionState(item.partition_name, list(item.device), list(item.build), item.version or None)
            for item in state.partition_state
        ],
    )


def _refuse_wrong_wire_types(message: Any, type_name: str) -> None:
    unknown_set = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknown_set)):
        unknown = unknown_set[index]
        if unknown.field_number in _KNOWN_FIELDS[type_name]:
            raise OtaFormatError(
                f"{METADATA_PROTO_NAME}: field {unknown.field_number} of {type_name} has the wrong wire type"
            )
    if type_name == "OtaMetadata":
        for state in (message.precondition, message.postcondition):
            _refuse_wrong_wire_types(state, "DeviceState")
    elif type_name == "DeviceState":
        for partition in message.partition_state:
            _refuse_wrong_wire_types(partition, "PartitionState")


def _check_read(metadata: OtaMetadata, where: str) -> None:
    """The meaning checks of `check`, reported as a malformed file rather than a caller's mistake."""
    for name in ("pre_timestamp", "post_timestamp", "required_cache"):
        if not 0 <= getattr(metadata, name) < 2**63:
            raise OtaFormatError(f"{where}: {name} is out of range")
    for name in ("pre_security_patch_level", "post_security_patch_level"):
        value = getattr(metadata, name)
        if value is not None and not _SPL.match(value):
            raise OtaFormatError(f"{where}: {name} {value!r} is not a YYYY-MM-DD date")
    for key, value in metadata.property_files.items():
        parse_property_files(value, key=f"{where}: {key}")


def _integer(values: dict[str, str], key: str) -> int:
    value = values.get(key)
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 19:  # 19 digits hold any value below 2**63
        raise OtaFormatError(f"{METADATA_NAME}: {key} must be a non-negative integer, not {value[:40]!r}")
    return int(value)


def _list(value: str) -> list[str]:
    return [item for item in value.split(SEPARATOR) if item] if value else []


def _read_entry(archive: ZipArchive, name: str) -> bytes | None:
    entry = archive.entry(name)
    if entry is None:
        return None
    try:
        return archive.read(entry, max_size=_MAX_METADATA)
    except SealgateError as exc:
        raise OtaFormatError(f"{name} cannot be read: {exc}") from None
