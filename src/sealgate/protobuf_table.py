"""Protobuf schemas written as tables, turned into real message classes by the `protobuf` runtime at import time.

Both of the protobuf formats sealgate writes (update_engine's update_metadata.proto and releasetools'
ota_metadata.proto) are spelt out field by field in their modules, with AOSP's numbers, labels and types, so the
schema a reviewer reads is the one that runs: no protoc at build time and no generated code to keep in step. This
module is the one piece that turns such a table into a FileDescriptorProto and the classes of a descriptor pool.

A field is `(label, type, name, number[, default])`: label "optional", "required" or "repeated"; type a scalar's
name ("uint64", "string", ...), an enum's or a message's name relative to the package ("InstallOperation.Type",
"Signatures.Signature"). A dotted message name is nested in the message before the dot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_F = descriptor_pb2.FieldDescriptorProto
LABELS: dict[str, Any] = {"optional": _F.LABEL_OPTIONAL, "required": _F.LABEL_REQUIRED, "repeated": _F.LABEL_REPEATED}
SCALARS: dict[str, Any] = {
    "uint64": _F.TYPE_UINT64,
    "uint32": _F.TYPE_UINT32,
    "int64": _F.TYPE_INT64,
    "fixed32": _F.TYPE_FIXED32,
    "bool": _F.TYPE_BOOL,
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
}
Field = tuple[Any, ...]


def file_descriptor(
    file_name: str,
    package: str,
    syntax: str,
    messages: Mapping[str, Sequence[Field]],
    *,
    enums: Mapping[str, Mapping[str, int]] | None = None,
    maps: Mapping[str, tuple[str, str]] | None = None,
    reserved: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto of a table: `enums` are nested enums (values by name), `maps` the entry messages of
    `map<key, value>` fields (as protoc emits them: nested, map_entry set, key = 1, value = 2), `reserved` the
    [start, end) field-number ranges of a message."""
    enums, maps, reserved = enums or {}, maps or {}, reserved or {}
    proto = descriptor_pb2.FileDescriptorProto(name=file_name, package=package, syntax=syntax)
    tops: dict[str, descriptor_pb2.DescriptorProto] = {}

    def nested(full_name: str) -> tuple[descriptor_pb2.DescriptorProto, str]:
        outer, _, inner = full_name.partition(".")
        if outer not in tops:
            tops[outer] = proto.message_type.add(name=outer)
        return tops[outer], inner

    for full_name, fields in messages.items():
        parent, inner = nested(full_name)
        message = parent.nested_type.add(name=inner) if inner else parent
        for start, end in reserved.get(full_name, []):
            message.reserved_range.add(start=start, end=end)
        for label, type_name, name, number, *default in fields:
            field = message.field.add(name=name, number=number, label=LABELS[label])
            if type_name in SCALARS:
                field.type = SCALARS[type_name]
            else:
                field.type = _F.TYPE_ENUM if type_name in enums else _F.TYPE_MESSAGE
                field.type_name = f".{package}.{type_name}"
            if default:
                field.default_value = default[0]
    for full_name, (key_type, value_type) in maps.items():
        parent, inner = nested(full_name)
        entry = parent.nested_type.add(name=inner)
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=SCALARS[key_type])
        entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=SCALARS[value_type])
    for full_name, values in enums.items():
        parent, inner = nested(full_name)
        enum = parent.enum_type.add(name=inner)
        for value_name, number in sorted(values.items(), key=lambda item: item[1]):
            enum.value.add(name=value_name, number=number)
    return proto


def message_classes(proto: descriptor_pb2.FileDescriptorProto, names: Sequence[str]) -> dict[str, type[Message]]:
    """The message classes of `names` (relative to the file's package), from a pool of their own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{proto.package}.{name}")) for name in names
    }
