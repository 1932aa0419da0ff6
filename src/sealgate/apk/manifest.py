"""AndroidManifest.xml in Android's binary XML form (ResXMLTree), read the way the device and apksig read it.

The layout is the one `libs/androidfw/ResourceTypes.cpp` parses: an RES_XML_TYPE chunk holding a string pool, a
resource map (attribute name index -> resource ID), and a flat sequence of nodes (namespace, element start/end,
CDATA). Every offset and size is checked before use, and every string index an element or attribute carries is
range-checked, so malformed input raises `ManifestFormatError` and nothing else.

Why so strict: the installer on the phone (PackageParser over ResXMLParser), apksig (AndroidBinXmlParser) and aapt
are three readers of the same bytes, and each one tolerates different damage. A manifest crafted so that they
disagree (a second root element, a resource map placed after the first node, attributes out of resource-ID order,
a `<uses-sdk>` nested where apksig sees it and the device does not, two different strings behind one attribute) is
how signer-pinning and SDK-window checks get bypassed. Wherever the readers could disagree, this module refuses.

Attributes are matched by resource ID through the resource map, as Android's TypedArray, aapt and apksig all do; the
attribute's namespace plays no part, and an attribute without a resource ID is invisible (the one exception is
`package`, which Android looks up by name with no namespace). Elements count by local name without a namespace,
at the depth Android reads them: `<manifest>` at the root, `<uses-sdk>`, `<uses-permission>`, `<uses-feature>` and
`<application>` as its direct children.
"""

from __future__ import annotations

import array
import re
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Final

from sealgate.errors import ApkFormatError, ManifestFormatError, ZipFormatError
from sealgate.ziparchive import ZipArchive

ANDROID_MANIFEST_ENTRY: Final = "AndroidManifest.xml"
RESOURCE_TABLE_ENTRY: Final = "resources.arsc"
#: Bound on the inflated manifest read from an archive; real manifests are well under 1 MiB.
MAX_MANIFEST_SIZE: Final = 16 * 1024 * 1024
#: Bound on resources.arsc when a versionName reference needs it; past it the reference stays unresolved.
MAX_RESOURCE_TABLE_SIZE: Final = 64 * 1024 * 1024

# Chunk types (ResourceTypes.h).
RES_STRING_POOL_TYPE: Final = 0x0001
RES_XML_TYPE: Final = 0x0003
RES_XML_START_NAMESPACE_TYPE: Final = 0x0100
RES_XML_END_NAMESPACE_TYPE: Final = 0x0101
RES_XML_START_ELEMENT_TYPE: Final = 0x0102
RES_XML_END_ELEMENT_TYPE: Final = 0x0103
RES_XML_CDATA_TYPE: Final = 0x0104
RES_XML_FIRST_CHUNK_TYPE: Final = 0x0100
RES_XML_LAST_CHUNK_TYPE: Final = 0x017F
RES_XML_RESOURCE_MAP_TYPE: Final = 0x0180

# Res_value data types.
TYPE_NULL: Final = 0x00
TYPE_REFERENCE: Final = 0x01
TYPE_ATTRIBUTE: Final = 0x02
TYPE_STRING: Final = 0x03
TYPE_DYNAMIC_REFERENCE: Final = 0x07
TYPE_INT_DEC: Final = 0x10
TYPE_INT_HEX: Final = 0x11
TYPE_INT_BOOLEAN: Final = 0x12
TYPE_FIRST_COLOR_INT: Final = 0x1C
TYPE_FIRST_INT: Final = 0x10
TYPE_LAST_INT: Final = 0x1F

# Attribute resource IDs (frameworks/base core/res/res/values/public.xml; cross-checked against aapt's tables).
ATTR_LABEL: Final = 0x01010001
ATTR_ICON: Final = 0x01010002
ATTR_NAME: Final = 0x01010003
ATTR_SHARED_USER_ID: Final = 0x0101000B
ATTR_DEBUGGABLE: Final = 0x0101000F
ATTR_MIN_SDK_VERSION: Final = 0x0101020C
ATTR_VERSION_CODE: Final = 0x0101021B
ATTR_VERSION_NAME: Final = 0x0101021C
ATTR_TARGET_SDK_VERSION: Final = 0x01010270
ATTR_MAX_SDK_VERSION: Final = 0x01010271
ATTR_TEST_ONLY: Final = 0x01010272
ATTR_GL_ES_VERSION: Final = 0x01010281
ATTR_REQUIRED: Final = 0x0101028E
ATTR_TARGET_SANDBOX_VERSION: Final = 0x0101054C
ATTR_VERSION_CODE_MAJOR: Final = 0x01010576

NO_INDEX: Final = 0xFFFFFFFF
_UTF8_FLAG: Final = 0x100
_NODE_HEADER_SIZE: Final = 16  # sizeof(ResXMLTree_node)
_STRING_POOL_HEADER_SIZE: Final = 28  # sizeof(ResStringPool_header)
_ATTRIBUTE_SIZE: Final = 20  # sizeof(ResXMLTree_attribute)
_INTEGER_TYPES: Final = frozenset({TYPE_INT_DEC, TYPE_INT_HEX})
_TOP_LEVEL_ONLY: Final = frozenset({"manifest", "uses-sdk"})
_BIG_ENDIAN: Final = sys.byteorder == "big"
if array.array("I").itemsize != 4:  # pragma: no cover - every supported platform has a 32-bit C unsigned int
    raise ImportError("sealgate.apk.manifest needs a 4-byte array('I')")
_TRUE_STRINGS: Final = frozenset({"true", "TRUE", "1"})

_CHUNK = struct.Struct("<HHI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U32_PAIR = struct.Struct("<II")
_U32_TRIPLE = struct.Struct("<III")
_POOL_HEADER = struct.Struct("<IIIII")
_START_EXT = struct.Struct("<IIHHH")
_ATTRIBUTE = struct.Struct("<IIIHBBI")

_PACKAGE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)+")

