"""Core contracts: :class:`Image`, provenance, errors. Imports nothing else of MedLens."""

from medlens.core.errors import (
    FormatError,
    GeometryError,
    GeometryWarning,
    InputError,
    MedlensError,
    MedlensWarning,
    MissingDependencyError,
    ProcessingError,
    SkippedInputWarning,
)
from medlens.core.image import Image, ImageMeta, Units, affine_from_geometry

__all__ = [
    "FormatError",
    "GeometryError",
    "GeometryWarning",
    "Image",
    "ImageMeta",
    "InputError",
    "MedlensError",
    "MedlensWarning",
    "MissingDependencyError",
    "ProcessingError",
    "SkippedInputWarning",
    "Units",
    "affine_from_geometry",
]
