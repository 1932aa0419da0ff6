"""Security review of issue 6 (OS releases): each finding as a test that failed before its fix, then bounded
structure-aware fuzz tests of the readers hostile input reaches first (channel, OTA metadata, payload.bin, vbmeta):
whatever the bytes, only a SealgateError subclass may escape, and never after a long time.

The attacker model is the brief's: the web server or mirror (channel files, packages), and hostile payloads that a
trusted key signed (what a compromised build could hand the custodian), which reach the applier's own checks."""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import json
import lzma
import re
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payload_tools import PayloadKey, make_key
from sealgate.errors import SealgateError
from sealgate.ota.channel import read_channel
from sealgate.ota.metadata import (
    METADATA_NAME,
    METADATA_PROTO_NAME,
    OtaMetadata,
    ab_metadata,
    parse_property_files,
    read_package_metadata,
)
from sealgate.ota.payload import schema
from sealgate.ota.payload.apply import apply_payload
from sealgate.ota.payload.header import MAGIC
from sealgate.ota.payload.reader import read_payload
from sealgate.ota.payload.signer import sign_payload

BLOCK = 4096


# --- finding 1: a channel file nested deeply enough makes json raise RecursionError -----------------------------


@pytest.mark.parametrize("opening", [b"[", b'{"a":'])
def test_deeply_nested_channel_is_a_format_error_not_a_recursion_error(opening: bytes) -> None:
    # A hostile mirror serves 200 KB of brackets: `device ota check` must refuse it, not print a traceback.
    with pytest.raises(SealgateError):
        read_channel(opening * 200_000)


# --- finding 2: integers longer than Python's int() limit in the metadata text ------------------------------------


def test_metadata_text_with_a_huge_timestamp_is_a_format_error() -> None:
    text = "ota-type=AB\npre-device=sargo\npost-timestamp=" + "9" * 5000 + "\n"
    with pytest.raises(SealgateError):
        OtaMetadata.from_text(text)


def test_property_files_with_a_huge_offset_are_a_format_error() -> None:
    with pytest.raises(SealgateError):
        parse_property_files("payload.bin:" + "1" * 5000 + ":10")


def test_payload_properties_with_a_huge_size_are_a_format_error() -> None:
    import base64

    from sealgate.ota.payload.properties import PayloadProperties

    digest = base64.b64encode(bytes(32)).decode()
    text = f"FILE_HASH={digest}\nFILE_SIZE={'9' * 5000}\nMETADATA_HASH={digest}\nMETADATA_SIZE=100\n"
    with pytest.raises(SealgateError):  # the offline signer parses the online side's properties: no traceback there
        PayloadProperties.parse(text)


def test_build_prop_with_a_huge_build_date_is_a_format_error() -> None:
    from sealgate.ota.build_prop import build_facts

    with pytest.raises(SealgateError):  # target files from the online side, shown on the offline machine
        build_facts({"ro.build.date.utc": "9" * 5000, "ro.product.device": "sargo"})


# --- finding 3: a signed manifest whose partition name or size no file can have --------------------------------


def _manifest_payload(name: str = "boot", size: int = BLOCK, data: bytes = bytes(BLOCK)) -> bytes:
    manifest = schema.DeltaArchiveManifest()
    manifest.block_size = BLOCK
    manifest.minor_version = 0
    partition = manifest.partitions.add()
    partition.partition_name = name
    partition.new_partition_info.size = size
    partition.new_partition_info.hash = hashlib.sha256(bytes(min(size, BLOCK))).digest()
    operation = partition.operations.add()
    operation.type = schema.OPERATION_TYPES["REPLACE"]
    operation.data_offset = 0
    operation.data_length = len(data)
    operation.data_sha256_hash = hashlib.sha256(data).digest()
    extent = operation.dst_extents.add()
    extent.start_block, extent.num_blocks = 0, 1
    encoded = manifest.SerializeToString()
    return MAGIC + struct.pack(">QQI", 2, len(encoded), 0) + encoded + data


@pytest.fixture(scope="module")
def payload_key(tmp_path_factory: pytest.TempPathFactory) -> PayloadKey:
    return make_key(tmp_path_factory.mktemp("review-key"))


