"""Security review of issue 6 (OS releases): each finding as a test that failed before its fix, then bounded
structure-aware fuzz tests of the readers hostile input reaches first (channel, OTA metadata, payload.bin, vbmeta):
whatever the bytes, only a SealgateError subclass may escape, and never after a long time.

The attacker model is the brief's: the web server or mirror (channel files, packages), and hostile payloads that a
trusted key signed (what a compromised build could hand the custodian), which reach the applier's own checks."""

from __future__ import annotations

import pytest

from sealgate.errors import SealgateError
from sealgate.ota.channel import read_channel
from sealgate.ota.metadata import OtaMetadata, parse_property_files

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
