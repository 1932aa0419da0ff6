"""update_engine's update_metadata.proto, built at import time from a declarative table.

The table below is update_metadata.proto (system/update_engine, package chromeos_update_engine, proto2) written out
field by field with its exact numbers, labels and types, including REPLACE_ZSTD = 14 and the manifest's
security_patch_level = 18 of current AOSP. sealgate.protobuf_table turns it into a FileDescriptorProto and real
message classes of the `protobuf` runtime, so manifests and Signatures blobs serialise exactly as update_engine's C++
does (fields in number order, proto2 presence); no protoc run and no generated code to keep in step.
"""

from __future__ import annotations

from typing import Any

from sealgate.protobuf_table import Field, file_descriptor, message_classes

PACKAGE = "chromeos_update_engine"

#: InstallOperation.Type, by number.
OPERATION_TYPES: dict[str, int] = {
    "REPLACE": 0,
    "REPLACE_BZ": 1,
    "MOVE": 2,
    "BSDIFF": 3,
    "SOURCE_COPY": 4,
    "SOURCE_BSDIFF": 5,
    "ZERO": 6,
    "DISCARD": 7,
    "REPLACE_XZ": 8,
    "PUFFDIFF": 9,
    "BROTLI_BSDIFF": 10,
    "ZUCCHINI": 11,
    "LZ4DIFF_BSDIFF": 12,
    "LZ4DIFF_PUFFDIFF": 13,
    "REPLACE_ZSTD": 14,
}
OPERATION_NAMES = {number: name for name, number in OPERATION_TYPES.items()}
COW_MERGE_TYPES = {"COW_COPY": 0, "COW_XOR": 1, "COW_REPLACE": 2}