def _signed(tmp_path: Path, key: PayloadKey, raw: bytes, label: str = "p") -> Path:
    unsigned, signed = tmp_path / f"{label}.unsigned", tmp_path / f"{label}.bin"
    unsigned.write_bytes(raw)
    try:
        sign_payload(unsigned, signed, key.signer)
    except SealgateError:
        signed.write_bytes(raw)  # the signer refused its structure: the reader and applier must refuse it too
    return signed


@pytest.mark.parametrize(
    ("name", "size"),
    [("a\x00b", BLOCK), ("boot", 2**64 - BLOCK), ("boot", 2**63), ("boot", 2**62 - BLOCK)],
    ids=["nul-in-name", "size-2^64", "size-2^63", "size-beyond-the-filesystem"],
)
def test_signed_payload_with_an_impossible_partition_is_refused(
    tmp_path: Path, payload_key: PayloadKey, name: str, size: int
) -> None:
    signed = _signed(tmp_path, payload_key, _manifest_payload(name, size))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(SealgateError):
        apply_payload(signed, target, public_keys=[payload_key.signer.public_key])


# --- finding 4: bundle apply of a target-files response compared only the entries' names ------------------------


def _rewritten(source: Path, target: Path, changes: dict[str, bytes]) -> Path:
    """`source` with the data of the entries in `changes` replaced (what someone with the response in hand can do)."""
    import zipfile

    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, changes.get(info.filename, old.read(info.filename)))
    return target


@pytest.fixture(scope="module")
def signed_target_files(apksig_vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    from release_tools import WIFI_CERT, make_inputs, role_signer, write_target_files
    from sealgate.avb.descriptors import HashDescriptor
    from sealgate.avb.vbmeta import build_vbmeta
    from sealgate.release.apkcerts import KeyMap
    from sealgate.release.target_files import sign_target_files

    work = tmp_path_factory.mktemp("review-target-files")
    inputs = make_inputs(apksig_vectors, work / "inputs")
    boot = b"ANDROID!" + bytes(4088)
    salt = bytes(range(32))
    descriptor = HashDescriptor(len(boot), "sha256", "boot", salt, hashlib.sha256(salt + boot).digest())
    vbmeta = build_vbmeta([descriptor], role_signer("test-avb"), rollback_index=3, padding_size=4096)
    unsigned = write_target_files(work / "unsigned.zip", inputs, extra={"IMAGES/vbmeta.img": vbmeta})
    signers = {**inputs.signers, "avb": role_signer("avb")}
    signed = work / "signed.zip"
    sign_target_files(unsigned, signed, KeyMap(dict(signers), {WIFI_CERT: "networkstack"}), rollback_index=7)
    return unsigned, signed, signers


def _check_target_files(signed: Path, unsigned: Path, signers: object) -> None:
    from release_tools import WIFI_CERT
    from sealgate.release.target_files_bundle import TargetFilesHandler

    options = {"key_map": {WIFI_CERT: "networkstack"}, "rollback_index": 7}
    TargetFilesHandler().check(signed, unsigned, lambda role: signers[role].certificate, options)  # type: ignore[index]


def test_genuine_target_files_response_is_accepted(signed_target_files: tuple[Path, Path, object]) -> None:
    unsigned, signed, signers = signed_target_files
    _check_target_files(signed, unsigned, signers)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("SYSTEM/bin/sh", b"\x7fELF a shell with a backdoor"),
        ("IMAGES/system.img", bytes(range(255, -1, -1)) * 64),
        ("RADIO/bootloader.img", b"another bootloader " * 50),
        ("IMAGES/boot.img", b"ANDROID!" + b"\x01" * 4088),
        ("SYSTEM/build.prop", None),
    ],
)
def test_target_files_response_with_a_changed_entry_is_refused(
    tmp_path: Path, signed_target_files: tuple[Path, Path, object], name: str, data: bytes | None
) -> None:
    import zipfile

    from sealgate.errors import ReleaseError

    unsigned, signed, signers = signed_target_files
    if data is None:  # every device would see this build as newer than any later one: updates stop
        with zipfile.ZipFile(signed) as archive:
            text = archive.read(name).decode()
        data = text.replace("ro.debuggable=0", "ro.debuggable=0\nro.build.date.utc=4102444800").encode()
        assert data.decode() != text
    tampered = _rewritten(signed, tmp_path / "tampered.zip", {name: data})
    with pytest.raises(ReleaseError, match=re.escape(name)):
        _check_target_files(tampered, unsigned, signers)


