"""Intensity features: statistics (``stat_*``), intensity histogram (``ih_*``) and
intensity-volume histogram (``ivh_*``), IBSI 1 sections "Intensity-based statistical features",
"Intensity histogram features" and "Intensity-volume histogram features".

All are computed over the whole 3D intensity mask (IBSI recommends no per-slice aggregation).
"""

from __future__ import annotations

import math

import numpy as np

from medlens.radiomics.settings import IVHSettings, ResegmentationSettings

__all__ = ["IH_TAGS", "IVH_TAGS", "STAT_TAGS", "histogram_features", "ivh_features", "statistics_features"]

STAT_TAGS = (
    "stat_mean stat_var stat_skew stat_kurt stat_median stat_min stat_p10 stat_p90 stat_max stat_iqr stat_range "
    "stat_mad stat_rmad stat_medad stat_cov stat_qcod stat_energy stat_rms"
).split()
IH_TAGS = (
    "ih_mean ih_var ih_skew ih_kurt ih_median ih_min ih_p10 ih_p90 ih_max ih_mode ih_iqr ih_range ih_mad ih_rmad "
    "ih_medad ih_cov ih_qcod ih_entropy ih_uniformity ih_max_grad ih_max_grad_g ih_min_grad ih_min_grad_g"
).split()
IVH_TAGS = "ivh_v10 ivh_v90 ivh_i10 ivh_i90 ivh_diff_v10_v90 ivh_diff_i10_i90 ivh_auc".split()


def _div(a: float, b: float) -> float:
    return float(a / b) if b != 0 else math.nan


def _moments(x: np.ndarray, prefix: str) -> dict[str, float]:
    mu = float(x.mean())
    d = x - mu
    d2 = d * d
    n = d.size
    var = float(d2.sum() / n)
    # IBSI: skewness and kurtosis of a constant ROI are 0 (no spread, no asymmetry)
    skew = float(np.dot(d2, d) / n / var**1.5) if var > 0 else 0.0
    kurt = float(np.dot(d2, d2) / n / var**2 - 3.0) if var > 0 else 0.0
    p10, p25, med, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 50, 75, 90]))
    robust = x[(x >= p10) & (x <= p90)]
    rmad = float(np.mean(np.abs(robust - robust.mean()))) if robust.size else math.nan
    return {
        f"{prefix}_mean": mu,
        f"{prefix}_var": var,
        f"{prefix}_skew": skew,
        f"{prefix}_kurt": kurt,
        f"{prefix}_median": med,
        f"{prefix}_min": float(x.min()),
        f"{prefix}_p10": p10,
        f"{prefix}_p90": p90,
        f"{prefix}_max": float(x.max()),
        f"{prefix}_iqr": p75 - p25,
        f"{prefix}_range": float(x.max() - x.min()),
        f"{prefix}_mad": float(np.abs(d).sum() / n),
        f"{prefix}_rmad": rmad,
        f"{prefix}_medad": float(np.mean(np.abs(x - med))),
        f"{prefix}_cov": _div(math.sqrt(var), mu),
        f"{prefix}_qcod": _div(p75 - p25, p75 + p25),
    }


