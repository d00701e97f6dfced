"""Errors and warnings raised by MedLens.

Every error names the input, what was expected, what was found and what to do.
Each class carries the process exit code the command line uses for it, so the
CLI never has to guess (see the README, "Exit codes").
"""

from __future__ import annotations

from typing import Any


class MedlensError(Exception):
    """Base class of every error MedLens raises on purpose."""

    exit_code: int = 1


class InputError(MedlensError, ValueError):
    """A parameter or an input file is not what the function needs."""

    exit_code = 2


class FormatError(MedlensError):
    """A file cannot be read as the format it claims (or any supported format)."""

    exit_code = 3


class GeometryError(MedlensError):
    """Image geometry is inconsistent (missing slices, tilt, grids that differ, ...)."""

    exit_code = 4


class MissingDependencyError(MedlensError, ImportError):
    """An optional package needed for this operation is not installed."""

    exit_code = 5


class ProcessingError(MedlensError, RuntimeError):
    """A computation could not produce a trustworthy result (e.g. no convergence)."""

    exit_code = 6


class MedlensWarning(UserWarning):
    """Base category of MedLens warnings."""


class GeometryWarning(MedlensWarning):
    """Geometry was irregular and has been corrected (e.g. resampled onto a regular grid)."""


class SkippedInputWarning(MedlensWarning):
    """Some input files were skipped (unreadable, not DICOM, ...)."""


def require(module: str, *, extra: str | None = None, purpose: str = "", package: str | None = None) -> Any:
    """Import an optional module or raise :class:`MissingDependencyError` (exit 5) saying how to install it.

    The one way MedLens imports an optional dependency (torch, MONAI, ONNX Runtime, nibabel, ...):
    a missing package is always exit code 5 with the install command, never a bare ImportError (exit 1).

    Parameters
    ----------
    module
        Module to import (``"torch"``, ``"monai.networks.nets"``).
    extra
        The MedLens extra that installs it (``"dl"`` gives ``pip install 'medlens[dl]'``).
    purpose
        What needs it, for the message (``"the U-Net"``).
    package
        The pip name when it differs from the top-level module (``"SimpleITK"``, ``"pynrrd"``).

    Returns
    -------
    module
        The imported module.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip_name = package or module.split(".")[0]
        how = f"pip install 'medlens[{extra}]'" if extra else f"pip install {pip_name}"
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"the optional package {pip_name!r} is needed{what} but cannot be imported ({exc}); install it with: {how}"
        ) from exc