def test_target_files_response_granting_a_seinfo_to_another_signer_is_refused(
    tmp_path: Path, signed_target_files: tuple[Path, Path, object]
) -> None:
    import zipfile

    from sealgate.errors import ReleaseError

    unsigned, signed, signers = signed_target_files
    name = "SYSTEM/etc/selinux/plat_mac_permissions.xml"
    with zipfile.ZipFile(signed) as archive:
        text = archive.read(name).decode()
    attacker = make_key(tmp_path, name="attacker").signer.certificate.der.hex()
    granted = text.replace(
        "</policy>", f'    <signer signature="{attacker}" ><seinfo value="platform" /></signer>\n</policy>'
    )
    tampered = _rewritten(signed, tmp_path / "tampered.zip", {name: granted.encode()})
    with pytest.raises(ReleaseError, match=re.escape(name)):
        _check_target_files(tampered, unsigned, signers)


def test_target_files_response_with_a_chained_image_signed_by_another_key_is_refused(
    apksig_vectors: Path, tmp_path: Path
) -> None:
    from release_tools import WIFI_CERT, make_inputs, role_signer, write_target_files
    from sealgate.avb.descriptors import ChainPartitionDescriptor, PropertyDescriptor
    from sealgate.avb.keys import public_key_metadata
    from sealgate.avb.vbmeta import build_vbmeta
    from sealgate.errors import ReleaseError
    from sealgate.release.apkcerts import KeyMap
    from sealgate.release.target_files import sign_target_files

    inputs = make_inputs(apksig_vectors, tmp_path / "inputs")
    test_system = role_signer("test-system")
    chain = ChainPartitionDescriptor(1, "vbmeta_system", public_key_metadata(test_system.public_key))
    vbmeta = build_vbmeta([chain], role_signer("test-avb"), rollback_index=3, padding_size=4096)
    properties = [PropertyDescriptor("com.android.build.system.os_version", b"14")]
    system = build_vbmeta(properties, test_system, rollback_index=5, rollback_index_location=1, padding_size=4096)
    extra = {"IMAGES/vbmeta.img": vbmeta, "IMAGES/vbmeta_system.img": system}
    unsigned = write_target_files(tmp_path / "unsigned.zip", inputs, extra=extra)
    signers = {**inputs.signers, "avb": role_signer("avb")}
    signed = tmp_path / "signed.zip"
    sign_target_files(unsigned, signed, KeyMap(dict(signers), {WIFI_CERT: "networkstack"}), rollback_index=7)
    _check_target_files(signed, unsigned, signers)
    other = build_vbmeta(properties, role_signer("attacker"), rollback_index=5, rollback_index_location=1,
                         padding_size=4096)  # fmt: skip
    tampered = _rewritten(signed, tmp_path / "tampered.zip", {"IMAGES/vbmeta_system.img": other})
    with pytest.raises(ReleaseError, match=re.escape("IMAGES/vbmeta_system.img")):
        _check_target_files(tampered, unsigned, signers)


# --- fuzzing: only SealgateError escapes, and nothing hangs --------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_EXTREMES = st.sampled_from([0, 1, BLOCK - 1, BLOCK, 2**31, 2**32 - 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1])
_U64 = st.one_of(_EXTREMES, st.integers(0, 64 * BLOCK), st.integers(0, 2**64 - 1))


@pytest.fixture(autouse=True)
def _no_hang() -> object:
    """Every test here is bounded: a hang (a loop that never ends, a huge sparse image hashed) fails it."""
    import signal

    def _timeout(signum: int, frame: object) -> None:
        raise AssertionError("the reader took more than 25 s: a hang")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(25)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> bytes:
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    if cut is not None:
        del mutated[cut % (len(mutated) + 1) :]
    return bytes(mutated) + tail


_EDITS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6)
_CUT = st.one_of(st.none(), st.integers(0, 2**20))
_TAIL = st.binary(max_size=64)


# channel files: valid documents with fields replaced by any JSON value, and raw byte mutations

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _channel_document() -> dict[str, object]:
    def ota(name: str) -> dict[str, object]:
        return {"url": f"packages/{'a' * 64}/{name}.zip", "size": 123, "sha256": "a" * 64}

    return {
        "format": "sealgate-ota-channel",
        "version": 1,
        "device": "sargo",
        "channel": "stable",
        "builds": [
            {
                "fingerprint": f"g/sargo/sargo:14/X/{n}:user/release-keys",
                "incremental": str(n),
                "timestamp": 1700000000 - n,
                "security_patch_level": "2024-03-05",
                "sdk_level": "34",
                "android_version": "14",
                "full": ota(f"full{n}"),
                "incrementals": [{**ota(f"inc{n}"), "pre_build": f"g/sargo/sargo:14/X/{n + 1}:user/release-keys"}],
            }
            for n in range(2)
        ],
    }


