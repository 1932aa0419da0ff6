"""A keystore signer whose key is decrypted on another thread while the caller already works.

Unlocking a keystore key costs a quarter of a second of scrypt on purpose. Signing a large APK spends its first
second copying and hashing, which needs only the certificate; the private key is needed at the very end. So the
key is decrypted in the background (`sealgate.custody.pkcs8` derives it without holding the GIL) and the first
signature waits for it. A wrong passphrase or a damaged key file surfaces there, as the same KeystoreError the
synchronous path raises, before anything is signed or written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from sealgate.signing import Signer, SigningAlgorithm, key_algorithms

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    from sealgate.apk.certificate import Certificate


class DeferredSigner:
    """A `Signer` known by its certificate now, able to sign once `unlock` (run on its own thread) has returned."""

    def __init__(self, name: str, certificate: Certificate, unlock: Callable[[], Signer]) -> None:
        self._name = name
        self._certificate = certificate
        self._unlocked: Future[Signer] = Future()
        self._unlocked.set_running_or_notify_cancel()

        def run() -> None:
            try:
                self._unlocked.set_result(unlock())
            except BaseException as exc:
                self._unlocked.set_exception(exc)

        threading.Thread(target=run, name=f"unlock-{name}", daemon=True).start()

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> PublicKeyTypes:
        return self._certificate.public_key()

    @property
    def certificate(self) -> Certificate:
        return self._certificate

    def algorithms(self) -> frozenset[SigningAlgorithm]:
        return key_algorithms(self.public_key)

    def unlocked(self) -> Signer:
        """The signer with its decrypted key, waiting for it; raises what the unlocking raised."""
        return self._unlocked.result()

    def sign(self, data: bytes, algorithm: SigningAlgorithm) -> bytes:
        return self.unlocked().sign(data, algorithm)

    def sign_digest(self, digest: bytes, algorithm: SigningAlgorithm) -> bytes:
        return self.unlocked().sign_digest(digest, algorithm)