#: apksig's ApkUtils.getMinSdkVersionForCodename: first letter of a codename -> the API level before its release.
_CODENAME_FIRST_LETTERS: Final = "CDEFGHIJKLMNO"
_CODENAME_LEVELS: Final = (2, 3, 4, 7, 8, 10, 13, 15, 18, 20, 22, 23, 25)
_CODENAME_SPECIAL: Final = {"Baklava": 34, "CinnamonBun": 35, "CANARY": 9999}


@dataclass(frozen=True)
class UsesPermission:
    name: str
    max_sdk: int | None


@dataclass(frozen=True)
class UsesFeature:
    name: str | None
    required: bool
    gl_es_version: int | None


@dataclass(frozen=True)
class AndroidManifest:
    """What the device, apksig and a repository need from a manifest.

    SDK levels follow apksig, because the verifier's SDK window must be apksig's: `min_sdk` is the highest
    minSdkVersion over the `<uses-sdk>` children of `<manifest>` (1 when there is none, a codename mapped as apksig
    maps it); `target_sdk` is the first integer targetSdkVersion, or None when absent or not an integer literal (a
    codename or a reference, where apksig falls back to minSdkVersion).

    `debuggable` and `test_only` are True when the attribute is a resource reference: its value can differ between
    device configurations, so nothing short of resolving every configuration proves it false (apksig refuses to
    decide and aapt resolves one configuration). `label`, `version_name` and `shared_user_id` give a resource
    reference as "@0x7f0b0001", except that `read_manifest` resolves a versionName reference that resources.arsc
    maps to one configuration-independent string.
    """

    package: str
    version_code: int
    version_name: str | None
    min_sdk: int
    min_sdk_codename: str | None
    target_sdk: int | None
    max_sdk: int | None
    target_sandbox_version: int | None
    permissions: tuple[UsesPermission, ...]
    permissions_sdk23: tuple[UsesPermission, ...]
    features: tuple[UsesFeature, ...]
    debuggable: bool
    test_only: bool
    shared_user_id: str | None
    label: str | None
    native_abis: tuple[str, ...]
    #: The application icon: a resource reference ("@0x7f0d0000", resolved per density by `apk.resources`).
    icon: str | None = None


def read_manifest(archive: ZipArchive) -> AndroidManifest:
    """Parse the archive's AndroidManifest.xml and list the native ABIs its lib/ folder carries.

    A versionName that references a string resource is resolved through resources.arsc when the table gives it one
    configuration-independent string (what Android's getNonConfigurationString() accepts); otherwise it stays
    "@0x7f...". The table is only read in that case, and a damaged table leaves the reference as it is: the
    manifest, not the table, is what installs or fails.
    """
    entry = archive.entry(ANDROID_MANIFEST_ENTRY)
    if entry is None:
        raise ApkFormatError(f"Missing {ANDROID_MANIFEST_ENTRY}")
    manifest = parse_manifest(archive.read(entry, max_size=MAX_MANIFEST_SIZE))
    version_name = manifest.version_name
    if version_name is not None and version_name.startswith("@0x"):
        version_name = _resolve_in_archive(archive, int(version_name[3:], 16)) or version_name
    return replace(
        manifest, version_name=version_name, native_abis=native_abis(entry.name for entry in archive.entries)
    )


def native_abis(names: Iterable[str]) -> tuple[str, ...]:
    """ABIs with at least one file under lib/<abi>/, sorted: the folders Android's native-library installer scans."""
    found: set[str] = set()
    for name in names:
        if not name.startswith("lib/") or name.endswith("/"):
            continue
        abi, slash, rest = name[4:].partition("/")
        if abi and slash and rest:
            found.add(abi)
    return tuple(sorted(found))


def parse_manifest(data: bytes) -> AndroidManifest:
    """Parse a binary AndroidManifest.xml; raises ManifestFormatError on anything malformed or ambiguous."""
    document = _Document(bytes(data))
    return _interpret(document)


# -- the string pool -----------------------------------------------------------------------------------------------


