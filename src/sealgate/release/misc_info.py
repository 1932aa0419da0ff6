"""META/misc_info.txt: the build's key=value settings that releasetools reads back when it rebuilds images.

After re-signing, sign_target_files_apks writes back only the keys the input had, sorted, joined by "\n" without
a final newline (ReplaceMiscInfoTxt). What changes here: the vbmeta algorithm (ReplaceAvbSigningKeys), the
rollback index in avb_vbmeta_args, and the com.android.build.<partition>.fingerprint props inside the AVB
arguments get the release tags (RewriteAvbProps).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sealgate.ota.build_prop import parse_prop_lines
from sealgate.release.build_props import DEFAULT_TAG_CHANGES, edit_tags

#: The misc_info keys that carry avbtool arguments per partition (sign_target_files_apks' AVB_FOOTER_ARGS_BY_PARTITION).
AVB_ARGS_BY_PARTITION = {
    "boot": "avb_boot_add_hash_footer_args",
    "init_boot": "avb_init_boot_add_hash_footer_args",
    "dtbo": "avb_dtbo_add_hash_footer_args",
    "product": "avb_product_add_hashtree_footer_args",
    "recovery": "avb_recovery_add_hash_footer_args",
    "system": "avb_system_add_hashtree_footer_args",
    "system_dlkm": "avb_system_dlkm_add_hashtree_footer_args",
    "system_ext": "avb_system_ext_add_hashtree_footer_args",
    "system_other": "avb_system_other_add_hashtree_footer_args",
    "odm": "avb_odm_add_hashtree_footer_args",
    "odm_dlkm": "avb_odm_dlkm_add_hashtree_footer_args",
    "pvmfw": "avb_pvmfw_add_hash_footer_args",
    "vendor": "avb_vendor_add_hashtree_footer_args",
    "vendor_boot": "avb_vendor_boot_add_hash_footer_args",
    "vendor_kernel_boot": "avb_vendor_kernel_boot_add_hash_footer_args",
    "vendor_dlkm": "avb_vendor_dlkm_add_hashtree_footer_args",
    "vbmeta": "avb_vbmeta_args",
    "vbmeta_system": "avb_vbmeta_system_args",
    "vbmeta_vendor": "avb_vbmeta_vendor_args",
}
_ROLLBACK_INDEX = re.compile(r"--rollback_index(?:\s+|=)\S+")


def parse_misc_info(text: str) -> dict[str, str]:
    """common.LoadDictionaryFromLines: "key=value" lines, comments and blank lines skipped."""
    return parse_prop_lines(text, strip_parts=False)


def format_misc_info(values: dict[str, str], original_keys: set[str]) -> str:
    return "\n".join(f"{key}={values[key]}" for key in sorted(values) if key in original_keys)


def rewrite_avb_props(values: dict[str, str], changes: Sequence[str] = DEFAULT_TAG_CHANGES) -> None:
    """RewriteAvbProps: release tags on com.android.build.<partition>.fingerprint inside each partition's args."""
    for partition, key in AVB_ARGS_BY_PARTITION.items():
        args = values.get(key)
        if not args:
            continue
        prefix = f"com.android.build.{partition}.fingerprint"
        tokens = []
        for token in args.split(" "):
            if token.startswith(prefix) and "/" in token:
                head, tag = token.rsplit("/", 1)
                token = f"{head}/{edit_tags(tag, changes)}"
            tokens.append(token)
        values[key] = " ".join(tokens)


def set_vbmeta_signing(values: dict[str, str], algorithm: str, rollback_index: int | None) -> None:
    """Record the algorithm vbmeta is now signed with, and the rollback index it carries."""
    values["avb_vbmeta_algorithm"] = algorithm
    if rollback_index is None:
        return
    args = values.get("avb_vbmeta_args", "")
    replacement = f"--rollback_index {rollback_index}"
    found = _ROLLBACK_INDEX.search(args)
    values["avb_vbmeta_args"] = _ROLLBACK_INDEX.sub(replacement, args) if found else f"{args} {replacement}".strip()
