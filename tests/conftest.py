"""Shared test fixtures.

Conformance data lives in ../shared/vectors and is never copied into the project. Without it (a user's clone) the
tests that need it are skipped with a reason; under CI (CI=true) its absence is a failure.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_VECTORS = Path(os.environ.get("SEALGATE_VECTORS", PROJECT_ROOT.parent / "shared" / "vectors"))


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def vectors_path(*parts: str) -> Path:
    """Path under ../shared/vectors; skips (or fails under CI) when the folder is absent."""
    path = SHARED_VECTORS.joinpath(*parts)
    if not path.exists():
        message = f"conformance vectors not found at {path} (set SEALGATE_VECTORS or check out ../shared)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def require_tool(name: str) -> str:
    """Absolute path of an external tool; skips (or fails under CI) when it is not installed."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (.ci/run installs it with apt-get)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def apksig_vectors() -> Path:
    return vectors_path("apksig")


@pytest.fixture(scope="session")
def fdroid_vectors() -> Path:
    return vectors_path("fdroid")
