"""Contrast: CT windowing with presets, global histogram equalisation and CLAHE (2D slice-wise, 3D).

Every function here changes what the intensities mean, so results are dimensionless in ``[0, 1]``
and carry ``units=Units.NORMALISED`` (an HU image stops being HU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.preprocess._validate import check_image, check_mask

__all__ = ["WINDOW_PRESETS_HU", "clahe_2d", "clahe_3d", "histogram_equalise", "window"]

#: Named CT windows as ``(center, width)`` in HU (common radiology defaults).
WINDOW_PRESETS_HU: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}


def window(
    image: Image,
    *,
    window_hu: tuple[float, float] | Sequence[float] | None = None,
    preset: str | None = None,
) -> Image:
    """Clip a CT image to a window and scale it linearly to ``[0, 1]``.

    ``lower = center - width / 2`` maps to 0 and ``upper = center + width / 2`` to 1; values outside
    are clipped. (DICOM PS3.3 C.11.2.1.2 uses ``center - 0.5`` and ``width - 1`` for integer
    display values; for floating-point output the plain form is used here.)

    Parameters
    ----------
    window_hu
        ``(center, width)`` in HU; width must be positive.
    preset
        One of :data:`WINDOW_PRESETS_HU`: lung (-600, 1500), mediastinum (40, 400),
        bone (400, 1800), brain (40, 80), liver (60, 160).

    Raises
    ------
    InputError
        Neither or both of ``window_hu``/``preset``, an unknown preset, a width <= 0, or an image
        whose units are known and not HU.
    """
    check_image(image)
    if (window_hu is None) == (preset is None):
        raise InputError(
            f"give exactly one of window_hu=(center, width) or preset (one of {sorted(WINDOW_PRESETS_HU)})"
        )
    if preset is not None:
        if preset not in WINDOW_PRESETS_HU:
            raise InputError(f"unknown window preset {preset!r}; allowed: {sorted(WINDOW_PRESETS_HU)}")
        center, width = WINDOW_PRESETS_HU[preset]
    else:
        vals = list(window_hu)  # type: ignore[arg-type]
        if len(vals) != 2:
            raise InputError(f"window_hu must be (center, width) in HU, got {window_hu!r}")
        center, width = float(vals[0]), float(vals[1])
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise InputError(f"window width must be a positive number of HU, got center={center}, width={width}")
    if image.meta.units not in (Units.HU, Units.UNKNOWN):
        raise InputError(
            f"windowing is defined in HU but this image's units are {image.meta.units!r}; "
            "use minmax or percentile_clip for other units"
        )
    lo = center - width / 2.0
    out = (np.clip(np.asarray(image.array, dtype=np.float64), lo, lo + width) - lo) / width
    name = preset or "explicit"
    return image.with_array(
        out.astype(np.float32), op=f"window({name},center={center:g},width={width:g})", units=Units.NORMALISED
    )


def histogram_equalise(image: Image, *, bins: int = 256, mask: Image | None = None) -> Image:
    """Global histogram equalisation to ``[0, 1]``.

    Each voxel gets the value of the cumulative histogram (``bins`` equal bins over the value
    range, computed inside ``mask`` if given) interpolated at its intensity between bin centres;
    the same mapping as :func:`skimage.exposure.equalize_hist`.
    """
    check_image(image)
    m = check_mask(image, mask)
    if not isinstance(bins, (int, np.integer)) or bins < 2:
        raise InputError(f"bins must be an integer >= 2, got {bins!r}")
    data = np.asarray(image.array, dtype=np.float64)
    sample = data[m] if m is not None else data.ravel()
    lo, hi = float(sample.min()), float(sample.max())
    if hi == lo:
        return image.with_array(np.zeros(image.shape, np.float32), op="histogram_equalise", units=Units.NORMALISED)
    hist, edges = np.histogram(sample, bins=int(bins), range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2.0
    cdf = np.cumsum(hist).astype(np.float64)
    cdf /= cdf[-1]
    out = np.interp(data.ravel(), centers, cdf).reshape(image.shape)
    return image.with_array(out.astype(np.float32), op=f"histogram_equalise(bins={bins})", units=Units.NORMALISED)


def _unit_range(data: np.ndarray, in_range: Sequence[float] | None, what: str) -> tuple[np.ndarray, float, float]:
    if in_range is None:
        lo, hi = float(np.min(data)), float(np.max(data))
    else:
        vals = list(in_range)
        if len(vals) != 2 or not vals[1] > vals[0]:
            raise InputError(f"{what}: in_range must be (low, high) with high > low, got {in_range!r}")
        lo, hi = float(vals[0]), float(vals[1])
    if hi == lo:
        return np.zeros(data.shape), lo, hi
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0), lo, hi


def clahe_2d(
    image: Image,
    *,
    clip_limit: float = 2.0,
    tiles: tuple[int, int] = (8, 8),
    in_range: Sequence[float] | None = None,
) -> Image:
    """CLAHE in 2D with OpenCV, slice by slice along axis 0 for volumes.

    Mapping: intensities are clipped to ``in_range`` (default: the whole image's min and max, the
    same range for every slice so slices stay comparable), scaled linearly to ``0..255`` and rounded
    to ``uint8``; ``cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tiles)`` is applied; the
    result is divided by 255, giving ``[0, 1]`` (``units=normalised``). ``clip_limit`` has OpenCV's
    meaning (multiple of the mean bin count of 256 bins per tile). 8-bit input is used because
    OpenCV's clip limit is relative to the bin count: with 65 536 bins (16-bit) ``2.0`` clips almost
    everything.

    Parameters
    ----------
    tiles
        Tile grid ``(columns, rows)`` as OpenCV's ``tileGridSize``.
    """
    import cv2

    check_image(image)
    if not (np.isfinite(clip_limit) and clip_limit > 0):
        raise InputError(f"clip_limit must be positive, got {clip_limit}")
    t = tuple(tiles)
    if len(t) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in t):
        raise InputError(f"tiles must be two positive integers (columns, rows), got {tiles!r}")
    unit, lo, hi = _unit_range(np.asarray(image.array, dtype=np.float64), in_range, "clahe_2d")
    u8 = np.round(unit * 255.0).astype(np.uint8)
    if hi == lo:
        out = np.zeros(image.shape, np.float32)
    else:
        clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(t[0]), int(t[1])))
        if image.ndim == 2:
            res = clahe.apply(np.ascontiguousarray(u8))
        else:
            res = np.stack([clahe.apply(np.ascontiguousarray(s)) for s in u8])
        out = res.astype(np.float32) / 255.0
    op = f"clahe_2d(clip_limit={clip_limit:g},tiles={list(t)},in_range=({lo:g},{hi:g}))"
    return image.with_array(out, op=op, units=Units.NORMALISED)


def clahe_3d(
    image: Image,
    *,
    clip_limit: float = 0.01,
    kernel_size_voxels: int | Sequence[int] | None = None,
    bins: int = 256,
    in_range: Sequence[float] | None = None,
) -> Image:
    """CLAHE on the whole volume with 3D contextual regions (scikit-image ``equalize_adapthist``).

    Mapping: intensities clipped to ``in_range`` (default min..max) and scaled to ``[0, 1]``;
    the result is in ``[0, 1]`` (``units=normalised``).

    Parameters
    ----------
    clip_limit
        scikit-image's normalised clip limit in ``(0, 1]`` (not OpenCV's multiple: 0.01 is the usual default).
    kernel_size_voxels
        Contextual region size per axis in voxels; default 1/8 of each dimension (scikit-image's default).
    bins
        Histogram bins.
    """
    from skimage.exposure import equalize_adapthist

    check_image(image, ndims=(3,))
    if not (np.isfinite(clip_limit) and 0 < clip_limit <= 1):
        raise InputError(f"clip_limit for clahe_3d is scikit-image's normalised limit in (0, 1], got {clip_limit}")
    if not isinstance(bins, (int, np.integer)) or bins < 2:
        raise InputError(f"bins must be an integer >= 2, got {bins!r}")
    ks: Any = None
    if kernel_size_voxels is not None:
        ks_arr = np.atleast_1d(np.asarray(kernel_size_voxels))
        if ks_arr.size == 1:
            ks_arr = np.repeat(ks_arr, 3)
        if ks_arr.size != 3 or np.any(ks_arr < 1) or np.any(ks_arr != np.round(ks_arr)):
            raise InputError(f"kernel_size_voxels must be one or three positive integers, got {kernel_size_voxels!r}")
        ks = tuple(int(v) for v in ks_arr)
    unit, lo, hi = _unit_range(np.asarray(image.array, dtype=np.float64), in_range, "clahe_3d")
    if hi == lo:
        out = np.zeros(image.shape, np.float32)
    else:
        out = equalize_adapthist(unit, kernel_size=ks, clip_limit=float(clip_limit), nbins=int(bins)).astype(np.float32)
    op = f"clahe_3d(clip_limit={clip_limit:g},kernel_size_voxels={ks},in_range=({lo:g},{hi:g}))"
    return image.with_array(out, op=op, units=Units.NORMALISED)
