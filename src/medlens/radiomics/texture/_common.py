"""Shared helpers for the texture families: cropping, neighbour offsets, safe arithmetic, settings access."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

__all__ = [
    "as3d",
    "bbox",
    "check_distance",
    "check_levels",
    "crop_levels",
    "crop_pad",
    "dims_of",
    "directions",
    "interior",
    "nanmean_rows",
    "neighbourhood",
    "pad_crop",
    "setting",
    "zone_features",
    "zone_features_stack",
]

_DEFAULTS: dict[str, Any] = {
    "dims": ("3D",),
    "glcm_distance": 1,
    "glcm_symmetric": True,
    "ngtdm_distance": 1,
    "ngldm_distance": 1,
    "ngldm_alpha": 0,
    "gldzm_distance_metric": "manhattan",
    "families": ("glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm"),
}


def setting(settings: Any, name: str) -> Any:
    """Read one texture setting by duck typing, falling back to the IBSI default."""
    if settings is None:
        return _DEFAULTS[name]
    if isinstance(settings, dict):
        return settings.get(name, _DEFAULTS[name])
    return getattr(settings, name, _DEFAULTS[name])


def dims_of(dims: Any) -> tuple[str, ...]:
    """Normalise a dims argument (``"3D"`` or a sequence) to a tuple."""
    return (dims,) if isinstance(dims, str) else tuple(dims)


def as3d(grey: np.ndarray, roi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (grey, roi) as 3D arrays (a 2D image becomes one slice)."""
    grey = np.asarray(grey)
    roi = np.asarray(roi, dtype=bool)
    if grey.shape != roi.shape:
        from medlens.core.errors import InputError

        raise InputError(
            f"texture: grey shape {grey.shape} differs from roi shape {roi.shape}; give arrays on one grid"
        )
    if grey.ndim == 2:
        return grey[None], roi[None]
    return grey, roi


def bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a non-empty bool mask as a tuple of slices (projections, no coordinate lists)."""
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def crop_pad(grey: np.ndarray, roi: np.ndarray, pad: int, *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Crop ``grey`` (0 outside ``roi``) to the ROI bounding box and zero-pad it by ``pad`` voxels per side.

    Returns the cropped-padded grey array (int64, 0 = outside the ROI) followed by the equally cropped and
    padded ``extra`` arrays (padded with 0/False).
    """
    roi = np.asarray(roi, dtype=bool)
    sl = bbox(roi)
    g = np.where(roi[sl], np.asarray(grey)[sl], 0).astype(np.int64)
    out = [np.pad(g, pad)]
    for e in extra:
        out.append(np.pad(np.asarray(e)[sl], pad))
    return tuple(out)


def crop_levels(grey: np.ndarray, roi: np.ndarray, n_levels: int, *, pad: int, family: str) -> np.ndarray:
    """``grey`` (3D, or 2D as one slice) cropped to the bounding box of ``roi`` and zero-padded by ``pad``.

    Returns a C-contiguous int64 (z, y, x) array with 0 outside the ROI, the input of the compiled kernels.
    Raises :class:`~medlens.core.errors.InputError` for an empty ROI or levels outside 0..``n_levels`` inside it
    (0 inside the ROI counts as outside, as before).
    """
    from medlens.core.errors import InputError

    grey, roi = as3d(grey, roi)
    if not roi.any():
        raise InputError(f"texture {family}: the ROI is empty; give a mask with at least one voxel")
    gp = pad_crop(grey, roi, bbox(roi), pad)
    check_levels(gp, n_levels, family=family)
    return gp


def pad_crop(grey: np.ndarray, roi: np.ndarray, box: tuple[slice, ...], pad: int) -> np.ndarray:
    """``grey[box]`` with 0 outside ``roi[box]``, zero-padded by ``pad`` voxels per side: C-contiguous int64.

    One copy, no temporaries; float levels are truncated as by ``astype``.
    """
    shape = tuple(s.stop - s.start for s in box)
    out = np.zeros(tuple(n + 2 * pad for n in shape), dtype=np.int64)
    inner = out[tuple(slice(pad, pad + n) for n in shape)]
    np.copyto(inner, grey[box], casting="unsafe", where=roi[box])
    return out


def interior(gp: np.ndarray, pad: int) -> np.ndarray:
    """The unpadded view of an array padded by ``pad`` voxels per side."""
    return gp[tuple(slice(pad, n - pad) for n in gp.shape)]


