"""Grey level size zone matrix (GLSZM, IBSI ``szm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, directions, nanmean_rows, zone_features

__all__ = ["SZM_NAMES", "glszm_features", "glszm_matrices", "label_zones"]

SZM_NAMES = {
    "s": "sze", "l": "lze", "lg": "lgze", "hg": "hgze", "slg": "szlge", "shg": "szhge", "llg": "lzlge",
    "lhg": "lzhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "zsnu", "jnu_norm": "zsnu_norm",
    "perc": "z_perc", "gl_var": "gl_var", "j_var": "zs_var", "j_entr": "zs_entr",
}  # fmt: skip


def label_zones(
    g: np.ndarray, n_levels: int, three_d: bool, cache: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label connected zones of equal level in ``g`` (0 = outside ROI).

    2D zones are 8-connected within a slice, 3D zones 26-connected. One connected-components pass over the
    graph linking equal-level neighbours (all levels at once). Returns the label array (0 outside, 1..n), the
    level of each zone and its size (arrays of length n + 1, entry 0 unused). ``cache`` (a dict shared by
    GLSZM and GLDZM within one extraction, for the same grey array) avoids labelling twice.
    """
    key = (three_d, g.shape)
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[no-any-return]
    gp = np.pad(g, 1)
    _, ny, nx = gp.shape
    flat = gp.ravel()
    idx = np.flatnonzero(flat)
    lev = flat[idx]
    node = np.full(flat.size, -1, dtype=np.int64)
    node[idx] = np.arange(idx.size)
    rows, cols = [], []
    for dz, dy, dx in directions(three_d):
        nb = idx + (dz * ny + dy) * nx + dx
        same = flat[nb] == lev
        rows.append(np.flatnonzero(same))
        cols.append(node[nb[same]])
    r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    graph = sparse.csr_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(idx.size, idx.size))
    n, comp = csgraph.connected_components(graph, directed=False)
    labels_p = np.zeros(flat.size, dtype=np.int64)
    labels_p[idx] = comp + 1
    labels = labels_p.reshape(gp.shape)[1:-1, 1:-1, 1:-1]
    levels = np.zeros(n + 1, dtype=np.int64)
    levels[comp + 1] = lev
    size = np.bincount(comp + 1, minlength=n + 1)
    if cache is not None:
        cache[key] = (labels, levels, size)
    return labels, levels, size


def _per_slice(
    labels: np.ndarray, level: np.ndarray, value: np.ndarray, nz: int, n_levels: int, ncol: int
) -> np.ndarray:
    """Zone counts per slice (nz, Ng, ncol): zone n counted at (slice, level-1, value-1)."""
    n = level.size - 1
    if n == 0:
        return np.zeros((nz, n_levels, ncol), dtype=np.int64)
    z = np.zeros(n + 1, dtype=np.int64)
    zz = np.nonzero(labels)[0]
    z[labels[labels > 0]] = zz
    key = (z[1:] * n_levels + level[1:] - 1) * ncol + value[1:] - 1
    return np.bincount(key, minlength=nz * n_levels * ncol).reshape(nz, n_levels, ncol)


def glszm_matrices(
    grey: np.ndarray,
    roi: np.ndarray,
    *,
    n_levels: int,
    dims: Any = ("2D", "3D"),
    compact: bool = False,
    zone_cache: dict | None = None,
) -> dict[str, np.ndarray]:
    """Raw zone counts: ``out["2D"]`` (n_slices, Ng, Smax) per bounding-box slice, ``out["3D"]`` (Ng, Smax).

    Column j holds zones of j+1 voxels. With ``compact`` only the zone sizes that occur get a column and
    ``out["sizes_2D"]`` / ``out["sizes_3D"]`` hold the size of each column (bounded memory for large zones).
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    g = crop_pad(grey, roi, 0)[0]
    out: dict[str, np.ndarray] = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        lab, lev, size = label_zones(g, n_levels, three_d, zone_cache)
        if compact:
            cols, inv = np.unique(size[1:], return_inverse=True)
            col = np.concatenate([[0], inv + 1])
            out[f"sizes_{name}"] = cols
            ncol = max(cols.size, 1)
        else:
            col = size
            ncol = int(size[1:].max()) if size.size > 1 else 1
        nz = g.shape[0] if name == "2D" else 1
        m = _per_slice(lab, lev, col, nz, n_levels, ncol) if name == "2D" else None
        if m is None:
            key = (lev[1:] - 1) * ncol + col[1:] - 1
            m = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
        out[name] = m
    return out


def _feat(m: np.ndarray, j: np.ndarray) -> dict[str, float]:
    return zone_features(m, float((m * j).sum()), SZM_NAMES, j_values=j)


def glszm_features(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",), zone_cache: dict | None = None
) -> dict[str, float]:
    """GLSZM features keyed by IBSI tag (``szm_<name>_<2D|2_5D|3D>``)."""
    dims = dims_of(dims)
    m = glszm_matrices(grey, roi, n_levels=n_levels, dims=dims, compact=True, zone_cache=zone_cache)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        out["2D"] = nanmean_rows([_feat(s, m["sizes_2D"]) for s in m["2D"] if s.any()])
    if "2_5D" in dims:
        out["2_5D"] = _feat(m["2D"].sum(axis=0), m["sizes_2D"])
    if "3D" in dims:
        out["3D"] = _feat(m["3D"], m["sizes_3D"])
    return {f"szm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
