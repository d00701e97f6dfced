"""MedLens: medical images to trustworthy numbers, models and reports, at cohort scale.

``import medlens`` is cheap: readers and the science packages are imported on first use.
"""

from __future__ import annotations

from typing import Any

from medlens.core import (
    FormatError,
    GeometryError,
    Image,
    ImageMeta,
    InputError,
    MedlensError,
    Units,
)
from medlens.core._version import __version__

__all__ = [
    "FormatError",
    "GeometryError",
    "Image",
    "ImageMeta",
    "InputError",
    "MedlensError",
    "Units",
    "__version__",
    "list_series",
    "read_image",
    "read_mask",
    "write_image",
]

_LAZY = {
    "read_image": "medlens.io",
    "read_mask": "medlens.io",
    "write_image": "medlens.io",
    "list_series": "medlens.io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medlens' has no attribute {name!r}")