def check_distance(distance: int, name: str) -> int:
    """``distance`` as an int, or :class:`~medlens.core.errors.InputError` when it is negative."""
    from medlens.core.errors import InputError

    d = int(distance)
    if d < 0:
        raise InputError(f"texture: {name} must be >= 0 voxels, got {distance}")
    return d


def check_levels(g: np.ndarray, n_levels: int, *, family: str) -> None:
    """Raise :class:`~medlens.core.errors.InputError` unless every value of ``g`` is in 0..``n_levels``."""
    from medlens.core.errors import InputError

    if int(n_levels) < 1:
        raise InputError(f"texture {family}: n_levels must be >= 1, got {n_levels}")
    lo, hi = (int(g.min()), int(g.max())) if g.size else (0, 0)
    if lo < 0 or hi > n_levels:
        found = f"{hi} (above n_levels)" if hi > n_levels else f"{lo} (negative)"
        raise InputError(
            f"texture {family}: grey levels inside the ROI must be 1..{n_levels}, found {found}; "
            "discretise the image first (or raise n_levels)"
        )


def directions(three_d: bool) -> list[tuple[int, int, int]]:
    """Unique (non-opposite) unit direction offsets (dz, dy, dx): 4 in-plane or 13 in 3D."""
    out: list[tuple[int, int, int]] = []
    for dz, dy, dx in itertools.product((-1, 0, 1), repeat=3):
        if (dz, dy, dx) == (0, 0, 0) or (not three_d and dz != 0):
            continue
        if (dz, dy, dx) > (-dz, -dy, -dx):  # keep one of each opposite pair
            out.append((dz, dy, dx))
    return out


def neighbourhood(distance: int, three_d: bool) -> list[tuple[int, int, int]]:
    """All offsets within Chebyshev ``distance`` except the centre (in-plane only unless ``three_d``)."""
    r = range(-distance, distance + 1)
    rz = r if three_d else range(0, 1)
    return [(a, b, c) for a in rz for b in r for c in r if (a, b, c) != (0, 0, 0)]


def nanmean_rows(values: list[dict[str, float]]) -> dict[str, float]:
    """Average per-matrix feature dicts, ignoring NaN entries (NaN when every entry is NaN)."""
    if not values:
        return {}
    keys = list(values[0])
    arr = np.array([[v[k] for k in keys] for v in values], dtype=float)
    out = {}
    for j, k in enumerate(keys):
        col = arr[:, j]
        col = col[np.isfinite(col)]
        out[k] = float(col.mean()) if col.size else float("nan")
    return out


def zone_features(
    m: np.ndarray, n_voxels: float, names: dict[str, str], *, energy: bool = False, j_values: np.ndarray | None = None
) -> dict[str, float]:
    """Features shared by GLRLM, GLSZM, GLDZM and NGLDM from an (Ng, Nj) count matrix.

    Rows are grey levels 1..Ng, columns the run length / zone size / distance / dependence 1..Nj, or the values
    ``j_values`` for a matrix stored with only its non-empty columns.
    ``names`` maps the generic names (``s, l, lg, hg, slg, shg, llg, lhg, glnu, glnu_norm, jnu, jnu_norm,
    perc, gl_var, j_var, j_entr``, optionally ``energy``) to the IBSI tag stems.
    """
    m = np.asarray(m, dtype=np.float64)
    ns = m.sum()
    keys = list(names)
    if ns <= 0:
        return {names[k]: float("nan") for k in keys}
    i = np.arange(1, m.shape[0] + 1, dtype=np.float64)[:, None]
    j = (np.arange(1, m.shape[1] + 1) if j_values is None else np.asarray(j_values)).astype(np.float64)[None, :]
    ri = m.sum(axis=1)
    rj = m.sum(axis=0)
    p = m / ns
    mu_i = float((i * p).sum())
    mu_j = float((j * p).sum())
    nz = p[p > 0]
    f = {
        "s": (rj / j[0] ** 2).sum() / ns,
        "l": (rj * j[0] ** 2).sum() / ns,
        "lg": (ri / i[:, 0] ** 2).sum() / ns,
        "hg": (ri * i[:, 0] ** 2).sum() / ns,
        "slg": (m / (i**2 * j**2)).sum() / ns,
        "shg": (m * i**2 / j**2).sum() / ns,
        "llg": (m * j**2 / i**2).sum() / ns,
        "lhg": (m * i**2 * j**2).sum() / ns,
        "glnu": (ri**2).sum() / ns,
        "glnu_norm": (ri**2).sum() / ns**2,
        "jnu": (rj**2).sum() / ns,
        "jnu_norm": (rj**2).sum() / ns**2,
        "perc": ns / n_voxels if n_voxels > 0 else float("nan"),
        "gl_var": (((i - mu_i) ** 2) * p).sum(),
        "j_var": (((j - mu_j) ** 2) * p).sum(),
        "j_entr": 0.0 - (nz * np.log2(nz)).sum(),
    }
    if energy:
        f["energy"] = (p**2).sum()
    return {names[k]: float(f[k]) for k in keys}


