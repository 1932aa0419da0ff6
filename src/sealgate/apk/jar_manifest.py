"""JAR manifests (META-INF/MANIFEST.MF) and signature files (.SF), read exactly as apksig and Android read them.

A v1 signature digests byte ranges of the manifest (the whole file, its main section, each entry's section), so the
parser must report where each section starts and ends in the original bytes, not just the attributes. The rules are
apksig's `ManifestParser`, which differ from `java.util.jar.Manifest` in ways attackers and obfuscators rely on:

* a line ends at CR, LF or CR LF, so a CR or LF inside an entry name splits the section (this is why names with
  CR/LF cannot be signed: the section for them gets the wrong name, or none);
* a continuation line starts with one SPACE, which is dropped, and lines are joined as bytes before UTF-8 decoding;
* an attribute is split at the first ": " (colon + one space); a line without one is a name with an empty value;
* a section's byte range runs from its first non-empty line to just past the blank line that ends it;
* attribute names compare case-insensitively and the first match wins.

Which digest attribute a platform version checks is decided here too (`digests_to_verify`): before API 18 Android
follows the ancient Digest-Algorithms attribute and takes the first supported digest; from API 18 it takes the
strongest of SHA-512, SHA-384, SHA-256 and SHA-1.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

ANDROID_GINGERBREAD = 9
ANDROID_JELLY_BEAN_MR2 = 18

_LINE_END = re.compile(rb"[\r\n]")
_JAVA_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

#: Digest names accepted in the Digest-Algorithms attribute, upper-cased, to their canonical JCA name.
_CANONICAL_DIGEST = {
    "MD5": "MD5",
    "SHA": "SHA-1",
    "SHA1": "SHA-1",
    "SHA-1": "SHA-1",
    "SHA-256": "SHA-256",
    "SHA-384": "SHA-384",
    "SHA-512": "SHA-512",
}
#: First API level whose JAR verifier understands a digest in MANIFEST.MF or .SF.
_DIGEST_MIN_SDK = {"MD5": 0, "SHA-1": 0, "SHA-256": 0, "SHA-384": ANDROID_GINGERBREAD, "SHA-512": ANDROID_GINGERBREAD}
#: From API 18 on, the platform picks the first of these that the section carries.
_JB_MR2_DIGESTS = ("SHA-512", "SHA-384", "SHA-256", "SHA-1")
#: hashlib names of the JCA digest names above.
HASHLIB_NAMES = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Section:
    """One section and where it lies in the parsed bytes (the range digests cover)."""

    start: int
    size: int
    attributes: tuple[Attribute, ...]
    #: Case-folded attribute name to the value of its first occurrence.
    index: dict[str, str] = field(compare=False, repr=False)

    @classmethod
    def build(cls, start: int, size: int, attributes: tuple[Attribute, ...]) -> Section:
        index: dict[str, str] = {}
        for attribute in attributes:
            index.setdefault(_fold(attribute.name), attribute.value)
        return cls(start, size, attributes, index)

    @property
    def name(self) -> str | None:
        """The value of the first attribute when that attribute is `Name` (any case), else None."""
        first = self.attributes[0] if self.attributes else None
        if first is not None and _fold(first.name) == "name":
            return first.value
        return None

    def get(self, name: str) -> str | None:
        return self.index.get(_fold(name))


@dataclass(frozen=True, slots=True)
class NamedDigest:
    """A digest a section claims; `digest` is None when its base64 is malformed (it then matches nothing)."""

    algorithm: str  # JCA name: MD5, SHA-1, SHA-256, SHA-384, SHA-512
    digest: bytes | None
    encoded: str


def parse(data: bytes) -> tuple[Section | None, list[Section]]:
    """The main section (None for an empty file) and the individual sections, in file order."""
    reader = _Reader(data)
    main = reader.read_section()
    sections: list[Section] = []
    while (section := reader.read_section()) is not None:
        sections.append(section)
    return main, sections


def equals_ignore_case(left: str, right: str) -> bool:
    """Java's String.equalsIgnoreCase."""
    return len(left) == len(right) and _fold(left) == _fold(right)


def _fold(text: str) -> str:
    """Java's per-character case folding, Character.toLowerCase(Character.toUpperCase(c)).

    Two strings are equal ignoring case in Java exactly when their folds are equal; a character whose Python
    upper-case mapping is several characters (such as "ß") is left alone, as Java's char mapping leaves it.
    """
    if text.isascii():
        return text.lower()
    return "".join(_fold_char(char) for char in text)


