"""vbmeta descriptors: what a vbmeta image vouches for (libavb/avb_descriptor.h and the per-type headers).

Every descriptor is a big-endian (tag, num_bytes_following) header followed by a fixed part and variable-length
data, padded with zeros to a multiple of 8 (avbtool.py AvbDescriptor.encode and its subclasses). Known tags:
0 property (key/value, both NUL-terminated), 1 hashtree (dm-verity parameters, partition name, salt, root digest),
2 hash (image size, partition name, salt, digest), 3 kernel command line, 4 chain partition (partition name, rollback
index location and the public key that partition's own vbmeta must be signed with). Other tags are kept as opaque
bytes, so a descriptor a newer avbtool writes survives re-signing.

Parsing is strict: num_bytes_following must be exactly what avbtool writes for the lengths the descriptor declares
(libavb only needs it large enough; nothing conforming writes more), padding must be zero and names UTF-8, so that
`encode()` of a parsed descriptor gives back the same bytes. Reserved bytes are kept as found.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from sealgate.errors import AvbFormatError

_DESCRIPTOR_HEADER = struct.Struct(">QQ")
_PROPERTY = struct.Struct(">QQ")
_HASHTREE = struct.Struct(">LQQQLLLQQ32sLLLL60s")
_HASH = struct.Struct(">Q32sLLLL60s")
_KERNEL_CMDLINE = struct.Struct(">LL")
_CHAIN_PARTITION = struct.Struct(">LLLL60s")
_RESERVED = bytes(60)


def _round8(size: int) -> int:
    return (size + 7) & ~7


def _pack(tag: int, fixed: bytes, variable: bytes) -> bytes:
    size = len(fixed) + len(variable)
    padded = _round8(size)
    return _DESCRIPTOR_HEADER.pack(tag, padded) + fixed + variable + bytes(padded - size)


def _check_body(kind: str, body: bytes, fixed_size: int, variable_size: int) -> bytes:
    """The variable data of a descriptor body, after checking its size and padding as avbtool writes them."""
    if len(body) < fixed_size:
        raise AvbFormatError(f"{kind} descriptor is {len(body)} bytes, shorter than its {fixed_size}-byte header")
    expected = _round8(fixed_size + variable_size)
    if len(body) != expected:
        raise AvbFormatError(
            f"{kind} descriptor declares {variable_size} bytes of data, so it must be {expected} bytes long; "
            f"it is {len(body)}"
        )
    if any(body[fixed_size + variable_size :]):
        raise AvbFormatError(f"{kind} descriptor has non-zero padding")
    return body[fixed_size : fixed_size + variable_size]


def _text(kind: str, what: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AvbFormatError(f"{kind} descriptor's {what} is not UTF-8: {exc}") from exc


def _hash_algorithm(kind: str, field: bytes) -> str:
    name, _, rest = field.partition(b"\0")
    if any(rest) or not name.isascii():
        raise AvbFormatError(f"{kind} descriptor's hash algorithm field is not a NUL-padded ASCII name")
    return name.decode("ascii")


@dataclass(frozen=True)
class PropertyDescriptor:
    TAG: ClassVar[int] = 0
    key: str
    value: bytes

    @classmethod
    def parse(cls, body: bytes) -> PropertyDescriptor:
        if len(body) < _PROPERTY.size:
            raise AvbFormatError("property descriptor is shorter than its header")
        key_size, value_size = _PROPERTY.unpack_from(body)
        data = _check_body("property", body, _PROPERTY.size, key_size + 1 + value_size + 1)
        if data[key_size] != 0 or data[-1] != 0:
            raise AvbFormatError("property descriptor's key or value is not NUL-terminated")
        return cls(_text("property", "key", data[:key_size]), data[key_size + 1 : -1])

    def encode(self) -> bytes:
        key = self.key.encode("utf-8")
        return _pack(self.TAG, _PROPERTY.pack(len(key), len(self.value)), key + b"\0" + self.value + b"\0")

    def to_json(self) -> dict[str, Any]:
        try:
            value: str = self.value.decode("utf-8")
        except UnicodeDecodeError:
            value = self.value.hex()
        return {"type": "property", "key": self.key, "value": value}


@dataclass(frozen=True)
class HashtreeDescriptor:
    TAG: ClassVar[int] = 1
    FLAG_DO_NOT_USE_AB: ClassVar[int] = 1 << 0
    FLAG_CHECK_AT_MOST_ONCE: ClassVar[int] = 1 << 1
    dm_verity_version: int
    image_size: int
    tree_offset: int
    tree_size: int
    data_block_size: int
    hash_block_size: int
    fec_num_roots: int
    fec_offset: int
    fec_size: int
    hash_algorithm: str
    partition_name: str
    salt: bytes
    root_digest: bytes
    flags: int = 0
    reserved: bytes = _RESERVED

    @classmethod
    def parse(cls, body: bytes) -> HashtreeDescriptor:
        if len(body) < _HASHTREE.size:
            raise AvbFormatError("hashtree descriptor is shorter than its header")
        (version, image_size, tree_offset, tree_size, data_block, hash_block, fec_roots, fec_offset, fec_size,
         algorithm, name_size, salt_size, digest_size, flags, reserved) = _HASHTREE.unpack_from(body)  # fmt: skip
        data = _check_body("hashtree", body, _HASHTREE.size, name_size + salt_size + digest_size)
        return cls(
            version, image_size, tree_offset, tree_size, data_block, hash_block, fec_roots, fec_offset, fec_size,
            _hash_algorithm("hashtree", algorithm), _text("hashtree", "partition name", data[:name_size]),
            data[name_size : name_size + salt_size], data[name_size + salt_size :], flags, reserved,
        )  # fmt: skip

    def encode(self) -> bytes:
        name = self.partition_name.encode("utf-8")
        fixed = _HASHTREE.pack(
            self.dm_verity_version, self.image_size, self.tree_offset, self.tree_size, self.data_block_size,
            self.hash_block_size, self.fec_num_roots, self.fec_offset, self.fec_size,
            self.hash_algorithm.encode("ascii"), len(name), len(self.salt), len(self.root_digest), self.flags,
            self.reserved,
        )  # fmt: skip
        return _pack(self.TAG, fixed, name + self.salt + self.root_digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "hashtree",
            "partition": self.partition_name,
            "dm_verity_version": self.dm_verity_version,
            "image_size": self.image_size,
            "tree_offset": self.tree_offset,
            "tree_size": self.tree_size,
            "data_block_size": self.data_block_size,
            "hash_block_size": self.hash_block_size,
            "fec_num_roots": self.fec_num_roots,
            "fec_offset": self.fec_offset,
            "fec_size": self.fec_size,
            "hash_algorithm": self.hash_algorithm,
            "salt": self.salt.hex(),
            "root_digest": self.root_digest.hex(),
            "flags": self.flags,
        }


@dataclass(frozen=True)
class HashDescriptor:
    TAG: ClassVar[int] = 2
    image_size: int
    hash_algorithm: str
    partition_name: str
    salt: bytes
    digest: bytes
    flags: int = 0
    reserved: bytes = _RESERVED

    @classmethod
    def parse(cls, body: bytes) -> HashDescriptor:
        if len(body) < _HASH.size:
            raise AvbFormatError("hash descriptor is shorter than its header")
        image_size, algorithm, name_size, salt_size, digest_size, flags, reserved = _HASH.unpack_from(body)
        data = _check_body("hash", body, _HASH.size, name_size + salt_size + digest_size)
        return cls(
            image_size, _hash_algorithm("hash", algorithm), _text("hash", "partition name", data[:name_size]),
            data[name_size : name_size + salt_size], data[name_size + salt_size :], flags, reserved,
        )  # fmt: skip

    def encode(self) -> bytes:
        name = self.partition_name.encode("utf-8")
        fixed = _HASH.pack(
            self.image_size, self.hash_algorithm.encode("ascii"), len(name), len(self.salt), len(self.digest),
            self.flags, self.reserved,
        )  # fmt: skip
        return _pack(self.TAG, fixed, name + self.salt + self.digest)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "hash",
            "partition": self.partition_name,
            "image_size": self.image_size,
            "hash_algorithm": self.hash_algorithm,
            "salt": self.salt.hex(),
            "digest": self.digest.hex(),
            "flags": self.flags,
        }


@dataclass(frozen=True)
class KernelCmdlineDescriptor:
    TAG: ClassVar[int] = 3
    FLAG_USE_ONLY_IF_HASHTREE_NOT_DISABLED: ClassVar[int] = 1 << 0
    FLAG_USE_ONLY_IF_HASHTREE_DISABLED: ClassVar[int] = 1 << 1
    kernel_cmdline: str
    flags: int = 0

    @classmethod
    def parse(cls, body: bytes) -> KernelCmdlineDescriptor:
        if len(body) < _KERNEL_CMDLINE.size:
            raise AvbFormatError("kernel command-line descriptor is shorter than its header")
        flags, length = _KERNEL_CMDLINE.unpack_from(body)
        data = _check_body("kernel command-line", body, _KERNEL_CMDLINE.size, length)
        return cls(_text("kernel command-line", "command line", data), flags)

    def encode(self) -> bytes:
        cmdline = self.kernel_cmdline.encode("utf-8")
        return _pack(self.TAG, _KERNEL_CMDLINE.pack(self.flags, len(cmdline)), cmdline)

    def to_json(self) -> dict[str, Any]:
        return {"type": "kernel_cmdline", "kernel_cmdline": self.kernel_cmdline, "flags": self.flags}


@dataclass(frozen=True)
class ChainPartitionDescriptor:
    TAG: ClassVar[int] = 4
    FLAG_DO_NOT_USE_AB: ClassVar[int] = 1 << 0
    rollback_index_location: int
    partition_name: str
    public_key: bytes
    flags: int = 0
    reserved: bytes = _RESERVED

    @classmethod
    def parse(cls, body: bytes) -> ChainPartitionDescriptor:
        if len(body) < _CHAIN_PARTITION.size:
            raise AvbFormatError("chain partition descriptor is shorter than its header")
        location, name_size, key_size, flags, reserved = _CHAIN_PARTITION.unpack_from(body)
        data = _check_body("chain partition", body, _CHAIN_PARTITION.size, name_size + key_size)
        return cls(location, _text("chain partition", "partition name", data[:name_size]), data[name_size:], flags,
                   reserved)  # fmt: skip

    def encode(self) -> bytes:
        name = self.partition_name.encode("utf-8")
        fixed = _CHAIN_PARTITION.pack(
            self.rollback_index_location, len(name), len(self.public_key), self.flags, self.reserved
        )
        return _pack(self.TAG, fixed, name + self.public_key)

    def to_json(self) -> dict[str, Any]:
        from sealgate.avb.keys import encoded_key_digest

        return {
            "type": "chain_partition",
            "partition": self.partition_name,
            "rollback_index_location": self.rollback_index_location,
            "public_key_digest": encoded_key_digest(self.public_key),
            "flags": self.flags,
        }


@dataclass(frozen=True)
class UnknownDescriptor:
    """A descriptor with a tag this version does not know, kept byte for byte (its body after the header)."""

    tag: int
    body: bytes

    def encode(self) -> bytes:
        return _DESCRIPTOR_HEADER.pack(self.tag, len(self.body)) + self.body

    def to_json(self) -> dict[str, Any]:
        return {"type": "unknown", "tag": self.tag, "size": len(self.body)}


Descriptor = (
    PropertyDescriptor
    | HashtreeDescriptor
    | HashDescriptor
    | KernelCmdlineDescriptor
    | ChainPartitionDescriptor
    | UnknownDescriptor
)

_KNOWN: dict[int, Any] = {
    cls.TAG: cls
    for cls in (
        PropertyDescriptor,
        HashtreeDescriptor,
        HashDescriptor,
        KernelCmdlineDescriptor,
        ChainPartitionDescriptor,
    )
}


def parse_descriptors(data: bytes) -> list[Descriptor]:
    """Every descriptor in a vbmeta image's descriptor area, which they must fill exactly (avb_descriptor_foreach)."""
    descriptors: list[Descriptor] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _DESCRIPTOR_HEADER.size:
            raise AvbFormatError(f"descriptor area ends inside a descriptor header at offset {offset}")
        tag, following = _DESCRIPTOR_HEADER.unpack_from(data, offset)
        if following % 8:
            raise AvbFormatError(f"descriptor at offset {offset} has a size ({following}) not divisible by 8")
        start = offset + _DESCRIPTOR_HEADER.size
        if following > len(data) - start:
            raise AvbFormatError(f"descriptor at offset {offset} runs past the end of the descriptor area")
        body = data[start : start + following]
        known = _KNOWN.get(tag)
        descriptors.append(known.parse(body) if known is not None else UnknownDescriptor(tag, body))
        offset = start + following
    return descriptors


def encode_descriptors(descriptors: list[Descriptor] | tuple[Descriptor, ...]) -> bytes:
    return b"".join(descriptor.encode() for descriptor in descriptors)