_STACK_ELEMENTS = 32768  # matrices per vectorised chunk: about this many entries (temporaries stay in cache)


def zone_features_stack(
    ms: np.ndarray,
    n_voxels: np.ndarray,
    names: dict[str, str],
    *,
    energy: bool = False,
    j_values: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """:func:`zone_features` of every matrix of a stack (k, Ng, Nj), vectorised over chunks of the stack.

    The same element-wise operations and, per matrix, the same reductions over contiguous rows as
    :func:`zone_features`, so every value is identical to the per-matrix call (checked by the tests); only the
    Python and numpy call overhead is paid once per chunk instead of once per matrix.
    """
    ms = np.asarray(ms)
    k, ng, nj = ms.shape
    nv = np.asarray(n_voxels, dtype=np.float64).reshape(k)
    step = max(1, _STACK_ELEMENTS // max(ng * nj, 1))
    out: list[dict[str, float]] = []
    for s in range(0, k, step):
        out += _zone_features_chunk(ms[s : s + step], nv[s : s + step], names, energy, j_values)
    return out


def _zone_features_chunk(
    ms: np.ndarray, nv: np.ndarray, names: dict[str, str], energy: bool, j_values: np.ndarray | None
) -> list[dict[str, float]]:
    m = np.ascontiguousarray(ms, dtype=np.float64)
    k, ng, nj = m.shape
    keys = list(names)
    flat = m.reshape(k, ng * nj)
    ns = flat.sum(axis=1)
    empty = ns <= 0
    i = np.arange(1, ng + 1, dtype=np.float64)[:, None]
    j = (np.arange(1, nj + 1) if j_values is None else np.asarray(j_values)).astype(np.float64)[None, :]
    with np.errstate(all="ignore"):
        nsd = np.where(empty, 1.0, ns)  # empty matrices give NaN below; avoid 0/0 on the way
        ri = m.sum(axis=2)
        rj = m.sum(axis=1)
        p = m / nsd[:, None, None]
        pf = p.reshape(k, ng * nj)

        def tot(x: np.ndarray) -> np.ndarray:
            return x.reshape(k, -1).sum(axis=1)

        mu_i = tot(i * p)
        mu_j = tot(j * p)
        f = {
            "s": (rj / j[0] ** 2).sum(axis=1) / nsd,
            "l": (rj * j[0] ** 2).sum(axis=1) / nsd,
            "lg": (ri / i[:, 0] ** 2).sum(axis=1) / nsd,
            "hg": (ri * i[:, 0] ** 2).sum(axis=1) / nsd,
            "slg": tot(m / (i**2 * j**2)) / nsd,
            "shg": tot(m * i**2 / j**2) / nsd,
            "llg": tot(m * j**2 / i**2) / nsd,
            "lhg": tot(m * i**2 * j**2) / nsd,
            "glnu": (ri**2).sum(axis=1) / nsd,
            "glnu_norm": (ri**2).sum(axis=1) / nsd**2,
            "jnu": (rj**2).sum(axis=1) / nsd,
            "jnu_norm": (rj**2).sum(axis=1) / nsd**2,
            "perc": np.where(nv > 0, ns / np.where(nv > 0, nv, 1.0), np.nan),
            "gl_var": tot(((i[None] - mu_i[:, None, None]) ** 2) * p),
            "j_var": tot(((j[None] - mu_j[:, None, None]) ** 2) * p),
        }
        if energy:
            f["energy"] = tot(p**2)
    entr = np.empty(k)
    for q in range(k):  # over the non-zero entries only, as in zone_features (the sum depends on their grouping)
        nz = pf[q][pf[q] > 0]
        entr[q] = 0.0 - (nz * np.log2(nz)).sum()
    f["j_entr"] = entr
    cols = {name: f[key].tolist() for key, name in names.items()}
    out = []
    for q in range(k):
        if empty[q]:
            out.append({names[key]: float("nan") for key in keys})
        else:
            out.append({name: float(vals[q]) for name, vals in cols.items()})
    return out
