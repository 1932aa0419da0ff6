"""A real avbtool-made vbmeta image: Pixel 5 (redfin) RD1A.200810.020's vbmeta.img, SHA256_RSA4096, avbtool 1.1.0.

No package ships avbtool or libavb to run as a peer, so this is the outside reference: the image's fields, its
4096-bit modulus and its 512-byte signature, transcribed from a public annotated hex dump of that factory image's
vbmeta.img (github.com/lwerdna/workbench, avb-vbmeta-exploration/annotated.txt). The test rebuilds the signed bytes
with OUR descriptor encoder and OUR AVB public key encoder (n0inv and rr computed from the modulus) and a header
packed by hand; Google's original signature can only verify if every rebuilt byte equals what avbtool wrote.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.hazmat.primitives.asymmetric import rsa

from sealgate.avb.descriptors import (
    ChainPartitionDescriptor,
    Descriptor,
    HashDescriptor,
    HashtreeDescriptor,
    PropertyDescriptor,
    encode_descriptors,
)
from sealgate.avb.keys import public_key_metadata
from sealgate.avb.vbmeta import read_vbmeta, resign_vbmeta, verify_vbmeta
from test_avb import _signer

MODULUS = bytes.fromhex(
    "93F2A761B0D4C094"
    "EDFB33F40D0E82084BB8D4908A8E20D3" "3E53282A4E3F3F0556C88A1DF5C0E4FB" "A2096F5D1FB76DA2D1F74880AAB4C206"
    "184CAD63F0E9C74513922BA48868FB8C" "BB85E58273C542911E0C06CCA0107BAC" "798B41D1625E8079C8DD8C4D3B1F47C8"
    "3A371EE585918C7C54D94E48D09EA7A0" "9ED976E7D416233932147963B379ED14" "63494B0B2AE21407FA6242C39A9948D6"
    "36015ACE11D1300D4C942533339386B6" "AD6575B7F480CBB829A55FAAF45A0E65" "8D3DB9B5BEFAED91B6347513409A0B1D"
    "5F7988EC94C2E2996BF86F50E98E3342" "465437155E9CF0517D073764398B82C1" "BA5C6D41516BA25E721CED636CAF9E97"
    "BE853219606478C4B68EA9794999A1DC" "0BCD7C9B0206DA90ADEF17C57DD433B2" "D1D9E46F21E27A3CE03213C209AB7AC0"
    "D8E1B58B3410CB0EB52F963B3C5DC455" "19329FA03D0AD3DDFFB91D30647E94CD" "1DDBE18B2C59B0CF97AB28B83B9397F0"
    "B4ACCD6304BE2ABAECE9106B081CF6D6" "EC357EAD09CD201FD12262BA3F79C39C" "23F240E727C971EE60265214BDABE017"
    "3B22F43150A8772755EBDDFC2D03E827" "5EAC2C2FE50B86A867D292DDC526FE88" "4E61401BB221614E18F40FCE90B22764"
    "28624389F12FE73ADCAD5D54598D89DC" "10A45C28D3EE3D86F67D549E47B0BEA9" "C7B675EBB54054E9117858C16EA38F60"
    "07AAD17CB7C19A02C506A9BAAC4EF955"
    "2D4781F94BAC70FB"
)  # fmt: skip
SIGNATURE = bytes.fromhex(
    "66E8699383208898B7DF652D4F3EF190" "8A6CD0F0402950B2F6198300EDC8B831" "F37CFDB86569A669F32CBEB6513DF074"
    "3B9F740499044A2D7C90B472C0BDD772" "DB322BCF54B34BC8EA822A8E3974C0E4" "F1BEA56DB3DE8FDD1CE2F42936B53BC0"
    "7F5B4FA5911B1F97F84ED0FAC45E9425" "A3C13B7DEE3D5EEF903053567A06814F" "71C0FEA97116639DCAB501BD9F911634"
    "577070D40A2DBB70FE0753E8D953B6AD" "490722E5F0D1C17F8391CB03DB1F2F8E" "5190A6434F9ABFE45DCF05F8632A3AE7"
    "B08AAB633BFF55011C1ECFACE084EE45" "A3603F89A31B02A9DEEB008F701D322C" "FA7313D39FF239A58F865F7F28F4AFFF"
    "4B9733D67DC4230B56BCB0DC0A825341" "4870B0FFB64B1DDAC327ED4CFBDF743D" "6AA6E08D092C9787B1351EEE742C8F7A"
    "5799B34782F50E448517E4F5BA1C4B49" "E697F96BBDC4D9ECED35A90EAE1A02D6" "AFC9754D3C6724AFDA9914A289BB02FF"
    "36BB0CE67F50EB9F6BF57F1A3DFDAA3A" "08D0F41FA2F8CC02E23F670D7E4A38AF" "2714330D7880568FD923E3B4769C06FE"
    "2C1322FEC281FEF39FA65C3F0DE28D1A" "E2A89FF34C8A1FA4DC1B893310EC36B1" "34D4248C367B55C46406B8CEB0B421B1"
    "5F104947F626C1F6924DA3EF45E13AB1" "DFA187FE6280976525326F79E3A69CCF" "E5BFC4E03B4B2DD016D9FBC185E9E967"
    "4DA8706306A2865AC50139DB33E1D36F" "88CE238AC948E5C9815EB316A06C1AAC"
)  # fmt: skip
STORED_HASH = bytes.fromhex("32813F4286FCF46A2CFAE8BF226848759F8C4F68B65FD3061BAF31A52646E531")
SALT = bytes.fromhex("A99D17636F58767E5AB7E106B9747BE32112C481450567589A25440593B28FCE")
FINGERPRINT = "google/redfin/redfin:11/RD1A.200810.020/6792687:user/"


def _descriptors(key: bytes) -> list[Descriptor]:
    def props(partition: str, keys: str) -> list[PropertyDescriptor]:
        prefix = f"com.android.build.{partition}."
        return [PropertyDescriptor(prefix + "fingerprint", (FINGERPRINT + keys).encode()),
                PropertyDescriptor(prefix + "os_version", b"11"),
                PropertyDescriptor(prefix + "security_patch", b"2020-10-05")]  # fmt: skip

    return [
        ChainPartitionDescriptor(1, "vbmeta_system", key),
        *props("product", "dev-keys"), *props("vendor", "release-keys"),
        PropertyDescriptor("com.android.build.vendor_boot.fingerprint", (FINGERPRINT + "release-keys").encode()),
        *props("boot", "release-keys"), *props("system_ext", "dev-keys"),
        PropertyDescriptor("com.android.build.dtbo.fingerprint", (FINGERPRINT + "release-keys").encode()),
        HashDescriptor(0x01880000, "sha256", "boot",
                       bytes.fromhex("898C7D8D4E6B8E8EB72C70224FB56904492ABDA6E0EABD39B3580D47F1052D67"),
                       bytes.fromhex("DBFA20DF3C0A0461F6D4BC71C60CCB0A267A03BA580CC58979656F3313BCBE0E")),
        HashDescriptor(0x002A8F67, "sha256", "dtbo",
                       bytes.fromhex("A7E561ED57A01097282D3AE7692AE8DAAF957ECA9BEE1F2AF26198F46D12E2A7"),
                       bytes.fromhex("AE84E70D085B03E2F92FF463C8C6FD51F74CDC13128BD6B49C91B4A08C53CA4A")),
        HashDescriptor(0x007D6000, "sha256", "vendor_boot",
                       bytes.fromhex("82700071BE4BB92549FF9515603DDC07D7A3DB085580BBB12B1A942D78D27425"),
                       bytes.fromhex("C0B9E3DBFC97314A4597AD1E388156C6181C8E6DAE1419FA8CF0E4A102E6B8C4")),
        HashtreeDescriptor(1, 0x7DFA6000, 0x7DFA6000, 0xFE1000, 4096, 4096, 2, 0x7EF87000, 0x01010000, "sha1",
                           "product", SALT, bytes.fromhex("94879FA4D83BCE2A39923702CC2A8E9ABB76BDF2")),
        HashtreeDescriptor(1, 0x0E5F5000, 0x0E5F5000, 0x1D1000, 4096, 4096, 2, 0x0E7C6000, 0x1D6000, "sha1",
                           "system_ext", SALT, bytes.fromhex("D0339F8CEAD9F80F9876F17F3DDAE437B8072A82")),
        HashtreeDescriptor(1, 0x28CB6000, 0x28CB6000, 0x526000, 4096, 4096, 2, 0x291DC000, 0x534000, "sha1",
                           "vendor", SALT, bytes.fromhex("A214E742064108B06CF249D172902F9B0D0DDEAE")),
    ]  # fmt: skip


def _rebuilt_image() -> tuple[bytes, rsa.RSAPublicKey]:
    google_key = rsa.RSAPublicNumbers(65537, int.from_bytes(MODULUS, "big")).public_key()
    encoded_key = public_key_metadata(google_key)
    descriptors = encode_descriptors(_descriptors(encoded_key))
    assert len(descriptors) == 0xF70  # descriptors_size in the original header
    aux = (descriptors + encoded_key).ljust(0x1380, b"\0")
    header = struct.pack(
        ">4sLLQQLQQQQQQQQQQQLL48s80x", b"AVB0", 1, 0, 0x240, 0x1380, 2, 0, 0x20, 0x20, 0x200, 0xF70, 0x408,
        0x1378, 0, 0, 0xF70, 0x5F7A6200, 0, 0, b"avbtool 1.1.0",
    )  # fmt: skip
    auth = (STORED_HASH + SIGNATURE).ljust(0x240, b"\0")
    return header + auth + aux, google_key


def test_public_key_encoding_matches_avbtool() -> None:
    _, google_key = _rebuilt_image()
    encoded = public_key_metadata(google_key)
    assert encoded[:8] == bytes.fromhex("00001000943BE5CD")  # key_num_bits 4096, n0inv as avbtool wrote them
    assert encoded[8 + 512 : 8 + 520] == bytes.fromhex("2819CC6A577C9240")  # rr's first bytes ...
    assert encoded[-4:] == bytes.fromhex("7F239EF9")  # ... and last bytes in the original image


def test_real_vbmeta_rebuilt_with_our_encoders_verifies_with_its_original_signature() -> None:
    image, google_key = _rebuilt_image()
    assert hashlib.sha256(image[:256] + image[256 + 0x240 :]).digest() == STORED_HASH
    vbmeta = read_vbmeta(image.ljust(4096 * 2, b"\0"))
    assert vbmeta.algorithm.name == "SHA256_RSA4096" and vbmeta.rollback_index == 0x5F7A6200
    assert vbmeta.release_string == "avbtool 1.1.0"
    verdict = verify_vbmeta(vbmeta, [google_key])
    assert verdict.verified, verdict.errors
    assert [type(d).__name__ for d in vbmeta.descriptors].count("HashtreeDescriptor") == 3
    assert vbmeta.chain_partitions()["vbmeta_system"].public_key == vbmeta.public_key
    tampered = bytearray(image)
    tampered[0x7D0 + 40] ^= 1  # one letter of the product fingerprint
    assert not verify_vbmeta(bytes(tampered), [google_key]).verified


def test_real_vbmeta_resigned_keeps_every_descriptor_byte() -> None:
    image, _ = _rebuilt_image()
    ours = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    resigned = read_vbmeta(resign_vbmeta(image, _signer(ours)))
    original = read_vbmeta(image)
    assert encode_descriptors(resigned.descriptors) == encode_descriptors(original.descriptors)
    assert resigned.header.release_string == original.header.release_string
    assert verify_vbmeta(resigned, [ours.public_key()]).verified
