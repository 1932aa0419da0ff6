"""releasetools' ota_metadata.proto (package build.tools.releasetools), built at import time from a table.

The schema is written down here field by field, with the numbers and types of build/make/tools/releasetools/
ota_metadata.proto (proto3: PartitionState, DeviceState, ApexInfo, ApexMetadata, OtaMetadata with its OtaType enum
and the `property_files` map), and turned into message classes by sealgate.protobuf_table: no
protoc at build time and no generated code in the tree, so the schema a reviewer reads is the one that runs. The
message and field names are AOSP's, so `protoc --decode build.tools.releasetools.OtaMetadata ota_metadata.proto`
and our classes agree on what every byte means.
"""

from __future__ import annotations

from typing import Any

from sealgate.protobuf_table import Field, file_descriptor, message_classes

PACKAGE = "build.tools.releasetools"
_FILE_NAME = "sealgate/ota_metadata.proto"

#: (label, type, name, number): the fields of each message, as ota_metadata.proto has them.
_MESSAGES: dict[str, list[Field]] = {
    "PartitionState": [
        ("optional", "string", "partition_name", 1),
        ("repeated", "string", "device", 2),
        ("repeated", "string", "build", 3),
        ("optional", "string", "version", 4),
    ],
    "DeviceState": [
        ("repeated", "string", "device", 1),
        ("repeated", "string", "build", 2),
        ("optional", "string", "build_incremental", 3),
        ("optional", "int64", "timestamp", 4),
        ("optional", "string", "sdk_level", 5),
        ("optional", "string", "security_patch_level", 6),
        ("repeated", "PartitionState", "partition_state", 7),
    ],
    "ApexInfo": [
        ("optional", "string", "package_name", 1),
        ("optional", "int64", "version", 2),
        ("optional", "bool", "is_compressed", 3),
        ("optional", "int64", "decompressed_size", 4),
    ],
    "ApexMetadata": [
        ("repeated", "ApexInfo", "apex_info", 1),
    ],
    "OtaMetadata": [
        ("optional", "OtaMetadata.OtaType", "type", 1),
        ("optional", "bool", "wipe", 2),
        ("optional", "bool", "downgrade", 3),
        ("repeated", "OtaMetadata.PropertyFilesEntry", "property_files", 4),
        ("optional", "DeviceState", "precondition", 5),
        ("optional", "DeviceState", "postcondition", 6),
        ("optional", "bool", "retrofit_dynamic_partitions", 7),
        ("optional", "int64", "required_cache", 8),
        ("optional", "bool", "spl_downgrade", 9),
    ],
}
#: OtaMetadata.OtaType, value by name.
OTA_TYPES = {"UNKNOWN": 0, "AB": 1, "BLOCK": 2, "BRICK": 3}


# map<string, string> property_files = 4: a repeated nested entry message, as protoc emits it.
_MAPS = {"OtaMetadata.PropertyFilesEntry": ("string", "string")}
_CLASSES = message_classes(
    file_descriptor(_FILE_NAME, PACKAGE, "proto3", _MESSAGES, enums={"OtaMetadata.OtaType": OTA_TYPES}, maps=_MAPS),
    list(_MESSAGES),
)


def new_message(name: str, **fields: Any) -> Any:
    """A new message of one of the schema's types (OtaMetadata, DeviceState, PartitionState, ApexMetadata, ...)."""
    return _CLASSES[name](**fields)


def proto_source() -> str:
    """The schema as .proto text, for tools that want it (`protoc --decode`); generated from the table above."""
    lines = ['syntax = "proto3";', f"package {PACKAGE};", ""]
    for message_name, fields in _MESSAGES.items():
        lines.append(f"message {message_name} {{")
        if message_name == "OtaMetadata":
            lines.append("  enum OtaType {")
            lines.extend(f"    {name} = {value};" for name, value in OTA_TYPES.items())
            lines.append("  }")
        for label, kind, name, number in fields:
            if name == "property_files":
                lines.append(f"  map<string, string> {name} = {number};")
                continue
            repeated = "repeated " if label == "repeated" else ""
            lines.append(f"  {repeated}{kind.rsplit('.', 1)[-1]} {name} = {number};")
        lines.append("}")
    return "\n".join(lines) + "\n"
