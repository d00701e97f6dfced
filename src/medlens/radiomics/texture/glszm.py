"""Grey level size zone matrix (GLSZM, IBSI ``szm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.radiomics.texture._common import (
    crop_levels,
    dims_of,
    interior,
    nanmean_rows,
    pad_crop,
    zone_features,
    zone_features_stack,
)

__all__ = ["SZM_NAMES", "glszm_features", "glszm_matrices", "label_zones"]

SZM_NAMES = {
    "s": "sze", "l": "lze", "lg": "lgze", "hg": "hgze", "slg": "szlge", "shg": "szhge", "llg": "lzlge",
    "lhg": "lzhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "zsnu", "jnu_norm": "zsnu_norm",
    "perc": "z_perc", "gl_var": "gl_var", "j_var": "zs_var", "j_entr": "zs_entr",
}  # fmt: skip


def _zones(
    gp: np.ndarray, pad: int, three_d: bool, cache: dict | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels on ``gp``'s grid, level, size, first voxel's slice) of the zones of a prepared grey array.

    ``gp`` comes from :func:`crop_levels` (``pad`` >= 1); see :func:`label_zones`. The slice index is that of the
    unpadded array.
    """
    key = (bool(three_d), gp.shape, pad)
    if cache is not None and key in cache:
        return cache[key]  # type: ignore[no-any-return]
    from medlens.radiomics.texture._kernels import label_zones_kernel

    labels, level, size, first = label_zones_kernel(gp, pad, bool(three_d))
    res = (labels, level, size, first // (gp.shape[1] * gp.shape[2]) - pad)
    if cache is not None:
        cache[key] = res
    return res


def label_zones(
    g: np.ndarray, n_levels: int, three_d: bool, cache: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Label connected zones of equal level in ``g`` (z, y, x) (values <= 0 = outside the ROI).

    2D zones are 8-connected within a slice, 3D zones 26-connected. One compiled flood-fill pass over all levels
    at once; zones are numbered in raster order of their first voxel. Returns the label array (0 outside, 1..n),
    the level of each zone and its size (arrays of length n + 1, entry 0 unused). ``cache`` (a dict shared by
    GLSZM and GLDZM within one extraction, for the same grey array) avoids labelling twice. ``n_levels`` is not
    needed for labelling; it is accepted for the shared interface.
    """
    g = np.asarray(g)
    if g.ndim != 3:
        raise InputError(f"texture: label_zones needs a (z, y, x) array, got shape {g.shape}")
    box = tuple(slice(0, n) for n in g.shape)
    gp = pad_crop(g, g > 0, box, 1)
    labels, level, size, _ = _zones(gp, 1, three_d, cache)
    return np.ascontiguousarray(interior(labels, 1)), level, size


def _per_slice(
    level: np.ndarray, value: np.ndarray, zslice: np.ndarray, nz: int, n_levels: int, ncol: int
) -> np.ndarray:
    """Zone counts per slice (nz, Ng, ncol): zone n counted at (``zslice[n]``, level-1, value-1); entry 0 unused."""
    if level.size <= 1:
        return np.zeros((nz, n_levels, ncol), dtype=np.int64)
    key = (zslice[1:] * n_levels + level[1:] - 1) * ncol + value[1:] - 1
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
    gp = crop_levels(grey, roi, int(n_levels), pad=1, family="glszm")
    return _matrices(gp, 1, n_levels=int(n_levels), dims=dims_of(dims), compact=compact, zone_cache=zone_cache)


def _matrices(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], compact: bool, zone_cache: dict | None
) -> dict[str, np.ndarray]:
    """:func:`glszm_matrices` of a prepared grey array (:func:`crop_levels`, ``pad`` >= 1)."""
    out: dict[str, np.ndarray] = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        _, lev, size, zslice = _zones(gp, pad, three_d, zone_cache)
        if compact:
            cols, inv = np.unique(size[1:], return_inverse=True)
            col = np.concatenate([[0], inv + 1])
            out[f"sizes_{name}"] = cols
            ncol = max(cols.size, 1)
        else:
            col = size
            ncol = int(size[1:].max()) if size.size > 1 else 1
        if name == "2D":
            out[name] = _per_slice(lev, col, zslice, gp.shape[0] - 2 * pad, n_levels, ncol)
        else:
            key = (lev[1:] - 1) * ncol + col[1:] - 1
            out[name] = np.bincount(key, minlength=n_levels * ncol).reshape(n_levels, ncol)
    return out


def _feat(m: np.ndarray, j: np.ndarray) -> dict[str, float]:
    return zone_features(m, float((m * j).sum()), SZM_NAMES, j_values=j)


def glszm_features(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",), zone_cache: dict | None = None
) -> dict[str, float]:
    """GLSZM features keyed by IBSI tag (``szm_<name>_<2D|2_5D|3D>``)."""
    gp = crop_levels(grey, roi, int(n_levels), pad=1, family="glszm")
    return _features(gp, 1, n_levels=int(n_levels), dims=dims_of(dims), zone_cache=zone_cache)


def _features(
    gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...], zone_cache: dict | None
) -> dict[str, float]:
    """:func:`glszm_features` of a prepared grey array (:func:`crop_levels`, ``pad`` >= 1)."""
    m = _matrices(gp, pad, n_levels=n_levels, dims=dims, compact=True, zone_cache=zone_cache)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        s = m["2D"][m["2D"].any(axis=(1, 2))]  # slices with zones, each as _feat (vectorised)
        n_vox = (s * m["sizes_2D"]).sum(axis=(1, 2))
        out["2D"] = nanmean_rows(zone_features_stack(s, n_vox, SZM_NAMES, j_values=m["sizes_2D"]))
    if "2_5D" in dims:
        out["2_5D"] = _feat(m["2D"].sum(axis=0), m["sizes_2D"])
    if "3D" in dims:
        out["3D"] = _feat(m["3D"], m["sizes_3D"])
    return {f"szm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
