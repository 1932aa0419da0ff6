"""The offline machine's guard: refuse to sign while any network interface other than loopback is up.

The custodian's machine must not be reachable while keys are unlocked. A check that only asks "is there a default
route?" misses a link that comes up later, so this one counts an interface as up when it is administratively up
(IFF_UP) or the kernel reports its operational state as up, whatever its addresses: a cable plugged in after the
check would otherwise connect it. Loopback is recognised by its IFF_LOOPBACK flag, not its name. When the state of
the interfaces cannot be read at all, the check fails closed.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from sealgate.errors import OnlineError

IFF_UP = 0x1
IFF_LOOPBACK = 0x8
SIOCGIFFLAGS = 0x8913

#: Where Linux describes network interfaces; tests point it at a fake tree.
SYS_CLASS_NET = Path("/sys/class/net")


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    up: bool
    loopback: bool
    #: The kernel's operstate ("up", "down", "unknown", ...), or None when it was read through an ioctl.
    operstate: str | None = None


@dataclass(frozen=True, slots=True)
class OfflineStatus:
    """What the check saw: the interfaces that are up, other than loopback (empty when the machine is offline)."""

    online_interfaces: tuple[str, ...]
    allowed_online: bool

    @property
    def offline(self) -> bool:
        return not self.online_interfaces


def list_interfaces(sys_class_net: Path | None = None) -> list[Interface]:
    """Every network interface with its flags, from sysfs or else through SIOCGIFFLAGS."""
    root = SYS_CLASS_NET if sys_class_net is None else sys_class_net
    if root.is_dir():
        return _from_sysfs(root)
    return _from_ioctl()


def _from_sysfs(root: Path) -> list[Interface]:
    interfaces = []
    for entry in sorted(root.iterdir()):
        flags_text = _read(entry / "flags")
        operstate = _read(entry / "operstate")
        if flags_text is None and operstate is None:
            raise OnlineError(f"cannot read the state of network interface {entry.name} under {root}")
        try:
            flags = int(flags_text, 16) if flags_text is not None else 0
        except ValueError as exc:
            raise OnlineError(f"cannot read the flags of network interface {entry.name}: {flags_text!r}") from exc
        loopback = bool(flags & IFF_LOOPBACK)
        up = bool(flags & IFF_UP) or operstate == "up"
        interfaces.append(Interface(entry.name, up, loopback, operstate))
    return interfaces


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _from_ioctl() -> list[Interface]:
    try:
        names = [name for _, name in socket.if_nameindex()]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError as exc:
        raise OnlineError(f"cannot list the network interfaces to check that this machine is offline: {exc}") from exc
    interfaces = []
    with sock:
        for name in names:
            request = struct.pack("16sH14x", name.encode()[:15], 0)
            try:
                reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
            except OSError as exc:
                raise OnlineError(f"cannot read the flags of network interface {name}: {exc}") from exc
            (flags,) = struct.unpack_from("H", reply, 16)
            interfaces.append(Interface(name, bool(flags & IFF_UP), bool(flags & IFF_LOOPBACK)))
    return interfaces


def ensure_offline(allow_online: bool, *, sys_class_net: Path | None = None) -> OfflineStatus:
    """Raise OnlineError naming every non-loopback interface that is up, unless `allow_online` (tests only).

    With `allow_online` the interfaces found up are still returned, so the caller can say it is signing online.
    """
    try:
        online = tuple(i.name for i in list_interfaces(sys_class_net) if i.up and not i.loopback)
    except OnlineError:
        if allow_online:
            return OfflineStatus((), True)
        raise
    if online and not allow_online:
        names = ", ".join(online)
        raise OnlineError(
            f"refusing to sign: this machine has network interfaces up ({names}); the signing machine must be "
            f"offline. Bring them down (e.g. `ip link set {online[0]} down`) or unplug the network, then retry"
            " (--allow-online exists for tests only)"
        )
    return OfflineStatus(online, allow_online)


def describe(status: OfflineStatus) -> str:
    """One line for the custodian's screen."""
    if status.offline:
        return "network: offline (no interface up but loopback)"
    return f"network: ONLINE ({', '.join(status.online_interfaces)}) — allowed by --allow-online"
