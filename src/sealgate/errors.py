"""The one exception hierarchy of sealgate.

Exceptions are for malformed input and broken environments; verdicts on well-formed input are reports, never
exceptions. Every exception a user can trigger with bad input is a `SealgateError` whose message says what is
wrong in words a person can act on, so the CLI can print it instead of a traceback.
"""


class SealgateError(Exception):
    """Base of every error sealgate raises on purpose."""


class UsageError(SealgateError):
    """The caller asked for something that does not make sense (bad option, bad SDK window)."""


class ToolMissingError(SealgateError):
    """An external program or library that this operation needs is not available."""


class FormatError(SealgateError):
    """Input bytes are not a well-formed instance of the format they claim to be."""


class ZipFormatError(FormatError):
    """A ZIP archive is malformed, or uses a construct Android refuses."""


class ZipBombError(ZipFormatError):
    """An entry inflates past the limit the caller allowed."""


class ApkFormatError(FormatError):
    """An APK is malformed beyond what a verification report can describe (no manifest, not a ZIP)."""


class SigningBlockFormatError(ApkFormatError):
    """The APK Signing Block is present but malformed."""


class ManifestFormatError(ApkFormatError):
    """AndroidManifest.xml is not valid Android binary XML."""


class LineageFormatError(FormatError):
    """A proof-of-rotation lineage (in an APK or a standalone file) is malformed."""


class IdsigFormatError(FormatError):
    """An APK Signature Scheme v4 .idsig file is malformed."""


class BundleError(SealgateError):
    """A signing bundle is malformed, tampered with, or does not answer the request it claims to answer."""


class RecordError(SealgateError):
    """The signing record cannot be read or appended to (broken chain, truncated line, unwritable file)."""


class OnlineError(SealgateError):
    """An offline-only operation was started on a machine with a network interface up."""


class KeystoreError(SealgateError):
    """An encrypted keystore cannot be read or written: wrong passphrase, locked, damaged, or a full disk."""


class KeystoreLockedError(KeystoreError):
    """Another process holds the keystore's lock; retry when it has finished."""


class PassphraseError(SealgateError):
    """No passphrase (or PIN) could be obtained from a file descriptor, the environment or a terminal."""


class TokenError(SealgateError):
    """A PKCS#11 module, token, PIN or object is missing or refused the operation."""


class ApkSigningError(SealgateError):
    """An APK could not be signed: the output cannot be written, or what was written does not verify."""


class DeviceError(SealgateError):
    """A device directory or its state database is missing, damaged, or was asked something impossible."""


class RepoError(SealgateError):
    """An app repository cannot be read, updated or published: bad configuration, damaged state, a failed write."""


class MetadataError(RepoError):
    """A configuration or per-app metadata file is invalid; the message names the file and the line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class OtaFormatError(FormatError):
    """An OTA package cannot be read or signed: not a ZIP archive, or a signature that does not fit."""


class ChannelFormatError(FormatError):
    """An OTA channel file is malformed: not JSON, a repeated key, an unknown field, a wrong type or value.

    `code` names the kind of problem ("not-json", "duplicate-key", "unknown-field", "missing-field", "wrong-type",
    "bad-value") so that callers and tests can tell them apart without matching sentences.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class ReleaseError(SealgateError):
    """An OS release cannot be prepared or published: a refused package, a broken chain, a rollback, a failed write."""


class UnreleasableBuildError(ReleaseError):
    """The build is not a user (release) build: userdebug or eng, debuggable, or it carries an su binary."""

    def __init__(self, reasons: list[tuple[str, str]]) -> None:
        #: (code, sentence) for every reason the build was refused.
        self.reasons = reasons
        super().__init__(
            "refusing to sign a build that is not a user build: " + "; ".join(message for _, message in reasons)
        )


class AvbFormatError(FormatError):
    """A vbmeta image, AVB footer, descriptor or AVB public key is malformed, or cannot be signed as asked."""


class PayloadError(OtaFormatError):
    """An A/B payload (payload.bin) is malformed, unsigned, tampered with, or uses an operation we cannot apply."""
