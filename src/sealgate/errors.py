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
