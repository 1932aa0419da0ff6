"""The phone's decisions: package-installer rules, the privileged installer and store modes, with their state.

Nothing here holds a private key: this package imports nothing from sealgate.custody, sealgate.repo or
sealgate.server. `Device` (installer.py) is the one gate; `rules` and `stores` are its pure decisions; `state` is
the SQLite database it reads and writes.
"""

from sealgate.device.installer import Device
from sealgate.device.rules import Candidate, Decision, DeviceProfile, InstalledPackage, decide_install
from sealgate.device.stores import AllowedStore, StoreMode, signing_certificates_digest

__all__ = [
    "AllowedStore",
    "Candidate",
    "Decision",
    "Device",
    "DeviceProfile",
    "InstalledPackage",
    "StoreMode",
    "decide_install",
    "signing_certificates_digest",
]