def _replace_at(document: object, path: list[int], value: object) -> object:
    """`document` with the node reached by following `path` (indices into dict keys / list items) set to `value`."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    if isinstance(document, dict):
        key = sorted(document)[path[0] % len(document)]
        return {**document, key: _replace_at(document[key], path[1:], value)}
    index = path[0] % len(document)
    return [*document[:index], _replace_at(document[index], path[1:], value), *document[index + 1 :]]


def test_channel_document_is_valid_before_mutation() -> None:
    channel = read_channel(json.dumps(_channel_document()).encode())
    assert [build.timestamp for build in channel.builds] == [1700000000, 1699999999]


@_FUZZ
@given(path=st.lists(st.integers(0, 20), max_size=6), value=_JSON)
def test_fuzz_channel_fields(path: list[int], value: object) -> None:
    data = json.dumps(_replace_at(_channel_document(), path, value)).encode()
    with contextlib.suppress(SealgateError):
        read_channel(data)


@_FUZZ
@given(edits=_EDITS, cut=_CUT, tail=_TAIL)
def test_fuzz_channel_bytes(edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> None:
    with contextlib.suppress(SealgateError):
        read_channel(_mutate(json.dumps(_channel_document()).encode(), edits, cut, tail))


# OTA metadata: the text form with any values for its keys, metadata.pb mutated, and whole packages mutated

_METADATA_KEYS = st.sampled_from(
    ["ota-type", "ota-wipe", "ota-downgrade", "spl-downgrade", "ota-required-cache", "post-build",
     "post-build-incremental", "post-sdk-level", "post-security-patch-level", "post-timestamp", "pre-device",
     "pre-build", "pre-build-incremental", "ota-property-files", "ota-streaming-property-files", "x"]
)  # fmt: skip


def _metadata() -> OtaMetadata:
    metadata = ab_metadata(device="sargo", post_build="g/sargo/sargo:14/X/2:user/release-keys",
                           post_timestamp=1700000000, post_security_patch_level="2024-03-05",
                           pre_build=["g/sargo/sargo:14/X/1:user/release-keys"], pre_build_incremental="1")  # fmt: skip
    metadata.property_files = {"ota-property-files": "payload.bin:679:4096,metadata:69:379   "}
    return metadata


@_FUZZ
@given(lines=st.lists(st.tuples(_METADATA_KEYS, st.text(max_size=40)), max_size=12))
def test_fuzz_metadata_text(lines: list[tuple[str, str]]) -> None:
    with contextlib.suppress(SealgateError):
        OtaMetadata.from_text("".join(f"{key}={value}\n" for key, value in lines))


@_FUZZ
@given(edits=_EDITS, cut=_CUT, tail=_TAIL)
def test_fuzz_metadata_proto(edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> None:
    with contextlib.suppress(SealgateError):
        OtaMetadata.from_proto(_mutate(_metadata().to_proto(), edits, cut, tail))


@pytest.fixture(scope="module")
def metadata_package(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import zipfile

    path = tmp_path_factory.mktemp("review-package") / "ota.zip"
    metadata = _metadata()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(METADATA_NAME, metadata.to_text())
        archive.writestr(METADATA_PROTO_NAME, metadata.to_proto())
    assert read_package_metadata(path) == metadata
    return path.read_bytes()


@_FUZZ
@given(edits=_EDITS, cut=_CUT, tail=_TAIL)
def test_fuzz_package_metadata(
    tmp_path: Path, metadata_package: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    path = tmp_path / "mutated.zip"
    path.write_bytes(_mutate(metadata_package, edits, cut, tail))
    with contextlib.suppress(SealgateError):
        read_package_metadata(path)


# payload.bin: manifests built field by field from hostile values, read unsigned and applied signed

_NAMES = st.one_of(
    st.sampled_from(["boot", "system", "vbmeta", "vendor_boot", "boot", "system", ".", "..", "", "a/b"]),
    st.text(max_size=8),
)
#: Mostly small, valid values, sometimes an extreme one: most examples get past the structural checks.
_BLOCKS = st.one_of(st.integers(0, 8), st.integers(0, 8), st.integers(0, 8), _U64)
_SUPPORTED = [schema.OPERATION_TYPES[name] for name in ("REPLACE", "REPLACE_XZ", "REPLACE_ZSTD", "REPLACE_BZ",
                                                         "ZERO", "DISCARD", "SOURCE_COPY")]  # fmt: skip
_OPERATION_TYPES = st.one_of(st.sampled_from(_SUPPORTED), st.sampled_from(sorted(schema.OPERATION_NAMES)))
_DATA = st.sampled_from(
    [
        bytes(BLOCK),
        bytes(2 * BLOCK),
        b"\xfd7zXZ\x00" + bytes(10),
        lzma.compress(bytes(BLOCK), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        lzma.compress(bytes(64 * BLOCK), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64),
        zstandard.ZstdCompressor().compress(bytes(BLOCK)),
        zstandard.ZstdCompressor().compress(bytes(1 << 24)),  # a 16 MiB bomb for a one-block extent
        bz2.compress(bytes(BLOCK)),
        b"(\xb5/\xfd" + bytes(8),
    ]
)


_NO_DATA = {schema.OPERATION_TYPES[name] for name in ("ZERO", "DISCARD", "SOURCE_COPY", "MOVE")}


@st.composite
def _hostile_payload(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    manifest = schema.DeltaArchiveManifest()
    manifest.block_size = draw(st.sampled_from([BLOCK] * 20 + [512, 0]))
    delta = draw(st.booleans())
    manifest.minor_version = draw(st.sampled_from([8 if delta else 0] * 12 + [0, 1, 8, 99]))
    blobs = b""
    sources: dict[str, int] = {}
    for number in range(draw(st.integers(1, 2))):
        partition = manifest.partitions.add()
        partition.partition_name = (
            draw(st.sampled_from([f"p{number}"] * 20)) if draw(st.integers(0, 9)) else draw(_NAMES)
        )
        blocks = draw(st.integers(1, 8))
        size = draw(st.sampled_from([blocks * BLOCK] * 6 + [blocks * BLOCK + 1, 2**62 - BLOCK, 2**64 - BLOCK]))
        partition.new_partition_info.size = size
        partition.new_partition_info.hash = hashlib.sha256(bytes(size) if size < 2**20 else b"").digest()
        if delta and (number == 0 or draw(st.booleans())):
            old_size = draw(st.sampled_from([8 * BLOCK] * 6 + [BLOCK, 2**63]))
            partition.old_partition_info.size = old_size
            partition.old_partition_info.hash = bytes(32)
            if old_size <= 8 * BLOCK:
                sources[partition.partition_name] = draw(st.sampled_from([old_size] * 6 + [old_size - BLOCK]))
        for _ in range(draw(st.integers(0, 2))):
            operation = partition.operations.add()
            operation.type = draw(_OPERATION_TYPES)
            if operation.type not in _NO_DATA or draw(st.integers(0, 9)) == 0:
                data = draw(_DATA)
                operation.data_offset = draw(st.sampled_from([len(blobs)] * 6 + [0, 2**63]))
                operation.data_length = draw(st.sampled_from([len(data)] * 6 + [len(data) + 1, 2**40]))
                operation.data_sha256_hash = draw(st.sampled_from([hashlib.sha256(data).digest()] * 6 + [bytes(32)]))
                blobs += data
            for _ in range(draw(st.sampled_from([1, 1, 1, 2, 0]))):
                extent = operation.dst_extents.add()
                extent.start_block = draw(st.integers(0, blocks - 1)) if draw(st.integers(0, 9)) else draw(_BLOCKS)
                extent.num_blocks = (
                    draw(st.integers(1, blocks - extent.start_block))
                    if extent.start_block < blocks and draw(st.integers(0, 9))
                    else draw(_BLOCKS)
                )
            if operation.type == schema.OPERATION_TYPES["SOURCE_COPY"] or draw(st.booleans()):
                extent = operation.src_extents.add()
                extent.start_block, extent.num_blocks = (
                    draw(st.integers(0, 3)),
                    draw(st.integers(1, 4)) if draw(st.integers(0, 9)) else draw(_BLOCKS),
                )
    encoded = manifest.SerializeToString()
    header = MAGIC + struct.pack(">QQI", 2, len(encoded), 0)
    return header + encoded + blobs, sources


def _refused_cleanly(action: object) -> None:
    with contextlib.suppress(SealgateError):
        action()  # type: ignore[operator]


@_FUZZ
@given(built=_hostile_payload(), edits=_EDITS, cut=_CUT, mutate=st.integers(0, 3))
def test_fuzz_payload(
    tmp_path: Path,
    payload_key: PayloadKey,
    built: tuple[bytes, dict[str, int]],
    edits: list[tuple[int, int]],
    cut: int | None,
    mutate: bool,
) -> None:
    for old in tmp_path.iterdir():
        if old.is_dir():
            for child in old.iterdir():
                child.unlink()
            old.rmdir()
        else:
            old.unlink()
    raw, sources = built
    if mutate == 0:
        raw = _mutate(raw, edits, cut, b"")
    unsigned = tmp_path / "p.unsigned"
    unsigned.write_bytes(raw)
    _refused_cleanly(lambda: read_payload(unsigned))
    signed = _signed(tmp_path, payload_key, raw)
    target, source = tmp_path / "out", tmp_path / "source"
    target.mkdir()
    source.mkdir()
    for name, size in sources.items():
        with contextlib.suppress(OSError, ValueError):
            (source / f"{name}.img").write_bytes(bytes(size))
    _refused_cleanly(
        lambda: apply_payload(signed, target, public_keys=[payload_key.signer.public_key], source_dir=source)
    )


# vbmeta: a real image (descriptors, signature) mutated in its header fields and anywhere else


@pytest.fixture(scope="module")
def vbmeta_image() -> tuple[bytes, object]:
    from sealgate.avb.vbmeta import build_vbmeta
    from test_avb import _descriptors, _signer

    signer = _signer(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return build_vbmeta(_descriptors(), signer, rollback_index=3), signer.public_key


@_FUZZ
@given(
    fields=st.lists(st.tuples(st.integers(0, 255 // 4).map(lambda n: n * 4), _U64), max_size=4),
    edits=_EDITS,
    cut=_CUT,
    tail=_TAIL,
)
def test_fuzz_vbmeta(
    vbmeta_image: tuple[bytes, object],
    fields: list[tuple[int, int]],
    edits: list[tuple[int, int]],
    cut: int | None,
    tail: bytes,
) -> None:
    from sealgate.avb.vbmeta import read_vbmeta, verify_vbmeta

    image, public_key = vbmeta_image
    mutated = bytearray(image)
    for offset, value in fields:  # the header is big-endian u32/u64 fields at 4-byte alignment
        struct.pack_into(">Q", mutated, offset, value)
    data = _mutate(bytes(mutated), edits, cut, tail)
    try:
        read_vbmeta(data)
        verdict = verify_vbmeta(data, [public_key])  # type: ignore[list-item]
    except SealgateError:
        return
    if data[: len(image)] != image:
        assert not verdict.verified


# the whole-file signature: the first thing a package from the mirror reaches on the device


@pytest.fixture(scope="module")
def signed_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, object]:
    from sealgate.ota.signer import sign_package
    from sealgate.ota.whole_file import trusted_key
    from test_ota_sign import _package, _signer

    work = tmp_path_factory.mktemp("review-whole-file")
    signer, _, _ = _signer("rsa", work)
    sign_package(_package(work / "unsigned.zip"), work / "signed.zip", signer)
    return (work / "signed.zip").read_bytes(), trusted_key(signer.certificate, "test")


@_FUZZ
@given(edits=st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 255)), max_size=6), cut=_CUT, tail=_TAIL)
def test_fuzz_whole_file_signature(
    tmp_path: Path, signed_package: tuple[bytes, object], edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    from sealgate.ota.whole_file import verify_package

    data, key = signed_package
    mutated = bytearray(data)
    for back, value in edits:  # the comment (PKCS#7 block and footer) and the end record, counted from the end
        mutated[-min(back, len(mutated))] = value
    if cut is not None:
        del mutated[cut % (len(mutated) + 1) :]
    path = tmp_path / "mutated.zip"
    path.write_bytes(bytes(mutated) + tail)
    result = verify_package(path, [key])  # type: ignore[list-item]
    signed_length = len(data) - (data[-2] | data[-1] << 8) - 2
    if result.verified:  # only the unsigned comment may differ (recovery ignores the certificates in it)
        assert bytes(mutated)[:signed_length] == data[:signed_length]
