"""releasetools' ota_metadata.proto (package build.tools.releasetools), built at import time from a table.

The schema is written down here field by field, with the numbers and types of build/make/tools/releasetools/
ota_metadata.proto (proto3: PartitionState, DeviceState, ApexInfo, ApexMetadata, OtaMetadata with its OtaType enum
and the `property_files` map), and turned into message classes by the `protobuf` runtime's descriptor pool: no
protoc at build time and no generated code in the tree, so the schema a reviewer reads is the one that runs. The
message and field names are AOSP's, so `protoc --decode build.tools.releasetools.OtaMetadata ota_metadata.proto`
and our classes agree on what every byte means.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

PACKAGE = "build.tools.releasetools"
_FILE_NAME = "sealgate/ota_metadata.proto"

_F = descriptor_pb2.FieldDescriptorProto
#: (name, number, label, type, message or enum type name): the fields of each message, as ota_metadata.proto has them.
_STRING: Any = _F.TYPE_STRING
_BOOL: Any = _F.TYPE_BOOL
_INT64: Any = _F.TYPE_INT64
_MESSAGE: Any = _F.TYPE_MESSAGE
_ENUM: Any = _F.TYPE_ENUM
_ONE: Any = _F.LABEL_OPTIONAL
_MANY: Any = _F.LABEL_REPEATED
_MESSAGES: dict[str, list[tuple[str, int, Any, Any, str | None]]] = {
    "PartitionState": [
        ("partition_name", 1, _ONE, _STRING, None),
        ("device", 2, _MANY, _STRING, None),
        ("build", 3, _MANY, _STRING, None),
        ("version", 4, _ONE, _STRING, None),
    ],
    "DeviceState": [
        ("device", 1, _MANY, _STRING, None),
        ("build", 2, _MANY, _STRING, None),
        ("build_incremental", 3, _ONE, _STRING, None),
        ("timestamp", 4, _ONE, _INT64, None),
        ("sdk_level", 5, _ONE, _STRING, None),
        ("security_patch_level", 6, _ONE, _STRING, None),
        ("partition_state", 7, _MANY, _MESSAGE, "PartitionState"),
    ],
    "ApexInfo": [
        ("package_name", 1, _ONE, _STRING, None),
        ("version", 2, _ONE, _INT64, None),
        ("is_compressed", 3, _ONE, _BOOL, None),
        ("decompressed_size", 4, _ONE, _INT64, None),
    ],
    "ApexMetadata": [
        ("apex_info", 1, _MANY, _MESSAGE, "ApexInfo"),
    ],
    "OtaMetadata": [
        ("type", 1, _ONE, _ENUM, "OtaMetadata.OtaType"),
        ("wipe", 2, _ONE, _BOOL, None),
        ("downgrade", 3, _ONE, _BOOL, None),
        ("property_files", 4, _MANY, _MESSAGE, "OtaMetadata.PropertyFilesEntry"),
        ("precondition", 5, _ONE, _MESSAGE, "DeviceState"),
        ("postcondition", 6, _ONE, _MESSAGE, "DeviceState"),
        ("retrofit_dynamic_partitions", 7, _ONE, _BOOL, None),
        ("required_cache", 8, _ONE, _INT64, None),
        ("spl_downgrade", 9, _ONE, _BOOL, None),
    ],
}
#: OtaMetadata.OtaType, value by name.
OTA_TYPES = {"UNKNOWN": 0, "AB": 1, "BLOCK": 2, "BRICK": 3}


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name=_FILE_NAME, package=PACKAGE, syntax="proto3")
    for message_name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        for name, number, label, field_type, type_name in fields:
            field = message.field.add(name=name, number=number, label=label, type=field_type)
            if type_name is not None:
                field.type_name = f".{PACKAGE}.{type_name}"
    ota_metadata = next(message for message in proto.message_type if message.name == "OtaMetadata")
    enum = ota_metadata.enum_type.add(name="OtaType")
    for name, value in OTA_TYPES.items():
        enum.value.add(name=name, number=value)
    # map<string, string> property_files = 4: a repeated nested entry message with map_entry set, as protoc emits it.
    entry = ota_metadata.nested_type.add(name="PropertyFilesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=_ONE, type=_STRING)
    entry.field.add(name="value", number=2, label=_ONE, type=_STRING)
    return proto


def _classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in _MESSAGES
    }


_CLASSES = _classes()


def new_message(name: str, **fields: Any) -> Any:
    """A new message of one of the schema's types (OtaMetadata, DeviceState, PartitionState, ApexMetadata, ...)."""
    return _CLASSES[name](**fields)


def proto_source() -> str:
    """The schema as .proto text, for tools that want it (`protoc --decode`); generated from the table above."""
    lines = ['syntax = "proto3";', f"package {PACKAGE};", ""]
    names: dict[Any, str] = {_MANY: "repeated ", _ONE: ""}
    scalar: dict[Any, str] = {_STRING: "string", _BOOL: "bool", _INT64: "int64"}
    for message_name, fields in _MESSAGES.items():
        lines.append(f"message {message_name} {{")
        if message_name == "OtaMetadata":
            lines.append("  enum OtaType {")
            lines.extend(f"    {name} = {value};" for name, value in OTA_TYPES.items())
            lines.append("  }")
        for name, number, label, field_type, type_name in fields:
            if name == "property_files":
                lines.append(f"  map<string, string> {name} = {number};")
                continue
            kind = scalar.get(field_type) or (type_name or "").rsplit(".", 1)[-1]
            lines.append(f"  {names[label]}{kind} {name} = {number};")
        lines.append("}")
    return "\n".join(lines) + "\n"
