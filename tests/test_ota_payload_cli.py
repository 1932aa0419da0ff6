"""`sealgate ota payload build/sign/info/verify/apply`: the whole flow through the command line, exit statuses and
JSON, with a real encrypted keystore."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from payload_tools import BLOCK, env_with_passphrase, make_images, sealgate_cli


def _run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*sealgate_cli(), *map(str, args)], capture_output=True, text=True, env=env)


def test_build_sign_info_verify_apply(tmp_path: Path) -> None:
    env = env_with_passphrase()
    init = _run("keys", "init", tmp_path / "ks", "--roles", "ota", "--key-type", "rsa-2048", env=env)
    assert init.returncode == 0, init.stderr
    certificate = tmp_path / "ks" / "public" / "ota.x509.pem"
    images = make_images(tmp_path / "images")
    built = _run("ota", "payload", "build", tmp_path / "images", tmp_path / "unsigned.bin", "--compression", "zstd",
                 "--max-timestamp", "1700000000", "--security-patch-level", "2024-06-05", "--json")  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["payload_signatures"] == []
    signed = _run("ota", "payload", "sign", tmp_path / "unsigned.bin", tmp_path / "out" / "payload.bin",
                  "--keystore", tmp_path / "ks", "--json", env=env)  # fmt: skip
    assert signed.returncode == 1 and "cannot create" in signed.stderr and "Traceback" not in signed.stderr
    (tmp_path / "out").mkdir()
    signed = _run("ota", "payload", "sign", tmp_path / "unsigned.bin", tmp_path / "out" / "payload.bin",
                  "--keystore", tmp_path / "ks", "--json", env=env)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    properties = tmp_path / "out" / "payload_properties.txt"
    assert json.loads(signed.stdout)["properties_file"] == str(properties)
    assert [line.split("=")[0] for line in properties.read_text().splitlines()] == [
        "FILE_HASH", "FILE_SIZE", "METADATA_HASH", "METADATA_SIZE"
    ]  # fmt: skip
    payload = tmp_path / "out" / "payload.bin"

    info = _run("ota", "payload", "info", payload, "--json")
    assert info.returncode == 0, info.stderr
    parsed = json.loads(info.stdout)
    assert parsed["type"] == "full" and parsed["max_timestamp"] == 1700000000 and parsed["major_version"] == 2
    assert parsed["security_patch_level"] == "2024-06-05"
    assert {partition["name"] for partition in parsed["partitions"]} == set(images)
    assert len(parsed["payload_signatures"]) == 1
    text = _run("ota", "payload", "info", payload)
    assert text.returncode == 0 and "system:" in text.stdout

    verified = _run("ota", "payload", "verify", payload, "--certs", certificate, "--properties", properties, "--json")
    assert verified.returncode == 0, verified.stdout
    report = json.loads(verified.stdout)
    assert report["verified"] is True and report["errors"] == [] and report["signer"]["subject"]

    applied = _run("ota", "payload", "apply", payload, tmp_path / "new", "--certs", certificate, "--properties",
                   properties, "--json")  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["applied"] is True
    for name, path in images.items():
        assert (tmp_path / "new" / f"{name}.img").read_bytes() == path.read_bytes()

    # A delta from the images just applied.
    changed = tmp_path / "images2"
    make_images(changed)
    system = bytearray((changed / "system.img").read_bytes())
    system[2 * BLOCK] ^= 1
    (changed / "system.img").write_bytes(bytes(system))
    assert (
        _run("ota", "payload", "build", changed, tmp_path / "delta-u.bin", "--source", tmp_path / "new").returncode == 0
    )
    assert _run("ota", "payload", "sign", tmp_path / "delta-u.bin", tmp_path / "delta.bin", "--keystore",
                tmp_path / "ks", "--properties", tmp_path / "delta.properties", env=env).returncode == 0  # fmt: skip
    delta = _run("ota", "payload", "apply", tmp_path / "delta.bin", tmp_path / "new2", "--source", tmp_path / "new",
                 "--certs", certificate)  # fmt: skip
    assert delta.returncode == 0, delta.stderr
    assert (tmp_path / "new2" / "system.img").read_bytes() == bytes(system)

    # Refusals: exit 1 with a reason and no target directory; usage errors: exit 2; never a traceback.
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "tampered.bin").write_bytes(bytes(data))
    refused = _run("ota", "payload", "verify", tmp_path / "tampered.bin", "--certs", certificate, "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["verified"] is False
    refused = _run("ota", "payload", "apply", tmp_path / "tampered.bin", tmp_path / "bad", "--certs", certificate)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "operation" in refused.stderr
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad.staging.*"))
    refused = _run("ota", "payload", "apply", tmp_path / "tampered.bin", tmp_path / "bad", "--certs", certificate,
                   "--json")  # fmt: skip
    assert refused.returncode == 1 and json.loads(refused.stdout)["applied"] is False
    (tmp_path / "not-a-cert.pem").write_text("nothing")
    usage = _run("ota", "payload", "verify", payload, "--certs", tmp_path / "not-a-cert.pem")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    usage = _run("ota", "payload", "apply", payload, tmp_path / "new", "--certs", certificate)
    assert usage.returncode == 2 and "not empty" in usage.stderr
    garbage = _run("ota", "payload", "info", properties)
    assert garbage.returncode == 1 and "not an A/B payload" in garbage.stderr and "Traceback" not in garbage.stderr
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "boot.img").write_bytes(b"x" * 100)
    usage = _run("ota", "payload", "build", tmp_path / "odd", tmp_path / "odd.bin")
    assert usage.returncode == 2 and "block size" in usage.stderr


def test_verify_and_apply_straight_out_of_an_ota_package(tmp_path: Path) -> None:
    from payload_tools import make_key
    from sealgate.ota.metadata import OtaMetadata
    from sealgate.ota.package import build_ab_package
    from sealgate.ota.payload.signer import sign_payload
    from sealgate.ota.payload.writer import write_full_payload

    key = make_key(tmp_path, "ec")
    images = make_images(tmp_path / "images")
    write_full_payload(images, tmp_path / "unsigned.bin", compression="zstd")
    properties = sign_payload(tmp_path / "unsigned.bin", tmp_path / "payload.bin", key.signer)
    (tmp_path / "payload_properties.txt").write_text(properties.to_text())
    metadata = OtaMetadata(post_device=["sealgate_test"], post_build=["sealgate/test/1:14/1/1:user/release-keys"],
                           post_timestamp=1700000000)  # fmt: skip
    build_ab_package(tmp_path / "ota.zip", payload=tmp_path / "payload.bin",
                     payload_properties=tmp_path / "payload_properties.txt", metadata=metadata)  # fmt: skip
    verified = _run("ota", "payload", "verify", tmp_path / "ota.zip", "--certs", key.cert_pem, "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["verified"] is True, verified.stdout
    info = _run("ota", "payload", "info", tmp_path / "ota.zip", "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["size"] == properties.file_size
    applied = _run("ota", "payload", "apply", tmp_path / "ota.zip", tmp_path / "new", "--certs", key.cert_pem)
    assert applied.returncode == 0, applied.stderr
    for name, path in images.items():
        assert (tmp_path / "new" / f"{name}.img").read_bytes() == path.read_bytes()
    # The package's payload_properties.txt is checked: one that describes another payload is refused.
    other = properties.to_text().replace(f"FILE_SIZE={properties.file_size}", f"FILE_SIZE={properties.file_size + 1}")
    (tmp_path / "other.txt").write_text(other)
    refused = _run("ota", "payload", "verify", tmp_path / "ota.zip", "--certs", key.cert_pem, "--properties",
                   tmp_path / "other.txt", "--json")  # fmt: skip
    assert refused.returncode == 1 and json.loads(refused.stdout)["errors"][0]["code"] == "PAYLOAD_PROPERTIES_MISMATCH"
