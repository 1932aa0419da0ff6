"""sealgate: the release-and-update trust chain of an Android distribution."""

__version__ = "0.1.0"
