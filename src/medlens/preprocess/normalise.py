"""Intensity normalisation: z-score, min-max, percentile and fat-reference scaling (results in
``Units.NORMALISED``) and percentile clipping.

Percentile clipping keeps the units (clipped HU are still HU); the others make intensities
dimensionless, and the result says so in ``meta.units`` (the old units are kept in
``meta.extra["normalised_from_units"]``, the fitted parameters in ``meta.history``). MR signal has no
physical unit (``arbitrary``), so one of these is needed before MR intensities are compared across
patients: ``zscore``, ``percentile_normalise`` or ``fat_normalise`` (T1: subcutaneous fat as the
reference tissue). ``exclude_zero=True`` leaves exact zeros (the padding of a resampled MR) out of the
statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image, Units
from medlens.preprocess._validate import check_image, check_mask

__all__ = ["fat_normalise", "minmax", "percentile_clip", "percentile_normalise", "zscore"]


def _sample(data: np.ndarray, m: np.ndarray | None, exclude_zero: bool, what: str) -> np.ndarray:
    sel = np.ones(data.shape, dtype=bool) if m is None else m.copy()
    if exclude_zero:
        sel &= data != 0
    if not sel.any():
        raise ProcessingError(f"{what}: no voxel left for the statistics (empty mask, or only zeros with exclude_zero)")
    return data[sel]


def zscore(image: Image, *, mask: Image | None = None, exclude_zero: bool = False) -> Image:
    """``(x - mean) / std`` with mean and (population) standard deviation from the voxels in ``mask``
    (the whole image without one; exact zeros left out with ``exclude_zero``); every voxel is transformed.
    Result: float32, ``units=normalised``.

    Raises
    ------
    ProcessingError
        The standard deviation is zero (a constant image or region) so no z-score exists.
    """
    check_image(image)
    m = check_mask(image, mask)
    data = np.asarray(image.array, dtype=np.float64)
    sample = _sample(data, m, exclude_zero, "zscore")
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


def percentile_normalise(
    image: Image,
    *,
    percentiles: Sequence[float] = (1.0, 99.0),
    mask: Image | None = None,
    exclude_zero: bool = False,
) -> Image:
    """Linear rescale mapping the ``(low, high)`` percentiles of the image (inside ``mask``) to 0 and 1.

    ``(x - P_low) / (P_high - P_low)``, no clipping (values beyond the percentiles fall outside [0, 1]).
    Robust to a few extreme voxels, unlike min-max. Result: float32, ``units=normalised``.

    Raises
    ------
    ProcessingError
        The two percentiles are equal (too few distinct values).
    """
    check_image(image)
    m = check_mask(image, mask)
    p = [float(v) for v in percentiles]
    if len(p) != 2 or not 0.0 <= p[0] < p[1] <= 100.0:
        raise InputError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {list(percentiles)}")
    data = np.asarray(image.array, dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(_sample(data, m, exclude_zero, "percentile_normalise"), p))
    if not hi > lo:
        raise ProcessingError(f"percentile_normalise: the {p[0]:g}th and {p[1]:g}th percentiles are equal ({lo:g})")
    out = ((data - lo) / (hi - lo)).astype(np.float32)
    return image.with_array(
        out,
        op=f"percentile_normalise(P{p[0]:g}={lo:.6g}->0,P{p[1]:g}={hi:.6g}->1)",
        units=Units.NORMALISED,
        extra={"normalised_from_units": image.meta.units},
    )


def fat_normalise(
    image: Image,
    *,
    fat_mask: Image | None = None,
    fat_percentiles: Sequence[float] = (90.0, 99.0),
    exclude_zero: bool = True,
) -> Image:
    """Divide a T1-weighted MR by the median intensity of fat (reference-tissue normalisation): fat -> 1.

    Parameters
    ----------
    fat_mask
        Boolean mask of fat on the image's grid (e.g. drawn subcutaneous fat). Without one, fat is taken as
        the voxels between the ``fat_percentiles`` of the image (exact zeros left out with ``exclude_zero``):
        on T1-weighted MR fat is the brightest tissue, and the top 1 % (vessels with inflow, artefacts) is
        left out. That estimate assumes fat makes up at least ~10 % of the field of view (an extremity
        scan); give ``fat_mask`` otherwise.

    Result: float32, ``units=normalised``; the reference value is recorded in ``meta.history`` and
    ``meta.extra["fat_reference"]``.

    Raises
    ------
    ProcessingError
        The reference intensity is not positive.
    """
    check_image(image)
    data = np.asarray(image.array, dtype=np.float64)
    if fat_mask is not None:
        m = check_mask(image, fat_mask)
        sample = _sample(data, m, exclude_zero, "fat_normalise")
        how = "fat_mask"
    else:
        p = [float(v) for v in fat_percentiles]
        if len(p) != 2 or not 0.0 <= p[0] < p[1] <= 100.0:
            raise InputError(
                f"fat_percentiles must be (low, high) with 0 <= low < high <= 100, got {list(fat_percentiles)}"
            )
        body = _sample(data, None, exclude_zero, "fat_normalise")
        lo, hi = np.percentile(body, p)
        sample = body[(body >= lo) & (body <= hi)]
        how = f"P{p[0]:g}-P{p[1]:g}"
        if not sample.size:
            raise ProcessingError(
                f"fat_normalise: no voxel lies between the {p[0]:g}th and {p[1]:g}th percentiles ({lo:g}, {hi:g}); "
                "widen fat_percentiles or give fat_mask"
            )
    ref = float(np.median(sample))
    if not ref > 0:
        raise ProcessingError(f"fat_normalise: the fat reference intensity ({how}) is {ref:g}, not positive")
    out = (data / ref).astype(np.float32)
    return image.with_array(
        out,
        op=f"fat_normalise(reference={ref:.6g},{how},n={sample.size})",
        units=Units.NORMALISED,
        extra={"normalised_from_units": image.meta.units, "fat_reference": ref},
    )
