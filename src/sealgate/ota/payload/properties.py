"""payload_properties.txt, exactly as brillo_update_payload's `properties` command writes it.

update_engine's payload_generator/payload_properties.cc fills a brillo::KeyValueStore (a sorted map, saved as one
`KEY=value` line each) with FILE_HASH (base64 SHA-256 of the whole payload), FILE_SIZE, METADATA_HASH (base64
SHA-256 of header + manifest) and METADATA_SIZE (header + manifest, without the metadata signature). The updater
hands these to update_engine's applyPayload, which refuses a payload that does not match them.

The same file carries update_engine's install options after those four lines: releasetools appends POWERWASH=1 to
a wiping package's copy and SWITCH_SLOT_ON_REBOOT=0 to a secondary payload's (update_attempter_android.cc reads them
as kPayloadProperty* headers). They are not part of the payload's description, so they are kept apart, in
`headers`, instead of being refused: a reader that refused them could not install a wiping package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass

from sealgate.errors import PayloadError
from sealgate.ota.payload.header import HEADER_SIZE, PayloadHeader

_STEP = 8 * 1024 * 1024
_KEYS = ("FILE_HASH", "FILE_SIZE", "METADATA_HASH", "METADATA_SIZE")
#: An install option's name, as update_engine's headers spell them (POWERWASH, SWITCH_SLOT_ON_REBOOT, ...).
_HEADER_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class PayloadProperties:
    file_hash: bytes
    file_size: int
    metadata_hash: bytes
    metadata_size: int
    #: update_engine's install options after the description, in file order (("POWERWASH", "1"), ...).
    headers: tuple[tuple[str, str], ...] = ()

    def to_text(self) -> str:
        return (
            f"FILE_HASH={base64.b64encode(self.file_hash).decode()}\n"
            f"FILE_SIZE={self.file_size}\n"
            f"METADATA_HASH={base64.b64encode(self.metadata_hash).decode()}\n"
            f"METADATA_SIZE={self.metadata_size}\n"
        ) + "".join(f"{key}={value}\n" for key, value in self.headers)

    def header(self, name: str) -> str | None:
        """The value of install option `name` (e.g. "POWERWASH"), or None when the file does not set it."""
        return next((value for key, value in self.headers if key == name), None)

    @classmethod
    def parse(cls, text: str) -> PayloadProperties:
        """Strict: the four keys once each, canonical base64 of 32-byte hashes, decimal sizes; other `NAME=value`
        lines are install options (`headers`), each named once."""
        values: dict[str, str] = {}
        headers: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            key, separator, value = line.partition("=")
            if not separator or (key not in _KEYS and not _HEADER_NAME.match(key)):
                raise PayloadError(
                    f"payload properties line {number}: expected one of {', '.join(_KEYS)}=VALUE or an install"
                    " option such as POWERWASH=1"
                )
            if key in values or key in headers:
                raise PayloadError(f"payload properties line {number}: {key} appears twice")
            (values if key in _KEYS else headers)[key] = value
        missing = [key for key in _KEYS if key not in values]
        if missing:
            raise PayloadError(f"payload properties lack {', '.join(missing)}")
        return cls(
            file_hash=_hash(values["FILE_HASH"], "FILE_HASH"),
            file_size=_size(values["FILE_SIZE"], "FILE_SIZE"),
            metadata_hash=_hash(values["METADATA_HASH"], "METADATA_HASH"),
            metadata_size=_size(values["METADATA_SIZE"], "METADATA_SIZE"),
            headers=tuple(headers.items()),
        )

    @classmethod
    def of_file(cls, path: str | os.PathLike[str], offset: int = 0, size: int | None = None) -> PayloadProperties:
        """The properties of the payload in bytes [offset, offset+size) of `path` (an OTA zip's payload.bin)."""
        with open(path, "rb") as stream:
            total = os.fstat(stream.fileno()).st_size
            if size is None:
                size = total - offset
            if offset < 0 or size < 0 or offset + size > total:
                raise PayloadError(f"{os.fspath(path)}: the payload range lies outside the {total}-byte file")
            stream.seek(offset)
            first = stream.read(min(size, HEADER_SIZE))
            header = PayloadHeader.parse(first, size)
            file_hasher = hashlib.sha256(first)
            metadata_hasher = hashlib.sha256(first)
            done = len(first)
            while done < size:
                chunk = stream.read(min(_STEP, size - done))
                if not chunk:
                    raise PayloadError(f"{os.fspath(path)} ends early")
                if done < header.metadata_size:
                    metadata_hasher.update(chunk[: header.metadata_size - done])
                file_hasher.update(chunk)
                done += len(chunk)
        return cls(file_hasher.digest(), size, metadata_hasher.digest(), header.metadata_size)


def _hash(value: str, key: str) -> bytes:
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError(f"payload properties: {key} is not base64") from None
    if len(decoded) != 32 or base64.b64encode(decoded).decode() != value:
        raise PayloadError(f"payload properties: {key} is not the base64 of a SHA-256 hash")
    return decoded


def _size(value: str, key: str) -> int:
    if not value.isascii() or not value.isdigit() or (len(value) > 1 and value.startswith("0")) or len(value) > 19:
        raise PayloadError(f"payload properties: {key} is not a decimal size")
    return int(value)
