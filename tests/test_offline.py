"""The offline guard: signing is refused while any interface but loopback is up, and fails closed when unsure."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealgate.cli.main import main
from sealgate.custody import offline
from sealgate.custody.offline import ensure_offline, list_interfaces
from sealgate.errors import OnlineError

LOOPBACK = ("0x9", "unknown")  # IFF_UP | IFF_LOOPBACK; the kernel reports lo's operstate as unknown


def _fake_sys(root: Path, interfaces: dict[str, tuple[str, str]]) -> Path:
    for name, (flags, operstate) in interfaces.items():
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "flags").write_text(flags + "\n")
        (directory / "operstate").write_text(operstate + "\n")
    return root


def test_only_loopback_is_offline(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path / "net", {"lo": LOOPBACK})
    status = ensure_offline(False, sys_class_net=root)
    assert status.offline and not status.allowed_online


def test_an_interface_up_is_refused_and_named(tmp_path: Path) -> None:
    root = _fake_sys(tmp_path / "net", {"lo": LOOPBACK, "eth0": ("0x1003", "up"), "wlan0": ("0x1003", "up")})
    with pytest.raises(OnlineError, match=r"network interfaces up \(eth0, wlan0\)"):
        ensure_offline(False, sys_class_net=root)
    status = ensure_offline(True, sys_class_net=root)
    assert status.online_interfaces == ("eth0", "wlan0") and not status.offline


def test_down_interfaces_are_fine_but_admin_up_without_carrier_is_not(tmp_path: Path) -> None:
    down = _fake_sys(tmp_path / "down", {"lo": LOOPBACK, "eth0": ("0x1002", "down"), "ifb0": ("0x82", "down")})
    assert ensure_offline(False, sys_class_net=down).offline
    # IFF_UP with no cable yet: plugging one in would connect the machine, so it counts as up.
    no_carrier = _fake_sys(tmp_path / "nocarrier", {"lo": LOOPBACK, "eth0": ("0x1003", "down")})
    with pytest.raises(OnlineError, match="eth0"):
        ensure_offline(False, sys_class_net=no_carrier)
    # A tunnel reports operstate "unknown" but is administratively up.
    tunnel = _fake_sys(tmp_path / "tun", {"lo": LOOPBACK, "tun0": ("0x1091", "unknown")})
    with pytest.raises(OnlineError, match="tun0"):
        ensure_offline(False, sys_class_net=tunnel)


def test_loopback_is_known_by_its_flag_not_its_name(tmp_path: Path) -> None:
    renamed = _fake_sys(tmp_path / "a", {"loop0": LOOPBACK})
    assert ensure_offline(False, sys_class_net=renamed).offline
    impostor = _fake_sys(tmp_path / "b", {"lo": ("0x1003", "up")})
    with pytest.raises(OnlineError, match="lo"):
        ensure_offline(False, sys_class_net=impostor)


def test_unreadable_state_fails_closed(tmp_path: Path) -> None:
    root = tmp_path / "net"
    (root / "eth0").mkdir(parents=True)  # neither flags nor operstate
    with pytest.raises(OnlineError, match="cannot read the state"):
        ensure_offline(False, sys_class_net=root)
    (root / "eth0" / "flags").write_text("garbage\n")
    with pytest.raises(OnlineError, match="cannot read the flags"):
        ensure_offline(False, sys_class_net=root)


def test_without_sysfs_the_ioctl_path_reads_real_flags(tmp_path: Path) -> None:
    interfaces = list_interfaces(tmp_path / "no-sysfs-here")
    loopbacks = [interface for interface in interfaces if interface.loopback]
    assert loopbacks and all(interface.operstate is None for interface in interfaces)


def test_this_machine_agrees_with_both_readers() -> None:
    if not offline.SYS_CLASS_NET.is_dir():
        pytest.skip("no /sys/class/net here")
    by_sysfs = {i.name: (i.up, i.loopback) for i in list_interfaces()}
    by_ioctl = {i.name: (i.up, i.loopback) for i in offline._from_ioctl()}
    assert by_sysfs == by_ioctl


def test_sign_refuses_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        offline, "SYS_CLASS_NET", _fake_sys(tmp_path / "net", {"lo": LOOPBACK, "eth0": ("0x1003", "up")})
    )
    record, out = tmp_path / "record.jsonl", tmp_path / "response.zip"
    args = ["sign", str(tmp_path / "request.zip"), "--keystore", str(tmp_path / "ks"), "--record", str(record)]
    assert main([*args, "--out", str(out), "--yes"]) == 1
    err = capsys.readouterr().err
    assert "refusing to sign" in err and "eth0" in err and "--allow-online" in err
    assert not out.exists() and not record.exists()
