"""Shared fixtures: the real data under ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The `orthanc` fixture (a real Orthanc started on loopback ports) for the service tests.
pytest_plugins = ["_orthanc"]

SHARED_DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(
            f"real data not found at {path}: these tests need ../shared/data beside the checkout "
            "(or MEDLENS_SHARED_DATA pointing at it)"
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def ibsi1_dir(shared_data: Path) -> Path:
    return _need(shared_data / "ibsi1")


@pytest.fixture(scope="session")
def ct_phantom_dir(ibsi1_dir: Path) -> Path:
    return _need(ibsi1_dir / "ct_phantom")


@pytest.fixture(scope="session")
def digital_phantom_dir(ibsi1_dir: Path) -> Path:
    return _need(ibsi1_dir / "digital_phantom")


@pytest.fixture(scope="session")
def reference_values_dir(ibsi1_dir: Path) -> Path:
    return _need(ibsi1_dir / "reference_values")


@pytest.fixture(scope="session")
def sts_dir(shared_data: Path) -> Path:
    return _need(shared_data / "sts")


def need_tool(name: str) -> str:
    """Path of an external program, or skip naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        hints = {"dciodvfy": "dicom3tools", "chromium": "chromium"}
        hints |= dict.fromkeys(("storescu", "findscu", "echoscu"), "dcmtk")
        pytest.skip(f"{name} is not installed (apt-get install {hints.get(name, name)}; .ci/run installs it)")
    return path
