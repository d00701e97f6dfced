"""IBSI texture feature families: GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM.

:func:`compute_texture_features` is the entry point used by :func:`medlens.radiomics.extract`; the per-family
``*_matrices`` functions return the raw count matrices and ``*_features`` the features of one family.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.radiomics.texture import glcm as _glcm
from medlens.radiomics.texture import gldzm as _gldzm
from medlens.radiomics.texture import glrlm as _glrlm
from medlens.radiomics.texture import glszm as _glszm
from medlens.radiomics.texture import ngldm as _ngldm
from medlens.radiomics.texture import ngtdm as _ngtdm
from medlens.radiomics.texture._common import (
    bbox,
    check_distance,
    check_levels,
    dims_of,
    interior,
    pad_crop,
    setting,
)
from medlens.radiomics.texture.glcm import glcm_features, glcm_matrices
from medlens.radiomics.texture.gldzm import gldzm_features, gldzm_matrices
from medlens.radiomics.texture.glrlm import glrlm_features, glrlm_matrices
from medlens.radiomics.texture.glszm import glszm_features, glszm_matrices
from medlens.radiomics.texture.ngldm import ngldm_features, ngldm_matrices
from medlens.radiomics.texture.ngtdm import ngtdm_features, ngtdm_matrices

__all__ = [
    "compute_texture_features",
    "glcm_features",
    "glcm_matrices",
    "gldzm_features",
    "gldzm_matrices",
    "glrlm_features",
    "glrlm_matrices",
    "glszm_features",
    "glszm_matrices",
    "ngldm_features",
    "ngldm_matrices",
    "ngtdm_features",
    "ngtdm_matrices",
]

_FAMILIES = ("glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm")


def _warning_category() -> type[Warning]:
    try:
        from medlens.radiomics.diagnostics import RadiomicsWarning

        return RadiomicsWarning
    except ImportError:  # pragma: no cover - the diagnostics module belongs to the pipeline
        from medlens.core.errors import MedlensWarning

        return MedlensWarning


def compute_texture_features(
    grey: np.ndarray,
    *,
    roi: np.ndarray,
    morph_roi: np.ndarray | None = None,
    spacing_mm: tuple[float, ...] | None = None,
    n_levels: int,
    settings: Any = None,
) -> dict[str, float]:
    """All requested IBSI texture features of a discretised ROI, keyed by IBSI tag.

    Parameters
    ----------
    grey
        Discretised grey levels, int, shape (z, y, x) (or (y, x)); levels 1..``n_levels`` inside ``roi``.
    roi
        Intensity mask, bool, same shape.
    morph_roi
        Morphological mask, bool, same shape (GLDZM border distance); ``None`` uses ``roi``.
    spacing_mm
        Voxel spacing (mm), array axis order. Texture matrices are defined on the voxel grid, so it is not
        used; accepted for the shared interface.
    n_levels
        Number of grey levels Ng (matrix rows; levels absent from the ROI still count).
    settings
        Object with the fields of :class:`medlens.radiomics.settings.TextureSettings` (missing fields take the
        IBSI defaults): ``dims``, ``glcm_distance``, ``glcm_symmetric``, ``ngtdm_distance``,
        ``ngldm_distance``, ``ngldm_alpha``, ``gldzm_distance_metric``, ``families``.

    Returns
    -------
    dict
        ``cm_*``, ``rlm_*`` (``_2D_avg``, ``_2D_comb``, ``_2_5D_avg``, ``_2_5D_comb``, ``_3D_avg``, ``_3D_comb``)
        and ``szm_*``, ``dzm_*``, ``ngt_*``, ``ngl_*`` (``_2D``, ``_2_5D``, ``_3D``). A feature that is
        undefined for this ROI (no voxel pairs, zero variance, ...) is NaN, with a warning naming the family.
    """
    grey = np.asarray(grey)
    roi = np.asarray(roi, dtype=bool)
    if grey.shape != roi.shape:
        raise InputError(f"texture: grey shape {grey.shape} differs from roi shape {roi.shape}; give one grid")
    if morph_roi is not None and np.shape(morph_roi) != roi.shape:
        raise InputError(f"texture: morph_roi shape {np.shape(morph_roi)} differs from roi shape {roi.shape}")
    if int(n_levels) < 1:
        raise InputError(f"texture: n_levels must be >= 1, got {n_levels}")
    n_levels = int(n_levels)
    if roi.any():
        vals = grey[roi]
        if vals.dtype.kind in "fc" and not np.isfinite(vals).all():
            raise InputError("texture: grey has NaN or infinite values inside the ROI; discretise the image first")
        if vals.min() < 1 or vals.max() > n_levels:
            raise InputError(
                f"texture: grey levels inside the ROI span {int(vals.min())}..{int(vals.max())}, "
                f"expected 1..{n_levels}; discretise the image first"
            )
    dims = dims_of(setting(settings, "dims"))
    families = tuple(setting(settings, "families"))
    bad = [f for f in families if f not in _FAMILIES]
    if bad:
        raise InputError(f"texture: unknown families {bad}; allowed: {', '.join(_FAMILIES)}")
    if not roi.any():
        warnings.warn("texture: the ROI is empty; no texture features", _warning_category(), stacklevel=2)
        return {}
    if grey.ndim == 2:  # a 2D image is one slice
        grey, roi = grey[None], roi[None]
        morph_roi = None if morph_roi is None else np.asarray(morph_roi)[None]
    if grey.ndim != 3:
        raise InputError(f"texture: grey must be 2D (y, x) or 3D (z, y, x), got shape {grey.shape}")
    # everything below works on the bounding box of both masks (GLDZM needs the whole morphological mask),
    # zero-padded by the widest neighbourhood reach, as the compiled kernels expect (one copy for all families)
    glcm_d = check_distance(setting(settings, "glcm_distance"), "glcm_distance")
    ngtdm_d = check_distance(setting(settings, "ngtdm_distance"), "ngtdm_distance")
    ngldm_d = check_distance(setting(settings, "ngldm_distance"), "ngldm_distance")
    pad = max(1, glcm_d, ngtdm_d, ngldm_d)
    morph = None if morph_roi is None else np.asarray(morph_roi, dtype=bool)
    box = bbox(roi if morph is None else roi | morph)
    gp = pad_crop(grey, roi, box, pad)
    check_levels(gp, n_levels, family="texture")  # the kernels index by level: guard against NaN levels too
    roi = roi[box]
    mm = np.ascontiguousarray(roi if morph is None else morph[box])
    # the families other than GLDZM work on the intensity ROI's own bounding box (their per-slice matrices
    # cover its slices): usually the same box, and then the same array
    box_roi = bbox(roi)
    same = all(s.start == 0 and s.stop == n for s, n in zip(box_roi, roi.shape, strict=True))
    gp_roi = gp if same else pad_crop(interior(gp, pad), roi, box_roi, pad)
    out: dict[str, float] = {}
    zone_cache: dict = {}  # zones labelled once for GLSZM and GLDZM
    with np.errstate(all="ignore"):
        if "glcm" in families:
            out.update(
                _glcm._features(
                    gp_roi,
                    pad,
                    n_levels=n_levels,
                    dims=dims,
                    distance=glcm_d,
                    symmetric=bool(setting(settings, "glcm_symmetric")),
                )
            )
        if "glrlm" in families:
            out.update(_glrlm._features(gp_roi, pad, n_levels=n_levels, dims=dims))
        if "glszm" in families:
            out.update(_glszm._features(gp_roi, pad, n_levels=n_levels, dims=dims, zone_cache=zone_cache))
        if "gldzm" in families:
            out.update(
                _gldzm._features(
                    gp,
                    pad,
                    mm,
                    n_levels=n_levels,
                    dims=dims,
                    metric=str(setting(settings, "gldzm_distance_metric")),
                    zone_cache=zone_cache,
                )
            )
        if "ngtdm" in families:
            out.update(_ngtdm._features(gp_roi, pad, n_levels=n_levels, dims=dims, distance=ngtdm_d))
        if "ngldm" in families:
            out.update(
                _ngldm._features(
                    gp_roi,
                    pad,
                    n_levels=n_levels,
                    dims=dims,
                    distance=ngldm_d,
                    alpha=int(setting(settings, "ngldm_alpha")),
                )
            )
    nan_fam = sorted({k.split("_")[0] for k, v in out.items() if not np.isfinite(v)})
    if nan_fam:
        n_nan = sum(1 for v in out.values() if not np.isfinite(v))
        warnings.warn(
            f"texture: {n_nan} feature(s) are NaN in {', '.join(nan_fam)} (ROI of {int(roi.sum())} voxel(s) with "
            f"{len(np.unique(interior(gp, pad)[roi]))} grey level(s): too few voxel pairs or no grey-level variation)",
            _warning_category(),
            stacklevel=2,
        )
    return out
