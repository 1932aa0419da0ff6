"""Android Verified Boot 2.0 (external/avb): vbmeta images, their descriptors, AVB footers and AVB public keys.

A format package: it parses, builds, signs (through `sealgate.signing.Signer`) and verifies bytes; it never prints,
prompts, reads configuration or touches the network. The layouts follow external/avb's libavb headers
(avb_vbmeta_image.h, avb_descriptor.h and the per-descriptor headers, avb_footer.h, avb_rsa.h) and avbtool.py, which
writes what devices check; the verification rules follow libavb's avb_vbmeta_image_verify.

- `sealgate.avb.keys`: the AvbRSAPublicKeyHeader key format, avb_pkmd.bin and the verified-boot key digest.
- `sealgate.avb.algorithms`: the algorithm table (NONE, SHA256_RSA2048 ... SHA512_RSA8192).
- `sealgate.avb.descriptors`: property, hashtree, hash, kernel command-line and chain-partition descriptors.
- `sealgate.avb.vbmeta`: reading, verifying, building and re-signing vbmeta images.
- `sealgate.avb.footer`: the 'AVBf' footer of partition images and re-signing the vbmeta behind it in place.
- `sealgate.avb.hashtree`: dm-verity hash trees (format 1), as avbtool computes and lays them out.
- `sealgate.avb.images`: adding hash and hashtree footers to partition images (avbtool add_hash(tree)_footer).
"""
