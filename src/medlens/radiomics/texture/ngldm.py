"""Neighbouring grey level dependence matrix (NGLDM, IBSI ``ngl_``) with 2D, 2.5D and 3D aggregation.

Every ROI voxel contributes one neighbourhood; its dependence is 1 (itself) plus the number of ROI voxels
within Chebyshev distance ``distance`` (in-plane for 2D) whose level differs by at most ``alpha``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, nanmean_rows, neighbourhood, zone_features

__all__ = ["NGL_NAMES", "ngldm_features", "ngldm_matrices"]

NGL_NAMES = {
    "s": "lde", "l": "hde", "lg": "lgce", "hg": "hgce", "slg": "ldlge", "shg": "ldhge", "llg": "hdlge",
    "lhg": "hdhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "dcnu", "jnu_norm": "dcnu_norm",
    "perc": "dc_perc", "gl_var": "gl_var", "j_var": "dc_var", "j_entr": "dc_entr", "energy": "dc_energy",
}  # fmt: skip


def ngldm_matrices(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("2D", "3D"), distance: int = 1, alpha: int = 0
) -> dict[str, np.ndarray]:
    """Raw dependence counts: ``out["2D"]`` (n_slices, Ng, Nmax) and ``out["3D"]`` (Ng, Nmax).

    Column j holds neighbourhoods with dependence j+1.
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    g = crop_pad(grey, roi, distance)[0]
    nz, ny, nx = g.shape
    flat = g.ravel()
    idx = np.flatnonzero(flat)
    lev = flat[idx]
    z = idx // (ny * nx) - distance
    out: dict[str, np.ndarray] = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        dep = np.ones(idx.size, dtype=np.int64)
        for dz, dy, dx in neighbourhood(distance, three_d):
            nb = flat[idx + (dz * ny + dy) * nx + dx]
            dep += (nb > 0) & (np.abs(nb - lev) <= alpha)
        ncol = int(dep.max()) if dep.size else 1
        if name == "2D":
            nslice = nz - 2 * distance
            key = (z * n_levels + lev - 1) * ncol + dep - 1
            out["2D"] = np.bincount(key, minlength=nslice * n_levels * ncol).reshape(nslice, n_levels, ncol)
        else:
            key = (lev - 1) * ncol + dep - 1
            out["3D"] = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
    return out


def _feat(m: np.ndarray) -> dict[str, float]:
    return zone_features(m, float(m.sum()), NGL_NAMES, energy=True)


def ngldm_features(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",), distance: int = 1, alpha: int = 0
) -> dict[str, float]:
    """NGLDM features keyed by IBSI tag (``ngl_<name>_<2D|2_5D|3D>``)."""
    dims = dims_of(dims)
    m = ngldm_matrices(grey, roi, n_levels=n_levels, dims=dims, distance=distance, alpha=alpha)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        out["2D"] = nanmean_rows([_feat(s) for s in m["2D"] if s.any()])
    if "2_5D" in dims:
        out["2_5D"] = _feat(m["2D"].sum(axis=0))
    if "3D" in dims:
        out["3D"] = _feat(m["3D"])
    return {f"ngl_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
