"""Build properties of a target-files package: switching test-keys to release-keys, and the user-build gate.

`rewrite_props` is sign_target_files_apks' RewriteProps (build/make/tools/releasetools), rule for rule: every line
is stripped; in `key=value` lines (not comments) the last "/"-separated piece of ro.*build.fingerprint and
ro.*build.thumbprint (and ro.bootimage.build.fingerprint), the last " "-separated word of ro.build.description
(which must end in "-keys") and the value of ro.*build.tags get the tag changes (default -test-keys, -dev-keys,
+release-keys; the tags come out sorted and comma-joined); ro.build.display.id loses a trailing "...-keys" word;
the result is the lines joined by "\n" with one final "\n". `is_build_prop_file` names the files it rewrites.

`release_refusals` is the gate in front of signing: a release key must never sign a build whose debugging
features let anyone with the phone bypass what the signatures protect. It refuses userdebug and eng build types,
ro.debuggable=1, ro.secure=0, an su binary in any partition, and the two files sign_target_files_apks itself refuses
(BOOT/RAMDISK/force_debuggable, the userdebug SELinux policy).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from sealgate.errors import ReleaseError
from sealgate.ota.build_prop import parse_prop_lines

DEFAULT_TAG_CHANGES = ("-test-keys", "-dev-keys", "+release-keys")

#: The prop files releasetools rewrites besides every "*build.prop" (IsBuildPropFile).
_PROP_FILES = frozenset(
    {
        "SYSTEM/etc/prop.default",
        "BOOT/RAMDISK/prop.default",
        "RECOVERY/RAMDISK/prop.default",
        "VENDOR_BOOT/RAMDISK/default.prop",
        "VENDOR_BOOT/RAMDISK/prop.default",
        "ROOT/default.prop",
        "RECOVERY/RAMDISK/default.prop",
    }
)
#: An su binary anywhere a partition keeps executables (SYSTEM/xbin/su, SYSTEM/bin/su, VENDOR/bin/su, ...).
_SU_BINARY = re.compile(r"^[A-Z_]+/(?:.+/)?(?:bin|xbin|sbin)/su$")
_FORCE_DEBUGGABLE = ("BOOT/RAMDISK/force_debuggable", "BOOT/RAMDISK/first_stage_ramdisk/force_debuggable")
_DEBUG_SEPOLICY = (
    "SYSTEM_EXT/etc/selinux/userdebug_plat_sepolicy.cil",
    "SYSTEM/system_ext/etc/selinux/userdebug_plat_sepolicy.cil",
)


def is_build_prop_file(name: str) -> bool:
    return name in _PROP_FILES or name.endswith("build.prop")


def edit_tags(tags: str, changes: Sequence[str] = DEFAULT_TAG_CHANGES) -> str:
    """Apply "+tag" / "-tag" changes to a comma-separated tag list; the result is sorted, as EditTags sorts it."""
    current = set(tags.split(","))
    for change in changes:
        if change.startswith("-"):
            current.discard(change[1:])
        elif change.startswith("+"):
            current.add(change[1:])
    return ",".join(sorted(current))


def rewrite_props(text: str, changes: Sequence[str] = DEFAULT_TAG_CHANGES) -> str:
    """The prop file with release tags, exactly as RewriteProps writes it (see the module docstring)."""
    output = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            if key.startswith("ro.") and key.endswith((".build.fingerprint", ".build.thumbprint")):
                value = _edit_last(value, "/", changes)
            elif key == "ro.build.description":
                words = value.split(" ")
                if not words[-1].endswith("-keys"):
                    raise ReleaseError(f"ro.build.description does not end in its keys tag: {value!r}")
                value = _edit_last(value, " ", changes)
            elif key.startswith("ro.") and key.endswith(".build.tags"):
                value = edit_tags(value, changes)
            elif key == "ro.build.display.id":
                words = value.split()
                if len(words) > 1 and words[-1].endswith("-keys"):
                    words.pop()
                value = " ".join(words)
            line = f"{key}={value}"
        output.append(line)
    return "\n".join(output) + "\n"


def _edit_last(value: str, separator: str, changes: Sequence[str]) -> str:
    pieces = value.split(separator)
    pieces[-1] = edit_tags(pieces[-1], changes)
    return separator.join(pieces)


def parse_props(text: str) -> dict[str, str]:
    """key -> value of a prop file; a later line overrides an earlier one, as init loads them."""
    return parse_prop_lines(text)


def release_refusals(names: Iterable[str], props_by_file: Mapping[str, Mapping[str, str]]) -> list[tuple[str, str]]:
    """(code, sentence) for every reason this build must not be signed for release; empty for a user build."""
    reasons: list[tuple[str, str]] = []
    for file, props in sorted(props_by_file.items()):
        for key, value in sorted(props.items()):
            if key.startswith("ro.") and key.endswith("build.type") and value in ("userdebug", "eng"):
                reasons.append(
                    (f"BUILD_TYPE_{value.upper()}", f"{file} sets {key}={value}: only user builds are released")
                )
            elif key == "ro.debuggable" and value == "1":
                reasons.append(("DEBUGGABLE", f"{file} sets ro.debuggable=1: every app could be debugged"))
            elif key == "ro.secure" and value == "0":
                reasons.append(("NOT_SECURE", f"{file} sets ro.secure=0: adb would run as root"))
    for name in sorted(names):
        if _SU_BINARY.match(name):
            reasons.append(("SU_BINARY", f"the build contains an su binary ({name}): it gives root to any app"))
        elif name in _FORCE_DEBUGGABLE:
            reasons.append(("FORCE_DEBUGGABLE", f"the build contains {name}: a debuggable boot image"))
        elif name in _DEBUG_SEPOLICY:
            reasons.append(("DEBUG_SEPOLICY", f"the build contains {name}: the userdebug SELinux policy"))
    return reasons
