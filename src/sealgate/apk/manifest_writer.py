"""Write Android binary XML manifests, for test fixtures and the bundled sample APK.

Tests need APKs whose manifests say exactly what a case needs (a package name, a minSdkVersion, a
targetSandboxVersion) without an Android build toolchain. This writes the same chunk layout aapt2 produces: a
UTF-16 string pool whose first strings are the attribute names listed in the resource map, then namespace and
element chunks with typed attribute values. It is deliberately small: elements, attributes of type string,
integer and boolean, one android namespace.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

ANDROID_NS = "http://schemas.android.com/apk/res/android"

#: Resource IDs of the android: attributes this writer knows (frameworks/base/core/res/res/values/public.xml).
ATTRIBUTE_IDS = {
    "label": 0x01010001,
    "name": 0x01010003,
    "sharedUserId": 0x0101000B,
    "debuggable": 0x0101000F,
    "minSdkVersion": 0x0101020C,
    "versionCode": 0x0101021B,
    "versionName": 0x0101021C,
    "targetSdkVersion": 0x01010270,
    "maxSdkVersion": 0x01010271,
    "testOnly": 0x01010272,
    "required": 0x0101028E,
    "targetSandboxVersion": 0x0101054C,
    "versionCodeMajor": 0x01010576,
}

_TYPE_STRING = 0x03
_TYPE_INT_DEC = 0x10
_TYPE_INT_BOOLEAN = 0x12
_NO_INDEX = 0xFFFFFFFF

AttributeValue = str | int | bool


@dataclass
class Element:
    """An element with android: attributes (keys are attribute names without the prefix)."""

    tag: str
    attributes: dict[str, AttributeValue] = field(default_factory=dict)
    children: list[Element] = field(default_factory=list)
    #: Attributes outside the android namespace (e.g. manifest's `package`).
    plain_attributes: dict[str, str] = field(default_factory=dict)


def manifest(
    package: str,
    *,
    version_code: int = 1,
    version_name: str = "1.0",
    min_sdk: int | None = None,
    target_sdk: int | None = None,
    permissions: tuple[str, ...] = (),
    extra_manifest_attributes: dict[str, AttributeValue] | None = None,
    application: dict[str, AttributeValue] | None = None,
) -> bytes:
    """A binary AndroidManifest.xml with the usual elements."""
    root = Element(
        "manifest",
        {"versionCode": version_code, "versionName": version_name, **(extra_manifest_attributes or {})},
        plain_attributes={"package": package},
    )
    sdk: dict[str, AttributeValue] = {}
    if min_sdk is not None:
        sdk["minSdkVersion"] = min_sdk
    if target_sdk is not None:
        sdk["targetSdkVersion"] = target_sdk
    if sdk:
        root.children.append(Element("uses-sdk", sdk))
    root.children.extend(Element("uses-permission", {"name": name}) for name in permissions)
    root.children.append(Element("application", dict(application or {})))
    return encode(root)


def encode(root: Element) -> bytes:
    """Encode an element tree as Android binary XML."""
    names = sorted(_android_attribute_names(root), key=lambda name: ATTRIBUTE_IDS[name])
    pool = _StringPool(names)
    body = bytearray()
    body += _chunk(0x0100, struct.pack("<IIII", 1, _NO_INDEX, pool.index("android"), pool.index(ANDROID_NS)), 16)
    _encode_element(root, pool, body)
    body += _chunk(0x0101, struct.pack("<IIII", 1, _NO_INDEX, pool.index("android"), pool.index(ANDROID_NS)), 16)
    resource_map = _chunk(0x0180, b"".join(struct.pack("<I", ATTRIBUTE_IDS[name]) for name in names), 8)
    content = pool.encode() + resource_map + bytes(body)
    return struct.pack("<HHI", 0x0003, 8, 8 + len(content)) + content


def _android_attribute_names(element: Element) -> set[str]:
    names = set(element.attributes)
    unknown = names - ATTRIBUTE_IDS.keys()
    if unknown:
        raise ValueError(f"no resource ID known for android:{sorted(unknown)[0]}")
    for child in element.children:
        names |= _android_attribute_names(child)
    return names


def _encode_element(element: Element, pool: _StringPool, out: bytearray) -> None:
    attributes = [
        (pool.index(ANDROID_NS), pool.index(name), value)
        for name, value in sorted(element.attributes.items(), key=lambda item: ATTRIBUTE_IDS[item[0]])
    ]
    attributes += [(_NO_INDEX, pool.index(name), value) for name, value in element.plain_attributes.items()]
    encoded = bytearray()
    for namespace, name, value in attributes:
        encoded += struct.pack("<III", namespace, name, *_raw(pool, value)[:1]) + _typed(pool, value)
    ext = struct.pack("<IIHHHHHH", _NO_INDEX, pool.index(element.tag), 20, 20, len(attributes), 0, 0, 0)
    out += _chunk(0x0102, struct.pack("<II", 1, _NO_INDEX) + ext + encoded, 16)
    for child in element.children:
        _encode_element(child, pool, out)
    out += _chunk(0x0103, struct.pack("<IIII", 1, _NO_INDEX, _NO_INDEX, pool.index(element.tag)), 16)


def _raw(pool: _StringPool, value: AttributeValue) -> tuple[int]:
    return (pool.index(value),) if isinstance(value, str) else (_NO_INDEX,)


def _typed(pool: _StringPool, value: AttributeValue) -> bytes:
    if isinstance(value, bool):
        return struct.pack("<HBBI", 8, 0, _TYPE_INT_BOOLEAN, 0xFFFFFFFF if value else 0)
    if isinstance(value, int):
        return struct.pack("<HBBI", 8, 0, _TYPE_INT_DEC, value & 0xFFFFFFFF)
    return struct.pack("<HBBI", 8, 0, _TYPE_STRING, pool.index(value))


def _chunk(chunk_type: int, payload: bytes, header_size: int) -> bytes:
    return struct.pack("<HHI", chunk_type, header_size, 8 + len(payload)) + payload


class _StringPool:
    """UTF-16 string pool; the attribute names come first so the resource map can index them."""

    def __init__(self, leading: list[str]):
        self._strings: list[str] = list(leading)
        self._index = {s: i for i, s in enumerate(self._strings)}

    def index(self, value: str) -> int:
        if value not in self._index:
            self._index[value] = len(self._strings)
            self._strings.append(value)
        return self._index[value]

    def encode(self) -> bytes:
        data = bytearray()
        offsets = []
        for value in self._strings:
            offsets.append(len(data))
            units = value.encode("utf-16-le")
            data += struct.pack("<H", len(units) // 2) + units + b"\0\0"
        while len(data) % 4:
            data += b"\0"
        header_size = 28
        strings_start = header_size + 4 * len(offsets)
        payload = struct.pack("<IIIII", len(offsets), 0, 0, strings_start, 0)
        payload += b"".join(struct.pack("<I", offset) for offset in offsets) + bytes(data)
        return struct.pack("<HHI", 0x0001, header_size, 8 + len(payload)) + payload
