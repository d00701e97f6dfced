"""Input checks shared by the preprocessing functions (one place, messages name the parameter)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image


def check_image(image: object, *, what: str = "image", ndims: tuple[int, ...] = (2, 3)) -> Image:
    """Raise :class:`InputError` unless ``image`` is an :class:`Image` with one of ``ndims`` dimensions."""
    if not isinstance(image, Image):
        raise InputError(f"{what} must be a medlens.Image, got {type(image).__name__}")
    if image.ndim not in ndims:
        dims = " or ".join(f"{d}D" for d in ndims)
        raise InputError(f"{what} must be {dims}; got a {image.ndim}D image with shape {image.shape}")
    if image.is_mask:
        raise InputError(f"{what} is a boolean mask; this operation needs intensities")
    return image


def check_mask(image: Image, mask: Image | None, *, what: str = "mask") -> np.ndarray | None:
    """The boolean array of ``mask`` after checking it lies on ``image``'s grid (None passes through)."""
    if mask is None:
        return None
    if not isinstance(mask, Image):
        raise InputError(f"{what} must be a medlens.Image (boolean), got {type(mask).__name__}")
    if not mask.is_mask:
        raise InputError(f"{what} must have a boolean array, got dtype {mask.dtype}; threshold it first (mask > 0)")
    image.require_same_grid(mask, what=what)
    arr = np.asarray(mask.array, dtype=bool)
    if not arr.any():
        raise InputError(f"{what} is empty (no voxel set); it must select at least one voxel")
    return arr


def per_axis(value: float | Sequence[float], ndim: int, *, name: str, allow_zero: bool = False) -> np.ndarray:
    """Expand a scalar or per-axis sequence to ``ndim`` finite values, positive (or >= 0 with ``allow_zero``)."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise InputError(f"{name} must be a number or one number per array axis, got {value!r}")
    if arr.size == 1:
        arr = np.repeat(arr, ndim)
    if arr.size != ndim:
        raise InputError(
            f"{name} has {arr.size} values but the image is {ndim}D; give one number, or one per array axis "
            "in array order ((z, y, x) or (y, x))"
        )
    bad = ~np.isfinite(arr) | (arr < 0 if allow_zero else arr <= 0)
    if bad.any():
        kind = "non-negative" if allow_zero else "positive"
        raise InputError(f"{name} must be {kind} and finite, got {arr.tolist()}")
    return arr


def as_float(image: Image) -> np.ndarray:
    """The image's pixels as a float64 (float32 kept) writable copy."""
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    return np.array(image.array, dtype=dtype, copy=True)
