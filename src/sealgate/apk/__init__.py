"""APK formats: signature schemes v1 to v4, proof-of-rotation lineage, the binary manifest.

Formats only: no policy, no network, no printing. `sealgate.apk.verifier.verify_apk` is the one path that verifies
an APK and names its signers; nothing else reads certificates out of an APK.
"""
