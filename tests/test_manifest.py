"""AndroidManifest.xml reading, against the F-Droid vectors, aapt, and crafted binary XML.

Crafted manifests come from `_Xml` below, a small writer of the chunk layout aapt emits (string pool with the
resource-mapped attribute names first, resource map, namespace and element nodes). Several of them are also fed to
aapt itself, so the writer cannot drift into a dialect only our reader understands.
"""

from __future__ import annotations

import random
import re
import struct
import subprocess
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import SHARED_VECTORS, read_tsv, require_tool, vectors_path
from sealgate.apk.manifest import (
    ATTR_DEBUGGABLE,
    ATTR_GL_ES_VERSION,
    ATTR_LABEL,
    ATTR_MAX_SDK_VERSION,
    ATTR_MIN_SDK_VERSION,
    ATTR_NAME,
    ATTR_REQUIRED,
    ATTR_SHARED_USER_ID,
    ATTR_TARGET_SANDBOX_VERSION,
    ATTR_TARGET_SDK_VERSION,
    ATTR_TEST_ONLY,
    ATTR_VERSION_CODE,
    ATTR_VERSION_CODE_MAJOR,
    ATTR_VERSION_NAME,
    AndroidManifest,
    UsesFeature,
    UsesPermission,
    min_sdk_for_codename,
    native_abis,
    parse_manifest,
    read_manifest,
    resolve_string,
)
from sealgate.errors import ApkFormatError, ManifestFormatError, ZipBombError
from sealgate.ziparchive import ZipArchive

ANDROID_NS = "http://schemas.android.com/apk/res/android"
NO_INDEX = 0xFFFFFFFF
ATTRIBUTE_IDS = {
    "label": ATTR_LABEL,
    "name": ATTR_NAME,
    "sharedUserId": ATTR_SHARED_USER_ID,
    "debuggable": ATTR_DEBUGGABLE,
    "minSdkVersion": ATTR_MIN_SDK_VERSION,
    "versionCode": ATTR_VERSION_CODE,
    "versionName": ATTR_VERSION_NAME,
    "targetSdkVersion": ATTR_TARGET_SDK_VERSION,
    "maxSdkVersion": ATTR_MAX_SDK_VERSION,
    "testOnly": ATTR_TEST_ONLY,
    "glEsVersion": ATTR_GL_ES_VERSION,
    "required": ATTR_REQUIRED,
    "targetSandboxVersion": ATTR_TARGET_SANDBOX_VERSION,
    "versionCodeMajor": ATTR_VERSION_CODE_MAJOR,
}


# -- a writer of binary XML for crafted cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A resource reference value (TYPE_REFERENCE)."""

    resource_id: int


@dataclass(frozen=True)
class Typed:
    """An explicit Res_value (type, data), for types the shorthand does not cover."""

    type: int
    data: int


@dataclass
class A:
    """An attribute; android: ones get their resource ID from ATTRIBUTE_IDS unless `resource_id` says otherwise."""

    name: str
    value: str | int | bool | Ref | Typed
    android: bool = True
    resource_id: int | None = None
    namespace: str | None = None


@dataclass
class E:
    name: str
    attrs: list[A] = field(default_factory=list)
    children: list[E] = field(default_factory=list)
    namespace: str | None = None


