"""Neighbourhood grey tone difference matrix (NGTDM, IBSI ``ngt_``) with 2D, 2.5D and 3D aggregation.

The neighbourhood of a voxel is every ROI voxel within Chebyshev distance ``distance`` (in-plane for 2D),
centre excluded; voxels without any neighbour in the ROI are left out (IBSI ``N_v,c``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import check_distance, crop_levels, dims_of, nanmean_rows

__all__ = ["NGTDM_FEATURES", "ngtdm_features", "ngtdm_from_matrix", "ngtdm_matrices"]

NGTDM_FEATURES = ("coarseness", "contrast", "busyness", "complexity", "strength")
COARSENESS_MAX = 1.0e6  # IBSI: coarseness is capped at 10^6 when sum(p_i s_i) = 0


def ngtdm_matrices(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("2D", "3D"), distance: int = 1
) -> dict[str, np.ndarray]:
    """Per-level sums: ``out["2D"]`` (n_slices, Ng, 2) and ``out["3D"]`` (Ng, 2) with columns (n_i, s_i)."""
    pad = check_distance(distance, "ngtdm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="ngtdm")
    return _matrices(gp, pad, n_levels=int(n_levels), dims=dims_of(dims), distance=int(distance))


def _matrices(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], distance: int
) -> dict[str, np.ndarray]:
    """:func:`ngtdm_matrices` of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``).

    One compiled pass gives the 2D (in-plane) and 3D neighbourhoods.
    """
    from medlens.radiomics.texture._kernels import ngtdm_sums

    want2d = "2D" in dims or "2_5D" in dims
    want3d = "3D" in dims
    m2 = np.zeros((gp.shape[0] - 2 * pad if want2d else 0, n_levels, 2), dtype=np.float64)
    m3 = np.zeros((n_levels if want3d else 0, 2), dtype=np.float64)
    ngtdm_sums(gp, pad, distance, m2, m3)
    out: dict[str, np.ndarray] = {}
    if want2d:
        out["2D"] = m2
    if want3d:
        out["3D"] = m3
    return out


def ngtdm_from_matrix(m: np.ndarray) -> dict[str, float]:
    """NGTDM features from an (Ng, 2) array of (n_i, s_i)."""
    n_i = m[:, 0]
    s_i = m[:, 1]
    nvc = n_i.sum()
    if nvc <= 0:
        return {f: float("nan") for f in NGTDM_FEATURES}
    p = n_i / nvc
    lv = np.arange(1, m.shape[0] + 1, dtype=np.float64)
    present = p > 0
    ngp = int(present.sum())
    pp, sp, ip = p[present], s_i[present], lv[present]
    ps = float((p * s_i).sum())
    dif = ip[:, None] - ip[None, :]
    with np.errstate(all="ignore"):
        coarse = COARSENESS_MAX if ps == 0 else min(1.0 / ps, COARSENESS_MAX)
        contrast = (
            float((pp[:, None] * pp[None, :] * dif**2).sum() / (ngp * (ngp - 1)) * s_i.sum() / nvc) if ngp > 1 else 0.0
        )
        den_b = float(np.abs(ip[:, None] * pp[:, None] - ip[None, :] * pp[None, :]).sum())
        busy = ps / den_b if den_b > 0 else 0.0
        q = pp * sp
        cplx = float((np.abs(dif) * (q[:, None] + q[None, :]) / (pp[:, None] + pp[None, :])).sum() / nvc)
        ssum = float(s_i.sum())
        strength = float(((pp[:, None] + pp[None, :]) * dif**2).sum() / ssum) if ssum > 0 else 0.0
    return {
        "coarseness": float(coarse),
        "contrast": contrast,
        "busyness": busy,
        "complexity": cplx,
        "strength": strength,
    }


def ngtdm_features(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",), distance: int = 1
) -> dict[str, float]:
    """NGTDM features keyed by IBSI tag (``ngt_<name>_<2D|2_5D|3D>``)."""
    pad = check_distance(distance, "ngtdm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="ngtdm")
    return _features(gp, pad, n_levels=int(n_levels), dims=dims_of(dims), distance=int(distance))


def _features(gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], distance: int) -> dict[str, float]:
    """:func:`ngtdm_features` of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``)."""
    m = _matrices(gp, pad, n_levels=n_levels, dims=dims, distance=distance)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        out["2D"] = nanmean_rows([ngtdm_from_matrix(s) for s in m["2D"] if s[:, 0].any()]) or {
            f: float("nan") for f in NGTDM_FEATURES
        }
    if "2_5D" in dims:
        out["2_5D"] = ngtdm_from_matrix(m["2D"].sum(axis=0))
    if "3D" in dims:
        out["3D"] = ngtdm_from_matrix(m["3D"])
    return {f"ngt_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