# (label, type, name, number[, default]); a type that is not a scalar names a message (or ".Type" an enum).
_MESSAGES: dict[str, list[Field]] = {
    "Extent": [
        ("optional", "uint64", "start_block", 1),
        ("optional", "uint64", "num_blocks", 2),
    ],
    "Signatures.Signature": [
        ("optional", "uint32", "version", 1),  # deprecated
        ("optional", "bytes", "data", 2),
        ("optional", "fixed32", "unpadded_signature_size", 3),
    ],
    "Signatures": [
        ("repeated", "Signatures.Signature", "signatures", 1),
    ],
    "PartitionInfo": [
        ("optional", "uint64", "size", 1),
        ("optional", "bytes", "hash", 2),
    ],
    "InstallOperation": [
        ("required", "InstallOperation.Type", "type", 1),
        ("optional", "uint64", "data_offset", 2),
        ("optional", "uint64", "data_length", 3),
        ("repeated", "Extent", "src_extents", 4),
        ("optional", "uint64", "src_length", 5),
        ("repeated", "Extent", "dst_extents", 6),
        ("optional", "uint64", "dst_length", 7),
        ("optional", "bytes", "data_sha256_hash", 8),
        ("optional", "bytes", "src_sha256_hash", 9),
    ],
    "CowMergeOperation": [
        ("optional", "CowMergeOperation.Type", "type", 1),
        ("optional", "Extent", "src_extent", 2),
        ("optional", "Extent", "dst_extent", 3),
        ("optional", "uint32", "src_offset", 4),
    ],
    "PartitionUpdate": [
        ("required", "string", "partition_name", 1),
        ("optional", "bool", "run_postinstall", 2),
        ("optional", "string", "postinstall_path", 3),
        ("optional", "string", "filesystem_type", 4),
        ("repeated", "Signatures.Signature", "new_partition_signature", 5),
        ("optional", "PartitionInfo", "old_partition_info", 6),
        ("optional", "PartitionInfo", "new_partition_info", 7),
        ("repeated", "InstallOperation", "operations", 8),
        ("optional", "bool", "postinstall_optional", 9),
        ("optional", "Extent", "hash_tree_data_extent", 10),
        ("optional", "Extent", "hash_tree_extent", 11),
        ("optional", "string", "hash_tree_algorithm", 12),
        ("optional", "bytes", "hash_tree_salt", 13),
        ("optional", "Extent", "fec_data_extent", 14),
        ("optional", "Extent", "fec_extent", 15),
        ("optional", "uint32", "fec_roots", 16, "2"),
        ("optional", "string", "version", 17),
        ("repeated", "CowMergeOperation", "merge_operations", 18),
        ("optional", "uint64", "estimate_cow_size", 19),
        ("optional", "uint64", "estimate_op_count_max", 20),
    ],
    "DynamicPartitionGroup": [
        ("required", "string", "name", 1),
        ("optional", "uint64", "size", 2),
        ("repeated", "string", "partition_names", 3),
    ],
    "VABCFeatureSet": [
        ("optional", "bool", "threaded", 1),
        ("optional", "bool", "batch_writes", 2),
    ],
    "DynamicPartitionMetadata": [
        ("repeated", "DynamicPartitionGroup", "groups", 1),
        ("optional", "bool", "snapshot_enabled", 2),
        ("optional", "bool", "vabc_enabled", 3),
        ("optional", "string", "vabc_compression_param", 4),
        ("optional", "uint32", "cow_version", 5),
        ("optional", "VABCFeatureSet", "vabc_feature_set", 6),
        ("optional", "uint64", "compression_factor", 7),
        ("optional", "bool", "disable_ublk", 8),
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
    "DeltaArchiveManifest": [
        # 1, 2 and 6..11 are reserved (major version 1 fields).
        ("optional", "uint32", "block_size", 3, "4096"),
        ("optional", "uint64", "signatures_offset", 4),
        ("optional", "uint64", "signatures_size", 5),
        ("optional", "uint32", "minor_version", 12, "0"),
        ("repeated", "PartitionUpdate", "partitions", 13),
        ("optional", "int64", "max_timestamp", 14),
        ("optional", "DynamicPartitionMetadata", "dynamic_partition_metadata", 15),
        ("optional", "bool", "partial_update", 16),
        ("repeated", "ApexInfo", "apex_info", 17),
        ("optional", "string", "security_patch_level", 18),
    ],
}
_ENUMS = {"InstallOperation.Type": OPERATION_TYPES, "CowMergeOperation.Type": COW_MERGE_TYPES}
_RESERVED = {"DeltaArchiveManifest": [(1, 3), (6, 12)]}  # [start, end)


_CLASSES = message_classes(
    file_descriptor("update_metadata.proto", PACKAGE, "proto2", _MESSAGES, enums=_ENUMS, reserved=_RESERVED),
    list(_MESSAGES),
)
# Message classes are dynamic; typed as Any so attribute access type-checks (types-protobuf cannot see the table).
Extent: Any = _CLASSES["Extent"]
Signatures: Any = _CLASSES["Signatures"]
Signature: Any = _CLASSES["Signatures.Signature"]
PartitionInfo: Any = _CLASSES["PartitionInfo"]
InstallOperation: Any = _CLASSES["InstallOperation"]
CowMergeOperation: Any = _CLASSES["CowMergeOperation"]
PartitionUpdate: Any = _CLASSES["PartitionUpdate"]
DynamicPartitionGroup: Any = _CLASSES["DynamicPartitionGroup"]
DynamicPartitionMetadata: Any = _CLASSES["DynamicPartitionMetadata"]
ApexInfo: Any = _CLASSES["ApexInfo"]
DeltaArchiveManifest: Any = _CLASSES["DeltaArchiveManifest"]

__all__ = [
    "OPERATION_NAMES",
    "OPERATION_TYPES",
    "ApexInfo",
    "CowMergeOperation",
    "DeltaArchiveManifest",
    "DynamicPartitionGroup",
    "DynamicPartitionMetadata",
    "Extent",
    "InstallOperation",
    "PartitionInfo",
    "PartitionUpdate",
    "Signature",
    "Signatures",
]