class _Xml:
    """Encodes an element tree the way aapt does; knobs let a test break one rule at a time."""

    def __init__(self, root: E, *, utf8: bool = False, sort_attributes: bool = True) -> None:
        self.utf8 = utf8
        self.sort_attributes = sort_attributes
        mapped: dict[str, int] = {}
        for element in _walk(root):
            for attr in element.attrs:
                if _resource_id(attr):
                    mapped.setdefault(attr.name, _resource_id(attr))
        # Resource-mapped names first, in resource-ID order, so that their pool indexes index the resource map.
        self.strings: list[str] = sorted(mapped, key=mapped.__getitem__)
        self.resource_ids = [mapped[name] for name in self.strings]
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.strings)}
        self.root = root

    def s(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.strings)
            self.strings.append(text)
        return self.index[text]

    def encode(self) -> bytes:
        self.s(ANDROID_NS)
        self.s("android")
        nodes = bytearray()
        nodes += _node(0x0100, struct.pack("<II", self.s("android"), self.s(ANDROID_NS)))
        self._element(self.root, nodes)
        nodes += _node(0x0101, struct.pack("<II", self.s("android"), self.s(ANDROID_NS)))
        body = self.string_pool() + self.resource_map() + bytes(nodes)
        return struct.pack("<HHI", 0x0003, 8, 8 + len(body)) + body

    def _element(self, element: E, out: bytearray) -> None:
        attrs = list(element.attrs)
        if self.sort_attributes:
            attrs.sort(key=lambda a: (_resource_id(a) == 0, _resource_id(a)))
        encoded = b"".join(self._attribute(a) for a in attrs)
        ns = self.s(element.namespace) if element.namespace else NO_INDEX
        name = self.s(element.name)
        out += _node(0x0102, struct.pack("<IIHHHHHH", ns, name, 20, 20, len(attrs), 0, 0, 0) + encoded)
        for child in element.children:
            self._element(child, out)
        out += _node(0x0103, struct.pack("<II", ns, name))

    def _attribute(self, attr: A) -> bytes:
        namespace = attr.namespace or (ANDROID_NS if attr.android else None)
        ns = self.s(namespace) if namespace else NO_INDEX
        name = self.s(attr.name)
        value = attr.value
        raw = NO_INDEX
        if isinstance(value, bool):
            kind, data = 0x12, 0xFFFFFFFF if value else 0
        elif isinstance(value, int):
            kind, data = 0x10, value & 0xFFFFFFFF
        elif isinstance(value, str):
            kind, data = 0x03, self.s(value)
            raw = data
        elif isinstance(value, Ref):
            kind, data = 0x01, value.resource_id
        else:
            kind, data = value.type, value.data
        return struct.pack("<IIIHBBI", ns, name, raw, 8, 0, kind, data)

    def string_pool(self) -> bytes:
        offsets, data = [], bytearray()
        for text in self.strings:
            offsets.append(len(data))
            if self.utf8:
                encoded = text.encode("utf-8")
                data += _utf8_length(len(text.encode("utf-16-le")) // 2) + _utf8_length(len(encoded)) + encoded + b"\0"
            else:
                encoded = text.encode("utf-16-le")
                data += struct.pack("<H", len(encoded) // 2) + encoded + b"\0\0"
        data += b"\0" * (-len(data) % 4)
        header_size = 28
        strings_start = header_size + 4 * len(offsets)
        flags = 0x100 if self.utf8 else 0
        header = struct.pack(
            "<HHIIIIII", 0x0001, header_size, strings_start + len(data), len(offsets), 0, flags, strings_start, 0
        )
        return header + struct.pack(f"<{len(offsets)}I", *offsets) + bytes(data)

    def resource_map(self) -> bytes:
        ids = struct.pack(f"<{len(self.resource_ids)}I", *self.resource_ids)
        return struct.pack("<HHI", 0x0180, 8, 8 + len(ids)) + ids


def _resource_id(attr: A) -> int:
    if attr.resource_id is not None:
        return attr.resource_id
    return ATTRIBUTE_IDS.get(attr.name, 0) if attr.android else 0


def _utf8_length(value: int) -> bytes:
    return bytes([value]) if value < 0x80 else bytes([0x80 | (value >> 8), value & 0xFF])


def _node(kind: int, ext: bytes, line: int = 1) -> bytes:
    return struct.pack("<HHIII", kind, 16, 16 + len(ext), line, NO_INDEX) + ext


def _walk(element: E) -> Iterator[E]:
    yield element
    for child in element.children:
        yield from _walk(child)


def manifest_xml(*children: E, package: str = "org.example.app", root_attrs: list[A] | None = None) -> E:
    attrs = [A("versionCode", 7), A("versionName", "1.2"), A("package", package, android=False)]
    return E("manifest", attrs + (root_attrs or []), list(children))


def build(
    *children: E, utf8: bool = False, package: str = "org.example.app", root_attrs: list[A] | None = None
) -> bytes:
    return _Xml(manifest_xml(*children, package=package, root_attrs=root_attrs), utf8=utf8).encode()


def parse(
    *children: E, utf8: bool = False, package: str = "org.example.app", root_attrs: list[A] | None = None
) -> AndroidManifest:
    return parse_manifest(build(*children, utf8=utf8, package=package, root_attrs=root_attrs))


# -- the F-Droid vectors -------------------------------------------------------------------------------------------


def _fdroid_rows() -> list[dict[str, str]]:
    """Rows at collection time; without the vectors one placeholder row lets the test skip (or fail under CI)."""
    path = SHARED_VECTORS / "fdroid" / "expected.tsv"
    return read_tsv(path) if path.exists() else [{"file": "<vectors missing>"}]


@pytest.mark.parametrize("row", _fdroid_rows(), ids=lambda row: row["file"])
def test_fdroid_vector_fields(row: dict[str, str]) -> None:
    """expected.tsv: empty min_sdk means no minSdkVersion (1, as Android), empty target_sdk means none declared,
    empty version_name means none declared."""
    apk = vectors_path("fdroid", "apks", row["file"])
    with ZipArchive.open(apk) as archive:
        manifest = read_manifest(archive)
    assert manifest.package == row["package"]
    assert manifest.version_code == int(row["version_code"])
    assert manifest.version_name == (row["version_name"] or None)
    assert manifest.min_sdk == int(row["min_sdk"] or 1)
    assert manifest.min_sdk_codename is None
    assert manifest.target_sdk == (int(row["target_sdk"]) if row["target_sdk"] else None)


# -- aapt as a second reader ---------------------------------------------------------------------------------------


@dataclass
class Badging:
    package: str
    version_code: str
    version_name: str
    sdk_versions: list[str]
    target_sdk_versions: list[str]
    permissions: list[str]
    permissions_sdk23: list[str]
    native_code: set[str]
    debuggable: bool


def _quoted(line: str, key: str) -> str:
    match = re.search(rf"\b{key}='([^']*)'", line)
    assert match is not None, line
    return match.group(1)


def parse_badging(output: str) -> Badging:
    lines = output.splitlines()
    package_line = next(line for line in lines if line.startswith("package: "))
    badging = Badging(
        package=_quoted(package_line, "name"),
        version_code=_quoted(package_line, "versionCode"),
        version_name=_quoted(package_line, "versionName"),
        sdk_versions=[line.split("'")[1] for line in lines if line.startswith("sdkVersion:")],
        target_sdk_versions=[line.split("'")[1] for line in lines if line.startswith("targetSdkVersion:")],
        permissions=[],
        permissions_sdk23=[],
        native_code=set(),
        debuggable="application-debuggable" in lines,
    )
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("uses-permission: "):
            # aapt adds permissions Android grants implicitly to old apps, each followed by its reason line.
            if not following.startswith("uses-implied-permission: "):
                badging.permissions.append(_quoted(line, "name"))
        elif line.startswith("uses-permission-sdk-23: "):
            badging.permissions_sdk23.append(_quoted(line, "name"))
        elif line.startswith(("native-code:", "alt-native-code:")):
            badging.native_code.update(re.findall(r"'([^']*)'", line))
    return badging


def _all_vector_apks() -> list[Path]:
    apksig = vectors_path("apksig", "files")
    fdroid = vectors_path("fdroid", "apks")
    return sorted(apksig.glob("*.apk")) + sorted(fdroid.rglob("*.apk"))


def _badging(aapt: str, apk: Path) -> str | None:
    result = subprocess.run([aapt, "dump", "badging", str(apk)], capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else None


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _compare_with_aapt(apk: Path, badging: Badging) -> list[str]:
    with ZipArchive.open(apk) as archive:
        ours = read_manifest(archive)
    problems = []

    def check(what: str, mine: object, theirs: object) -> None:
        if mine != theirs:
            problems.append(f"{apk.name}: {what}: ours {mine!r}, aapt {theirs!r}")

    check("package", ours.package, badging.package)
    # aapt prints versionCode only when positive, and never versionCodeMajor.
    low = ours.version_code & 0xFFFFFFFF
    check("versionCode", str(low) if 0 < low < 0x80000000 else "", badging.version_code)
    check("versionName", ours.version_name or "", badging.version_name)
    # aapt prints minSdkVersion per <uses-sdk>; apksig (and we) take the highest.
    expected_min = max((int(v) for v in badging.sdk_versions), default=1)
    check("sdkVersion", ours.min_sdk, expected_min)
    check(
        "targetSdkVersion",
        ours.target_sdk,
        int(badging.target_sdk_versions[0]) if badging.target_sdk_versions else None,
    )
    check("uses-permission", _unique([p.name for p in ours.permissions]), _unique(badging.permissions))
    check(
        "uses-permission-sdk-23", _unique([p.name for p in ours.permissions_sdk23]), _unique(badging.permissions_sdk23)
    )
    check("native-code", set(ours.native_abis), badging.native_code)
    if apk.name != "debuggable-resource.apk":
        # android:debuggable there is a reference that aapt resolves (to false) in its one default configuration;
        # we refuse to call a configuration-dependent value false (apksig refuses to decide at all).
        check("debuggable", ours.debuggable, badging.debuggable)
    return problems


def test_vectors_agree_with_aapt_badging() -> None:
    aapt = require_tool("aapt")
    apks = _all_vector_apks()
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = list(pool.map(lambda apk: _badging(aapt, apk), apks))
    compared, problems = 0, []
    for apk, output in zip(apks, outputs, strict=True):
        if output is None:
            continue  # aapt cannot read it (no manifest, or a ZIP aapt refuses)
        compared += 1
        problems += _compare_with_aapt(apk, parse_badging(output))
    assert not problems, "\n".join(problems)
    assert compared >= 340, f"only {compared} APKs were readable by aapt"


def test_debuggable_vectors() -> None:
    """debuggable-boolean.apk says true; debuggable-resource.apk references a resource (false in its only
    configuration), which apksig refuses to judge and which we therefore report as debuggable."""
    for name, expected in (("debuggable-boolean.apk", True), ("debuggable-resource.apk", True)):
        with ZipArchive.open(vectors_path("apksig", "files", name)) as archive:
            assert read_manifest(archive).debuggable is expected
    with ZipArchive.open(vectors_path("apksig", "files", "v1-only-no-uses-sdk.apk")) as archive:
        manifest = read_manifest(archive)
    assert (manifest.min_sdk, manifest.target_sdk, manifest.debuggable) == (1, None, False)


def test_attribute_ids_match_aapt_xmltree() -> None:
    """Every android: attribute aapt names in the vectors carries the resource ID our constants use."""
    aapt = require_tool("aapt")
    seen: dict[str, set[int]] = {}
    apks = [vectors_path("apksig", "files", "v1-only-targetSandboxVersion-2.apk"), *_all_vector_apks()[::7]]
    for apk in apks:
        result = subprocess.run(
            [aapt, "dump", "xmltree", str(apk), "AndroidManifest.xml"], capture_output=True, text=True, check=False
        )
        for name, value in re.findall(r"android:(\w+)\(0x([0-9a-f]{8})\)", result.stdout):
            seen.setdefault(name, set()).add(int(value, 16))
    checked = {name: ids for name, ids in seen.items() if name in ATTRIBUTE_IDS}
    assert len(checked) >= 8, checked
    for name, ids in checked.items():
        assert ids == {ATTRIBUTE_IDS[name]}, name


def test_crafted_manifests_agree_with_aapt(tmp_path: Path) -> None:
    """Our writer's output is real binary XML: aapt reads the same fields from it as we do."""
    aapt = require_tool("aapt")
    cases = [
        build(
            E("uses-sdk", [A("minSdkVersion", 21), A("targetSdkVersion", 33)]),
            E("uses-permission", [A("name", "android.permission.INTERNET")]),
            E("uses-permission-sdk-m", [A("name", "android.permission.CAMERA")]),
            E("uses-permission-sdk-23", [A("name", "android.permission.NFC"), A("maxSdkVersion", 28)]),
            E("uses-permission", [A("name", "android.permission.INTERNET")]),
        ),
        build(E("uses-sdk", [A("minSdkVersion", 9)]), E("uses-sdk", [A("minSdkVersion", 14)]), utf8=True),
        build(E("uses-sdk", [A("targetSdkVersion", 30)]), root_attrs=[A("versionCodeMajor", 3)]),
    ]
    for i, data in enumerate(cases):
        apk = tmp_path / f"case{i}.apk"
        with zipfile.ZipFile(apk, "w") as archive:
            archive.writestr("AndroidManifest.xml", data)
            archive.writestr("lib/x86_64/libfoo.so", b"\x7fELF")
        output = _badging(aapt, apk)
        assert output is not None
        assert _compare_with_aapt(apk, parse_badging(output)) == []


def test_crafted_codename_agrees_with_aapt(tmp_path: Path) -> None:
    aapt = require_tool("aapt")
    apk = tmp_path / "codename.apk"
    with zipfile.ZipFile(apk, "w") as archive:
        archive.writestr("AndroidManifest.xml", build(E("uses-sdk", [A("minSdkVersion", "Tiramisu")])))
    output = _badging(aapt, apk)
    assert output is not None and "sdkVersion:'Tiramisu'" in output
    with ZipArchive.open(apk) as opened:
        manifest = read_manifest(opened)
    assert (manifest.min_sdk, manifest.min_sdk_codename) == (25 + ord("T") - ord("O"), "Tiramisu")


# -- rules, one crafted manifest each -------------------------------------------------------------------------------


def test_defaults_of_a_bare_manifest() -> None:
    manifest = parse()
    assert manifest == AndroidManifest(
        package="org.example.app",
        version_code=7,
        version_name="1.2",
        min_sdk=1,
        min_sdk_codename=None,
        target_sdk=None,
        max_sdk=None,
        target_sandbox_version=None,
        permissions=(),
        permissions_sdk23=(),
        features=(),
        debuggable=False,
        test_only=False,
        shared_user_id=None,
        label=None,
        native_abis=(),
    )


def test_utf8_and_utf16_pools_read_alike() -> None:
    children = (
        E("uses-sdk", [A("minSdkVersion", 16), A("targetSdkVersion", 34)]),
        E("application", [A("label", "Ünïcødé 𝄞 app")]),
        E("uses-permission", [A("name", "org.example.permission.ÜBER")]),
    )
    utf16 = parse(*children)
    utf8 = parse(*children, utf8=True)
    assert utf16 == utf8
    assert utf8.label == "Ünïcødé 𝄞 app"


@pytest.mark.parametrize(
    ("codename", "level"),
    [("Baklava", 34), ("CinnamonBun", 35), ("CANARY", 9999), ("O", 25), ("P", 26), ("M", 22), ("B", 1), ("K", 18)],
)
def test_min_sdk_codenames_map_as_apksig(codename: str, level: int) -> None:
    assert min_sdk_for_codename(codename) == level
    manifest = parse(E("uses-sdk", [A("minSdkVersion", codename)]))
    assert (manifest.min_sdk, manifest.min_sdk_codename) == (level, codename)


def test_unknown_codename_is_refused() -> None:
    with pytest.raises(ManifestFormatError, match="codename"):
        parse(E("uses-sdk", [A("minSdkVersion", "1abc")]))


@pytest.mark.parametrize("value", [Ref(0x7F0A0001), True, Typed(0x04, 0x3F800000)])
def test_min_sdk_that_is_not_a_literal_is_refused(value: Ref | bool | Typed) -> None:
    """apksig's getMinSdkVersionFromBinaryAndroidManifest accepts integers and codenames only."""
    with pytest.raises(ManifestFormatError, match="minSdkVersion"):
        parse(E("uses-sdk", [A("minSdkVersion", value)]))


def test_min_sdk_is_the_highest_uses_sdk_and_target_the_first() -> None:
    manifest = parse(
        E("uses-sdk", [A("minSdkVersion", 9), A("targetSdkVersion", 19)]),
        E("uses-sdk", [A("minSdkVersion", 21), A("targetSdkVersion", 30), A("maxSdkVersion", 33)]),
        E("uses-sdk", [A("minSdkVersion", 3)]),
    )
    assert (manifest.min_sdk, manifest.target_sdk, manifest.max_sdk) == (21, 19, 33)


def test_min_sdk_below_one_counts_as_one() -> None:
    assert parse(E("uses-sdk", [A("minSdkVersion", -5)])).min_sdk == 1


def test_target_sdk_that_is_not_an_integer_is_none() -> None:
    """apksig then falls back to minSdkVersion; None lets the verifier do the same."""
    assert parse(E("uses-sdk", [A("minSdkVersion", 21), A("targetSdkVersion", "UpsideDownCake")])).target_sdk is None
    assert parse(E("uses-sdk", [A("targetSdkVersion", Ref(0x7F0A0002))])).target_sdk is None


def test_uses_sdk_only_counts_under_manifest() -> None:
    nested = E("application", [], [E("uses-sdk", [A("minSdkVersion", 28)])])
    with pytest.raises(ManifestFormatError, match="nested"):
        parse(nested)
    deeper = E("application", [], [E("activity", [], [E("manifest", [A("targetSandboxVersion", 2)])])])
    with pytest.raises(ManifestFormatError, match="nested"):
        parse(deeper)
    # apksig's attribute lookups match <manifest> by local name at any depth, namespace or not.
    with pytest.raises(ManifestFormatError, match="nested"):
        parse(E("manifest", [A("targetSandboxVersion", 2)]))
    namespaced = E("application", [], [E("uses-sdk", [A("targetSdkVersion", 30)], namespace="urn:x")])
    with pytest.raises(ManifestFormatError, match="nested"):
        parse(namespaced)
    # Other elements may nest freely, whatever their attributes.
    assert parse(E("application", [], [E("activity", [A("minSdkVersion", 30)])])).min_sdk == 1


def test_attributes_are_matched_by_resource_id_not_by_name_or_namespace() -> None:
    # No resource ID (plain attribute, as aapt writes one without the android: prefix): invisible to Android.
    assert parse(E("uses-sdk", [A("minSdkVersion", 24, android=False)])).min_sdk == 1
    # The resource ID decides, whatever the namespace says.
    assert parse(E("uses-sdk", [A("minSdkVersion", 24, namespace="http://example.org/other")])).min_sdk == 24
    # And whatever the name string says.
    assert parse(E("uses-sdk", [A("renamedAttr", 26, resource_id=ATTR_MIN_SDK_VERSION)])).min_sdk == 26


def test_version_code_major_and_sign() -> None:
    manifest = parse(root_attrs=[A("versionCodeMajor", 1)])
    assert manifest.version_code == (1 << 32) | 7
    negative = parse_manifest(_Xml(E("manifest", [A("versionCode", -1), A("package", "a.b", android=False)])).encode())
    assert negative.version_code == 0xFFFFFFFF
    absent = parse_manifest(_Xml(E("manifest", [A("package", "a.b", android=False)])).encode())
    assert (absent.version_code, absent.version_name) == (0, None)


def test_version_code_that_is_not_an_integer_is_refused() -> None:
    root = E("manifest", [A("versionCode", "12"), A("package", "a.b", android=False)])
    with pytest.raises(ManifestFormatError, match="versionCode"):
        parse_manifest(_Xml(root).encode())


def test_version_name_and_label_references() -> None:
    manifest = parse(
        E("application", [A("label", Ref(0x7F0B0001))]), root_attrs=[A("sharedUserId", "org.example.shared")]
    )
    assert manifest.label == "@0x7f0b0001"
    assert manifest.shared_user_id == "org.example.shared"
    root = E("manifest", [A("versionCode", 1), A("versionName", Ref(0x7F050026)), A("package", "a.b", android=False)])
    assert parse_manifest(_Xml(root).encode()).version_name == "@0x7f050026"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", False),
        (1, True),
        (0, False),
        (Typed(0x11, 1), True),
        (Ref(0x7F040001), True),
    ],
)
def test_debuggable_and_test_only(value: bool | str | int | Typed | Ref, expected: bool) -> None:
    manifest = parse(E("application", [A("debuggable", value), A("testOnly", value)]))
    assert (manifest.debuggable, manifest.test_only) == (expected, expected)


def test_only_the_first_application_counts() -> None:
    manifest = parse(E("application", [A("label", "first")]), E("application", [A("debuggable", True)]))
    assert (manifest.label, manifest.debuggable) == ("first", False)


def test_permissions() -> None:
    manifest = parse(
        E("uses-permission", [A("name", "android.permission.INTERNET")]),
        E("uses-permission", [A("name", "android.permission.WRITE_EXTERNAL_STORAGE"), A("maxSdkVersion", 18)]),
        E("uses-permission", [A("name", "android.permission.INTERNET")]),
        E("uses-permission", [A("name", "android.permission.WRITE_EXTERNAL_STORAGE")]),
        E("uses-permission", [A("name", Ref(0x7F0C0001))]),
        E("uses-permission-sdk-23", [A("name", "android.permission.CAMERA")]),
        E("uses-permission-sdk-m", [A("name", "android.permission.NFC"), A("maxSdkVersion", 30)]),
        E("application", [], [E("uses-permission", [A("name", "not.at.the.right.DEPTH")])]),
    )
    assert manifest.permissions == (
        UsesPermission("android.permission.INTERNET", None),
        UsesPermission("android.permission.WRITE_EXTERNAL_STORAGE", 18),
        UsesPermission("android.permission.WRITE_EXTERNAL_STORAGE", None),
    )
    assert manifest.permissions_sdk23 == (
        UsesPermission("android.permission.CAMERA", None),
        UsesPermission("android.permission.NFC", 30),
    )


def test_features() -> None:
    manifest = parse(
        E("uses-feature", [A("name", "android.hardware.camera"), A("required", False)]),
        E("uses-feature", [A("name", "android.hardware.wifi")]),
        E("uses-feature", [A("glEsVersion", 0x00030001)]),
    )
    assert manifest.features == (
        UsesFeature("android.hardware.camera", False, None),
        UsesFeature("android.hardware.wifi", True, None),
        UsesFeature(None, True, 0x00030001),
    )


def test_target_sandbox_version() -> None:
    assert parse(root_attrs=[A("targetSandboxVersion", 2)]).target_sandbox_version == 2
    assert parse(root_attrs=[A("targetSandboxVersion", Ref(0x7F0D0001))]).target_sandbox_version is None


# -- ambiguity and damage ------------------------------------------------------------------------------------------


def _refused(data: bytes, match: str) -> None:
    with pytest.raises(ManifestFormatError, match=match):
        parse_manifest(data)


def test_attributes_out_of_resource_id_order_are_refused() -> None:
    """Android's attribute lookup walks IDs in step and would miss versionCode here; apksig and aapt would not."""
    root = E("manifest", [A("versionName", "1"), A("versionCode", 5), A("package", "a.b", android=False)])
    _refused(_Xml(root, sort_attributes=False).encode(), "resource-ID order")
    duplicate = E("manifest", [A("versionCode", 5), A("versionCode", 6), A("package", "a.b", android=False)])
    _refused(_Xml(duplicate).encode(), "resource-ID order")


def test_package_rules() -> None:
    _refused(_Xml(E("manifest", [A("versionCode", 1)])).encode(), "no package")
    _refused(build(package="nodots"), "not a valid package name")
    _refused(build(package="org.1bad"), "not a valid package name")
    namespaced = E("manifest", [A("package", "a.b", android=False, namespace="urn:x")])
    _refused(_Xml(namespaced).encode(), "package")
    twice = E("manifest", [A("package", "a.b", android=False), A("package", "c.d", android=False, namespace="urn:x")])
    _refused(_Xml(twice).encode(), "more than one")
    _refused(_Xml(E("manifest", [A("package", 5, android=False)])).encode(), "not a string")


def test_root_must_be_manifest() -> None:
    _refused(_Xml(E("application", [A("package", "a.b", android=False)])).encode(), "not <manifest>")
    _refused(_Xml(E("manifest", [A("package", "a.b", android=False)], namespace="urn:x")).encode(), "not <manifest>")


def test_namespaced_child_that_android_would_read_is_refused() -> None:
    _refused(build(E("uses-sdk", [A("minSdkVersion", 30)], namespace="urn:x")), "namespace")


def _nodes_of(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, size) of each chunk inside the XML chunk."""
    out, pos = [], 8
    while pos < len(data):
        kind, _header, size = struct.unpack_from("<HHI", data, pos)
        out.append((pos, kind, size))
        pos += size
    return out


def _with_outer_size(body: bytes) -> bytes:
    return struct.pack("<HHI", 3, 8, 8 + len(body)) + body


def test_structural_ambiguities_are_refused() -> None:
    data = build(E("uses-sdk", [A("minSdkVersion", 21)]))
    chunks = _nodes_of(data)
    pool = next(c for c in chunks if c[1] == 0x0001)
    resmap = next(c for c in chunks if c[1] == 0x0180)
    first_node = next(c for c in chunks if c[1] >= 0x0100 and c[1] != 0x0180)
    end_root = [c for c in chunks if c[1] == 0x0103][-1]
    start_root = next(c for c in chunks if c[1] == 0x0102)

    def piece(chunk: tuple[int, int, int]) -> bytes:
        return data[chunk[0] : chunk[0] + chunk[2]]

    body = data[8:]
    # A resource map after the first node: Android ignores it, apksig uses it.
    moved = body.replace(piece(resmap), b"")
    at = moved.index(piece(first_node)) + first_node[2]
    _refused(_with_outer_size(moved[:at] + piece(resmap) + moved[at:]), "after the first XML node")
    # A second string pool.
    _refused(_with_outer_size(piece(pool) + body), "more than one string pool")
    # A second root element after the first one closes.
    root_elements = data[start_root[0] : end_root[0] + end_root[2]]
    at = body.index(piece(end_root)) + end_root[2]
    _refused(_with_outer_size(body[:at] + root_elements + body[at:]), "second root")
    # An extra end tag, and an element never closed.
    _refused(_with_outer_size(body[:at] + piece(end_root) + body[at:]), "closes nothing")
    _refused(_with_outer_size(body.replace(piece(end_root), b"")), "not closed")
    # No string pool at all.
    _refused(_with_outer_size(body.replace(piece(pool), b"")), "no string pool")


def test_cdata_and_unknown_chunks() -> None:
    """CDATA nodes are checked and skipped; unknown chunks are skipped where Android skips them."""
    data = build(E("uses-sdk", [A("minSdkVersion", 21)]))
    chunks = _nodes_of(data)
    root_start = next(c for c in chunks if c[1] == 0x0102)
    body = data[8:]
    at = root_start[0] + root_start[2] - 8

    def cdata(index: int) -> bytes:
        return _node(0x0104, struct.pack("<IHBBI", index, 8, 0, 0x03, index))

    assert parse_manifest(_with_outer_size(body[:at] + cdata(0) + body[at:])).min_sdk == 21
    _refused(_with_outer_size(body[:at] + cdata(4000) + body[at:]), "character data")
    unknown_node = _node(0x0105, b"\0" * 8)
    assert parse_manifest(_with_outer_size(body[:at] + unknown_node + body[at:])).min_sdk == 21
    unknown_chunk = struct.pack("<HHI", 0x0203, 8, 16) + b"\0" * 8
    assert parse_manifest(_with_outer_size(unknown_chunk + body)).min_sdk == 21
    _refused(_with_outer_size(body + b"\0" * 4), "stray bytes")


def test_raw_and_typed_strings_must_agree() -> None:
    xml = _Xml(manifest_xml(E("application", [A("label", "shown")])))
    data = bytearray(xml.encode())
    other = xml.index["1.2"]
    label = xml.index["shown"]
    # Point the raw value of the label at another string, leaving the typed value alone.
    needle = struct.pack("<III", xml.index[ANDROID_NS], xml.index["label"], label)
    at = bytes(data).index(needle)
    data[at + 8 : at + 12] = struct.pack("<I", other)
    _refused(bytes(data), "two different strings")


def test_damaged_headers_and_indexes() -> None:
    data = build(E("uses-sdk", [A("minSdkVersion", 21)]), E("application", [A("label", "x")]))
    _refused(b"", "too short")
    _refused(b"\x02\x00\x0c\x00" + data[4:], "not binary XML")
    _refused(data[:4] + struct.pack("<I", len(data) + 4) + data[8:], "declares")
    chunks = _nodes_of(data)
    start = next(c for c in chunks if c[1] == 0x0102)

    def patched(offset: int, fmt: str, value: int) -> bytes:
        out = bytearray(data)
        struct.pack_into(fmt, out, offset, value)
        return bytes(out)

    last = chunks[-1]
    _refused(patched(last[0] + 4, "<I", last[2] + 4), "past the end")  # the last node overruns the document
    _refused(patched(start[0] + 4, "<I", start[2] + 2), "4-byte boundary")
    _refused(patched(start[0] + 2, "<H", 8), "needs 16")  # node header smaller than ResXMLTree_node
    _refused(patched(start[0] + 20, "<I", 5000), "string #5000")  # element name index
    _refused(patched(start[0] + 16, "<I", 5000), "element namespace")
    _refused(patched(start[0] + 28, "<H", 200), "attributes of element")  # attributeCount overruns
    _refused(patched(start[0] + 26, "<H", 12), "12-byte attributes")
    _refused(patched(start[0] + 36 + 4, "<I", 5000), "attribute name")  # first attribute's name index
    _refused(patched(start[0] + 36 + 8, "<I", 4999), "past the pool")  # raw value index
    pool = next(c for c in chunks if c[1] == 0x0001)
    _refused(patched(pool[0] + 8, "<I", 100000), "more than its size holds")  # stringCount
    _refused(patched(pool[0] + 20, "<I", pool[2]), "outside")  # stringsStart


def test_bad_string_lengths() -> None:
    for utf8 in (False, True):
        xml = _Xml(manifest_xml(), utf8=utf8)
        data = bytearray(xml.encode())
        pool_at = 8
        strings_start = struct.unpack_from("<I", data, pool_at + 20)[0]
        index = xml.index["org.example.app"]
        offset = struct.unpack_from("<I", data, pool_at + 28 + 4 * index)[0]
        at = pool_at + strings_start + offset
        broken = bytearray(data)
        if utf8:
            broken[at + 1] = 0x7F  # byte length far past the string data
        else:
            struct.pack_into("<H", broken, at, 0x7FF0)
        _refused(bytes(broken), "past the end|not NUL-terminated")
        shorter = bytearray(data)
        if utf8:
            shorter[at + 1] -= 1  # one byte short: the terminator is no longer where it should be
        else:
            struct.pack_into("<H", shorter, at, len("org.example.app") - 1)
        _refused(bytes(shorter), "not NUL-terminated")
        if utf8:
            wrong_units = bytearray(data)
            wrong_units[at] += 1  # UTF-16 length disagrees with the UTF-8 bytes
            _refused(bytes(wrong_units), "UTF-16 units")
            invalid = bytearray(data)
            invalid[at + 2] = 0xFF
            _refused(bytes(invalid), "not valid UTF-8")
        else:
            surrogate = bytearray(data)
            struct.pack_into("<H", surrogate, at + 2, 0xD800)
            _refused(bytes(surrogate), "not valid UTF-16")
        # An out-of-range offset for the string.
        far = bytearray(data)
        struct.pack_into("<I", far, pool_at + 28 + 4 * index, 0x10000)
        _refused(bytes(far), "past the end")


def _real_manifest() -> bytes:
    apk = vectors_path("fdroid", "apks", "org.dyndns.fules.ck_20.apk")
    with zipfile.ZipFile(apk) as archive:
        return archive.read("AndroidManifest.xml")


def test_every_truncation_is_refused_cleanly() -> None:
    data = _real_manifest()
    parsed = 0
    for length in range(len(data)):
        # A truncated file still declares its full size, so every prefix is refused ...
        with pytest.raises(ManifestFormatError):
            parse_manifest(data[:length])
        # ... and with the size patched to match, the cut lands inside some chunk: refused, unless it falls
        # between the root's end and the closing namespace node, which leaves a complete document.
        if length >= 8:
            patched = data[:4] + struct.pack("<I", length) + data[8:length]
            try:
                parse_manifest(patched)
                parsed += 1
            except ManifestFormatError:
                pass
    assert parsed <= 1


def test_random_mutations_never_escape() -> None:
    """2000 seeded mutations of a real manifest: a manifest or ManifestFormatError, never another exception."""
    data = _real_manifest()
    rng = random.Random(20240611)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(2000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(mutated))
            choice = rng.random()
            if choice < 0.6:
                mutated[at] = rng.randrange(256)
            elif choice < 0.8:
                struct.pack_into(
                    "<I", mutated, at & ~3, rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
                )
            elif choice < 0.9:
                del mutated[at : at + rng.randint(1, 16)]
            else:
                mutated[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        try:
            parse_manifest(bytes(mutated))
            outcomes["parsed"] += 1
        except ManifestFormatError:
            outcomes["refused"] += 1
    assert outcomes["parsed"] > 50 and outcomes["refused"] > 500, outcomes


# -- archives ------------------------------------------------------------------------------------------------------


def test_missing_manifest_uses_apksigs_words() -> None:
    apk = vectors_path("apksig", "files", "empty-unsigned.apk")
    with ZipArchive.open(apk) as archive, pytest.raises(ApkFormatError, match=r"^Missing AndroidManifest\.xml$"):
        read_manifest(archive)


def test_manifest_zip_bomb_is_bounded(tmp_path: Path) -> None:
    apk = tmp_path / "bomb.apk"
    with zipfile.ZipFile(apk, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("AndroidManifest.xml", bytes(17 * 1024 * 1024))
    with ZipArchive.open(apk) as opened, pytest.raises(ZipBombError):
        read_manifest(opened)


def test_native_abis(tmp_path: Path) -> None:
    apk = tmp_path / "native.apk"
    with zipfile.ZipFile(apk, "w") as archive:
        archive.writestr("AndroidManifest.xml", build())
        for name in ("lib/x86/libA.so", "lib/arm64-v8a/libB.so", "lib/x86/libC.so", "lib/readme.txt", "lib/mips/"):
            archive.writestr(name, b"")
        archive.writestr("assets/lib/armeabi/libD.so", b"")
    with ZipArchive.open(apk) as opened:
        assert read_manifest(opened).native_abis == ("arm64-v8a", "x86")
    assert native_abis(["lib/armeabi-v7a/sub/libE.so", "lib//libF.so", "lib/x86_64/"]) == ("armeabi-v7a",)


def test_version_name_resolution_through_resources() -> None:
    """ck_20 and smsbypass name their versionName by reference; resources.arsc holds one string for it."""
    apk = vectors_path("fdroid", "apks", "org.dyndns.fules.ck_20.apk")
    with zipfile.ZipFile(apk) as archive:
        assert parse_manifest(archive.read("AndroidManifest.xml")).version_name == "@0x7f050026"
        table = archive.read("resources.arsc")
    assert resolve_string(table, 0x7F050026) == "v1.6pre2"
    assert resolve_string(table, 0x7F05FFFF) is None
    assert resolve_string(table, 0x01010001) is None
    assert resolve_string(table[: len(table) // 2], 0x7F050026) in (None, "v1.6pre2")
    assert resolve_string(b"garbage", 0x7F050026) is None


# -- speed ---------------------------------------------------------------------------------------------------------


def test_large_manifest_parses_fast() -> None:
    activities = [
        E(
            "activity",
            [A("name", f"org.example.app.Activity{i}"), A("label", Ref(0x7F0B0000 + i)), A("exported", i % 2 == 0)],
            [E("intent-filter", [], [E("action", [A("name", f"org.example.ACTION_{i}")])])],
        )
        for i in range(2500)
    ]
    data = build(
        E("uses-sdk", [A("minSdkVersion", 21)]),
        *[E("uses-permission", [A("name", f"org.example.permission.P{i}")]) for i in range(200)],
        E("application", [A("label", "big")], activities),
    )
    assert len(data) > 300_000
    parse_manifest(data)
    best = min(_timed(lambda: parse_manifest(data)) for _ in range(5))
    manifest = parse_manifest(data)
    assert len(manifest.permissions) == 200
    # A few ms on a developer machine; the bound leaves room for a loaded CI runner.
    assert best < 0.25, f"{len(data)} bytes took {best * 1000:.1f} ms"


def _timed(action: object) -> float:
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start
