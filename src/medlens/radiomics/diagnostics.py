"""Diagnostic features (IBSI 1 reference-set diagnostics) and the radiomics warning mechanism.

Diagnostic tags describe the image and the ROI masks at three stages: the initial image
(``init``), after interpolation (``interp``) and after re-segmentation (``reseg``), e.g.
``img_dim_x_init_img``, ``int_mask_vox_count_reseg_roi``. Axis names follow IBSI: ``x`` is the
column axis (array axis 2), ``y`` the row axis (1) and ``z`` the slice axis (0).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from medlens.core.errors import MedlensWarning
from medlens.radiomics.texture._common import bbox

__all__ = ["RadiomicsWarning", "image_diagnostics", "roi_diagnostics", "warn_feature"]

_AX = {"x": 2, "y": 1, "z": 0}


class RadiomicsWarning(MedlensWarning):
    """A feature (or family) could not be computed and was set to NaN; the message says why."""


def warn_feature(family: str, reason: str) -> None:
    """Emit a :class:`RadiomicsWarning` naming the feature family and the reason for NaN values."""
    warnings.warn(f"radiomics {family}: {reason}; its features are NaN", RadiomicsWarning, stacklevel=3)


def image_diagnostics(array: np.ndarray, spacing_mm: tuple[float, ...], stage: str) -> dict[str, float]:
    """``img_dim_*``, ``vox_dim_*`` and ``*_int_*_img`` tags of an image at ``stage`` (``init``/``interp``)."""
    out: dict[str, float] = {}
    for a, ax in _AX.items():
        out[f"img_dim_{a}_{stage}_img"] = float(array.shape[ax])
    for a, ax in _AX.items():
        out[f"vox_dim_{a}_{stage}_img"] = float(spacing_mm[ax])
    finite = array
    if array.dtype.kind == "f":
        ok = np.isfinite(array)
        if not ok.all():
            finite = array[ok]
    nan = math.nan
    out[f"mean_int_{stage}_img"] = float(finite.mean(dtype=np.float64)) if finite.size else nan
    out[f"min_int_{stage}_img"] = float(finite.min()) if finite.size else nan
    out[f"max_int_{stage}_img"] = float(finite.max()) if finite.size else nan
    return out


def _bb(mask: np.ndarray) -> list[float]:
    if not mask.any():
        return [math.nan] * 3
    # per-axis projections instead of np.nonzero: no index arrays of the ROI size
    return [float(b.stop - b.start) for b in bbox(mask)]


def roi_diagnostics(
    array: np.ndarray,
    int_mask: np.ndarray,
    morph_mask: np.ndarray,
    stage: str,
    *,
    full_shape: tuple[int, ...] | None = None,
) -> dict[str, float]:
    """ROI diagnostic tags (``int_mask_*``, ``morph_mask_*``) at ``stage`` (``init``/``interp``/``reseg``).

    The arrays may be a crop holding the whole ROI; ``full_shape`` is then the mask's grid shape.
    """
    out: dict[str, float] = {}
    shape = full_shape if full_shape is not None else int_mask.shape
    for a, ax in _AX.items():
        out[f"int_mask_dim_{a}_{stage}_roi"] = float(shape[ax])
    bb_i = _bb(int_mask)
    bb_m = _bb(morph_mask)
    for a, ax in _AX.items():
        out[f"int_mask_bb_dim_{a}_{stage}_roi"] = bb_i[ax]
    for a, ax in _AX.items():
        out[f"morph_mask_bb_dim_{a}_{stage}_roi"] = bb_m[ax]
    out[f"int_mask_vox_count_{stage}_roi"] = float(int_mask.sum())
    out[f"morph_mask_vox_count_{stage}_roi"] = float(morph_mask.sum())
    vals = array[int_mask]
    vals = vals[np.isfinite(vals)]
    nan = math.nan
    out[f"int_mask_mean_int_{stage}_roi"] = float(vals.mean()) if vals.size else nan
    out[f"int_mask_min_int_{stage}_roi"] = float(vals.min()) if vals.size else nan
    out[f"int_mask_max_int_{stage}_roi"] = float(vals.max()) if vals.size else nan
    return out
