"""care_map.pb: the blocks update_verifier reads through dm-verity on the first boot after an A/B update.

An A/B OTA package carries care_map.pb (releasetools copies it from the target files' META/care_map.pb);
update_engine stores it in /data/ota_package, and on the first boot of the new slot update_verifier
(bootable/recovery/update_verifier/update_verifier.cpp, UpdateVerifier::ParseCareMap and ReadBlocks) reads every
block it names from the partition's dm-verity device, so a corrupt block is found (and the slot rejected) before
the boot is marked successful. The schema is bootable/recovery/update_verifier/care_map.proto (proto3):

    message CareMap {
      message PartitionInfo { string name = 1; string ranges = 2; string id = 3; string fingerprint = 4; }
      repeated PartitionInfo partitions = 1;
    }

`ranges` is a RangeSet in the raw text form releasetools' rangelib `RangeSet.to_string_raw` writes and
otautil's `RangeSet::Parse` reads: the count of numbers that follow, then that many comma-separated block numbers,
each pair a half-open range [start, end) of 4096-byte blocks ("2,0,1024" is blocks 0 to 1023). `id` names the
property update_verifier reads on the device (ro.system.build.fingerprint, ...) and `fingerprint` the value it must
have: a partition whose property differs (or whose id is empty or "unknown") is skipped, not read.

The schema is a table turned into message classes by `sealgate.protobuf_table` (no generated code), with AOSP's
package name so that `protoc --decode recovery_update_verifier.CareMap` and these classes agree. Reading is as
strict as update_verifier: a partition without a name, or with ranges RangeSet::Parse refuses (no numbers, an odd
count, a count that does not match, a number above INT_MAX, a range that is empty, reversed or overlaps
another: RangeSet::PushBack), makes update_verifier
give up the whole care map, so it is refused here too; unknown field numbers are tolerated, a known field with the
wrong wire type is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import unknown_fields
from google.protobuf.message import DecodeError

from sealgate.errors import OtaFormatError
from sealgate.protobuf_table import Field, file_descriptor, message_classes

CARE_MAP_NAME = "care_map.pb"
PACKAGE = "recovery_update_verifier"
#: update_verifier reads the care map in blocks of this size.
BLOCK_SIZE = 4096
#: update_verifier's "no property to check" id.
UNKNOWN = "unknown"
_FILE_NAME = "sealgate/care_map.proto"
_MESSAGES: dict[str, list[Field]] = {
    "CareMap": [("repeated", "CareMap.PartitionInfo", "partitions", 1)],
    "CareMap.PartitionInfo": [
        ("optional", "string", "name", 1),
        ("optional", "string", "ranges", 2),
        ("optional", "string", "id", 3),
        ("optional", "string", "fingerprint", 4),
    ],
}
_CLASSES = message_classes(file_descriptor(_FILE_NAME, PACKAGE, "proto3", _MESSAGES), ["CareMap"])
_MAX_CARE_MAP = 16 * 1024 * 1024
#: RangeSet::Parse refuses a count or block number above INT_MAX.
_MAX_NUMBER = 2**31 - 1

BlockRanges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PartitionCareMap:
    """One CareMap.PartitionInfo: the partition, its ranges (raw RangeSet text), the property id and its value."""

    name: str
    ranges: str
    id: str
    fingerprint: str

    @property
    def blocks(self) -> BlockRanges:
        return parse_ranges(self.ranges)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ranges": self.ranges,
            "blocks": sum(end - start for start, end in self.blocks),
            "id": self.id,
            "fingerprint": self.fingerprint,
        }


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """rangelib's to_string_raw: "<count>,<start>,<end>,..." of half-open block ranges (at least one)."""
    if not ranges:
        raise ValueError("a care map range set holds at least one range")
    numbers = [number for pair in ranges for number in pair]
    return ",".join(str(number) for number in (len(numbers), *numbers))


