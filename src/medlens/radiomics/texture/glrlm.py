"""Grey level run length matrix (GLRLM, IBSI ``rlm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, directions, zone_features

__all__ = ["RLM_NAMES", "glrlm_features", "glrlm_matrices"]

RLM_NAMES = {
    "s": "sre", "l": "lre", "lg": "lgre", "hg": "hgre", "slg": "srlge", "shg": "srhge", "llg": "lrlge",
    "lhg": "lrhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "rlnu", "jnu_norm": "rlnu_norm",
    "perc": "r_perc", "gl_var": "gl_var", "j_var": "rl_var", "j_entr": "rl_entr",
}  # fmt: skip


def _runs(
    g: np.ndarray, coords: tuple[np.ndarray, ...], lev: np.ndarray, d: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs along direction ``d``: (level 1..Ng, length, slice index) per run.

    The ROI voxels (``coords`` into ``g``, levels ``lev``) are scattered into a sheared array whose last axis
    runs along ``d`` and whose other axes index the lines, each line padded by one empty cell at both ends;
    runs then are the stretches of equal non-zero values in that array's flat order (no sorting).
    """
    a = next(k for k in range(3) if d[k] != 0)  # d[a] == 1 for the directions of ``directions``
    others = [k for k in range(3) if k != a]
    ext = g.shape
    idx = []
    dims = []
    for k in others:
        if d[k] == 1:
            idx.append(coords[k] - coords[a] + ext[a] - 1)
            dims.append(ext[k] + ext[a] - 1)
        elif d[k] == -1:
            idx.append(coords[k] + coords[a])
            dims.append(ext[k] + ext[a] - 1)
        else:
            idx.append(coords[k])
            dims.append(ext[k])
    tlen = ext[a] + 2
    dtype = np.uint8 if lev.max(initial=0) < 256 else np.int32
    sheared = np.zeros((dims[0], dims[1], tlen), dtype=dtype)
    sheared[idx[0], idx[1], coords[a] + 1] = lev
    flat = sheared.ravel()
    pos = np.flatnonzero(flat)
    val = flat[pos]
    start = pos[flat[pos - 1] != val]
    end = pos[flat[pos + 1] != val]
    # the slice (z) index of an in-plane run is the first line axis
    z = start // (dims[1] * tlen) if d[0] == 0 else np.zeros(start.size, dtype=np.int64)
    return flat[start].astype(np.int64), end - start + 1, z


def glrlm_matrices(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("2D", "3D")
) -> dict[str, np.ndarray]:
    """Raw run-length counts.

    ``out["2D"]``: (n_slices, 4, Ng, Lmax) per bounding-box slice and in-plane direction;
    ``out["3D"]``: (13, Ng, Lmax). Column j holds runs of length j+1.
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    g = crop_pad(grey, roi, 1)[0]
    nz = g.shape[0]
    want3 = "3D" in dims
    dirs = directions(True) if want3 else directions(False)
    coords = np.nonzero(g)
    lev = g[coords]
    runs = [_runs(g, coords, lev, d) for d in dirs]
    lmax = max([int(r[1].max()) for r in runs if r[1].size] or [1])
    out: dict[str, np.ndarray] = {}
    d2 = [k for k, d in enumerate(dirs) if d[0] == 0]
    m2 = np.zeros((nz, len(d2), n_levels, lmax), dtype=np.int64)
    for q, k in enumerate(d2):
        lev, ln, z = runs[k]
        key = (z * n_levels + lev - 1) * lmax + ln - 1
        m2[:, q] = np.bincount(key, minlength=nz * n_levels * lmax).reshape(nz, n_levels, lmax)
    out["2D"] = m2[1:-1]
    if want3:
        m3 = np.zeros((len(dirs), n_levels, lmax), dtype=np.int64)
        for k, (lev, ln, _) in enumerate(runs):
            m3[k] = np.bincount((lev - 1) * lmax + ln - 1, minlength=n_levels * lmax).reshape(n_levels, lmax)
        out["3D"] = m3
    return out


def _feat(m: np.ndarray) -> dict[str, float]:
    j = np.arange(1, m.shape[-1] + 1)
    return zone_features(m, float((m * j).sum()), RLM_NAMES)


def _mean(ms: list[np.ndarray]) -> dict[str, float]:
    from medlens.radiomics.texture._common import nanmean_rows

    return nanmean_rows([_feat(m) for m in ms])


def glrlm_features(grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",)) -> dict[str, float]:
    """GLRLM features keyed by IBSI tag (``rlm_<name>_<2D|2_5D|3D>_<avg|comb>``)."""
    dims = dims_of(dims)
    m = glrlm_matrices(grey, roi, n_levels=n_levels, dims=dims)
    out: dict[str, dict[str, float]] = {}
    s = m["2D"]
    if "2D" in dims:
        out["2D_avg"] = _mean([s[z, k] for z in range(s.shape[0]) for k in range(s.shape[1])])
        out["2D_comb"] = _mean([s[z].sum(axis=0) for z in range(s.shape[0])])
    if "2_5D" in dims:
        out["2_5D_avg"] = _mean([s[:, k].sum(axis=0) for k in range(s.shape[1])])
        out["2_5D_comb"] = _mean([s.sum(axis=(0, 1))])
    if "3D" in dims:
        out["3D_avg"] = _mean(list(m["3D"]))
        out["3D_comb"] = _mean([m["3D"].sum(axis=0)])
    return {f"rlm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
