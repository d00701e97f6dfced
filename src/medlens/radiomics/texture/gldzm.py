"""Grey level distance zone matrix (GLDZM, IBSI ``dzm_``) with 2D, 2.5D and 3D aggregation.

Zones come from the intensity mask (as for GLSZM); the distance to the ROI border comes from the
morphological mask: 1 for voxels on the border, Manhattan (4-connected in 2D, 6-connected in 3D) by default
as IBSI specifies, Chebyshev on request. A zone's distance is the minimum over its voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medlens.core.errors import InputError
from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, nanmean_rows, zone_features
from medlens.radiomics.texture.glszm import _per_slice, label_zones

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
    """Distance (voxels) of each mask voxel to the mask border: 1 on the border, 0 outside; (z, y, x) int."""
    if metric.lower() not in _METRICS:
        raise InputError(f"texture: gldzm distance metric {metric!r} unknown; use manhattan or chebyshev")
    kind = _METRICS[metric.lower()]
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    if three_d:
        dist = ndimage.distance_transform_cdt(m, metric=kind)
    else:
        dist = np.zeros(m.shape, dtype=np.int64)
        for z in range(1, m.shape[0] - 1):
            if m[z].any():
                dist[z] = ndimage.distance_transform_cdt(m[z], metric=kind)
    return np.asarray(dist[1:-1, 1:-1, 1:-1], dtype=np.int64)


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

    Column j holds zones at distance j+1; ``out["_n_voxels_2D"]`` is the ROI voxel count per slice.
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    morph = roi if morph_roi is None else as3d(np.zeros(np.shape(morph_roi)), morph_roi)[1]
    # crop both masks to the union bounding box so the distance map sees the whole morphological ROI
    union = roi | morph
    g, mm = crop_pad(np.where(roi, grey, 0), union, 0, morph)
    g = np.where(g > 0, g, 0)
    out: dict[str, np.ndarray] = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if name == "2D" and not ("2D" in dims or "2_5D" in dims):
            continue
        if name == "3D" and "3D" not in dims:
            continue
        dist = border_distance(mm, three_d=three_d, metric=metric)
        lab, lev, _ = label_zones(g, n_levels, three_d, zone_cache)
        n = lev.size - 1
        zd = np.zeros(n + 1, dtype=np.int64)
        if n:
            d = np.where(dist > 0, dist, np.iinfo(np.int64).max // 4)  # intensity voxels outside morph mask: ignore
            zd[1:] = np.asarray(ndimage.minimum(d, lab, np.arange(1, n + 1)), dtype=np.int64)
            zd[zd > d.size] = 1
        ncol = int(zd.max()) if n else 1
        if name == "2D":
            out["2D"] = _per_slice(lab, lev, zd, g.shape[0], n_levels, ncol)
        else:
            key = (lev[1:] - 1) * ncol + zd[1:] - 1
            out["3D"] = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
    out["_n_voxels_2D"] = (g > 0).sum(axis=(1, 2))
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
    dims = dims_of(dims)
    m = gldzm_matrices(grey, roi, morph_roi, n_levels=n_levels, dims=dims, metric=metric, zone_cache=zone_cache)
    nv = m["_n_voxels_2D"]
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        rows = [zone_features(s, float(nv[z]), DZM_NAMES) for z, s in enumerate(m["2D"]) if s.any()]
        out["2D"] = nanmean_rows(rows)
    if "2_5D" in dims:
        out["2_5D"] = zone_features(m["2D"].sum(axis=0), float(nv.sum()), DZM_NAMES)
    if "3D" in dims:
        out["3D"] = zone_features(m["3D"], float(nv.sum()), DZM_NAMES)
    return {f"dzm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