class _StringPool:
    """ResStringPool: strings are decoded on first use, since Android never looks at the ones nobody references."""

    __slots__ = ("_buf", "_cache", "_entries", "_pool_end", "_pool_start", "_utf8", "count")

    def __init__(self, buf: bytes, start: int, header_size: int, size: int) -> None:
        if header_size < _STRING_POOL_HEADER_SIZE:
            raise _error(f"string pool header is {header_size} bytes, needs {_STRING_POOL_HEADER_SIZE}")
        count, style_count, flags, strings_start, styles_start = _POOL_HEADER.unpack_from(buf, start + 8)
        self._buf = buf
        self.count = count
        self._utf8 = bool(flags & _UTF8_FLAG)
        self._entries = start + header_size
        self._cache: dict[int, str] = {}
        if header_size + 4 * (count + style_count) > size:
            raise _error(f"string pool declares {count} strings and {style_count} styles, more than its size holds")
        self._pool_start = self._pool_end = start
        if count:
            self._set_string_area(start, size, strings_start, styles_start if style_count else size)
        if style_count:
            self._check_styles(start, size, strings_start, styles_start)

    def _set_string_area(self, start: int, size: int, strings_start: int, strings_end: int) -> None:
        if strings_start >= size - 2 or strings_start < self._entries - start:
            raise _error(f"string data starts at {strings_start}, outside the {size}-byte string pool")
        if strings_end <= strings_start:
            raise _error("string pool styles start before its strings")
        char_size = 1 if self._utf8 else 2
        span = (strings_end - strings_start) // char_size * char_size
        if span == 0:
            raise _error("string pool has strings but no string data")
        self._pool_start = start + strings_start
        self._pool_end = self._pool_start + span
        if any(self._buf[self._pool_end - char_size : self._pool_end]):
            raise _error("the last string of the string pool is not NUL-terminated")

    def _check_styles(self, start: int, size: int, strings_start: int, styles_start: int) -> None:
        if styles_start >= size - 2 or styles_start <= strings_start:
            raise _error(f"string pool styles start at {styles_start}, outside its {size} bytes or before its strings")
        style_bytes = (size - styles_start) // 4 * 4
        if style_bytes < 12 or _U32_TRIPLE.unpack_from(self._buf, start + styles_start + style_bytes - 12) != (
            NO_INDEX,
            NO_INDEX,
            NO_INDEX,
        ):
            raise _error("string pool styles do not end with the 0xFFFFFFFF end span")

    def check(self, index: int, what: str) -> None:
        if index >= self.count:
            raise _error(f"{what} refers to string #{index}, but the pool holds {self.count}")

    def get(self, index: int, what: str = "a value") -> str:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        self.check(index, what)
        offset = _U32.unpack_from(self._buf, self._entries + 4 * index)[0]
        text = self._decode_utf8(index, offset) if self._utf8 else self._decode_utf16(index, offset)
        self._cache[index] = text
        return text

    def _decode_utf8(self, index: int, offset: int) -> str:
        buf, end = self._buf, self._pool_end
        pos = self._pool_start + offset
        if offset >= end - self._pool_start - 1:
            raise _error(f"string #{index} starts at {offset}, past the end of the string data")
        utf16_length, pos = _utf8_length(buf, pos, end, index)
        byte_length, pos = _utf8_length(buf, pos, end, index)
        if pos + byte_length >= end:
            raise _error(f"string #{index} ({byte_length} bytes) runs past the end of the string data")
        if buf[pos + byte_length] != 0:
            raise _error(f"string #{index} is not NUL-terminated")
        try:
            text = buf[pos : pos + byte_length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _error(f"string #{index} is not valid UTF-8 ({exc.reason})") from exc
        if _utf16_units(text) != utf16_length:
            raise _error(f"string #{index} declares {utf16_length} UTF-16 units but decodes to {_utf16_units(text)}")
        return text

    def _decode_utf16(self, index: int, offset: int) -> str:
        buf, end = self._buf, self._pool_end
        if offset % 2:
            raise _error(f"string #{index} starts at odd offset {offset} in a UTF-16 pool")
        pos = self._pool_start + offset
        if pos + 2 > end - 2:
            raise _error(f"string #{index} starts at {offset}, past the end of the string data")
        units = _U16.unpack_from(buf, pos)[0]
        pos += 2
        if units & 0x8000:
            if pos + 2 > end:
                raise _error(f"string #{index} has a truncated length")
            units = ((units & 0x7FFF) << 16) | _U16.unpack_from(buf, pos)[0]
            pos += 2
        stop = pos + 2 * units
        if stop + 2 > end:
            raise _error(f"string #{index} ({units} UTF-16 units) runs past the end of the string data")
        if buf[stop] or buf[stop + 1]:
            raise _error(f"string #{index} is not NUL-terminated")
        try:
            return buf[pos:stop].decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise _error(f"string #{index} is not valid UTF-16 ({exc.reason})") from exc


def _utf8_length(buf: bytes, pos: int, end: int, index: int) -> tuple[int, int]:
    if pos >= end:
        raise _error(f"string #{index} has a truncated length")
    value = buf[pos]
    if value & 0x80:
        if pos + 1 >= end:
            raise _error(f"string #{index} has a truncated length")
        return ((value & 0x7F) << 8) | buf[pos + 1], pos + 2
    return value, pos + 1


def _utf16_units(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


# -- the node stream -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Attribute:
    namespace: int
    name: int
    raw: int
    type: int
    data: int
    resource_id: int


@dataclass(frozen=True, slots=True)
class _Element:
    name: str
    namespace: int
    attributes: tuple[_Attribute, ...]


class _Document:
    """One pass over the node stream: checks every node, keeps `<manifest>` and its direct children."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pool: _StringPool | None = None
        self.resource_ids: tuple[int, ...] = ()
        self.root: _Element | None = None
        self.children: list[_Element] = []
        self._names: dict[int, str] = {}
        end = self._read_header()
        self._read_nodes(self._read_preamble(end), end)

    # The outer RES_XML_TYPE chunk; bytes after it are ignored, as Android and apksig ignore them.
    def _read_header(self) -> int:
        buf = self.buf
        if len(buf) < 8:
            raise _error(f"file is {len(buf)} bytes, too short for a binary XML header")
        kind, header_size, size = _unpack_chunk(buf, 0)
        if kind != RES_XML_TYPE:
            raise _error(f"file starts with chunk type 0x{kind:04x}, not binary XML (0x0003)")
        if header_size < 8 or header_size > size:
            raise _error(f"XML header size {header_size} does not fit the {size}-byte XML chunk")
        if size > len(buf):
            raise _error(f"XML chunk declares {size} bytes but the file has {len(buf)}")
        return size

    def _chunk_at(self, pos: int, end: int, min_header: int) -> tuple[int, int, int]:
        """validate_chunk(): the header fits, sizes are 4-aligned, and the chunk ends inside the XML chunk."""
        if end - pos < 8:
            raise _error(f"{end - pos} stray bytes at offset {pos}, too few for a chunk header")
        kind, header_size, size = _unpack_chunk(self.buf, pos)
        if header_size < min_header:
            raise _error(f"chunk 0x{kind:04x} at offset {pos} has a {header_size}-byte header, needs {min_header}")
        if size < header_size:
            raise _error(f"chunk 0x{kind:04x} at offset {pos} is smaller ({size}) than its header ({header_size})")
        if (header_size | size) & 3:
            raise _error(f"chunk 0x{kind:04x} at offset {pos} has sizes not on a 4-byte boundary")
        if size > end - pos:
            raise _error(f"chunk 0x{kind:04x} at offset {pos} declares {size} bytes, past the end of the document")
        return kind, header_size, size

    def _read_preamble(self, end: int) -> int:
        """Chunks before the first node: the string pool and resource map (once each); others are skipped."""
        pos = _unpack_chunk(self.buf, 0)[1]
        while pos < end:
            kind, header_size, size = self._chunk_at(pos, end, 8)
            if RES_XML_FIRST_CHUNK_TYPE <= kind <= RES_XML_LAST_CHUNK_TYPE:
                break
            if kind == RES_STRING_POOL_TYPE:
                if self.pool is not None:
                    raise _error("more than one string pool")
                self.pool = _StringPool(self.buf, pos, header_size, size)
            elif kind == RES_XML_RESOURCE_MAP_TYPE:
                if self.resource_ids:
                    raise _error("more than one resource map")
                count = (size - header_size) // 4
                self.resource_ids = struct.unpack_from(f"<{count}I", self.buf, pos + header_size)
            pos += size
        if self.pool is None:
            raise _error("no string pool before the first XML node")
        return pos

    def _read_nodes(self, pos: int, end: int) -> None:
        """The node loop, written flat because it runs once per node: constants are literals, checks are inline,
        and the attributes of deep elements are checked in one batch at the end."""
        buf, pool, names = self.buf, self.pool, self._names
        assert pool is not None
        count = pool.count
        unpack_chunk, unpack_start, unpack_pair = _CHUNK.unpack_from, _START_EXT.unpack_from, _U32_PAIR.unpack_from
        top_level_only = _TOP_LEVEL_ONLY
        batch: list[bytes] = []
        depth = 0
        roots = 0
        while pos < end:
            if end - pos < 8:
                raise _error(f"{end - pos} stray bytes at offset {pos}, too few for a chunk header")
            kind, header_size, size = unpack_chunk(buf, pos)
            if header_size < 16 or size < header_size or (header_size | size) & 3 or size > end - pos:
                raise self._node_failure(pos, end)
            ext = pos + header_size
            if kind == 0x0103:  # RES_XML_END_ELEMENT_TYPE
                if size - header_size < 8:
                    raise _too_small(kind, pos, size - header_size, 8)
                namespace, name_index = unpack_pair(buf, ext)
                if name_index >= count or (namespace >= count and namespace != 0xFFFFFFFF):
                    raise _error(f"element end at offset {pos} refers to a string past the pool's {count}")
                if not depth:
                    raise _error(f"element end at offset {pos} closes nothing")
                depth -= 1
            elif kind == 0x0102:  # RES_XML_START_ELEMENT_TYPE
                if size - header_size < 20:
                    raise _too_small(kind, pos, size - header_size, 20)
                if not depth:
                    roots += 1
                    if roots > 1:
                        raise _error(f"a second root element starts at offset {pos}")
                depth += 1
                namespace, name_index, attr_start, attr_size, attr_count = unpack_start(buf, ext)
                name = names.get(name_index)
                if name is None:
                    name = names[name_index] = pool.get(name_index, "an element name")
                if namespace >= count and namespace != 0xFFFFFFFF:
                    raise _error(f"an element namespace refers to string #{namespace}, but the pool holds {count}")
                if depth > 2 and attr_size == 20:
                    if name in top_level_only:
                        raise _nested(name, depth)
                    if attr_start + 20 * attr_count > size - header_size:
                        raise _error(f"attributes of element <{name}> run past the end of its node")
                    batch.append(buf[ext + attr_start : ext + attr_start + 20 * attr_count])
                else:
                    self._start_element(ext, size - header_size, name, namespace, depth)
            elif kind == 0x0100 or kind == 0x0101:  # RES_XML_START/END_NAMESPACE_TYPE
                if size - header_size < 8:
                    raise _too_small(kind, pos, size - header_size, 8)
                prefix, uri = unpack_pair(buf, ext)
                if uri >= count or (prefix >= count and prefix != 0xFFFFFFFF):
                    raise _error(f"namespace node at offset {pos} refers to a string past the pool's {count}")
            elif kind == 0x0104:  # RES_XML_CDATA_TYPE
                if size - header_size < 12:
                    raise _too_small(kind, pos, size - header_size, 12)
                if _U32.unpack_from(buf, ext)[0] >= count:
                    raise _error(f"character data at offset {pos} refers to a string past the pool's {count}")
            elif kind in (RES_STRING_POOL_TYPE, RES_XML_RESOURCE_MAP_TYPE):
                raise _late_chunk(kind, pos)
            pos += size
        if self.root is None:
            raise _error("no root element")
        if depth:
            raise _error(f"{depth} element(s) not closed at the end of the document")
        _check_attribute_batch(b"".join(batch), count)

    def _start_element(self, ext: int, ext_size: int, name: str, namespace: int, depth: int) -> None:
        """The slow path: elements Android reads (depth 1 and 2) and attributes of an unusual size."""
        assert self.pool is not None
        _ns, _name, attr_start, attr_size, attr_count = _START_EXT.unpack_from(self.buf, ext)
        values: tuple[int, ...] = ()
        if attr_count:
            if attr_size < _ATTRIBUTE_SIZE:
                raise _error(f"element <{name}> has {attr_size}-byte attributes, needs {_ATTRIBUTE_SIZE}")
            if attr_start + attr_size * attr_count > ext_size:
                raise _error(f"attributes of element <{name}> run past the end of its node")
            values = _read_attributes(self.buf, ext + attr_start, attr_size, attr_count, self.pool.count, name)
        if depth == 1:
            self.root = _Element(name, namespace, self._attributes(values))
        elif depth == 2:
            self.children.append(_Element(name, namespace, self._attributes(values)))
        elif name in _TOP_LEVEL_ONLY:
            raise _nested(name, depth)

    def _node_failure(self, pos: int, end: int) -> ManifestFormatError:
        kind, header_size, _size = _unpack_chunk(self.buf, pos)
        if kind in (RES_STRING_POOL_TYPE, RES_XML_RESOURCE_MAP_TYPE):
            return _late_chunk(kind, pos)
        if header_size < _NODE_HEADER_SIZE:
            return _error(f"node 0x{kind:04x} at offset {pos} has a {header_size}-byte header, needs 16")
        try:
            self._chunk_at(pos, end, _NODE_HEADER_SIZE)
        except ManifestFormatError as exc:
            return exc
        return _error(f"node 0x{kind:04x} at offset {pos} is malformed")  # pragma: no cover - guarded above

    def _attributes(self, values: tuple[int, ...]) -> tuple[_Attribute, ...]:
        ids = self.resource_ids
        out = []
        for i in range(0, len(values), 7):
            namespace, name, raw, _size, _res0, kind, data = values[i : i + 7]
            out.append(_Attribute(namespace, name, raw, kind, data, ids[name] if name < len(ids) else 0))
        return tuple(out)


def _read_attributes(buf: bytes, pos: int, stride: int, count: int, strings: int, element: str) -> tuple[int, ...]:
    """All attributes of one element as a flat tuple, 7 fields each, with every string index range-checked."""
    if not count:
        return ()
    unpack = _ATTRIBUTE.unpack_from
    values = tuple(field for i in range(count) for field in unpack(buf, pos + i * stride))
    if max(values[1::7]) >= strings:
        raise _error(f"an attribute name of <{element}> refers to a string past the pool's {strings}")
    optional = {*values[0::7], *values[2::7]}
    optional.discard(NO_INDEX)
    if optional and max(optional) >= strings:
        raise _error(f"an attribute of <{element}> refers to a string past the pool's {strings}")
    kinds = values[5::7]
    if TYPE_STRING in kinds:
        for i, kind in enumerate(kinds):
            if kind == TYPE_STRING and values[7 * i + 6] >= strings:
                raise _error(f"a string attribute of <{element}> refers to a string past the pool's {strings}")
    return values


def _check_attribute_batch(records: bytes, strings: int) -> None:
    """The string indexes of many 20-byte ResXMLTree_attribute records at once, as 32-bit words: namespace, name,
    raw value, (size, res0, type), data. Doing it in bulk keeps the per-element cost of the node loop small."""
    if not records:
        return
    words = array.array("I", records)
    if _BIG_ENDIAN:
        words.byteswap()
    if max(words[1::5]) >= strings:
        raise _error(f"an attribute name refers to string #{max(words[1::5])}, but the pool holds {strings}")
    optional = set(words[0::5])
    optional.update(words[2::5])
    optional.discard(NO_INDEX)
    if optional and max(optional) >= strings:
        raise _error(f"an attribute refers to string #{max(optional)}, but the pool holds {strings}")
    types = records[15::_ATTRIBUTE_SIZE]
    at = types.find(TYPE_STRING)
    while at >= 0:
        if words[5 * at + 4] >= strings:
            raise _error(f"a string attribute refers to string #{words[5 * at + 4]}, but the pool holds {strings}")
        at = types.find(TYPE_STRING, at + 1)


def _unpack_chunk(buf: bytes, pos: int) -> tuple[int, int, int]:
    kind, header_size, size = _CHUNK.unpack_from(buf, pos)
    return int(kind), int(header_size), int(size)


def _too_small(kind: int, pos: int, ext_size: int, minimum: int) -> ManifestFormatError:
    return _error(f"node 0x{kind:04x} at offset {pos} has {ext_size} bytes of body, needs {minimum}")


def _nested(name: str, depth: int) -> ManifestFormatError:
    # apksig looks these up by local name at any depth (the first one wins); Android only at the top.
    return _error(f"<{name}> nested at depth {depth}: Android ignores it but apksig reads it")


def _late_chunk(kind: int, pos: int) -> ManifestFormatError:
    # Android stops looking for these at the first node, apksig does not: the two would read different things.
    return _error(f"chunk 0x{kind:04x} at offset {pos} comes after the first XML node")


def _error(message: str) -> ManifestFormatError:
    return ManifestFormatError(f"Malformed {ANDROID_MANIFEST_ENTRY}: {message}")


# -- from elements to fields ---------------------------------------------------------------------------------------

_READ_CHILDREN: Final = frozenset(
    {"uses-sdk", "uses-permission", "uses-permission-sdk-23", "uses-permission-sdk-m", "uses-feature", "application"}
)


def _string_value(pool: _StringPool, attribute: _Attribute, element: str) -> str:
    """A TYPE_STRING value. Android's XmlPullParser reads the raw string, TypedArray and apksig the typed one: when
    both are set they must say the same thing."""
    text = pool.get(attribute.data)
    if attribute.raw not in (NO_INDEX, attribute.data) and pool.get(attribute.raw) != text:
        raise _error(f"an attribute of <{element}> carries two different strings")
    return text


class _Attributes:
    """One element's attributes by resource ID, refusing orders in which Android and aapt/apksig would differ.

    Android's attribute lookup walks the XML attributes and the requested IDs in step, so it misses an attribute
    that comes after a higher ID; aapt and apksig search linearly. Sorted, unique IDs make all three agree.
    """

    def __init__(self, pool: _StringPool, element: _Element) -> None:
        self.pool = pool
        self.element = element.name
        self.by_id: dict[int, _Attribute] = {}
        last = 0
        for attribute in element.attributes:
            resource_id = attribute.resource_id
            if not resource_id:
                continue
            if resource_id <= last:
                raise _error(
                    f"attributes of <{element.name}> are not in increasing resource-ID order (0x{resource_id:08x} "
                    f"after 0x{last:08x}): Android and apksig would read different values"
                )
            last = resource_id
            self.by_id[resource_id] = attribute

    def integer(self, resource_id: int) -> int | None:
        """An integer literal as apksig accepts one (decimal or hex); None when absent or of another type."""
        attribute = self.by_id.get(resource_id)
        if attribute is None or attribute.type not in _INTEGER_TYPES:
            return None
        return _signed(attribute.data)

    def required_integer(self, resource_id: int, what: str) -> int:
        """An integer literal that must be one when present (0 when absent), as TypedArray.getInteger() insists."""
        attribute = self.by_id.get(resource_id)
        if attribute is None:
            return 0
        if attribute.type not in _INTEGER_TYPES:
            raise _error(f"{what} on <{self.element}> is not an integer (value type 0x{attribute.type:02x})")
        return _signed(attribute.data)

    def any_integer(self, resource_id: int) -> int | None:
        """An integer of any integer type, as Android's peekValue() accepts; None when absent or of another type."""
        attribute = self.by_id.get(resource_id)
        if attribute is None or not TYPE_FIRST_INT <= attribute.type <= TYPE_LAST_INT:
            return None
        return _signed(attribute.data)

    def text(self, resource_id: int) -> str | None:
        """A value as text, the way TypedValue.coerceToString() shows it; references as "@0x7f0b0001"."""
        attribute = self.by_id.get(resource_id)
        if attribute is None:
            return None
        if attribute.type == TYPE_STRING:
            return _string_value(self.pool, attribute, self.element)
        return _coerce_to_string(attribute.type, attribute.data)

    def literal_string(self, resource_id: int) -> str | None:
        """getNonResourceString(): a literal string only, anything else reads as absent."""
        attribute = self.by_id.get(resource_id)
        if attribute is None or attribute.type != TYPE_STRING:
            return None
        return _string_value(self.pool, attribute, self.element)

    def boolean(self, resource_id: int, default: bool) -> bool:
        """TypedArray.getBoolean(); a reference (or an exotic type) reads as True, since it cannot be shown false."""
        attribute = self.by_id.get(resource_id)
        if attribute is None or attribute.type == TYPE_NULL:
            return default
        if TYPE_FIRST_INT <= attribute.type <= TYPE_LAST_INT:
            return attribute.data != 0
        if attribute.type == TYPE_STRING:
            return _string_value(self.pool, attribute, self.element) in _TRUE_STRINGS
        return True


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def _coerce_to_string(kind: int, data: int) -> str | None:
    if kind in (TYPE_REFERENCE, TYPE_DYNAMIC_REFERENCE):
        return f"@0x{data:08x}"
    if kind == TYPE_ATTRIBUTE:
        return f"?0x{data:08x}"
    if kind == TYPE_INT_DEC:
        return str(_signed(data))
    if kind == TYPE_INT_HEX:
        return f"0x{data:x}"
    if kind == TYPE_INT_BOOLEAN:
        return "true" if data else "false"
    if TYPE_FIRST_COLOR_INT <= kind <= TYPE_LAST_INT:
        return f"#{data:x}"
    return None


def _interpret(document: _Document) -> AndroidManifest:
    root, pool = document.root, document.pool
    assert root is not None and pool is not None
    if root.name != "manifest" or root.namespace != NO_INDEX:
        raise _error(f"the root element is <{root.name}>, not <manifest>")
    for child in document.children:
        if child.name == "manifest":
            raise _nested(child.name, 2)
        if child.namespace != NO_INDEX and child.name in _READ_CHILDREN:
            raise _error(f"<{child.name}> has a namespace: Android reads it, apksig does not")
    children = [child for child in document.children if child.namespace == NO_INDEX]
    manifest = _Attributes(pool, root)
    sdk = _uses_sdk([_Attributes(pool, c) for c in children if c.name == "uses-sdk"])
    application = next((_Attributes(pool, c) for c in children if c.name == "application"), None)
    return AndroidManifest(
        package=_package(pool, root),
        version_code=_version_code(manifest),
        version_name=manifest.text(ATTR_VERSION_NAME),
        min_sdk=sdk.min_sdk,
        min_sdk_codename=sdk.min_sdk_codename,
        target_sdk=sdk.target_sdk,
        max_sdk=sdk.max_sdk,
        target_sandbox_version=manifest.integer(ATTR_TARGET_SANDBOX_VERSION),
        permissions=_permissions(pool, children, ("uses-permission",)),
        permissions_sdk23=_permissions(pool, children, ("uses-permission-sdk-23", "uses-permission-sdk-m")),
        features=tuple(_feature(_Attributes(pool, c)) for c in children if c.name == "uses-feature"),
        debuggable=application.boolean(ATTR_DEBUGGABLE, False) if application else False,
        test_only=application.boolean(ATTR_TEST_ONLY, False) if application else False,
        shared_user_id=manifest.text(ATTR_SHARED_USER_ID),
        label=application.text(ATTR_LABEL) if application else None,
        native_abis=(),
        icon=application.text(ATTR_ICON) if application else None,
    )


def _package(pool: _StringPool, root: _Element) -> str:
    """Android reads `package` by name with no namespace; any second `package` attribute would split the readers."""
    found = [a for a in root.attributes if pool.get(a.name, "an attribute name") == "package"]
    if not found:
        raise _error("<manifest> has no package attribute")
    if len(found) > 1 or found[0].namespace != NO_INDEX:
        raise _error("<manifest> has a package attribute with a namespace, or more than one package attribute")
    attribute = found[0]
    if attribute.type != TYPE_STRING:
        raise _error(f"<manifest> package is not a string (value type 0x{attribute.type:02x})")
    package = _string_value(pool, attribute, "manifest")
    if not _PACKAGE_NAME.fullmatch(package):
        raise _error(f"<manifest> package {package!r} is not a valid package name")
    return package


def _version_code(manifest: _Attributes) -> int:
    """PackageInfo.getLongVersionCode(): versionCodeMajor in the high 32 bits, versionCode's 32 bits below."""
    minor = manifest.required_integer(ATTR_VERSION_CODE, "android:versionCode")
    major = manifest.required_integer(ATTR_VERSION_CODE_MAJOR, "android:versionCodeMajor")
    return (major << 32) | (minor & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class _Sdk:
    min_sdk: int
    min_sdk_codename: str | None
    target_sdk: int | None
    max_sdk: int | None


def _uses_sdk(elements: list[_Attributes]) -> _Sdk:
    """apksig's rule for minSdkVersion (the highest of all <uses-sdk>); the first integer for target and max."""
    min_sdk, codename = 1, None
    target: int | None = None
    maximum: int | None = None
    for attributes in elements:
        level, name = _min_sdk(attributes)
        if level > min_sdk or (level == min_sdk and codename is None):
            min_sdk, codename = level, name
        if target is None:
            target = attributes.integer(ATTR_TARGET_SDK_VERSION)
        if maximum is None:
            maximum = attributes.any_integer(ATTR_MAX_SDK_VERSION)
    return _Sdk(min_sdk, codename, target, maximum)


def _min_sdk(attributes: _Attributes) -> tuple[int, str | None]:
    attribute = attributes.by_id.get(ATTR_MIN_SDK_VERSION)
    if attribute is None:
        return 1, None
    if attribute.type in _INTEGER_TYPES:
        return _signed(attribute.data), None
    if attribute.type == TYPE_STRING:
        codename = _string_value(attributes.pool, attribute, "uses-sdk")
        return min_sdk_for_codename(codename), codename
    raise _error(
        f"android:minSdkVersion has value type 0x{attribute.type:02x}; only integer literals and codenames say "
        "which Android versions the APK supports (apksig refuses references for the same reason)"
    )


def min_sdk_for_codename(codename: str) -> int:
    """apksig's getMinSdkVersionForCodename: one below the API level the codename was released as."""
    special = _CODENAME_SPECIAL.get(codename)
    if special is not None:
        return special
    first = codename[:1]
    if not ("A" <= first <= "Z"):
        raise _error(f"android:minSdkVersion codename {codename!r} is not a platform codename")
    index = _CODENAME_FIRST_LETTERS.find(first)
    if index >= 0:
        return _CODENAME_LEVELS[index]
    if first < _CODENAME_FIRST_LETTERS[0]:
        return 1
    return _CODENAME_LEVELS[-1] + ord(first) - ord(_CODENAME_FIRST_LETTERS[-1])


def _permissions(pool: _StringPool, children: list[_Element], tags: tuple[str, ...]) -> tuple[UsesPermission, ...]:
    """Declared permissions in document order, exact repeats dropped; a name that is not a literal string is
    ignored, as Android ignores it. The same name with different maxSdkVersion stays twice: which one applies
    depends on the device."""
    seen: dict[UsesPermission, None] = {}
    for element in children:
        if element.name not in tags:
            continue
        attributes = _Attributes(pool, element)
        name = attributes.literal_string(ATTR_NAME)
        if name is not None:
            seen.setdefault(UsesPermission(name, attributes.any_integer(ATTR_MAX_SDK_VERSION)), None)
    return tuple(seen)


def _feature(attributes: _Attributes) -> UsesFeature:
    return UsesFeature(
        name=attributes.literal_string(ATTR_NAME),
        required=attributes.boolean(ATTR_REQUIRED, True),
        gl_es_version=attributes.any_integer(ATTR_GL_ES_VERSION),
    )


# -- resources.arsc, only as far as resolving a string reference ---------------------------------------------------

RES_TABLE_TYPE: Final = 0x0002
RES_TABLE_PACKAGE_TYPE: Final = 0x0200
RES_TABLE_TYPE_TYPE: Final = 0x0201
RES_TABLE_TYPE_SPEC_TYPE: Final = 0x0202
_SPEC_FLAGS_NOT_CONFIG: Final = 0x40000000 | 0x20000000  # SPEC_PUBLIC, SPEC_STAGED_API
_ENTRY_FLAG_COMPLEX: Final = 0x0001
_ENTRY_FLAG_COMPACT: Final = 0x0008
_TYPE_FLAG_SPARSE: Final = 0x01
_TYPE_FLAG_OFFSET16: Final = 0x02
_NO_ENTRY16: Final = 0xFFFF
_MAX_REFERENCE_HOPS: Final = 8


def _resolve_in_archive(archive: ZipArchive, resource_id: int) -> str | None:
    entry = archive.entry(RESOURCE_TABLE_ENTRY)
    if entry is None:
        return None
    try:
        table = archive.read(entry, max_size=MAX_RESOURCE_TABLE_SIZE)
    except ZipFormatError:
        return None
    return resolve_string(table, resource_id)


def resolve_string(table: bytes, resource_id: int) -> str | None:
    """The string a resource ID stands for in a resources.arsc, following references; None unless there is exactly
    one answer for every device configuration (the entry exists in the default configuration and its type spec
    says it does not vary)."""
    try:
        resources = _ResourceTable(bytes(table))
        for _ in range(_MAX_REFERENCE_HOPS):
            value = resources.value(resource_id)
            if value is None:
                return None
            kind, data = value
            if kind == TYPE_STRING:
                return resources.pool.get(data, "a resource value")
            if kind != TYPE_REFERENCE:
                return None
            resource_id = data
    except (struct.error, IndexError, ManifestFormatError):
        return None  # a damaged table leaves the reference unresolved rather than failing the APK
    return None


def resolve_file_variants(table: bytes, resource_id: int) -> dict[int, str]:
    """The file paths a resource ID (an icon) stands for, by screen density (dpi; 0 for the default configuration,
    0xFFFE for anydpi), following references; configurations that vary by locale, carrier or anything but density
    and SDK level are left out. {} when the table is damaged or has no such resource."""
    result: dict[int, str] = {}
    try:
        resources = _ResourceTable(bytes(table))
        pending: list[tuple[int, int | None, int]] = [(resource_id, None, 0)]
        while pending:
            current, forced_density, hops = pending.pop()
            if hops > _MAX_REFERENCE_HOPS:
                continue
            for density, kind, data in resources.variants(current):
                density = forced_density if forced_density not in (None, 0) else density
                if kind == TYPE_STRING:
                    result.setdefault(density, resources.pool.get(data, "a resource value"))
                elif kind == TYPE_REFERENCE:
                    pending.append((data, density, hops + 1))
    except (struct.error, IndexError, ManifestFormatError):
        return {}
    return result


class _ResourceTable:
    """The global string pool and, per package ID, the type and type-spec chunks of a ResTable."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        kind, header_size, size = _unpack_chunk(buf, 0)
        if kind != RES_TABLE_TYPE or not 12 <= header_size <= size <= len(buf):
            raise _error("resources.arsc does not start with a resource table")
        self.packages: dict[int, list[tuple[int, int, int]]] = {}
        pool: _StringPool | None = None
        for kind, pos, chunk_header, chunk_size in _chunks(buf, header_size, size):
            if kind == RES_STRING_POOL_TYPE and pool is None:
                pool = _StringPool(buf, pos, chunk_header, chunk_size)
            elif kind == RES_TABLE_PACKAGE_TYPE and chunk_header >= 12:
                package_id = _U32.unpack_from(buf, pos + 8)[0]
                types = self.packages.setdefault(package_id, [])
                types.extend((k, p, h) for k, p, h, _ in _chunks(buf, pos + chunk_header, pos + chunk_size))
        if pool is None:
            raise _error("resources.arsc has no string pool")
        self.pool = pool

    def value(self, resource_id: int) -> tuple[int, int] | None:
        chunks = self.packages.get(resource_id >> 24)
        if not chunks:
            return None
        type_id, index = (resource_id >> 16) & 0xFF, resource_id & 0xFFFF
        found: tuple[int, int] | None = None
        for kind, pos, header_size in chunks:
            if pos + 8 >= len(self.buf) or self.buf[pos + 8] != type_id:
                continue
            if kind == RES_TABLE_TYPE_SPEC_TYPE and not self._spec_is_constant(pos, header_size, index):
                return None
            if kind == RES_TABLE_TYPE_TYPE and found is None and self._is_default_config(pos):
                found = self._entry(pos, header_size, index)
        return found

    def variants(self, resource_id: int) -> list[tuple[int, int, int]]:
        """(density, value type, value data) of the resource in every configuration that differs from the default
        at most in screen density and SDK level."""
        chunks = self.packages.get(resource_id >> 24) or []
        type_id, index = (resource_id >> 16) & 0xFF, resource_id & 0xFFFF
        found = []
        for kind, pos, header_size in chunks:
            if kind != RES_TABLE_TYPE_TYPE or pos + 8 >= len(self.buf) or self.buf[pos + 8] != type_id:
                continue
            config_size = _U32.unpack_from(self.buf, pos + 20)[0]
            if config_size < 28 or any(self.buf[pos + 24 : pos + 32]):  # carrier (mcc, mnc) or locale
                continue
            entry = self._entry(pos, header_size, index)
            if entry is not None:
                found.append((_U16.unpack_from(self.buf, pos + 34)[0], *entry))
        return found

    def _spec_is_constant(self, pos: int, header_size: int, index: int) -> bool:
        count = _U32.unpack_from(self.buf, pos + 12)[0]
        if index >= count:
            return False
        flags = _U32.unpack_from(self.buf, pos + header_size + 4 * index)[0]
        return not flags & ~_SPEC_FLAGS_NOT_CONFIG

    def _is_default_config(self, pos: int) -> bool:
        config_size = _U32.unpack_from(self.buf, pos + 20)[0]
        return config_size >= 4 and not any(self.buf[pos + 24 : pos + 20 + config_size])

    def _entry(self, pos: int, header_size: int, index: int) -> tuple[int, int] | None:
        buf = self.buf
        flags = buf[pos + 9]
        count, entries_start = _U32_PAIR.unpack_from(buf, pos + 12)
        offsets = pos + header_size
        if flags & _TYPE_FLAG_SPARSE:
            offset = None
            for i in range(count):
                entry_index, entry_offset = struct.unpack_from("<HH", buf, offsets + 4 * i)
                if entry_index == index:
                    offset = entry_offset * 4
                    break
            if offset is None:
                return None
        elif index >= count:
            return None
        elif flags & _TYPE_FLAG_OFFSET16:
            offset = _U16.unpack_from(buf, offsets + 2 * index)[0]
            if offset == _NO_ENTRY16:
                return None
            offset *= 4
        else:
            offset = _U32.unpack_from(buf, offsets + 4 * index)[0]
            if offset == NO_INDEX:
                return None
        entry = pos + entries_start + offset
        entry_size, entry_flags = struct.unpack_from("<HH", buf, entry)
        if entry_flags & _ENTRY_FLAG_COMPACT:
            return entry_flags >> 8, _U32.unpack_from(buf, entry + 4)[0]
        if entry_flags & _ENTRY_FLAG_COMPLEX:
            return None
        _size, _res0, kind, data = struct.unpack_from("<HBBI", buf, entry + entry_size)
        return kind, data


def _chunks(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(type, offset, header size, size) of each chunk in [pos, end), stopping at the first malformed one."""
    while end - pos >= 8:
        kind, header_size, size = _unpack_chunk(buf, pos)
        if header_size < 8 or size < header_size or size > end - pos:
            return
        yield kind, pos, header_size, size
        pos += size