def statistics_features(values: np.ndarray, voxel_volume_mm3: float = 1.0) -> dict[str, float]:
    """``stat_*`` features of the intensity-mask values (1-D, not discretised).

    ``stat_energy`` is the plain sum of squares (IBSI; no voxel-volume factor).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {t: math.nan for t in STAT_TAGS}
    out = _moments(x, "stat")
    out["stat_energy"] = float(np.sum(x**2))
    out["stat_rms"] = float(math.sqrt(np.mean(x**2)))
    return {t: out[t] for t in STAT_TAGS}


def histogram_features(levels: np.ndarray, n_levels: int) -> dict[str, float]:
    """``ih_*`` features of discretised levels (1-D ints in ``1..n_levels``)."""
    x = np.asarray(levels, dtype=np.float64)
    if x.size == 0:
        return {t: math.nan for t in IH_TAGS}
    out = _moments(x, "ih")
    n_g = max(int(n_levels), int(x.max()))
    counts = np.bincount(levels.astype(np.int64), minlength=n_g + 1)[1:].astype(np.float64)
    p = counts / counts.sum()
    nz = p[p > 0]
    out["ih_entropy"] = float(-np.sum(nz * np.log2(nz)))
    out["ih_uniformity"] = float(np.sum(p**2))
    top = np.flatnonzero(counts == counts.max()) + 1
    mu = out["ih_mean"]
    dist = np.abs(top - mu)
    # ties: the bin closest to the mean; if equidistant the one to the left (lowest)
    out["ih_mode"] = float(top[np.flatnonzero(dist == dist.min())[0]])
    if n_g >= 2:
        grad = np.empty(n_g)
        grad[0] = counts[1] - counts[0]
        grad[-1] = counts[-1] - counts[-2]
        if n_g > 2:
            grad[1:-1] = (counts[2:] - counts[:-2]) / 2.0
    else:
        grad = np.zeros(1)
    out["ih_max_grad"] = float(grad.max())
    out["ih_max_grad_g"] = float(np.argmax(grad) + 1)
    out["ih_min_grad"] = float(grad.min())
    out["ih_min_grad_g"] = float(np.argmin(grad) + 1)
    return {t: out[t] for t in IH_TAGS}


def ivh_features(values: np.ndarray, settings: IVHSettings, resegmentation: ResegmentationSettings) -> dict[str, float]:
    """``ivh_*`` features of intensity-mask values (1-D, not discretised).

    Fractional volumes come from one sort and a cumulative count (``searchsorted``) over the
    grid of discretised intensities in the total range G, so no loop over thresholds.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {t: math.nan for t in IVH_TAGS}
    rlo, rhi = resegmentation.range_lo, resegmentation.range_hi
    if settings.method == "none":
        xd = np.round(x)
        g_lo = float(rlo) if rlo is not None else float(xd.min())
        g_hi = float(rhi) if rhi is not None else float(xd.max())
        w = 1.0
    elif settings.method == "FBS":
        w = float(settings.bin_width)
        lo = float(rlo) if rlo is not None else float(x.min())
        hi = float(rhi) if rhi is not None else float(x.max())
        lev = np.floor((x - lo) / w) + 1
        xd = lo + (lev - 0.5) * w
        g_lo, g_hi = lo + 0.5 * w, hi - 0.5 * w
    else:  # FBN, arbitrary units
        n = int(settings.n_bins)
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:
            xd = np.minimum(np.floor(n * (x - lo) / (hi - lo)) + 1, n)
        else:
            xd = np.ones_like(x)
        g_lo, g_hi, w = 1.0, float(n), 1.0
    n_steps = round((g_hi - g_lo) / w)
    grid = g_lo + w * np.arange(n_steps + 1)
    srt = np.sort(xd)
    # fraction of voxels with intensity >= i (tolerance guards bin centres computed in floating point)
    nu = 1.0 - np.searchsorted(srt, grid - 1e-9 * max(1.0, w), side="left") / srt.size
    span = g_hi - g_lo
    gamma = (grid - g_lo) / span if span > 0 else np.zeros_like(grid)

    def v_at(frac: float) -> float:
        sel = gamma >= frac - 1e-12
        return float(nu[sel].max()) if sel.any() else 0.0

    def i_at(frac: float) -> float:
        sel = nu <= frac + 1e-12
        return float(grid[sel].min()) if sel.any() else float(g_hi + w)

    v10, v90 = v_at(0.10), v_at(0.90)
    i10, i90 = i_at(0.10), i_at(0.90)
    auc = float(np.trapezoid(nu, gamma)) if grid.size > 1 and span > 0 else 0.0
    return {
        "ivh_v10": v10,
        "ivh_v90": v90,
        "ivh_i10": i10,
        "ivh_i90": i90,
        "ivh_diff_v10_v90": v10 - v90,
        "ivh_diff_i10_i90": i10 - i90,
        "ivh_auc": auc,
    }
