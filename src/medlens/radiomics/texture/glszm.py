"""Grey level size zone matrix (GLSZM, IBSI ``szm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from medlens.radiomics.texture._common import as3d, crop_pad, dims_of, nanmean_rows, zone_features

__all__ = ["SZM_NAMES", "glszm_features", "glszm_matrices", "label_zones"]

SZM_NAMES = {
    "s": "sze", "l": "lze", "lg": "lgze", "hg": "hgze", "slg": "szlge", "shg": "szhge", "llg": "lzlge",
    "lhg": "lzhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "zsnu", "jnu_norm": "zsnu_norm",
    "perc": "z_perc", "gl_var": "gl_var", "j_var": "zs_var", "j_entr": "zs_entr",
}  # fmt: skip


def label_zones(g: np.ndarray, n_levels: int, three_d: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label connected zones of equal level in ``g`` (0 = outside ROI).

    2D zones are 8-connected within a slice, 3D zones 26-connected. Returns the label array (0 outside,
    1..n), the level of each zone and its size (arrays of length n + 1, entry 0 unused).
    """
    structure = np.ones((3, 3, 3), dtype=bool)
    if not three_d:
        structure[0] = structure[2] = False
    labels = np.zeros(g.shape, dtype=np.int64)
    levels = [0]
    offset = 0
    for lev in np.unique(g[g > 0]):
        lab, n = ndimage.label(g == lev, structure=structure)
        sel = lab > 0
        labels[sel] = lab[sel] + offset
        levels.extend([int(lev)] * n)
        offset += n
    size = np.bincount(labels.ravel(), minlength=offset + 1)
    return labels, np.asarray(levels, dtype=np.int64), size


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
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("2D", "3D")
) -> dict[str, np.ndarray]:
    """Raw zone counts: ``out["2D"]`` (n_slices, Ng, Smax) per bounding-box slice, ``out["3D"]`` (Ng, Smax).

    Column j holds zones of j+1 voxels.
    """
    dims = dims_of(dims)
    grey, roi = as3d(grey, roi)
    g = crop_pad(grey, roi, 0)[0]
    out: dict[str, np.ndarray] = {}
    if "2D" in dims or "2_5D" in dims:
        lab, lev, size = label_zones(g, n_levels, False)
        ncol = int(size[1:].max()) if size.size > 1 else 1
        out["2D"] = _per_slice(lab, lev, size, g.shape[0], n_levels, ncol)
    if "3D" in dims:
        lab, lev, size = label_zones(g, n_levels, True)
        ncol = int(size[1:].max()) if size.size > 1 else 1
        key = (lev[1:] - 1) * ncol + size[1:] - 1
        out["3D"] = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
    return out


def _feat(m: np.ndarray) -> dict[str, float]:
    j = np.arange(1, m.shape[-1] + 1)
    return zone_features(m, float((m * j).sum()), SZM_NAMES)


def glszm_features(grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",)) -> dict[str, float]:
    """GLSZM features keyed by IBSI tag (``szm_<name>_<2D|2_5D|3D>``)."""
    dims = dims_of(dims)
    m = glszm_matrices(grey, roi, n_levels=n_levels, dims=dims)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        out["2D"] = nanmean_rows([_feat(s) for s in m["2D"] if s.any()])
    if "2_5D" in dims:
        out["2_5D"] = _feat(m["2D"].sum(axis=0))
    if "3D" in dims:
        out["3D"] = _feat(m["3D"])
    return {f"szm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