def _fold_char(char: str) -> str:
    upper = char.upper()
    if len(upper) != 1:
        upper = char
    # Only U+0130 lower-cases to two characters in Python; Java's single-char mapping gives the first ("i").
    return upper.lower()[0]


def digests_to_verify(section: Section, suffix: str, min_sdk: int, max_sdk: int) -> list[NamedDigest]:
    """The digests of `section` that some platform in [min_sdk, max_sdk] checks (apksig's getDigestsToVerify).

    `suffix` is "-Digest" (entries), "-Digest-Manifest" (whole manifest) or "-Digest-Manifest-Main-Attributes".
    An empty result means a platform in the range finds no digest it can check, which fails there.
    """
    result: list[NamedDigest] = []
    if min_sdk < ANDROID_JELLY_BEAN_MR2:
        listed = section.get("Digest-Algorithms")
        for token in _JAVA_WHITESPACE.split(listed if listed is not None else "SHA SHA1"):
            if not token:
                continue
            encoded = section.get(token + suffix)
            if encoded is None:
                continue
            algorithm = _CANONICAL_DIGEST.get(token.upper())
            if algorithm is None or _DIGEST_MIN_SDK[algorithm] > min_sdk:
                continue
            result.append(NamedDigest(algorithm, decode_base64(encoded), encoded))
            break
        if not result:
            return result
    if max_sdk >= ANDROID_JELLY_BEAN_MR2:
        for algorithm in _JB_MR2_DIGESTS:
            attribute = ("SHA1" if algorithm == "SHA-1" else algorithm) + suffix
            encoded = section.get(attribute)
            if encoded is None:
                continue
            digest = decode_base64(encoded)
            already = [named for named in result if equals_ignore_case(named.algorithm, algorithm)]
            if not already or already[0].digest is None or already[0].digest != digest:
                result.append(NamedDigest(algorithm, digest, encoded))
            break
    return result


def decode_base64(text: str) -> bytes | None:
    """Java's basic Base64 decoder: standard alphabet, optional but exact padding, nothing else; None if invalid."""
    if not _BASE64.fullmatch(text):
        return None
    core = text.rstrip("=")
    if (len(core) != len(text) and len(text) % 4) or len(core) % 4 == 1:
        return None
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


class _Reader:
    """apksig's ManifestParser state machine: one line of look-ahead is buffered to join continuation lines."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0
        self._end = len(data)
        #: None: nothing buffered; b"": the end of a section was seen; else: the next attribute's first line.
        self._buffered: bytes | None = None

    def read_section(self) -> Section | None:
        while True:
            start = self._offset
            attribute = self._read_attribute()
            if attribute is None:
                return None
            if attribute:
                break
        attributes = [_split_attribute(attribute)]
        while attribute := self._read_attribute():
            attributes.append(_split_attribute(attribute))
        return Section.build(start, self._offset - start, tuple(attributes))

    def _read_attribute(self) -> bytes | None:
        """The next attribute's bytes, b"" at the end of a section, or None at the end of input."""
        if self._buffered is not None and not self._buffered:
            self._buffered = None
            return b""
        line = self._read_line()
        if line is None:
            pending, self._buffered = self._buffered, None
            return pending
        if not line:
            if self._buffered is not None:
                pending, self._buffered = self._buffered, b""
                return pending
            return b""
        if self._buffered is None:
            parts = [line]
        elif line[0] != 0x20:
            pending, self._buffered = self._buffered, line
            return pending
        else:
            parts = [self._buffered, line[1:]]
            self._buffered = None
        while True:
            line = self._read_line()
            if line is None:
                return b"".join(parts)
            if not line:
                self._buffered = b""
                return b"".join(parts)
            if line[0] == 0x20:
                parts.append(line[1:])
            else:
                self._buffered = line
                return b"".join(parts)

    def _read_line(self) -> bytes | None:
        """The next line without its terminator (CR, LF or CR LF), or None at the end of input."""
        start = self._offset
        if start >= self._end:
            return None
        match = _LINE_END.search(self._data, start, self._end)
        if match is None:
            self._offset = self._end
            return self._data[start : self._end]
        line_end = match.start()
        next_offset = line_end + 1
        if self._data[line_end] == 0x0D and next_offset < self._end and self._data[next_offset] == 0x0A:
            next_offset += 1
        self._offset = next_offset
        return self._data[start:line_end]


def _split_attribute(raw: bytes) -> Attribute:
    """Split at the first ": "; spaces elsewhere are kept, as obfuscated APKs put them in names and values."""
    text = raw.decode("utf-8", errors="replace")
    name, separator, value = text.partition(": ")
    return Attribute(name, value) if separator else Attribute(text, "")
