"""Reading the small text files an OTA is built from (build.prop, payload_properties.txt) without trusting their size.

Both are given on the command line and read whole, so a wrong path to a multi-gigabyte image must fail fast with a
sentence rather than fill memory: at most `limit` + 1 bytes are read, and text that is not in the file's encoding is
refused rather than guessed at.
"""

from __future__ import annotations

import os
from pathlib import Path

from sealgate.errors import OtaFormatError, SealgateError


def read_small_text(
    path: Path, *, limit: int, encoding: str, what: str, unreadable: type[SealgateError] = OtaFormatError
) -> tuple[bytes, str]:
    """The bytes of `path` and their text; `unreadable` when it cannot be read, OtaFormatError when it is larger
    than `limit` bytes or not `encoding` text. `what` names the kind of file in the messages ("a build.prop")."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise unreadable(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    if len(data) > limit:
        raise OtaFormatError(f"{os.fspath(path)} is too large to be {what}")
    try:
        return data, data.decode(encoding)
    except UnicodeDecodeError:
        label = "UTF-8" if encoding == "utf-8" else encoding.upper()
        raise OtaFormatError(f"{os.fspath(path)} is not {what} (not {label} text)") from None
