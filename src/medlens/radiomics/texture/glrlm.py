"""Grey level run length matrix (GLRLM, IBSI ``rlm_``) with 2D, 2.5D and 3D aggregation."""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.radiomics.texture._common import crop_levels, dims_of, directions, zone_features

__all__ = ["RLM_NAMES", "glrlm_features", "glrlm_matrices"]

RLM_NAMES = {
    "s": "sre", "l": "lre", "lg": "lgre", "hg": "hgre", "slg": "srlge", "shg": "srhge", "llg": "lrlge",
    "lhg": "lrhge", "glnu": "glnu", "glnu_norm": "glnu_norm", "jnu": "rlnu", "jnu_norm": "rlnu_norm",
    "perc": "r_perc", "gl_var": "gl_var", "j_var": "rl_var", "j_entr": "rl_entr",
}  # fmt: skip


_ONE_PASS_BYTES = 256 * 2**20  # above this, count runs in two passes (longest run first) to bound the memory


def _counts(gp: np.ndarray, pad: int, *, n_levels: int, want2d: bool, want3d: bool) -> dict[str, np.ndarray]:
    """Run-length counts of a prepared grey array (:func:`crop_levels`, ``pad`` >= 1), every line walked once.

    The run-length axis has one column per length up to the longest run over the computed directions (13 with
    ``want3d``, else the 4 in-plane ones), as for :func:`glrlm_matrices`. The counts go into matrices as wide as
    the longest line through the array, trimmed afterwards; when those would take more than ``_ONE_PASS_BYTES``
    a first pass finds the longest run instead.
    """
    from medlens.radiomics.texture._kernels import glrlm_counts, glrlm_max_run

    d2 = directions(False)
    dirs = directions(True) if want3d else d2
    unit = np.array(dirs, dtype=np.int64)
    plane = np.array([d2.index(d) if d[0] == 0 else -1 for d in dirs], dtype=np.int64)
    nz = gp.shape[0] - 2 * pad
    n2 = nz * len(d2) if want2d else 0
    n3 = len(dirs) if want3d else 0
    width = max(gp.shape) - 2 * pad  # no run is longer than the array's longest side
    exact = (n2 + n3) * n_levels * width * 8 > _ONE_PASS_BYTES
    if exact:
        width = max(int(glrlm_max_run(gp, pad, unit)), 1)
    m2 = np.zeros((nz if want2d else 0, len(d2), n_levels, width), dtype=np.int64)
    m3 = np.zeros((n3, n_levels, width), dtype=np.int64)
    lmax = max(int(glrlm_counts(gp, pad, unit, plane, m2, m3)), 1)
    out: dict[str, np.ndarray] = {}
    if want2d:
        out["2D"] = m2 if lmax == width else np.ascontiguousarray(m2[..., :lmax])
    if want3d:
        out["3D"] = m3 if lmax == width else np.ascontiguousarray(m3[..., :lmax])
    return out


def glrlm_matrices(
    grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("2D", "3D")
) -> dict[str, np.ndarray]:
    """Raw run-length counts.

    ``out["2D"]``: (n_slices, 4, Ng, Lmax) per bounding-box slice and in-plane direction (always returned);
    ``out["3D"]``: (13, Ng, Lmax). Column j holds runs of length j+1.
    """
    dims = dims_of(dims)
    gp = crop_levels(grey, roi, int(n_levels), pad=1, family="glrlm")
    return _counts(gp, 1, n_levels=int(n_levels), want2d=True, want3d="3D" in dims)


def _feat(m: np.ndarray) -> dict[str, float]:
    j = np.arange(1, m.shape[-1] + 1)
    return zone_features(m, float((m * j).sum()), RLM_NAMES)


def _mean(ms: np.ndarray) -> dict[str, float]:
    """NaN-ignoring mean of the features of a stack (k, Ng, L) (each as :func:`_feat`, vectorised)."""
    from medlens.radiomics.texture._common import nanmean_rows, zone_features_stack

    n_voxels = (ms * np.arange(1, ms.shape[-1] + 1)).sum(axis=(1, 2))
    return nanmean_rows(zone_features_stack(ms, n_voxels, RLM_NAMES))


def glrlm_features(grey: np.ndarray, roi: np.ndarray, *, n_levels: int, dims: Any = ("3D",)) -> dict[str, float]:
    """GLRLM features keyed by IBSI tag (``rlm_<name>_<2D|2_5D|3D>_<avg|comb>``)."""
    gp = crop_levels(grey, roi, int(n_levels), pad=1, family="glrlm")
    return _features(gp, 1, n_levels=int(n_levels), dims=dims_of(dims))


def _features(gp: np.ndarray, pad: int, *, n_levels: int, dims: tuple[str, ...]) -> dict[str, float]:
    """:func:`glrlm_features` of a prepared grey array (:func:`crop_levels`, ``pad`` >= 1)."""
    m = _counts(gp, pad, n_levels=n_levels, want2d="2D" in dims or "2_5D" in dims, want3d="3D" in dims)
    out: dict[str, dict[str, float]] = {}
    if "2D" in dims:
        s = m["2D"]
        out["2D_avg"] = _mean(s.reshape(-1, *s.shape[2:]))  # per slice and direction
        out["2D_comb"] = _mean(s.sum(axis=1))
    if "2_5D" in dims:
        s = m["2D"]
        out["2_5D_avg"] = _mean(s.sum(axis=0))
        out["2_5D_comb"] = _mean(s.sum(axis=(0, 1))[None])
    if "3D" in dims:
        out["3D_avg"] = _mean(m["3D"])
        out["3D_comb"] = _mean(m["3D"].sum(axis=0)[None])
    return {f"rlm_{n}_{suf}": v for suf, fe in out.items() for n, v in fe.items()}
