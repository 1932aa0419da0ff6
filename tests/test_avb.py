"""vbmeta images and AVB keys, checked against things we did not write: vbmeta images packed by hand from
libavb's header layout with struct, signatures verified by `openssl dgst` / `openssl pkeyutl` with the key converted
from the AVB format, and the AVB key constants recomputed here with plain integer arithmetic.

No Debian or PyPI package ships avbtool or libavb (apt-cache search avbtool / libavb: nothing), so there is no peer
tool to run; the hand-packed images stand in for avbtool's output.
"""

from __future__ import annotations

import hashlib
import random
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from conftest import require_tool
from sealgate.avb.descriptors import (
    ChainPartitionDescriptor,
    Descriptor,
    HashDescriptor,
    HashtreeDescriptor,
    KernelCmdlineDescriptor,
    PropertyDescriptor,
    UnknownDescriptor,
    encode_descriptors,
    parse_descriptors,
)
from sealgate.avb.keys import decode_public_key, load_key_file, public_key_digest, public_key_metadata
from sealgate.avb.vbmeta import (
    build_vbmeta,
    read_vbmeta,
    replace_chain_partition_key,
    resign_vbmeta,
    verify_vbmeta,
)
from sealgate.errors import AvbFormatError, UsageError
from sealgate.signing import PrivateKeySigner
from signing_tools import certified_signer


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {
        "a2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "b2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "c4096": rsa.generate_private_key(public_exponent=65537, key_size=4096),
    }


def _signer(key: rsa.RSAPrivateKey, name: str = "avb") -> PrivateKeySigner:
    return certified_signer(name, key, f"avb test {name}")[0]


def _descriptors() -> list[Descriptor]:
    hashtree = HashtreeDescriptor(
        1, 1 << 20, 1 << 20, 8192, 4096, 4096, 2, (1 << 20) + 8192, 16384, "sha1", "system", b"\x03" * 20,
        b"\x04" * 20, HashtreeDescriptor.FLAG_CHECK_AT_MOST_ONCE,
    )  # fmt: skip
    cmdline = KernelCmdlineDescriptor(
        'dm="1 vroot none ro 1,0 2048"', KernelCmdlineDescriptor.FLAG_USE_ONLY_IF_HASHTREE_NOT_DISABLED
    )
    return [
        PropertyDescriptor("com.android.build.boot.os_version", b"14"),
        HashDescriptor(65536, "sha256", "boot", b"\x01" * 32, b"\x02" * 32),
        hashtree,
        cmdline,
        UnknownDescriptor(99, b"future!\0"),
    ]


