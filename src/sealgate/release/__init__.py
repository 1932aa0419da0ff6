"""OS releases: re-signing a target-files package, building the factory image, publishing OTA channels.

A service layer: it reads and writes the build's archives, decides which key signs what, and calls the format code
(`apk.signing`, `avb`, `ota`) to make every signature through a `sealgate.signing.Signer`.
"""
