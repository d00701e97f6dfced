"""Grey level co-occurrence matrix (GLCM, IBSI ``cm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import check_distance, crop_levels, dims_of, directions

__all__ = ["GLCM_FEATURES", "glcm_feature_batch", "glcm_features", "glcm_matrices"]

GLCM_FEATURES = (
    "joint_max joint_avg joint_var joint_entr diff_avg diff_var diff_entr sum_avg sum_var sum_entr energy contrast "
    "dissimilarity inv_diff inv_diff_norm inv_diff_mom inv_diff_mom_norm inv_var corr auto_corr clust_tend "
    "clust_shade clust_prom info_corr1 info_corr2"
).split()


def _counts(
    gp: np.ndarray, pad: int, *, n_levels: int, want2d: bool, want3d: bool, distance: int, symmetric: bool
) -> dict[str, np.ndarray]:
    """Co-occurrence counts of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``): one compiled
    pass for all directions."""
    from medlens.radiomics.texture._kernels import glcm_counts

    d2 = directions(False)
    dirs = directions(True) if want3d else d2
    offsets = np.array([(distance * a, distance * b, distance * c) for a, b, c in dirs], dtype=np.int64)
    plane = np.array([d2.index(d) if d[0] == 0 else -1 for d in dirs], dtype=np.int64)
    m2 = np.zeros((gp.shape[0] - 2 * pad if want2d else 0, len(d2), n_levels, n_levels), dtype=np.int64)
    m3 = np.zeros((len(dirs) if want3d else 0, n_levels, n_levels), dtype=np.int64)
    glcm_counts(gp, pad, offsets, plane, m2, m3, bool(symmetric))
    out: dict[str, np.ndarray] = {}
    if want2d:
        out["2D"] = m2
    if want3d:
        out["3D"] = m3
    return out


def glcm_matrices(
    grey: np.ndarray,
    roi: np.ndarray,
    *,
    n_levels: int,
    dims: Any = ("2D", "3D"),
    distance: int = 1,
    symmetric: bool = True,
) -> dict[str, np.ndarray]:
    """Raw co-occurrence counts.

    Parameters
    ----------
    grey
        Discretised levels 1..``n_levels``, (z, y, x); values outside ``roi`` are ignored.
    roi
        Intensity mask, same shape, bool.
    n_levels
        Number of grey levels Ng (matrix size).
    dims
        ``"2D"`` gives ``out["2D"]`` with shape (n_slices, 4, Ng, Ng) over the ROI bounding-box slices and the
        4 in-plane directions (always returned); ``"3D"`` gives ``out["3D"]`` with shape (13, Ng, Ng).
    distance
        Chebyshev distance (voxels) between paired voxels.
    symmetric
        Count each pair in both orders.
    """
    dims = dims_of(dims)
    pad = check_distance(distance, "glcm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="glcm")
    return _counts(
        gp, pad, n_levels=int(n_levels), want2d=True, want3d="3D" in dims, distance=int(distance), symmetric=symmetric
    )


def glcm_feature_batch(counts: np.ndarray) -> np.ndarray:
    """IBSI GLCM features of a stack of count matrices (k, Ng, Ng) -> (k, 25); NaN for an empty matrix."""
    c = np.asarray(counts, dtype=np.float64)
    k, ng, _ = c.shape
    tot = c.sum(axis=(1, 2))
    empty = tot <= 0
    with np.errstate(all="ignore"):
        p = c / np.where(empty, 1.0, tot)[:, None, None]
        lv = np.arange(1, ng + 1, dtype=np.float64)
        i = lv[None, :, None]
        j = lv[None, None, :]
        pi = p.sum(axis=2)
        pj = p.sum(axis=1)
        diff = np.abs(lv[:, None] - lv[None, :]).astype(np.int64)
        ssum = (lv[:, None] + lv[None, :]).astype(np.int64) - 2
        flat_p = p.reshape(k, ng * ng)
        pd = flat_p @ (diff.reshape(-1, 1) == np.arange(ng)).astype(np.float64)  # p_{x-y}(k), k = 0..Ng-1
        ps = flat_p @ (ssum.reshape(-1, 1) == np.arange(2 * ng - 1)).astype(np.float64)  # p_{x+y}(k), k = 2..2Ng
        kd = np.arange(ng, dtype=np.float64)
        ks = np.arange(2, 2 * ng + 1, dtype=np.float64)

        def tot2(x: np.ndarray) -> np.ndarray:
            return x.sum(axis=(1, 2))

        def entr(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
            return 0.0 - np.where(x > 0, x * np.log2(np.where(x > 0, x, 1.0)), 0.0).sum(axis=axes)

        mu = tot2(i * p)
        mu_i = (lv * pi).sum(axis=1)
        mu_j = (lv * pj).sum(axis=1)
        sd_i = np.sqrt((((lv - mu_i[:, None]) ** 2) * pi).sum(axis=1))
        sd_j = np.sqrt((((lv - mu_j[:, None]) ** 2) * pj).sum(axis=1))
        d_avg = (kd * pd).sum(axis=1)
        s_avg = (ks * ps).sum(axis=1)
        dij = i - j
        hxy = entr(p, (1, 2))
        pipj = pi[:, :, None] * pj[:, None, :]
        logpp = np.log2(np.where(pipj > 0, pipj, 1.0))
        hxy1 = -(p * logpp).sum(axis=(1, 2))
        hxy2 = -(pipj * logpp).sum(axis=(1, 2))
        hx = entr(pi, (1,))
        hy = entr(pj, (1,))
        # cluster terms: i + j - mu_i - mu_j depends on i + j only, so the powers (libm pow calls for 3 and 4,
        # the slowest part of this function) are taken once per level sum and gathered: the same values
        ct_s = ks[None, :] - mu_i[:, None] - mu_j[:, None]  # (k, 2Ng-1), ks = i + j exactly
        # (C order, as the broadcast array they replace: the sums below then add in the same order)
        ct = np.ascontiguousarray(ct_s[:, ssum])
        ct3 = np.ascontiguousarray((ct_s**3)[:, ssum])
        ct4 = np.ascontiguousarray((ct_s**4)[:, ssum])
        feats = {
            "joint_max": p.max(axis=(1, 2)),
            "joint_avg": mu,
            "joint_var": tot2(((i - mu[:, None, None]) ** 2) * p),
            "joint_entr": hxy,
            "diff_avg": d_avg,
            "diff_var": (((kd[None] - d_avg[:, None]) ** 2) * pd).sum(axis=1),
            "diff_entr": entr(pd, (1,)),
            "sum_avg": s_avg,
            "sum_var": (((ks[None] - s_avg[:, None]) ** 2) * ps).sum(axis=1),
            "sum_entr": entr(ps, (1,)),
            "energy": tot2(p**2),
            "contrast": tot2(dij**2 * p),
            "dissimilarity": tot2(np.abs(dij) * p),
            "inv_diff": tot2(p / (1 + np.abs(dij))),
            "inv_diff_norm": tot2(p / (1 + np.abs(dij) / ng)),
            "inv_diff_mom": tot2(p / (1 + dij**2)),
            "inv_diff_mom_norm": tot2(p / (1 + dij**2 / ng**2)),
            "inv_var": (pd[:, 1:] / kd[1:] ** 2).sum(axis=1),
            "corr": (tot2(i * j * p) - mu_i * mu_j) / (sd_i * sd_j),
            "auto_corr": tot2(i * j * p),
            "clust_tend": tot2(ct**2 * p),
            "clust_shade": tot2(ct3 * p),
            "clust_prom": tot2(ct4 * p),
            "info_corr1": (hxy - hxy1) / np.maximum(hx, hy),
            "info_corr2": np.sqrt(np.clip(1 - np.exp(-2 * (hxy2 - hxy)), 0.0, None)),
        }
        res = np.stack([feats[n] for n in GLCM_FEATURES], axis=1)
    res[empty] = np.nan
    res[~np.isfinite(res)] = np.nan
    return res


def _avg(counts: np.ndarray) -> np.ndarray:
    f = glcm_feature_batch(counts)
    with np.errstate(all="ignore"):
        ok = np.isfinite(f)
        n = ok.sum(axis=0)
        return np.where(n > 0, np.where(ok, f, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def glcm_features(
    grey: np.ndarray,
    roi: np.ndarray,
    *,
    n_levels: int,
    dims: Any = ("3D",),
    distance: int = 1,
    symmetric: bool = True,
) -> dict[str, float]:
    """GLCM features keyed by IBSI tag (``cm_<name>_<2D|2_5D|3D>_<avg|comb>``)."""
    pad = check_distance(distance, "glcm_distance")
    gp = crop_levels(grey, roi, int(n_levels), pad=pad, family="glcm")
    return _features(gp, pad, n_levels=int(n_levels), dims=dims_of(dims), distance=int(distance), symmetric=symmetric)


def _features(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], distance: int, symmetric: bool
) -> dict[str, float]:
    """:func:`glcm_features` of a prepared grey array (:func:`crop_levels`, ``pad`` >= ``distance``)."""
    want2d = "2D" in dims or "2_5D" in dims
    m = _counts(gp, pad, n_levels=n_levels, want2d=want2d, want3d="3D" in dims, distance=distance, symmetric=symmetric)
    out: dict[str, np.ndarray] = {}
    if "2D" in dims:
        s = m["2D"]
        ns, nd = s.shape[:2]
        out["2D_avg"] = _avg(s.reshape(ns * nd, n_levels, n_levels))
        out["2D_comb"] = _avg(s.sum(axis=1))
    if "2_5D" in dims:
        s = m["2D"]
        out["2_5D_avg"] = _avg(s.sum(axis=0))
        out["2_5D_comb"] = _avg(s.sum(axis=(0, 1))[None])
    if "3D" in dims:
        out["3D_avg"] = _avg(m["3D"])
        out["3D_comb"] = _avg(m["3D"].sum(axis=0)[None])
    return {f"cm_{n}_{suf}": float(v[q]) for suf, v in out.items() for q, n in enumerate(GLCM_FEATURES)}
