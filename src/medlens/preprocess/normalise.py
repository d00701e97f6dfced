"""Intensity normalisation: z-score, min-max (results in ``Units.NORMALISED``) and percentile clipping.

Percentile clipping keeps the units (clipped HU are still HU); z-score and min-max make
intensities dimensionless, and the result says so in ``meta.units``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image, Units
from medlens.preprocess._validate import check_image, check_mask

__all__ = ["minmax", "percentile_clip", "zscore"]


def zscore(image: Image, *, mask: Image | None = None) -> Image:
    """``(x - mean) / std`` with mean and (population) standard deviation from the voxels in ``mask``
    (the whole image without one); every voxel is transformed. Result: float32, ``units=normalised``.

    Raises
    ------
    ProcessingError
        The standard deviation is zero (a constant image or region) so no z-score exists.
    """
    check_image(image)
    m = check_mask(image, mask)
    data = np.asarray(image.array, dtype=np.float64)
    sample = data[m] if m is not None else data
    mu, sd = float(sample.mean()), float(sample.std())
    if not sd > 0:
        where = "inside the mask" if m is not None else "over the image"
        raise ProcessingError(f"zscore: the intensities {where} are constant ({mu:g}); the standard deviation is 0")
    out = ((data - mu) / sd).astype(np.float32)
    op = f"zscore(mean={mu:.6g},std={sd:.6g},{'mask' if m is not None else 'image'})"
    return image.with_array(out, op=op, units=Units.NORMALISED, extra={"normalised_from_units": image.meta.units})


def percentile_clip(image: Image, *, percentiles: Sequence[float] = (0.5, 99.5), mask: Image | None = None) -> Image:
    """Clip intensities to the ``(low, high)`` percentiles (computed inside ``mask`` if given).

    The units are unchanged (clipping does not change what a value means).
    """
    check_image(image)
    m = check_mask(image, mask)
    p = [float(v) for v in percentiles]
    if len(p) != 2 or not 0.0 <= p[0] < p[1] <= 100.0:
        raise InputError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {list(percentiles)}")
    data = np.asarray(image.array)
    sample = data[m] if m is not None else data
    lo, hi = np.percentile(sample, p)
    out = np.clip(data, lo, hi).astype(data.dtype, copy=False)
    return image.with_array(out, op=f"percentile_clip({p[0]:g},{p[1]:g})->({lo:.6g},{hi:.6g})")


def minmax(image: Image, *, out_range: Sequence[float] = (0.0, 1.0), mask: Image | None = None) -> Image:
    """Linear rescale so that the min and max (inside ``mask`` if given) map to ``out_range``.

    A constant image maps to ``out_range[0]``. Result: float32, ``units=normalised``.
    """
    check_image(image)
    m = check_mask(image, mask)
    r = [float(v) for v in out_range]
    if len(r) != 2 or not r[1] > r[0]:
        raise InputError(f"out_range must be (low, high) with high > low, got {list(out_range)}")
    data = np.asarray(image.array, dtype=np.float64)
    sample = data[m] if m is not None else data
    lo, hi = float(sample.min()), float(sample.max())
    if hi == lo:
        out = np.full(image.shape, r[0])
    else:
        out = r[0] + (data - lo) * (r[1] - r[0]) / (hi - lo)
    return image.with_array(
        out.astype(np.float32),
        op=f"minmax(({lo:.6g},{hi:.6g})->({r[0]:g},{r[1]:g}))",
        units=Units.NORMALISED,
        extra={"normalised_from_units": image.meta.units},
    )
