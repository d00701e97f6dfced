"""Classic segmentation: thresholds, region growing, connected components and morphology.

Every function is pure: it takes a :class:`~medlens.core.image.Image` and returns a new boolean
mask ``Image`` (or an integer label ``Image``) on the same grid, with the operation appended to
``meta.history``. Intensity parameters are in the image's own units (``meta.units``: HU for CT,
SUVbw for PET); distances and radii are in millimetres and use the voxel spacing, so anisotropic
voxels are handled in physical units.

Seeds are given either as an array index in array order (``seed_index=(z, y, x)``) or as an LPS
point in millimetres (``seed_mm=(x, y, z)``); a seed outside the image raises
:class:`~medlens.core.errors.InputError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medlens.core.errors import InputError, MedlensWarning, ProcessingError
from medlens.core.image import Image, Units

__all__ = [
    "EmptyResultWarning",
    "closing",
    "confidence_connected",
    "connected_components",
    "dilate",
    "ellipsoid_structure",
    "erode",
    "fill_holes",
    "largest_component",
    "multi_otsu",
    "opening",
    "otsu",
    "region_grow",
    "resolve_seed",
    "suv_threshold",
    "threshold",
]


class EmptyResultWarning(MedlensWarning):
    """A segmentation produced an empty mask."""


# ---- helpers ------------------------------------------------------------------------------------
def _mask_image(ref: Image, arr: np.ndarray, op: str) -> Image:
    arr = np.asarray(arr, dtype=bool)
    if not arr.any():
        warnings.warn(
            f"{op}: the segmentation of {ref.meta.source or 'the image'} is empty (no voxel selected); check the "
            "parameters (threshold, seed, tolerance)",
            EmptyResultWarning,
            stacklevel=3,
        )
    return ref.with_array(arr, op=op, units=Units.MASK)


def _require_mask(mask: Image, what: str = "mask") -> np.ndarray:
    if not isinstance(mask, Image):
        raise InputError(f"{what} must be a medlens Image, got {type(mask).__name__}")
    if mask.array.dtype != np.bool_:
        raise InputError(f"{what} must be a boolean mask Image, got dtype {mask.array.dtype}; use image > value first")
    return mask.array


def _require_image(image: Image, what: str = "image") -> np.ndarray:
    if not isinstance(image, Image):
        raise InputError(f"{what} must be a medlens Image, got {type(image).__name__}")
    return image.array


def resolve_seed(
    image: Image, *, seed_index: Sequence[int] | None = None, seed_mm: Sequence[float] | None = None
) -> tuple[int, ...]:
    """The array index of a seed given as an index (array order) or an LPS point in mm.

    Raises :class:`InputError` when neither or both are given, or when the seed lies outside the image.
    """
    if (seed_index is None) == (seed_mm is None):
        raise InputError("give exactly one of seed_index (array order z, y, x) or seed_mm (LPS point x, y, z in mm)")
    if seed_mm is not None:
        pt = np.asarray(seed_mm, dtype=float)
        if pt.shape != (3,):
            raise InputError(f"seed_mm must be an LPS point with 3 coordinates in mm, got {list(np.ravel(pt))}")
        idx_f = image.world_to_index(pt)
        idx = tuple(round(float(v)) for v in idx_f)
        where = f"seed_mm={tuple(float(v) for v in pt)} (index {tuple(round(float(v), 1) for v in idx_f)})"
    else:
        if len(seed_index) != image.ndim:  # type: ignore[arg-type]
            raise InputError(
                f"seed_index must have {image.ndim} values in array order, got {list(seed_index)}"  # type: ignore[arg-type]
            )
        idx = tuple(int(v) for v in seed_index)  # type: ignore[union-attr]
        where = f"seed_index={idx}"
    if any(i < 0 or i >= s for i, s in zip(idx, image.shape, strict=True)):
        lo, hi = image.bounds_mm()
        raise InputError(
            f"{where} lies outside the image of shape {image.shape} (LPS extent {np.round(lo, 1).tolist()} to "
            f"{np.round(hi, 1).tolist()} mm); pick a seed inside the image"
        )
    return idx


def ellipsoid_structure(spacing_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """Boolean ellipsoidal structuring element of physical radius ``radius_mm`` for a voxel ``spacing_mm``.

    Along each axis the half-width is ``floor(radius_mm / spacing)`` voxels, so an axis with voxels
    larger than the radius is not dilated along it.
    """
    if not (radius_mm > 0 and math.isfinite(radius_mm)):
        raise InputError(f"radius_mm must be a positive number of millimetres, got {radius_mm}")
    sp = np.asarray(spacing_mm, dtype=float)
    half = [math.floor(radius_mm / s + 1e-9) for s in sp]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, sp, strict=True)], indexing="ij")
    r2 = sum(g**2 for g in grids)
    return np.asarray(r2 <= radius_mm**2 + 1e-9)


def _check_units(image: Image, units: str | None, what: str) -> None:
    if units is None:
        return
    have = image.meta.units
    if have in (Units.UNKNOWN, "", None):
        warnings.warn(
            f"{what}: the image's intensity units are unknown; assuming the thresholds are in {units}",
            MedlensWarning,
            stacklevel=3,
        )
        return
    if have != units:
        raise InputError(
            f"{what}: thresholds were given in {units} but the image ({image.meta.source or 'input'}) is in {have}; "
            "convert the image or give thresholds in its units"
        )


# ---- thresholds ---------------------------------------------------------------------------------
def otsu(image: Image, *, within: Image | None = None) -> Image:
    """Mask of the voxels above Otsu's threshold (:func:`skimage.filters.threshold_otsu`).

    ``within`` (a boolean mask on the same grid) restricts both the histogram and the result.
    The threshold, in the image's units, is stored in ``meta.extra["threshold"]``.
    """
    from skimage.filters import threshold_otsu

    arr = _require_image(image)
    sel = arr if within is None else arr[_within(image, within)]
    if sel.size == 0 or np.ptp(sel) == 0:
        raise InputError("otsu: the image (or the 'within' region) is empty or constant; there is nothing to separate")
    t = float(threshold_otsu(np.asarray(sel, dtype=float)))
    m = arr > t
    if within is not None:
        m &= within.array
    out = _mask_image(image, m, "otsu")
    return out.with_meta(extra={"threshold": t})


def _within(image: Image, within: Image) -> np.ndarray:
    image.require_same_grid(within, what="'within' mask")
    return _require_mask(within, "within")


def multi_otsu(image: Image, *, classes: int = 3) -> Image:
    """Integer label image ``0..classes-1`` from multi-Otsu thresholds (:func:`skimage.filters.threshold_multiotsu`).

    The thresholds (image units) are in ``meta.extra["thresholds"]``.
    """
    from skimage.filters import threshold_multiotsu

    arr = _require_image(image)
    if not isinstance(classes, int) or classes < 2 or classes > 6:
        raise InputError(f"classes must be an integer from 2 to 6, got {classes!r}")
    if np.unique(arr[:: max(1, arr.size // 200000)]).size < classes:
        raise InputError(f"multi_otsu: the image has fewer distinct values than classes={classes}")
    ts = threshold_multiotsu(np.asarray(arr, dtype=float), classes=classes)
    labels = np.digitize(arr, ts).astype(np.uint8)
    return image.with_array(labels, op=f"multi_otsu(classes={classes})", units=Units.LABEL).with_meta(
        extra={"thresholds": [float(t) for t in ts]}
    )


def threshold(
    image: Image, *, lower: float | None = None, upper: float | None = None, units: str | None = None
) -> Image:
    """Mask of ``lower <= value <= upper`` (either bound may be omitted), in the image's units.

    ``units`` (e.g. ``"HU"`` or ``"SUVbw"``) states the units of the bounds; if the image's
    ``meta.units`` differ an :class:`InputError` is raised, so HU thresholds are never applied to a
    PET by mistake.
    """
    arr = _require_image(image)
    if lower is None and upper is None:
        raise InputError("threshold: give lower and/or upper (in the image's units)")
    if lower is not None and upper is not None and lower > upper:
        raise InputError(f"threshold: lower={lower} is above upper={upper}")
    _check_units(image, units, "threshold")
    m = np.ones(arr.shape, bool)
    if lower is not None:
        m &= arr >= lower
    if upper is not None:
        m &= arr <= upper
    return _mask_image(image, m, f"threshold(lower={lower}, upper={upper})")


def _ball_region(image: Image, center: tuple[int, ...], radius_mm: float) -> np.ndarray:
    sp = np.asarray(image.spacing)
    grids = np.ogrid[tuple(slice(0, s) for s in image.shape)]
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, sp, strict=True))
    return np.asarray(r2 <= radius_mm**2)


def suv_threshold(
    image: Image,
    *,
    fraction: float = 0.4,
    seed_mm: Sequence[float] | None = None,
    seed_index: Sequence[int] | None = None,
    region: Image | None = None,
    search_radius_mm: float = 15.0,
    min_suvmax: float = 2.0,
) -> Image:
    """PET lesion mask at a fixed fraction of the local SUVmax (e.g. 40 % or 50 %).

    The SUVmax is searched inside a sphere of ``search_radius_mm`` around the seed (or inside
    ``region``, a boolean mask such as a box drawn around the lesion); the mask is the connected
    component (face connectivity) of ``SUV >= fraction * SUVmax`` that contains the SUVmax voxel,
    limited to ``region`` when one is given.

    Parameters
    ----------
    image
        PET in SUVbw (``meta.units == "SUVbw"``; other units raise :class:`InputError`).
    fraction
        Fraction of SUVmax, in (0, 1).
    seed_mm, seed_index
        The seed (LPS mm or array index); exactly one of these or ``region``.
    region
        Boolean mask bounding the lesion (alternative to a seed).
    search_radius_mm
        Radius of the sphere searched for the SUVmax around a seed, in mm.
    min_suvmax
        A local SUVmax below this (SUVbw) means the seed is in background: :class:`InputError`.
    """
    arr = _require_image(image)
    if image.meta.units not in (Units.SUVBW, Units.UNKNOWN, ""):
        raise InputError(
            f"suv_threshold needs a PET in {Units.SUVBW}; the image ({image.meta.source or 'input'}) is in "
            f"{image.meta.units}. Convert it to SUV first"
        )
    if not (0.0 < fraction < 1.0):
        raise InputError(f"fraction must be between 0 and 1 (e.g. 0.4 for 40 % of SUVmax), got {fraction}")
    if region is not None:
        if seed_mm is not None or seed_index is not None:
            raise InputError("suv_threshold: give a seed or a region, not both")
        search = _within(image, region)
        if not search.any():
            raise InputError("suv_threshold: the region mask is empty")
    else:
        seed = resolve_seed(image, seed_index=seed_index, seed_mm=seed_mm)
        search = _ball_region(image, seed, search_radius_mm)
    vals = np.where(search, arr, -np.inf)
    peak = np.unravel_index(int(np.argmax(vals)), arr.shape)
    suvmax = float(arr[peak])
    if suvmax < min_suvmax:
        raise InputError(
            f"suv_threshold: the SUVmax near the seed is {suvmax:.2f}, below min_suvmax={min_suvmax}; the seed "
            "lies in background, not in an FDG-avid lesion"
        )
    cand = arr >= fraction * suvmax
    if region is not None:
        cand &= search
    lab, _ = ndimage.label(cand)
    m = lab == lab[peak]
    out = _mask_image(image, m, f"suv_threshold(fraction={fraction})")
    return out.with_meta(extra={"suvmax": suvmax, "suvmax_index": [int(i) for i in peak]})


# ---- region growing -----------------------------------------------------------------------------
def _grow(in_range: np.ndarray, seed: tuple[int, ...], connectivity: int) -> np.ndarray:
    lab, _ = ndimage.label(in_range, structure=ndimage.generate_binary_structure(in_range.ndim, connectivity))
    if lab[seed] == 0:
        return np.zeros(in_range.shape, bool)
    return lab == lab[seed]


def _in_range(arr: np.ndarray, lo: float, hi: float, allowed: np.ndarray | None) -> np.ndarray:
    r = (arr >= lo) & (arr <= hi)
    if allowed is not None:
        r &= allowed
    return r


def _check_leak(m: np.ndarray, max_fraction: float, what: str) -> None:
    frac = float(m.mean())
    if frac > max_fraction:
        raise ProcessingError(
            f"{what}: the region grew into {frac:.0%} of the image (limit max_fraction={max_fraction}); the seed is "
            "probably in background or the tolerance is too wide"
        )


def region_grow(
    image: Image,
    *,
    seed_index: Sequence[int] | None = None,
    seed_mm: Sequence[float] | None = None,
    tolerance: float | None = None,
    lower: float | None = None,
    upper: float | None = None,
    connectivity: int = 1,
    max_fraction: float = 0.5,
    within: Image | None = None,
) -> Image:
    """3D seeded region growing: voxels connected to the seed whose value lies in an intensity range.

    The range is ``[seed value - tolerance, seed value + tolerance]`` or ``[lower, upper]`` (image
    units). ``connectivity`` 1 = faces (6 neighbours in 3D), 2 = faces+edges, 3 = all 26. The result
    is the connected component of the in-range voxels that holds the seed, so it never leaves the
    range nor that component.

    Raises :class:`InputError` for a seed outside the image or outside the range, and
    :class:`ProcessingError` when the region covers more than ``max_fraction`` of the image (a seed in
    background leaking everywhere). ``within`` (a boolean mask) confines the growth.
    """
    arr = _require_image(image)
    seed = resolve_seed(image, seed_index=seed_index, seed_mm=seed_mm)
    allowed = _within(image, within) if within is not None else None
    if connectivity not in range(1, image.ndim + 1):
        raise InputError(f"connectivity must be 1..{image.ndim}, got {connectivity}")
    v = float(arr[seed])
    if tolerance is not None:
        if lower is not None or upper is not None:
            raise InputError("region_grow: give tolerance or lower/upper, not both")
        if tolerance < 0:
            raise InputError(f"tolerance must be >= 0 (image units), got {tolerance}")
        lo, hi = v - tolerance, v + tolerance
    else:
        if lower is None and upper is None:
            raise InputError("region_grow: give tolerance (image units) or lower/upper bounds")
        lo = -np.inf if lower is None else float(lower)
        hi = np.inf if upper is None else float(upper)
        if not (lo <= v <= hi):
            raise InputError(
                f"region_grow: the seed value {v:g} {image.meta.units} is outside [{lo:g}, {hi:g}]; the seed lies in "
                "background for this range"
            )
    m = _grow(_in_range(arr, lo, hi, allowed), seed, connectivity)
    _check_leak(m, max_fraction, "region_grow")
    return _mask_image(image, m, f"region_grow(range=[{lo:g}, {hi:g}])").with_meta(extra={"range": [lo, hi]})


def confidence_connected(
    image: Image,
    *,
    seed_index: Sequence[int] | None = None,
    seed_mm: Sequence[float] | None = None,
    multiplier: float = 2.5,
    iterations: int = 4,
    initial_radius_vox: int = 1,
    connectivity: int = 1,
    max_fraction: float = 0.5,
    within: Image | None = None,
) -> Image:
    """Statistics-adaptive region growing ("confidence connected").

    Start with the mean and standard deviation of a cube of half-width ``initial_radius_vox``
    around the seed; grow the connected region of voxels within ``mean ± multiplier·sd``; recompute
    mean and sd over that region and grow again, ``iterations`` times (the same scheme as ITK's
    ConfidenceConnectedImageFilter). The final range is stored in ``meta.extra["range"]``.
    ``within`` (a boolean mask) confines the growth.
    """
    arr = _require_image(image)
    seed = resolve_seed(image, seed_index=seed_index, seed_mm=seed_mm)
    allowed = _within(image, within) if within is not None else None
    if multiplier <= 0:
        raise InputError(f"multiplier must be > 0, got {multiplier}")
    if iterations < 0:
        raise InputError(f"iterations must be >= 0, got {iterations}")
    sl = tuple(slice(max(0, c - initial_radius_vox), c + initial_radius_vox + 1) for c in seed)
    patch = np.asarray(arr[sl], dtype=float)
    mean, sd = float(patch.mean()), float(patch.std())
    m = np.zeros(arr.shape, bool)
    lo = hi = mean
    for _ in range(iterations + 1):
        lo, hi = mean - multiplier * sd, mean + multiplier * sd
        # the seed itself is always inside the range (as in ITK)
        lo, hi = min(lo, float(arr[seed])), max(hi, float(arr[seed]))
        m = _grow(_in_range(arr, lo, hi, allowed), seed, connectivity)
        vals = np.asarray(arr[m], dtype=float)
        if vals.size < 2:
            break
        mean, sd = float(vals.mean()), float(vals.std())
    _check_leak(m, max_fraction, "confidence_connected")
    return _mask_image(image, m, f"confidence_connected(multiplier={multiplier})").with_meta(extra={"range": [lo, hi]})


# ---- components and morphology ------------------------------------------------------------------
def connected_components(mask: Image, *, connectivity: int = 1) -> Image:
    """Integer label image (0 background, 1..n components, largest first)."""
    a = _require_mask(mask)
    lab, n = ndimage.label(a, structure=ndimage.generate_binary_structure(a.ndim, connectivity))
    if n:
        sizes = np.bincount(lab.ravel())[1:]
        order = np.argsort(-sizes, kind="stable")
        remap = np.zeros(n + 1, np.int32)
        remap[order + 1] = np.arange(1, n + 1)
        lab = remap[lab]
    return mask.with_array(lab.astype(np.int32), op="connected_components", units=Units.LABEL)


def largest_component(mask: Image, *, connectivity: int = 1) -> Image:
    """The largest connected component of a mask."""
    lab = connected_components(mask, connectivity=connectivity).array
    return _mask_image(mask, lab == 1, "largest_component")


def fill_holes(mask: Image, *, per_slice: bool = False) -> Image:
    """Fill enclosed holes (3D, or per axial slice along axis 0 with ``per_slice=True``)."""
    a = _require_mask(mask)
    if per_slice and a.ndim == 3:
        out = np.stack([ndimage.binary_fill_holes(s) for s in a])
    else:
        out = ndimage.binary_fill_holes(a)
    return mask.with_array(np.asarray(out, bool), op="fill_holes", units=Units.MASK)


def _morph(mask: Image, radius_mm: float, fn, name: str) -> Image:
    a = _require_mask(mask)
    st = ellipsoid_structure(mask.spacing, radius_mm)
    pad = [(h // 2, h // 2) for h in st.shape]
    # pad so that closing near the border behaves as if the outside continued as background
    out = fn(np.pad(a, pad), structure=st)
    out = out[tuple(slice(p, p + s) for (p, _), s in zip(pad, a.shape, strict=True))]
    return mask.with_array(np.asarray(out, bool), op=f"{name}(radius_mm={radius_mm})", units=Units.MASK)


def opening(mask: Image, *, radius_mm: float) -> Image:
    """Morphological opening with an ellipsoid of physical radius ``radius_mm``."""
    return _morph(mask, radius_mm, ndimage.binary_opening, "opening")


def closing(mask: Image, *, radius_mm: float) -> Image:
    """Morphological closing with an ellipsoid of physical radius ``radius_mm``."""
    return _morph(mask, radius_mm, ndimage.binary_closing, "closing")


def dilate(mask: Image, *, radius_mm: float) -> Image:
    """Binary dilation with an ellipsoid of physical radius ``radius_mm``."""
    return _morph(mask, radius_mm, ndimage.binary_dilation, "dilate")


def erode(mask: Image, *, radius_mm: float) -> Image:
    """Binary erosion with an ellipsoid of physical radius ``radius_mm``."""
    return _morph(mask, radius_mm, ndimage.binary_erosion, "erode")
