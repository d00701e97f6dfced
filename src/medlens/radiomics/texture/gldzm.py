"""Grey level distance zone matrix (GLDZM, IBSI ``dzm_``) with 2D, 2.5D and 3D aggregation.

Zones come from the intensity mask (as for GLSZM); the distance to the ROI border comes from the
morphological mask: 1 for voxels on the border, Manhattan (4-connected in 2D, 6-connected in 3D) by default
as IBSI specifies, Chebyshev on request. A zone's distance is the minimum over its voxels (inside the
morphological mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.radiomics.texture._common import (
    as3d,
    bbox,
    check_levels,
    dims_of,
    interior,
    nanmean_rows,
    pad_crop,
    zone_features,
    zone_features_stack,
)
from medlens.radiomics.texture.glszm import _per_slice, _zones

__all__ = ["DZM_NAMES", "border_distance", "gldzm_features", "gldzm_matrices"]

DZM_NAMES = {
    "s": "sde",
    "l": "lde",
    "lg": "lgze",
    "hg": "hgze",
    "slg": "sdlge",
    "shg": "sdhge",
    "llg": "ldlge",
    "lhg": "ldhge",
    "glnu": "glnu",
    "glnu_norm": "glnu_norm",
    "jnu": "zdnu",
    "jnu_norm": "zdnu_norm",
    "perc": "z_perc",
    "gl_var": "gl_var",
    "j_var": "zd_var",
    "j_entr": "zd_entr",
}

_METRICS = {
    "manhattan": "taxicab",
    "taxicab": "taxicab",
    "cityblock": "taxicab",
    "chebyshev": "chessboard",
    "chessboard": "chessboard",
}


def border_distance(mask: np.ndarray, *, three_d: bool, metric: str = "manhattan") -> np.ndarray:
    """Distance (voxels) of each mask voxel to the mask border: 1 on the border, 0 outside; (z, y, x) int64.

    ``three_d=False`` measures within each slice. Voxels beyond the array edge count as outside the mask. Exact
    city-block (``manhattan``: 4-/6-connected steps) or chessboard (``chebyshev``: 8-/26-connected) distance, by
    a compiled two-pass raster scan (the values of ``scipy.ndimage.distance_transform_cdt`` on the zero-padded
    mask). A 2D mask is treated as one slice and the result has its shape.
    """
    if metric.lower() not in _METRICS:
        raise InputError(f"texture: gldzm distance metric {metric!r} unknown; use manhattan or chebyshev")
    from medlens.radiomics.texture._kernels import border_distance_2d, border_distance_3d

    chebyshev = _METRICS[metric.lower()] == "chessboard"
    m = np.asarray(mask, dtype=bool)
    if m.ndim not in (2, 3):
        raise InputError(f"texture: gldzm border_distance needs a 2D or 3D mask, got shape {m.shape}")
    # writable C-order: a read-only array (e.g. an Image's) would make numba compile a second specialisation
    m3 = np.require(m[None] if m.ndim == 2 else m, requirements=["C", "W"])
    dist = border_distance_3d(m3, chebyshev) if three_d else border_distance_2d(m3, chebyshev)
    return dist[0] if m.ndim == 2 else dist


def _prepare(
    grey: np.ndarray, roi: np.ndarray, morph_roi: np.ndarray | None, n_levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """(grey, morph) cropped to the bounding box of both masks; grey int64 with 0 outside the intensity ROI,
    zero-padded by 1 voxel (:func:`crop_levels` layout); morph bool, not padded."""
    grey, roi = as3d(grey, roi)
    if morph_roi is None:
        morph = roi
    else:
        morph = np.asarray(morph_roi, dtype=bool)
        morph = morph[None] if morph.ndim == 2 else morph
        if morph.shape != roi.shape:
            raise InputError(f"texture gldzm: morph_roi shape {np.shape(morph_roi)} differs from roi shape {roi.shape}")
    union = roi | morph
    if not union.any():
        raise InputError("texture gldzm: the ROI is empty; give a mask with at least one voxel")
    box = bbox(union)
    gp = pad_crop(grey, roi, box, 1)
    gp[gp < 0] = 0  # negative levels count as outside the ROI, as before
    check_levels(gp, n_levels, family="gldzm")
    return gp, np.ascontiguousarray(morph[box])


def gldzm_matrices(
    grey: np.ndarray,
    roi: np.ndarray,
    morph_roi: np.ndarray | None = None,
    *,
    n_levels: int,
    dims: Any = ("2D", "3D"),
    metric: str = "manhattan",
    zone_cache: dict | None = None,
) -> dict[str, np.ndarray]:
    """Raw distance-zone counts: ``out["2D"]`` (n_slices, Ng, Dmax), ``out["3D"]`` (Ng, Dmax).

    Column j holds zones at distance j+1; ``out["_n_voxels_2D"]`` is the ROI voxel count per slice. Both masks
    are cropped to the bounding box of their union, so the distance map sees the whole morphological ROI.
    """
    gp, mm = _prepare(grey, roi, morph_roi, int(n_levels))
    return _matrices(gp, 1, mm, n_levels=int(n_levels), dims=dims_of(dims), metric=metric, zone_cache=zone_cache)


def _matrices(
    gp: np.ndarray,
    pad: int,
    mm: np.ndarray,
    *,
    n_levels: int,
    dims: tuple[str, ...],
    metric: str,
    zone_cache: dict | None,
) -> dict[str, np.ndarray]:
    """:func:`gldzm_matrices` of prepared arrays: ``gp`` padded by ``pad`` >= 1, ``mm`` its unpadded grid."""
    from medlens.radiomics.texture._kernels import zone_min_distance

    out: dict[str, np.ndarray] = {}
    nz = gp.shape[0] - 2 * pad
    for name, three_d in (("2D", False), ("3D", True)):
        if name == "2D" and not ("2D" in dims or "2_5D" in dims):
            continue
        if name == "3D" and "3D" not in dims:
            continue
        dist = border_distance(mm, three_d=three_d, metric=metric)
        lab, lev, _, zslice = _zones(gp, pad, three_d, zone_cache)
        n = lev.size - 1
        # intensity voxels outside the morphological mask (distance 0) are ignored; a zone with none inside gets 1
        zd = zone_min_distance(lab, pad, dist, n)
        ncol = int(zd.max()) if n else 1
        if name == "2D":
            out["2D"] = _per_slice(lev, zd, zslice, nz, n_levels, ncol)
        else:
            key = (lev[1:] - 1) * ncol + zd[1:] - 1
            out["3D"] = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
    out["_n_voxels_2D"] = (interior(gp, pad) > 0).sum(axis=(1, 2))
    return out


def gldzm_features(
    grey: np.ndarray,
    roi: np.ndarray,
    morph_roi: np.ndarray | None = None,
    *,
    n_levels: int,
    dims: Any = ("3D",),
    metric: str = "manhattan",
    zone_cache: dict | None = None,
) -> dict[str, float]:
    """GLDZM features keyed by IBSI tag (``dzm_<name>_<2D|2_5D|3D>``)."""
    gp, mm = _prepare(grey, roi, morph_roi, int(n_levels))
    return _features(gp, 1, mm, n_levels=int(n_levels), dims=dims_of(dims), metric=metric, zone_cache=zone_cache)


def _features(
    gp: np.ndarray,
    pad: int,
    mm: np.ndarray,
    *,
    n_levels: int,
    dims: tuple[str, ...],
    metric: str,
    zone_cache: dict | None,
) -> dict[str, float]:
    """:func:`gldzm_features` of prepared arrays (see :func:`_matrices`)."""
    m = _matrices(gp, pad, mm, n_levels=n_levels, dims=dims, metric=metric, zone_cache=zone_cache)
    nv = m["_n_voxels_2D"]
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        keep = m["2D"].any(axis=(1, 2))  # slices with zones, each as zone_features (vectorised)
        out["2D"] = nanmean_rows(zone_features_stack(m["2D"][keep], nv[keep], DZM_NAMES))
    if "2_5D" in dims:
        out["2_5D"] = zone_features(m["2D"].sum(axis=0), float(nv.sum()), DZM_NAMES)
    if "3D" in dims:
        out["3D"] = zone_features(m["3D"], float(nv.sum()), DZM_NAMES)
    return {f"dzm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
