"""The channel file reader is strict: one meaning per byte string, every malformation a typed error."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from sealgate.errors import ChannelFormatError
from sealgate.ota.channel import Channel, read_channel

HASH_A, HASH_B, HASH_C = "a" * 64, "b" * 64, "c" * 64


def _document() -> dict[str, Any]:
    return {
        "format": "sealgate-ota-channel",
        "version": 1,
        "device": "sargo",
        "channel": "stable",
        "builds": [
            {
                "fingerprint": "google/sargo/sargo:14/B/2:user/release-keys",
                "incremental": "2",
                "timestamp": 2000,
                "security_patch_level": "2024-02-05",
                "sdk_level": "34",
                "android_version": "14",
                "full": {"url": f"packages/{HASH_A}/full-2.zip", "size": 10, "sha256": HASH_A},
                "incrementals": [
                    {"url": f"packages/{HASH_B}/inc-1-2.zip", "size": 5, "sha256": HASH_B,
                     "pre_build": "google/sargo/sargo:14/A/1:user/release-keys"},
                ],
            },
            {
                "fingerprint": "google/sargo/sargo:14/A/1:user/release-keys",
                "incremental": None,
                "timestamp": 1000,
                "security_patch_level": None,
                "sdk_level": None,
                "android_version": None,
                "full": {"url": f"packages/{HASH_C}/full-1.zip", "size": 9, "sha256": HASH_C},
                "incrementals": [],
            },
        ],
    }  # fmt: skip


def _bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_reads_a_channel_and_writes_it_back_canonically() -> None:
    document = _document()
    channel = read_channel(json.dumps(document, indent=2).encode())
    assert isinstance(channel, Channel)
    newest = channel.newest
    assert (newest.device, newest.channel, newest.incremental, newest.timestamp) == ("sargo", "stable", "2", 2000)
    assert newest.full.size == 10 and newest.full.pre_build is None
    assert newest.incrementals[0].pre_build == channel.builds[1].fingerprint
    assert newest.incremental_from(channel.builds[1].fingerprint) == newest.incrementals[0]
    assert newest.ota_for(channel.builds[1].fingerprint) == newest.incrementals[0]
    assert newest.ota_for("google/sargo/sargo:13/Z/0:user/release-keys") == newest.full
    assert channel.builds[1].security_patch_level is None
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert channel.to_bytes() == canonical
    assert read_channel(canonical) == channel


def _set(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("extra",), 1),
        (("builds", 0, "comment"), "x"),
        (("builds", 0, "full", "pre_build"), "google/sargo/sargo:14/A/1:user/release-keys"),
        (("builds", 0, "incrementals", 0, "md5"), "x"),
    ],
)
def test_unknown_fields_are_refused(path: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(_bytes(_set(_document(), path, value)))
    assert raised.value.code == "unknown-field" and str(path[-1]) in str(raised.value)


def test_missing_fields_are_refused() -> None:
    document = _document()
    del document["builds"][0]["incrementals"][0]["pre_build"]
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(_bytes(document))
    assert raised.value.code == "missing-field" and "pre_build" in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        b'{"format":"sealgate-ota-channel","version":1,"version":1,"device":"sargo","channel":"stable","builds":[]}',
        _bytes(_document()).replace(b'"size": 10', b'"size": 10, "size": 11'),
    ],
)
def test_duplicate_keys_are_refused(text: bytes) -> None:
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(text)
    assert raised.value.code == "duplicate-key"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("builds", 0, "full", "size"), "10"),
        (("builds", 0, "full", "size"), 10.0),
        (("builds", 0, "full", "size"), True),
        (("builds", 0, "timestamp"), "2000"),
        (("builds", 0, "timestamp"), False),
        (("builds", 0, "fingerprint"), 1),
        (("builds", 0, "incrementals"), {}),
        (("builds", 0, "full"), []),
        (("builds",), {}),
        (("device",), None),
        (("builds", 0, "sdk_level"), 34),
    ],
)
def test_wrong_types_are_refused(path: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(_bytes(_set(_document(), path, value)))
    assert raised.value.code == "wrong-type"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("version",), 2),
        (("format",), "something-else"),
        (("builds",), []),
        (("builds", 0, "full", "size"), -1),
        (("builds", 0, "full", "sha256"), "A" * 64),
        (("builds", 0, "full", "url"), "../../etc/passwd"),
        (("builds", 0, "full", "url"), "/packages/x.zip"),
        (("builds", 0, "full", "url"), "https://elsewhere.example/x.zip"),
        (("builds", 0, "full", "url"), "packages/x.zip?y=1"),
        (("builds", 0, "security_patch_level"), "March 2024"),
        (("builds", 1, "timestamp"), 2000),
        (("builds", 1, "fingerprint"), "google/sargo/sargo:14/B/2:user/release-keys"),
        (("builds", 0, "incrementals", 0, "pre_build"), "google/sargo/sargo:14/B/2:user/release-keys"),
        (("device",), "Sargo!"),
    ],
)
def test_bad_values_are_refused(path: tuple[Any, ...], value: Any) -> None:
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(_bytes(_set(_document(), path, value)))
    assert raised.value.code == "bad-value"


@pytest.mark.parametrize("text", [b"", b"[1,", b"\xff\xfe", b'{"a": NaN}', b"[]"])
def test_not_a_channel_at_all(text: bytes) -> None:
    with pytest.raises(ChannelFormatError) as raised:
        read_channel(text)
    assert raised.value.code in ("not-json", "wrong-type")