def parse_ranges(text: str) -> BlockRanges:
    """The ranges of a raw RangeSet string, refused (OtaFormatError) where otautil's RangeSet::Parse refuses it."""
    fields = text.split(",")
    if not all(_is_uint(field) for field in fields):
        raise OtaFormatError(f"care map ranges {text[:80]!r} are not comma-separated block numbers")
    numbers = [int(field) for field in fields]
    if max(numbers) > _MAX_NUMBER:
        raise OtaFormatError(f"care map ranges {text[:80]!r} name a number above INT_MAX")
    count, values = numbers[0], numbers[1:]
    if count == 0 or count % 2 or count != len(values):
        raise OtaFormatError(f"care map ranges {text[:80]!r} do not start with the even count of numbers that follow")
    ranges = tuple(zip(values[::2], values[1::2], strict=True))
    seen: list[tuple[int, int]] = []
    for start, end in ranges:
        if start >= end:
            raise OtaFormatError(f"care map range [{start}, {end}) is empty or reversed")
        if any(start < other_end and other_start < end for other_start, other_end in seen):
            raise OtaFormatError(f"care map range [{start}, {end}) overlaps another")
        seen.append((start, end))
    return ranges


def _is_uint(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20


def encode_care_map(partitions: Sequence[PartitionCareMap]) -> bytes:
    """The serialized CareMap; every entry's ranges are checked first (update_verifier would drop a bad map)."""
    message: Any = _CLASSES["CareMap"]()
    for partition in partitions:
        if not partition.name:
            raise ValueError("a care map entry needs a partition name")
        parse_ranges(partition.ranges)
        message.partitions.add(name=partition.name, ranges=partition.ranges, id=partition.id,
                               fingerprint=partition.fingerprint)  # fmt: skip
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def decode_care_map(data: bytes, where: str = CARE_MAP_NAME) -> list[PartitionCareMap]:
    """The entries of a care_map.pb, refused (OtaFormatError) where update_verifier's ParseCareMap gives up."""
    if len(data) > _MAX_CARE_MAP:
        raise OtaFormatError(f"{where} is {len(data)} bytes, more than a care map ever needs")
    if not data:
        raise OtaFormatError(f"{where} is empty (update_verifier skips verification)")
    message: Any = _CLASSES["CareMap"]()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError) as exc:
        raise OtaFormatError(f"{where} is not a CareMap message: {exc}") from None
    _refuse_wrong_wire_types(message, {1}, where, "CareMap")
    partitions = []
    for info in message.partitions:
        _refuse_wrong_wire_types(info, {1, 2, 3, 4}, where, "PartitionInfo")
        if not info.name:
            raise OtaFormatError(f"{where} has a partition without a name")
        if not info.ranges:
            raise OtaFormatError(f"{where} gives no block ranges for {info.name}")
        try:
            parse_ranges(info.ranges)
        except OtaFormatError as exc:
            raise OtaFormatError(f"{where}, partition {info.name}: {exc}") from None
        partitions.append(PartitionCareMap(info.name, info.ranges, info.id, info.fingerprint))
    return partitions


def _refuse_wrong_wire_types(message: Any, known: set[int], where: str, type_name: str) -> None:
    unknown_set = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknown_set)):
        number = unknown_set[index].field_number
        if number in known:
            raise OtaFormatError(f"{where}: field {number} of {type_name} has the wrong wire type")


def proto_source() -> str:
    """care_map.proto as text, for `protoc --decode recovery_update_verifier.CareMap`."""
    fields = "".join(f"    string {name} = {number};\n" for _, _, name, number in _MESSAGES["CareMap.PartitionInfo"])
    return (
        f'syntax = "proto3";\npackage {PACKAGE};\n\nmessage CareMap {{\n  message PartitionInfo {{\n{fields}  }}\n'
        "  repeated PartitionInfo partitions = 1;\n}\n"
    )