# -- AVB public keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 4096, 8192])
def test_public_key_metadata_constants_match_independent_arithmetic(bits: int) -> None:
    # Any odd modulus of the right size exercises the encoding; a real 8192-bit key would take seconds to make.
    n = random.getrandbits(bits) | (1 << (bits - 1)) | 1
    key = rsa.RSAPublicNumbers(65537, n).public_key()
    blob = public_key_metadata(key)
    assert len(blob) == 8 + 2 * bits // 8
    key_num_bits, n0inv = struct.unpack(">II", blob[:8])
    assert key_num_bits == bits
    assert (n0inv * n + 1) % 2**32 == 0  # n0inv = -1/n mod 2^32
    assert int.from_bytes(blob[8 : 8 + bits // 8], "big") == n
    assert int.from_bytes(blob[8 + bits // 8 :], "big") == pow(2, 2 * bits, n)  # rr = (2^bits)^2 mod n
    assert public_key_digest(key) == hashlib.sha256(blob).hexdigest()
    assert decode_public_key(blob).public_numbers() == key.public_numbers()


def test_decoding_refuses_inconsistent_constants_and_unusable_keys(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    blob = bytearray(public_key_metadata(keys["a2048"].public_key()))
    for position in (5, 8 + 256 + 10):  # inside n0inv, inside rr
        tampered = bytearray(blob)
        tampered[position] ^= 1
        with pytest.raises(AvbFormatError):
            decode_public_key(bytes(tampered))
    with pytest.raises(AvbFormatError):
        decode_public_key(bytes(blob[:-1]))
    with pytest.raises(UsageError):
        public_key_metadata(ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(UsageError):
        public_key_metadata(rsa.generate_private_key(public_exponent=3, key_size=2048).public_key())
    with pytest.raises(UsageError):
        public_key_metadata(rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key())


def test_key_files_load_from_pem_certificate_pem_key_and_pkmd(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    signer = _signer(keys["a2048"])
    expected = public_key_metadata(signer.public_key)
    pem_key = signer.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_cert = x509.load_der_x509_certificate(signer.certificate.der).public_bytes(serialization.Encoding.PEM)
    for data in (pem_key, pem_cert, expected):
        assert public_key_metadata(load_key_file(data)) == expected
    with pytest.raises(UsageError):
        load_key_file(b"garbage")


# -- a vbmeta image packed by hand from libavb's layout ------------------------------------------------------------


def _hand_descriptor(tag: int, fixed: bytes, variable: bytes) -> bytes:
    size = len(fixed) + len(variable)
    padded = (size + 7) // 8 * 8
    return struct.pack(">QQ", tag, padded) + fixed + variable + bytes(padded - size)


def _hand_vbmeta(key: rsa.RSAPrivateKey | None, *, rollback_index: int = 42) -> tuple[bytes, bytes]:
    """(image, descriptors) laid out from avb_vbmeta_image.h by hand, signed with `cryptography` directly."""
    name, salt, digest = b"boot", bytes(range(32)), hashlib.sha256(b"boot image").digest()
    hash_desc = _hand_descriptor(2, struct.pack(">Q32sLLLL60x", 4096, b"sha256", len(name), 32, 32, 0),
                                 name + salt + digest)  # fmt: skip
    prop = _hand_descriptor(0, struct.pack(">QQ", 3, 5), b"foo\0hello\0")
    chain_key = b"\x00" * 16  # opaque here: a chain descriptor's key is only compared, never parsed
    chain = _hand_descriptor(4, struct.pack(">LLLL60x", 1, 13, len(chain_key), 0), b"vbmeta_system" + chain_key)
    descriptors = prop + hash_desc + chain
    encoded_key = public_key_metadata(key.public_key()) if key else b""
    pkmd = b"metadata!"
    aux_len = len(descriptors) + len(encoded_key) + len(pkmd)
    aux = (descriptors + encoded_key + pkmd).ljust((aux_len + 63) // 64 * 64, b"\0")
    algorithm, hash_size, sig_size = (1, 32, 256) if key else (0, 0, 0)
    auth_size = (hash_size + sig_size + 63) // 64 * 64
    header = struct.pack(
        ">4sLL QQ L QQ QQ QQ QQ QQ Q LL 48s 80x".replace(" ", ""),
        b"AVB0", 1, 0, auth_size, len(aux), algorithm, 0, hash_size, hash_size, sig_size,
        len(descriptors), len(encoded_key), len(descriptors) + len(encoded_key), len(pkmd), 0, len(descriptors),
        rollback_index, 0, 0, b"avbtool 1.3.0",
    )  # fmt: skip
    assert len(header) == 256
    auth = b""
    if key:
        digest_all = hashlib.sha256(header + aux).digest()
        signature = key.sign(digest_all, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        auth = (digest_all + signature).ljust(auth_size, b"\0")
    return header + auth + aux, descriptors


def test_hand_built_image_parses_to_the_fields_it_was_packed_with(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    image, descriptors = _hand_vbmeta(keys["a2048"])
    vbmeta = read_vbmeta(image + bytes(1000))  # trailing partition padding is allowed
    assert vbmeta.algorithm.name == "SHA256_RSA2048"
    assert vbmeta.rollback_index == 42 and vbmeta.flags == 0 and vbmeta.rollback_index_location == 0
    assert vbmeta.release_string == "avbtool 1.3.0"
    assert vbmeta.size == len(image)
    assert vbmeta.public_key == public_key_metadata(keys["a2048"].public_key())
    assert vbmeta.public_key_metadata == b"metadata!"
    prop, hash_desc, chain = vbmeta.descriptors
    assert prop == PropertyDescriptor("foo", b"hello")
    assert isinstance(hash_desc, HashDescriptor)
    assert (hash_desc.partition_name, hash_desc.image_size, hash_desc.hash_algorithm) == ("boot", 4096, "sha256")
    assert hash_desc.salt == bytes(range(32)) and hash_desc.digest == hashlib.sha256(b"boot image").digest()
    assert isinstance(chain, ChainPartitionDescriptor)
    assert (chain.partition_name, chain.rollback_index_location) == ("vbmeta_system", 1)
    assert encode_descriptors(vbmeta.descriptors) == descriptors  # our encoder writes the hand-packed bytes
    verdict = verify_vbmeta(vbmeta, [keys["a2048"].public_key()])
    assert verdict.verified and verdict.status == "OK" and verdict.key_trusted is True
    other = verify_vbmeta(vbmeta, [keys["b2048"].public_key()])
    assert not other.verified and other.key_trusted is False and other.errors[0].code == "untrusted-key"


def test_unsigned_image_is_read_but_not_verified() -> None:
    image, _ = _hand_vbmeta(None)
    verdict = verify_vbmeta(image)
    assert verdict.status == "OK_NOT_SIGNED" and not verdict.verified


def test_libavb_structural_checks_refuse_malformed_headers(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    image, _ = _hand_vbmeta(keys["a2048"])

    def patched(offset: int, fmt: str, value: object) -> bytes:
        data = bytearray(image)
        struct.pack_into(fmt, data, offset, value)
        return bytes(data)

    cases = {
        "magic": patched(0, ">4s", b"AVB1"),
        "major version": patched(4, ">L", 2),
        "minor version too new": patched(8, ">L", 4),
        "auth size not a multiple of 64": patched(12, ">Q", 320 + 8),
        "aux larger than data": patched(20, ">Q", 1 << 20),
        "unknown algorithm": patched(28, ">L", 7),
        "hash outside its block": patched(32, ">Q", 300),
        "signature outside its block": patched(56, ">Q", 1000),
        "public key outside its block": patched(72, ">Q", 1 << 16),
        "metadata outside its block": patched(88, ">Q", 1 << 16),
        "descriptors outside its block": patched(104, ">Q", 1 << 16),
        "hash size wrong for algorithm": patched(40, ">Q", 20),
        "release string not NUL-terminated": patched(128, ">48s", b"x" * 48),
        "descriptor size overflows": patched(256 + 320 + 8, ">Q", 1 << 62),
    }
    for what, data in cases.items():
        with pytest.raises(AvbFormatError):
            read_vbmeta(data)
            pytest.fail(what)
    with pytest.raises(AvbFormatError):
        read_vbmeta(image[:255])


# -- descriptors -----------------------------------------------------------------------------------------------------


def test_descriptors_round_trip_byte_exact() -> None:
    descriptors = [*_descriptors(), ChainPartitionDescriptor(2, "vbmeta_system", b"k" * 520, 1)]
    encoded = encode_descriptors(descriptors)
    parsed = parse_descriptors(encoded)
    assert parsed == descriptors
    assert encode_descriptors(parsed) == encoded
    for descriptor in descriptors:
        assert len(descriptor.encode()) % 8 == 0
    with pytest.raises(AvbFormatError):
        parse_descriptors(encoded[:-8])  # the last descriptor is cut short
    padded = bytearray(PropertyDescriptor("k", b"v").encode())
    padded[-1] = 1
    with pytest.raises(AvbFormatError):
        parse_descriptors(bytes(padded))  # non-zero padding


# -- building and signing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key_name", "algorithm"), [("a2048", "SHA256_RSA2048"), ("c4096", "SHA512_RSA4096")])
def test_signature_verifies_with_openssl_using_our_pem_conversion(
    keys: dict[str, rsa.RSAPrivateKey], tmp_path: Path, key_name: str, algorithm: str
) -> None:
    openssl = require_tool("openssl")
    signer = _signer(keys[key_name])
    image = build_vbmeta(_descriptors(), signer, algorithm=algorithm, rollback_index=3, padding_size=4096)
    assert len(image) % 4096 == 0
    vbmeta = read_vbmeta(image)
    h = vbmeta.header
    # avbtool's layout: hash then signature; descriptors, key, metadata in the auxiliary block.
    assert (h.hash_offset, h.signature_offset, h.descriptors_offset) == (0, vbmeta.algorithm.hash_size, 0)
    assert (
        h.authentication_data_block_size
        == -(-(vbmeta.algorithm.hash_size + vbmeta.algorithm.signature_size) // 64) * 64
    )
    assert h.public_key_offset == h.descriptors_size and h.public_key_metadata_size == 0
    # The key converted from the AVB format by our code is the key cryptography sees in the signer.
    converted = decode_public_key(vbmeta.public_key)
    assert converted.public_numbers() == keys[key_name].public_key().public_numbers()
    pem = tmp_path / "key.pem"
    pem.write_bytes(converted.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    signed = tmp_path / "signed.bin"
    signed.write_bytes(vbmeta.header_block + vbmeta.auxiliary_block)
    signature = tmp_path / "sig.bin"
    signature.write_bytes(vbmeta.signature)
    digest = "-sha256" if algorithm.startswith("SHA256") else "-sha512"
    result = subprocess.run([openssl, "dgst", digest, "-verify", str(pem), "-signature", str(signature), str(signed)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0 and "Verified OK" in result.stdout, result.stderr
    hash_file = tmp_path / "hash.bin"
    hash_file.write_bytes(vbmeta.hash)
    result = subprocess.run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-pkeyopt",
                             f"digest:{digest[1:]}", "-in", str(hash_file), "-sigfile", str(signature)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # ... and openssl refuses the same signature over one changed byte.
    signed.write_bytes(vbmeta.header_block[:-1] + b"\1" + vbmeta.auxiliary_block)
    result = subprocess.run([openssl, "dgst", digest, "-verify", str(pem), "-signature", str(signature), str(signed)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0


def test_tampering_with_any_byte_of_header_auth_or_aux_is_refused(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    signer = _signer(keys["a2048"])
    image = build_vbmeta(_descriptors()[:2], signer, rollback_index=1)
    vbmeta = read_vbmeta(image)
    assert verify_vbmeta(vbmeta, [signer.public_key]).verified
    for position in range(vbmeta.size):
        data = bytearray(image)
        data[position] ^= 0x40
        try:
            verdict = verify_vbmeta(bytes(data), [signer.public_key])
        except AvbFormatError:
            continue
        assert not verdict.verified, f"byte {position} changed and the image still verifies"


def test_resign_keeps_descriptors_and_replaces_key_index_and_metadata(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    old_signer, new_signer = _signer(keys["a2048"], "old"), _signer(keys["b2048"], "new")
    original = build_vbmeta(_descriptors(), old_signer, algorithm="SHA512_RSA2048", rollback_index=5, flags=0,
                            rollback_index_location=2, public_key_metadata_blob=b"old key metadata")  # fmt: skip
    resigned = resign_vbmeta(original, new_signer, rollback_index=9)
    assert len(resigned) % 4096 == 0
    before, after = read_vbmeta(original), read_vbmeta(resigned)
    assert after.descriptors == before.descriptors
    assert encode_descriptors(after.descriptors) == encode_descriptors(before.descriptors)
    assert after.algorithm.name == "SHA512_RSA2048"  # the image's algorithm fits the new key, so it is kept
    assert (after.rollback_index, after.rollback_index_location, after.release_string) == (9, 2, "avbtool 1.3.0")
    assert after.public_key == public_key_metadata(new_signer.public_key)
    assert after.public_key_metadata == b""  # dropped, as make_vbmeta_image without --public_key_metadata
    assert verify_vbmeta(after, [new_signer.public_key]).verified
    assert not verify_vbmeta(after, [old_signer.public_key]).verified
    kept = read_vbmeta(resign_vbmeta(original, new_signer, keep_public_key_metadata=True))
    assert kept.public_key_metadata == b"old key metadata" and kept.rollback_index == 5
    # A bigger key switches to the algorithm of its size; re-signing with the same key is deterministic.
    bigger = read_vbmeta(resign_vbmeta(original, _signer(keys["c4096"])))
    assert bigger.algorithm.name == "SHA256_RSA4096"
    again = resign_vbmeta(resigned, new_signer)
    assert again == resigned
    with pytest.raises(UsageError):
        resign_vbmeta(original, new_signer, algorithm="SHA256_RSA4096")


def test_hand_built_image_resigned_keeps_its_descriptor_bytes(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    image, descriptors = _hand_vbmeta(keys["a2048"])
    resigned = read_vbmeta(resign_vbmeta(image, _signer(keys["b2048"]), rollback_index=43))
    h = resigned.header
    assert resigned.auxiliary_block[h.descriptors_offset : h.descriptors_offset + h.descriptors_size] == descriptors
    assert resigned.rollback_index == 43
    assert verify_vbmeta(resigned, [keys["b2048"].public_key()]).verified


def test_chain_partition_key_replacement(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    signer = _signer(keys["a2048"])
    old_chain_key = public_key_metadata(keys["b2048"].public_key())
    descriptors = [*_descriptors()[:2], ChainPartitionDescriptor(1, "vbmeta_system", old_chain_key)]
    image = build_vbmeta(descriptors, signer)
    replaced = read_vbmeta(replace_chain_partition_key(image, "vbmeta_system", keys["c4096"].public_key(), signer))
    chain = replaced.chain_partitions()["vbmeta_system"]
    assert chain.public_key == public_key_metadata(keys["c4096"].public_key())
    assert chain.rollback_index_location == 1
    assert replaced.descriptors[:2] == tuple(descriptors[:2])
    assert verify_vbmeta(replaced, [signer.public_key]).verified
    with pytest.raises(UsageError):
        replace_chain_partition_key(image, "vbmeta_vendor", keys["c4096"].public_key(), signer)


def test_build_refuses_a_signer_that_returns_a_bad_signature(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    class BrokenSigner(PrivateKeySigner):
        def sign_digest(self, digest: bytes, algorithm):  # type: ignore[no-untyped-def]
            return bytes(256)

    good = _signer(keys["a2048"])
    broken = BrokenSigner("broken", keys["a2048"], good.certificate)
    with pytest.raises(AvbFormatError):
        build_vbmeta(_descriptors(), broken)


def test_required_libavb_version_follows_the_features_used(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    signer = _signer(keys["a2048"])
    plain = [HashDescriptor(4096, "sha256", "boot", b"s", b"d" * 32)]
    at_most_once = [_descriptors()[2]]  # hashtree with FLAG_CHECK_AT_MOST_ONCE
    chain_flags = [ChainPartitionDescriptor(1, "vbmeta_system", b"k", ChainPartitionDescriptor.FLAG_DO_NOT_USE_AB)]
    minor = {
        "plain": read_vbmeta(build_vbmeta(plain, signer)).header.required_libavb_version_minor,
        "at most once": read_vbmeta(build_vbmeta(at_most_once, signer)).header.required_libavb_version_minor,
        "location": read_vbmeta(
            build_vbmeta(plain, signer, rollback_index_location=1)
        ).header.required_libavb_version_minor,
        "chain flags": read_vbmeta(build_vbmeta(chain_flags, signer)).header.required_libavb_version_minor,
    }
    assert minor == {"plain": 0, "at most once": 1, "location": 2, "chain flags": 3}
