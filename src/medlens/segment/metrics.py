"""Overlap and surface-distance metrics between two masks, in millimetres.

All functions take two boolean mask :class:`~medlens.core.image.Image` objects on the same grid
(or plain boolean arrays plus ``spacing_mm``) and use the voxel spacing, so anisotropic voxels are
measured in physical units.

Surface voxels are the mask voxels removed by one binary erosion with the face-connected
(6-neighbour in 3D) structuring element; the distance from each surface voxel of one mask to the
nearest surface voxel of the other is the Euclidean distance transform of the other surface's
complement, computed with ``sampling=spacing`` (:func:`scipy.ndimage.distance_transform_edt`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medlens.core.errors import InputError, MedlensWarning
from medlens.core.image import Image

__all__ = [
    "EmptyMaskWarning",
    "assd_mm",
    "dice",
    "evaluate_case",
    "hausdorff95_mm",
    "jaccard",
    "summarise",
    "volume_difference",
]


class EmptyMaskWarning(MedlensWarning):
    """A mask is empty, so a surface distance is undefined (reported as NaN)."""


def _pair(pred: Image | np.ndarray, truth: Image | np.ndarray, spacing_mm: Sequence[float] | None):
    if isinstance(pred, Image) and isinstance(truth, Image):
        truth.require_same_grid(pred, what="predicted mask")
        sp = tuple(pred.spacing) if spacing_mm is None else tuple(spacing_mm)
        a, b = pred.array, truth.array
    else:
        a = pred.array if isinstance(pred, Image) else np.asarray(pred)
        b = truth.array if isinstance(truth, Image) else np.asarray(truth)
        if spacing_mm is None:
            sp_src = pred if isinstance(pred, Image) else truth if isinstance(truth, Image) else None
            sp = tuple(sp_src.spacing) if sp_src is not None else (1.0,) * a.ndim
        else:
            sp = tuple(float(s) for s in spacing_mm)
        if a.shape != b.shape:
            raise InputError(f"the predicted mask has shape {a.shape} but the reference mask has shape {b.shape}")
    for name, arr in (("predicted mask", a), ("reference mask", b)):
        if arr.dtype != np.bool_:
            raise InputError(
                f"the {name} must be boolean, got dtype {arr.dtype}; threshold or compare it first (e.g. mask > 0)"
            )
    if len(sp) != a.ndim or any(not (s > 0) for s in sp):
        raise InputError(f"spacing_mm must hold {a.ndim} positive values in array axis order, got {list(sp)}")
    return np.asarray(a), np.asarray(b), sp


def dice(pred: Image | np.ndarray, truth: Image | np.ndarray) -> float:
    """Dice similarity coefficient ``2|A∩B| / (|A| + |B|)``; 1.0 when both masks are empty."""
    a, b, _ = _pair(pred, truth, None)
    s = int(a.sum()) + int(b.sum())
    if s == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / s


def jaccard(pred: Image | np.ndarray, truth: Image | np.ndarray) -> float:
    """Jaccard index ``|A∩B| / |A∪B|``; 1.0 when both masks are empty."""
    a, b, _ = _pair(pred, truth, None)
    u = int(np.logical_or(a, b).sum())
    if u == 0:
        return 1.0
    return int(np.logical_and(a, b).sum()) / u


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=0 so voxels on the array border count as surface.
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1), border_value=0)
    return mask & ~eroded


def _surface_distances(a: np.ndarray, b: np.ndarray, sp: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    sa, sb = _surface(a), _surface(b)
    dt_b = ndimage.distance_transform_edt(~sb, sampling=sp)
    dt_a = ndimage.distance_transform_edt(~sa, sampling=sp)
    return dt_b[sa], dt_a[sb]


def _empty_check(a: np.ndarray, b: np.ndarray, what: str) -> bool:
    if not a.any() or not b.any():
        if a.any() or b.any():
            warnings.warn(
                f"{what}: one mask is empty ({'predicted' if not a.any() else 'reference'}), the distance is "
                "undefined and reported as NaN",
                EmptyMaskWarning,
                stacklevel=3,
            )
        return True
    return False


def hausdorff95_mm(
    pred: Image | np.ndarray, truth: Image | np.ndarray, *, spacing_mm: Sequence[float] | None = None
) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask surfaces, in mm.

    The surface-to-surface distances of both directions are pooled and their 95th percentile
    (linear interpolation, :func:`numpy.percentile`) is returned. 0.0 when both masks are empty,
    NaN (with :class:`EmptyMaskWarning`) when only one is.
    """
    a, b, sp = _pair(pred, truth, spacing_mm)
    if _empty_check(a, b, "HD95"):
        return 0.0 if not (a.any() or b.any()) else math.nan
    d_ab, d_ba = _surface_distances(a, b, sp)
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def assd_mm(pred: Image | np.ndarray, truth: Image | np.ndarray, *, spacing_mm: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance in mm: mean of all surface-to-surface distances, both directions."""
    a, b, sp = _pair(pred, truth, spacing_mm)
    if _empty_check(a, b, "ASSD"):
        return 0.0 if not (a.any() or b.any()) else math.nan
    d_ab, d_ba = _surface_distances(a, b, sp)
    return float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))


def volume_difference(
    pred: Image | np.ndarray, truth: Image | np.ndarray, *, spacing_mm: Sequence[float] | None = None
) -> tuple[float, float]:
    """Volume difference ``V(pred) - V(truth)`` in mm^3 and in percent of ``V(truth)`` (NaN if it is 0)."""
    a, b, sp = _pair(pred, truth, spacing_mm)
    vox = float(np.prod(sp))
    va, vb = float(a.sum()) * vox, float(b.sum()) * vox
    pct = 100.0 * (va - vb) / vb if vb > 0 else math.nan
    return va - vb, pct


def evaluate_case(
    pred: Image | np.ndarray, truth: Image | np.ndarray, *, spacing_mm: Sequence[float] | None = None
) -> dict[str, float]:
    """Every metric for one case: ``dice``, ``jaccard``, ``hd95_mm``, ``assd_mm``, ``volume_diff_mm3``,
    ``volume_diff_pct``, ``volume_pred_mm3``, ``volume_truth_mm3``."""
    a, b, sp = _pair(pred, truth, spacing_mm)
    vd, vp = volume_difference(a, b, spacing_mm=sp)
    vox = float(np.prod(sp))
    return {
        "dice": dice(a, b),
        "jaccard": jaccard(a, b),
        "hd95_mm": hausdorff95_mm(a, b, spacing_mm=sp),
        "assd_mm": assd_mm(a, b, spacing_mm=sp),
        "volume_diff_mm3": vd,
        "volume_diff_pct": vp,
        "volume_pred_mm3": float(a.sum()) * vox,
        "volume_truth_mm3": float(b.sum()) * vox,
    }


def summarise(cases: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation (ddof=1), median and count per numeric metric, NaNs skipped.

    Returns ``{metric: {"mean": ..., "sd": ..., "median": ..., "n": ...}}``.
    """
    rows = list(cases)
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in keys and isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
                keys.append(k)
    out: dict[str, dict[str, float]] = {}
    for k in keys:
        vals = np.array([float(r[k]) for r in rows if k in r], dtype=float)
        vals = vals[np.isfinite(vals)]
        n = int(vals.size)
        out[k] = {
            "mean": float(vals.mean()) if n else math.nan,
            "sd": float(vals.std(ddof=1)) if n > 1 else math.nan,
            "median": float(np.median(vals)) if n else math.nan,
            "n": float(n),
        }
    return out
