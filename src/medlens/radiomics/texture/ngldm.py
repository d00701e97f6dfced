"""Neighbouring grey level dependence matrix (NGLDM, IBSI ``ngl_``) with 2D, 2.5D and 3D aggregation.

Every ROI voxel contributes one neighbourhood; its dependence is 1 (itself) plus the number of ROI voxels
within Chebyshev distance ``distance`` (in-plane for 2D) whose level differs by at most ``alpha``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import (
    check_distance,
    crop_levels,
    dims_of,
    nanmean_rows,
    zone_features,
    zone_features_stack,
)

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
    pad = check_distance(distance, "ngldm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="ngldm")
    return _matrices(gp, pad, n_levels=int(n_levels), dims=dims_of(dims), distance=int(distance), alpha=int(alpha))


def _matrices(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], distance: int, alpha: int
) -> dict[str, np.ndarray]:
    """:func:`ngldm_matrices` of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``).

    One compiled pass gives the 2D (in-plane) and 3D neighbourhoods.
    """
    from medlens.radiomics.texture._kernels import ngldm_counts

    want2d = "2D" in dims or "2_5D" in dims
    want3d = "3D" in dims
    side = 2 * max(distance, 0) + 1
    m2 = np.zeros((gp.shape[0] - 2 * pad if want2d else 0, n_levels, side**2), dtype=np.int64)
    m3 = np.zeros((n_levels if want3d else 0, side**3), dtype=np.int64)
    max2, max3 = ngldm_counts(gp, pad, distance, alpha, m2, m3)
    out: dict[str, np.ndarray] = {}
    if want2d:
        out["2D"] = np.ascontiguousarray(m2[:, :, : max(int(max2), 1)])
    if want3d:
        out["3D"] = np.ascontiguousarray(m3[:, : max(int(max3), 1)])
    return out


def _feat(m: np.ndarray) -> dict[str, float]:
    return zone_features(m, float(m.sum()), NGL_NAMES, energy=True)


def ngldm_features(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",), distance: int = 1, alpha: int = 0
) -> dict[str, float]:
    """NGLDM features keyed by IBSI tag (``ngl_<name>_<2D|2_5D|3D>``)."""
    pad = check_distance(distance, "ngldm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="ngldm")
    return _features(gp, pad, n_levels=int(n_levels), dims=dims_of(dims), distance=int(distance), alpha=int(alpha))


def _features(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], distance: int, alpha: int
) -> dict[str, float]:
    """:func:`ngldm_features` of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``)."""
    m = _matrices(gp, pad, n_levels=n_levels, dims=dims, distance=distance, alpha=alpha)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        s = m["2D"][m["2D"].any(axis=(1, 2))]  # slices with neighbourhoods, each as _feat (vectorised)
        out["2D"] = nanmean_rows(zone_features_stack(s, s.sum(axis=(1, 2)), NGL_NAMES, energy=True))
    if "2_5D" in dims:
        out["2_5D"] = _feat(m["2D"].sum(axis=0))
    if "3D" in dims:
        out["3D"] = _feat(m["3D"])
    return {f"ngl_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
