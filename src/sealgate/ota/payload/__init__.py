"""A/B OTA payloads (update_engine's payload.bin): schema, reader, writer, signer, verifier and applier.

Modules: `schema` (update_metadata.proto as message classes), `header` (the CrAU header), `reader`, `writer`
(full and delta payloads from images), `codec` (REPLACE-family data), `signer` (update_engine's signing scheme,
also in the custodian's two steps), `verify`, `apply`, and `properties` (payload_properties.txt).
"""
