"""Key custody: where private keys live (encrypted keystores, PKCS#11 tokens), how they sign, and the record of
every signature made. Everything sealgate signs goes through a `sealgate.signing.Signer` that a backend here
provides."""
