"""A/B payloads: images -> payload -> sign -> apply gives the same images, and every tampering is refused."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import shutil
from pathlib import Path

import pytest

from payload_tools import BLOCK, PayloadKey, layout, make_images, make_key
from sealgate.errors import PayloadError, SealgateError, UsageError
from sealgate.ota.payload import schema
from sealgate.ota.payload.apply import apply_payload
from sealgate.ota.payload.header import PayloadHeader
from sealgate.ota.payload.properties import PayloadProperties
from sealgate.ota.payload.reader import read_payload
from sealgate.ota.payload.signer import insert_signatures, payload_hashes, sign_payload
from sealgate.ota.payload.verify import verify_payload
from sealgate.ota.payload.writer import write_delta_payload, write_full_payload

#: A signed full payload, its images and its properties.
Full = tuple[Path, dict[str, Path], PayloadProperties]
CHUNK = 16 * BLOCK  # small chunks, so small images still give many operations of every kind


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> PayloadKey:
    return make_key(tmp_path_factory.mktemp("keys"), "rsa")


@pytest.fixture(scope="module")
def signed_full(tmp_path_factory: pytest.TempPathFactory, rsa_key: PayloadKey) -> Full:
    directory = tmp_path_factory.mktemp("full")
    images = make_images(directory / "images")
    write_full_payload(images, directory / "unsigned.bin", compression="xz", chunk_size=CHUNK)
    properties = sign_payload(directory / "unsigned.bin", directory / "payload.bin", rsa_key.signer)
    return directory / "payload.bin", images, properties


def _apply(payload: Path, tmp_path: Path, key: PayloadKey, **kwargs: object) -> Path:
    target = tmp_path / f"target{len(list(tmp_path.iterdir()))}"
    target.mkdir()
    apply_payload(payload, target, public_keys=[key.signer.public_key], **kwargs)  # type: ignore[arg-type]
    return target


def _same(images: dict[str, Path], target: Path) -> None:
    assert sorted(path.name for path in target.iterdir()) == sorted(f"{name}.img" for name in images)
    for name, path in images.items():
        assert (target / f"{name}.img").read_bytes() == path.read_bytes(), name


@pytest.mark.parametrize("compression", ["xz", "zstd", "none"])
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_full_payload_round_trips_to_identical_images(tmp_path: Path, compression: str, kind: str) -> None:
    key = make_key(tmp_path, kind)
    images = make_images(tmp_path / "images", seed=len(compression))
    write_full_payload(images, tmp_path / "unsigned.bin", compression=compression, chunk_size=CHUNK,
                       max_timestamp=1700000000, security_patch_level="2024-05-05")  # fmt: skip
    properties = sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", key.signer)
    payload = read_payload(tmp_path / "payload.bin")
    assert payload.signed and not payload.is_delta and payload.minor_version == 0
    assert payload.max_timestamp == 1700000000 and payload.block_size == 4096
    assert payload.to_json()["security_patch_level"] == "2024-05-05"
    kinds = {name for partition in payload.partitions for name in partition.operation_counts}
    expected = {"xz": "REPLACE_XZ", "zstd": "REPLACE_ZSTD", "none": "REPLACE"}[compression]
    assert expected in kinds and "ZERO" in kinds
    if compression == "none":
        assert kinds == {"REPLACE", "ZERO"}
    for summary in payload.partitions:
        assert summary.hash == hashlib.sha256(images[summary.name].read_bytes()).digest()
    target = tmp_path / "target"
    target.mkdir()
    result = apply_payload(tmp_path / "payload.bin", target, public_keys=[key.signer.public_key],
                           properties=properties)  # fmt: skip
    assert set(result.images) == set(images) and not result.is_delta
    _same(images, target)


def test_default_chunks_are_two_mib_like_delta_generator(tmp_path: Path, rsa_key: PayloadKey) -> None:
    (tmp_path / "images").mkdir()
    image = tmp_path / "images" / "system.img"
    image.write_bytes(random.Random(5).randbytes(3 * 1024 * 1024) + bytes(2 * 1024 * 1024))
    write_full_payload({"system": image}, tmp_path / "unsigned.bin")
    manifest = read_payload(tmp_path / "unsigned.bin").manifest
    operations = manifest.partitions[0].operations
    assert [(op.dst_extents[0].start_block, op.dst_extents[0].num_blocks) for op in operations] == [
        (0, 512), (512, 512), (1024, 256)
    ]  # fmt: skip
    # Random data does not compress: REPLACE; the zero tail: ZERO; the half-random chunk: smaller as XZ.
    assert [schema.OPERATION_NAMES[op.type] for op in operations][:1] == ["REPLACE"]
    assert schema.OPERATION_NAMES[operations[2].type] == "ZERO"
    assert all(len(op.data_sha256_hash) == 32 for op in operations if op.data_length)
    signed = sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", rsa_key.signer)
    _same({"system": image}, _apply(tmp_path / "payload.bin", tmp_path, rsa_key, properties=signed))


def test_delta_payload_copies_unchanged_blocks_and_round_trips(tmp_path: Path, rsa_key: PayloadKey) -> None:
    source = make_images(tmp_path / "source", seed=3)
    target_images = make_images(tmp_path / "target_images", seed=3)
    system = bytearray(target_images["system"].read_bytes())
    system[5 * BLOCK + 7] ^= 0xFF  # one changed block
    system += random.Random(9).randbytes(3 * BLOCK)  # grown partition
    target_images["system"].write_bytes(bytes(system))
    target_images["boot"].write_bytes(random.Random(4).randbytes(8 * BLOCK))  # shrunk and rewritten
    (tmp_path / "target_images" / "odm.img").write_bytes(bytes(BLOCK) + b"\x01" * BLOCK)  # new partition
    target_images["odm"] = tmp_path / "target_images" / "odm.img"
    write_delta_payload(source, target_images, tmp_path / "unsigned.bin", compression="zstd", chunk_size=CHUNK)
    properties = sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", rsa_key.signer)
    payload = read_payload(tmp_path / "payload.bin")
    assert payload.is_delta and payload.minor_version >= 4
    by_name = {summary.name: summary for summary in payload.partitions}
    assert by_name["system"].operation_counts["SOURCE_COPY"] >= 2
    assert by_name["system"].old_hash == hashlib.sha256(source["system"].read_bytes()).digest()
    assert by_name["odm"].old_size is None
    for partition in payload.manifest.partitions:
        for operation in partition.operations:
            if operation.type == schema.OPERATION_TYPES["SOURCE_COPY"]:
                assert len(operation.src_sha256_hash) == 32
    target = _apply(tmp_path / "payload.bin", tmp_path, rsa_key, source_dir=tmp_path / "source", properties=properties)
    _same(target_images, target)

    # The wrong source build is refused at the first SOURCE_COPY that reads a changed block, naming it.
    wrong = tmp_path / "wrong_source"
    shutil.copytree(tmp_path / "source", wrong)
    data = bytearray((wrong / "system.img").read_bytes())
    data[BLOCK] ^= 1
    (wrong / "system.img").write_bytes(bytes(data))
    with pytest.raises(PayloadError, match=r"partition 'system' operation \d+: the source blocks do not match"):
        _apply(tmp_path / "payload.bin", tmp_path, rsa_key, source_dir=wrong)
    with pytest.raises(UsageError, match="source images"):
        _apply(tmp_path / "payload.bin", tmp_path, rsa_key)


def test_images_that_are_not_whole_blocks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "odd.img").write_bytes(bytes(BLOCK + 1))
    with pytest.raises(UsageError, match="not a multiple of the 4096-byte block size"):
        write_full_payload({"odd": tmp_path / "odd.img"}, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(UsageError):
        write_full_payload({"odd": tmp_path / "odd.img"}, tmp_path / "out.bin", compression="lz4")


def test_properties_are_brillo_update_payloads_format(
    signed_full: Full,
) -> None:
    payload, _, properties = signed_full
    data = payload.read_bytes()
    metadata_size = layout(data).metadata_end
    expected = (
        f"FILE_HASH={base64.b64encode(hashlib.sha256(data).digest()).decode()}\n"
        f"FILE_SIZE={len(data)}\n"
        f"METADATA_HASH={base64.b64encode(hashlib.sha256(data[:metadata_size]).digest()).decode()}\n"
        f"METADATA_SIZE={metadata_size}\n"
    )
    assert properties.to_text() == expected
    assert PayloadProperties.parse(expected) == properties == PayloadProperties.of_file(payload)
    for bad in (expected.replace("FILE_SIZE", "FILE_SIZ"), expected + "FILE_SIZE=1\n", expected.replace("=", "=0", 1),
                expected.replace(f"METADATA_SIZE={metadata_size}", "METADATA_SIZE=0x10")):  # fmt: skip
        with pytest.raises(PayloadError):
            PayloadProperties.parse(bad)


def test_install_options_after_the_description_are_kept_apart(
    tmp_path: Path, signed_full: Full, rsa_key: PayloadKey
) -> None:
    """releasetools appends POWERWASH=1 (a wiping package) and SWITCH_SLOT_ON_REBOOT=0 (a secondary payload) to
    payload_properties.txt; update_engine takes them as install options, so they must not make the file unreadable."""
    payload, images, properties = signed_full
    text = properties.to_text() + "POWERWASH=1\nSWITCH_SLOT_ON_REBOOT=0\n"
    parsed = PayloadProperties.parse(text)
    assert parsed.headers == (("POWERWASH", "1"), ("SWITCH_SLOT_ON_REBOOT", "0"))
    assert parsed.header("POWERWASH") == "1" and parsed.header("RUN_POST_INSTALL") is None
    assert parsed.to_text() == text
    _same(images, _apply(payload, tmp_path, rsa_key, properties=parsed))
    for bad in (text + "POWERWASH=0\n", text + "powerwash=1\n", text + "NO SEPARATOR\n"):
        with pytest.raises(PayloadError):
            PayloadProperties.parse(bad)


def _regions(data: bytes) -> dict[str, range]:
    from payload_tools import manifest_signatures_range

    parts = layout(data)
    signatures_offset, _ = manifest_signatures_range(data[24 : parts.metadata_end])
    signature_start = parts.data_start + signatures_offset
    return {
        "header": range(0, 24),
        "manifest": range(24, parts.metadata_end),
        "metadata signature": range(parts.metadata_end, parts.data_start),
        "data": range(parts.data_start, signature_start),
        "payload signature": range(signature_start, len(data)),
    }


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_changing_any_byte_of_a_signed_payload_is_refused(tmp_path: Path, kind: str) -> None:
    key = make_key(tmp_path, kind)
    images = make_images(tmp_path / "images")
    write_full_payload(images, tmp_path / "unsigned.bin", chunk_size=CHUNK, compression="zstd")
    sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", key.signer)
    original = (tmp_path / "payload.bin").read_bytes()
    generator = random.Random(kind)
    tampered = tmp_path / "tampered.bin"
    for region, positions in _regions(original).items():
        sample = sorted({*generator.sample(positions, min(12, len(positions))), positions[0], positions[-1]})
        for position in sample:
            data = bytearray(original)
            data[position] ^= 1 << generator.randrange(8)
            tampered.write_bytes(bytes(data))
            assert not verify_payload(tampered, [key.signer.certificate]).verified, (region, position)
            target = tmp_path / "target"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            with pytest.raises(PayloadError):
                apply_payload(tampered, target, public_keys=[key.signer.public_key])
    # A truncated or extended payload is refused too.
    for data in (original[:-1], original + b"\x00", original[: len(original) // 2]):
        tampered.write_bytes(data)
        assert not verify_payload(tampered, [key.signer.certificate]).verified


def test_a_rewritten_manifest_with_the_old_signatures_is_refused(
    tmp_path: Path, signed_full: Full, rsa_key: PayloadKey
) -> None:
    payload, _, _ = signed_full
    data = payload.read_bytes()
    parts = layout(data)
    manifest = schema.DeltaArchiveManifest.FromString(data[24 : parts.metadata_end])
    manifest.partitions[0].new_partition_info.hash = hashlib.sha256(b"other").digest()
    manifest.max_timestamp = 1
    serialized = manifest.SerializeToString()
    header = PayloadHeader(2, len(serialized), parts.metadata_signature_size).pack()
    forged = tmp_path / "forged.bin"
    forged.write_bytes(header + serialized + data[parts.metadata_end :])
    result = verify_payload(forged, [rsa_key.signer.certificate])
    assert not result.verified and result.errors[0].code == "PAYLOAD_METADATA_SIGNATURE"
    with pytest.raises(PayloadError, match="metadata signature"):
        _apply(forged, tmp_path, rsa_key)


def test_properties_that_do_not_match_are_refused(tmp_path: Path, signed_full: Full, rsa_key: PayloadKey) -> None:
    payload, images, properties = signed_full
    text = properties.to_text()
    lines = text.splitlines()
    for index, line in enumerate(lines):
        key, _, value = line.partition("=")
        if key.endswith("HASH"):
            raw = bytearray(base64.b64decode(value))
            raw[3] ^= 0x10
            changed = f"{key}={base64.b64encode(bytes(raw)).decode()}"
        else:
            changed = f"{key}={int(value) + 1}"
        forged = PayloadProperties.parse("\n".join([*lines[:index], changed, *lines[index + 1 :]]))
        result = verify_payload(payload, [rsa_key.signer.certificate], properties=forged)
        assert not result.verified and result.errors[0].code == "PAYLOAD_PROPERTIES_MISMATCH", key
        with pytest.raises(PayloadError, match="properties"):
            _apply(payload, tmp_path, rsa_key, properties=forged)
    _same(images, _apply(payload, tmp_path, rsa_key, properties=properties))


def test_a_wrong_key_or_an_unsigned_payload_is_refused(tmp_path: Path, signed_full: Full) -> None:
    payload, _, _ = signed_full
    other = make_key(tmp_path, "rsa", name="other")
    other_ec = make_key(tmp_path, "ec", name="other")
    result = verify_payload(payload, [other.signer.certificate, other_ec.signer.certificate])
    assert not result.verified and "no trusted key" in result.errors[0].message
    with pytest.raises(PayloadError, match="no trusted key verifies the metadata signature"):
        _apply(payload, tmp_path, other)
    unsigned = payload.parent / "unsigned.bin"
    assert not read_payload(unsigned).signed
    result = verify_payload(unsigned, [other.signer.certificate])
    assert result.errors[0].code == "PAYLOAD_UNSIGNED"
    with pytest.raises(PayloadError, match="unsigned"):
        _apply(unsigned, tmp_path, other)


def test_resigning_replaces_the_signatures_and_two_step_signing_matches(
    tmp_path: Path, signed_full: Full, rsa_key: PayloadKey
) -> None:
    payload, images, properties = signed_full
    ec_key = make_key(tmp_path, "ec")
    resigned = sign_payload(payload, tmp_path / "resigned.bin", ec_key.signer)
    assert verify_payload(tmp_path / "resigned.bin", [ec_key.signer.certificate]).verified
    assert not verify_payload(tmp_path / "resigned.bin", [rsa_key.signer.certificate]).verified
    _same(images, _apply(tmp_path / "resigned.bin", tmp_path, ec_key, properties=resigned))
    # The custodian's form: hashes out, signatures in; RSA PKCS#1 v1.5 is deterministic, so the bytes are equal.
    unsigned = payload.parent / "unsigned.bin"
    hashes = payload_hashes(unsigned, [256])
    from sealgate.signing import SigningAlgorithm

    two_step = insert_signatures(
        unsigned, tmp_path / "two-step.bin",
        metadata_signatures=[rsa_key.signer.sign_digest(hashes.metadata_hash, SigningAlgorithm.RSA_PKCS1_SHA256)],
        payload_signatures=[rsa_key.signer.sign_digest(hashes.payload_hash, SigningAlgorithm.RSA_PKCS1_SHA256)],
        signature_sizes=[256],
    )  # fmt: skip
    assert two_step == properties
    assert (tmp_path / "two-step.bin").read_bytes() == payload.read_bytes()


def test_unsupported_operations_are_refused_by_name(tmp_path: Path, rsa_key: PayloadKey) -> None:
    manifest = schema.DeltaArchiveManifest(block_size=4096, minor_version=0)
    partition = manifest.partitions.add(partition_name="boot")
    partition.new_partition_info.size = BLOCK
    partition.new_partition_info.hash = hashlib.sha256(bytes(BLOCK)).digest()
    blob = b"BSDIFF40" + bytes(40)
    operation = partition.operations.add(type=schema.OPERATION_TYPES["BSDIFF"], data_offset=0, data_length=len(blob),
                                         data_sha256_hash=hashlib.sha256(blob).digest())  # fmt: skip
    operation.dst_extents.add(start_block=0, num_blocks=1)
    serialized = manifest.SerializeToString()
    (tmp_path / "unsigned.bin").write_bytes(PayloadHeader(2, len(serialized), 0).pack() + serialized + blob)
    sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", rsa_key.signer)
    with pytest.raises(PayloadError, match=r"partition 'boot' operation 0: BSDIFF operations are not supported"):
        _apply(tmp_path / "payload.bin", tmp_path, rsa_key)


def _rewrite(data: bytes, edit: object) -> bytes:
    parts = layout(data)
    manifest = schema.DeltaArchiveManifest.FromString(data[24 : parts.metadata_end])
    edit(manifest)  # type: ignore[operator]
    serialized = manifest.SerializeToString()
    return (
        PayloadHeader(2, len(serialized), parts.metadata_signature_size).pack()
        + serialized
        + data[parts.metadata_end :]
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: setattr(m, "block_size", 8192), "block size"),
        (lambda m: setattr(m, "minor_version", 3), "minor version"),
        (lambda m: m.partitions[0].operations[0].dst_extents[0].__setattr__("start_block", 10**6), "outside"),
        (lambda m: m.partitions[0].operations[1].__setattr__("data_offset", 0), "expected"),
        (lambda m: m.partitions[1].__setattr__("partition_name", "boot"), "twice"),
        (lambda m: m.partitions[1].__setattr__("partition_name", "../evil"), "cannot be a file"),
        (lambda m: m.partitions[0].operations[0].ClearField("data_sha256_hash"), "no SHA-256"),
        (lambda m: m.partitions[0].ClearField("new_partition_info"), "new_partition_info"),
        (lambda m: setattr(m, "signatures_size", m.signatures_size + 1), "signature does not end"),
    ],
)
def test_malformed_manifests_are_typed_errors(tmp_path: Path, signed_full: Full, edit: object, message: str) -> None:
    payload, _, _ = signed_full
    (tmp_path / "bad.bin").write_bytes(_rewrite(payload.read_bytes(), edit))
    with pytest.raises(PayloadError, match=message):
        read_payload(tmp_path / "bad.bin")


def test_garbage_and_truncations_never_raise_anything_but_payload_errors(
    tmp_path: Path, signed_full: Full, rsa_key: PayloadKey
) -> None:
    payload, _, _ = signed_full
    original = payload.read_bytes()
    generator = random.Random(6)
    path = tmp_path / "fuzz.bin"
    cases = [b"", b"CrAU", b"PK\x03\x04" + bytes(100), original[:23], original[:24], original[:400]]
    for _ in range(150):
        data = bytearray(original[: generator.choice([600, 2000, len(original)])])
        for _ in range(generator.randint(1, 4)):
            data[generator.randrange(min(len(data), 700))] = generator.randrange(256)
        cases.append(bytes(data))
    for case in cases:
        path.write_bytes(case)
        with contextlib.suppress(PayloadError):
            read_payload(path)
        result = verify_payload(path, [rsa_key.signer.certificate])
        assert not result.verified or case == original
    with pytest.raises(PayloadError, match="outside"):
        read_payload(payload, offset=10, size=len(original))
    with pytest.raises(SealgateError):
        read_payload(tmp_path / "missing.bin")


def _crafted(tmp_path: Path, key: PayloadKey, operations: list[tuple[str, bytes, int]], image: bytes) -> Path:
    """A signed payload of one partition `image` whose operations (type, data, blocks) we choose."""
    manifest = schema.DeltaArchiveManifest(block_size=4096, minor_version=0)
    partition = manifest.partitions.add(partition_name="boot")
    partition.new_partition_info.size = len(image)
    partition.new_partition_info.hash = hashlib.sha256(image).digest()
    blobs, block = b"", 0
    for name, data, blocks in operations:
        operation = partition.operations.add(type=schema.OPERATION_TYPES[name])
        if data:
            operation.data_offset, operation.data_length = len(blobs), len(data)
            operation.data_sha256_hash = hashlib.sha256(data).digest()
            blobs += data
        operation.dst_extents.add(start_block=block, num_blocks=blocks)
        block += blocks
    serialized = manifest.SerializeToString()
    (tmp_path / "crafted-unsigned.bin").write_bytes(PayloadHeader(2, len(serialized), 0).pack() + serialized + blobs)
    sign_payload(tmp_path / "crafted-unsigned.bin", tmp_path / "crafted.bin", key.signer)
    return tmp_path / "crafted.bin"


def test_bzip2_and_discard_operations_apply_and_oversized_data_is_refused(tmp_path: Path, rsa_key: PayloadKey) -> None:
    import bz2
    import lzma

    first = random.Random(8).randbytes(2 * BLOCK)
    payload = _crafted(tmp_path, rsa_key, [("REPLACE_BZ", bz2.compress(first), 2), ("DISCARD", b"", 1)],
                       first + bytes(BLOCK))  # fmt: skip
    target = _apply(payload, tmp_path, rsa_key)
    assert (target / "boot.img").read_bytes() == first + bytes(BLOCK)
    # A blob that inflates past its extents (a small bomb) is refused, however valid its hash and signature.
    bomb = lzma.compress(bytes(64 * BLOCK), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    payload = _crafted(tmp_path, rsa_key, [("REPLACE_XZ", bomb, 1)], bytes(BLOCK))
    with pytest.raises(PayloadError, match="operation 0: the XZ data does not decode to exactly"):
        _apply(payload, tmp_path, rsa_key)
    # XZ with a check xz-embedded does not know (SHA-256) is refused as the device would.
    sha = lzma.compress(bytes(BLOCK), format=lzma.FORMAT_XZ, check=lzma.CHECK_SHA256)
    payload = _crafted(tmp_path, rsa_key, [("REPLACE_XZ", sha, 1)], bytes(BLOCK))
    with pytest.raises(PayloadError, match="integrity check"):
        _apply(payload, tmp_path, rsa_key)
    # Data that decodes short of the extents is refused too.
    payload = _crafted(tmp_path, rsa_key, [("REPLACE", bytes(BLOCK - 1), 1)], bytes(BLOCK))
    with pytest.raises(PayloadError, match="decodes to 4095 bytes"):
        _apply(payload, tmp_path, rsa_key)


def test_dynamic_partition_metadata_is_written_as_update_metadata_proto_says(tmp_path: Path) -> None:
    from payload_tools import fields
    from sealgate.ota.payload.writer import DynamicPartitions, PartitionGroup

    images = make_images(tmp_path / "images")
    dynamic = DynamicPartitions((PartitionGroup("google_dynamic_partitions", 1 << 30, ("system",)),),
                                snapshot_enabled=True)  # fmt: skip
    write_full_payload(images, tmp_path / "payload.bin", chunk_size=CHUNK, dynamic_partitions=dynamic)
    data = (tmp_path / "payload.bin").read_bytes()
    # DeltaArchiveManifest.dynamic_partition_metadata = 15 { groups = 1 { name 1, size 2, partition_names 3 },
    # snapshot_enabled = 2 }
    metadata = dict(fields(data[24 : layout(data).metadata_end]))[15]
    assert isinstance(metadata, bytes)
    parts = dict(fields(metadata))
    group = parts[1]
    assert isinstance(group, bytes)
    assert fields(group) == [(1, b"google_dynamic_partitions"), (2, 1 << 30), (3, b"system")]
    assert parts[2] == 1
    assert read_payload(tmp_path / "payload.bin").to_json()["dynamic_partition_groups"] == [
        {"name": "google_dynamic_partitions", "size": 1 << 30, "partitions": ["system"]}
    ]
    too_small = DynamicPartitions((PartitionGroup("small", BLOCK, ("system",)),))
    with pytest.raises(UsageError, match="more than its"):
        write_full_payload(images, tmp_path / "other.bin", dynamic_partitions=too_small)


def test_without_zero_operations_zero_chunks_are_compressed_like_delta_generator(
    tmp_path: Path, rsa_key: PayloadKey
) -> None:
    images = make_images(tmp_path / "images")
    write_full_payload(images, tmp_path / "unsigned.bin", chunk_size=CHUNK, zero_operations=False)
    payload = read_payload(tmp_path / "unsigned.bin")
    assert all("ZERO" not in summary.operation_counts for summary in payload.partitions)
    sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", rsa_key.signer)
    _same(images, _apply(tmp_path / "payload.bin", tmp_path, rsa_key))
