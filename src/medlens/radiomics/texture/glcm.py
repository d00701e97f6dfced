"""Grey level co-occurrence matrix (GLCM, IBSI ``cm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, directions

__all__ = ["GLCM_FEATURES", "glcm_feature_batch", "glcm_features", "glcm_matrices"]

GLCM_FEATURES = (
    "joint_max joint_avg joint_var joint_entr diff_avg diff_var diff_entr sum_avg sum_var sum_entr energy contrast "
    "dissimilarity inv_diff inv_diff_norm inv_diff_mom inv_diff_mom_norm inv_var corr auto_corr clust_tend "
    "clust_shade clust_prom info_corr1 info_corr2"
).split()


def _pair_counts(g: np.ndarray, offsets: list[tuple[int, int, int]], n_levels: int, symmetric: bool) -> np.ndarray:
    """Counts per (slice, offset) as an array (nz, n_offsets, Ng, Ng); ``g`` is padded by the largest offset."""
    nz, ny, nx = g.shape
    flat = g.ravel()
    idx = np.flatnonzero(flat)
    a = flat[idx] - 1
    z = idx // (ny * nx)
    ng2 = n_levels * n_levels
    out = np.zeros((nz, len(offsets), n_levels, n_levels), dtype=np.int64)
    for k, (dz, dy, dx) in enumerate(offsets):
        nb = flat[idx + (dz * ny + dy) * nx + dx]
        ok = nb > 0
        key = z[ok] * ng2 + a[ok] * n_levels + (nb[ok] - 1)
        m = np.bincount(key, minlength=nz * ng2).reshape(nz, n_levels, n_levels)
        out[:, k] = m + m.transpose(0, 2, 1) if symmetric else m
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
        4 in-plane directions; ``"3D"`` gives ``out["3D"]`` with shape (13, Ng, Ng).
    distance
        Chebyshev distance (voxels) between paired voxels.
    symmetric
        Count each pair in both orders.
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    g = crop_pad(grey, roi, distance)[0]
    out: dict[str, np.ndarray] = {}
    d2 = [(distance * a, distance * b, distance * c) for a, b, c in directions(False)]
    d3 = [(distance * a, distance * b, distance * c) for a, b, c in directions(True)]
    in_plane = _pair_counts(g, d2, n_levels, symmetric)  # (nz_pad, 4, Ng, Ng), also the in-plane 3D directions
    out["2D"] = in_plane[distance:-distance] if distance else in_plane
    if "3D" in dims:
        rest = [d for d in d3 if d[0] != 0]
        other = _pair_counts(g, rest, n_levels, symmetric).sum(axis=0)
        m3 = np.zeros((len(d3), n_levels, n_levels), dtype=np.int64)
        plane_sum = in_plane.sum(axis=0)
        j = 0
        for k, d in enumerate(d3):
            if d[0] == 0:
                m3[k] = plane_sum[d2.index(d)]
            else:
                m3[k] = other[j]
                j += 1
        out["3D"] = m3
    return out


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
        ct = i + j - mu_i[:, None, None] - mu_j[:, None, None]
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
            "clust_shade": tot2(ct**3 * p),
            "clust_prom": tot2(ct**4 * p),
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
    dims = dims_of(dims)
    m = glcm_matrices(grey, roi, n_levels=n_levels, dims=dims, distance=distance, symmetric=symmetric)
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
