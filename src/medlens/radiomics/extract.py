"""Feature extraction entry point: :func:`extract` returns ``{IBSI tag: value}``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.radiomics.diagnostics import RadiomicsWarning, warn_feature
from medlens.radiomics.intensity import (
    IH_TAGS,
    IVH_TAGS,
    STAT_TAGS,
    histogram_features,
    ivh_features,
    statistics_features,
)
from medlens.radiomics.local_intensity import local_intensity_features
from medlens.radiomics.morphology import MORPH_TAGS, morphology_features
from medlens.radiomics.pipeline import ProcessedROI, process
from medlens.radiomics.settings import RadiomicsSettings, load_preset
from medlens.radiomics.texture._common import bbox

__all__ = ["extract", "extract_processed"]


def _texture(roi: ProcessedROI, settings: RadiomicsSettings) -> dict[str, float]:
    if not settings.texture.families:
        return {}
    try:
        from medlens.radiomics.texture import compute_texture_features
    except ImportError as exc:
        warnings.warn(
            f"radiomics texture: the texture module is not available ({exc}); texture features are left out",
            RadiomicsWarning,
            stacklevel=3,
        )
        return {}
    if not roi.int_mask.any():
        return {}
    return dict(
        compute_texture_features(
            roi.grey,
            roi=roi.int_mask,
            morph_roi=roi.morph_mask,
            spacing_mm=roi.spacing_mm,
            n_levels=roi.n_levels,
            settings=settings.texture,
        )
    )


def _spread_hints(values: np.ndarray, what: str) -> list[str]:
    hints = []
    if values.size and float(values.mean()) == 0.0:
        hints.append(f"the {what} is 0 (coefficient of variation undefined)")
    if values.size < 3:
        hints.append(f"only {values.size} voxel(s): no value lies strictly between the 10th and 90th percentiles")
    return hints


def _report_nan(family: str, feats: dict[str, float], hints: list[str]) -> None:
    """Warn (never silently) when a family returns NaN values, naming the tags and the likely reason."""
    bad = [k for k, v in feats.items() if not math.isfinite(v)]
    if bad:
        why = "; ".join(hints) if hints else "undefined for this ROI"
        warnings.warn(f"radiomics {family}: {', '.join(bad)} are NaN ({why})", RadiomicsWarning, stacklevel=3)


def extract_processed(roi: ProcessedROI, settings: RadiomicsSettings) -> dict[str, float]:
    """Features of an already processed ROI (see :func:`medlens.radiomics.pipeline.process`)."""
    fam = settings.families
    out: dict[str, float] = {}
    if "diag" in fam:
        out.update(roi.diagnostics)
    if roi.reasons:
        reason = "; ".join(roi.reasons)
        for name, tags in (("morph", MORPH_TAGS), ("stat", STAT_TAGS), ("ih", IH_TAGS), ("ivh", IVH_TAGS)):
            if name in fam:
                warn_feature(name, reason)
                out.update({t: math.nan for t in tags})
        if "loc" in fam:
            warn_feature("loc", reason)
            out.update({"loc_peak_loc": math.nan, "loc_peak_glob": math.nan})
        return out
    vals = roi.image[roi.int_mask]
    if "morph" in fam:
        n_morph = int(roi.morph_mask.sum())
        hints = []
        if n_morph < 2:
            hints.append("the ROI has a single voxel")
        elif min(b.stop - b.start for b in bbox(roi.morph_mask)) == 1:  # one plane thick along some axis
            hints.append("the ROI is flat (all voxel centres in one plane or line): PCA-based axes degenerate")
        if vals.size >= 2 and float(np.ptp(vals)) == 0.0:
            hints.append("the ROI intensities are constant (zero variance)")
        with np.errstate(divide="ignore", invalid="ignore"):
            feats = morphology_features(roi.image, roi.morph_mask, roi.int_mask, roi.spacing_mm)
        _report_nan("morph", feats, hints)
        out.update(feats)
    if "loc" in fam:
        feats = local_intensity_features(
            roi.image, roi.int_mask, roi.spacing_mm, volume_cm3=settings.local_intensity_volume_cm3
        )
        _report_nan("loc", feats, [])
        out.update(feats)
    if "stat" in fam:
        feats = statistics_features(vals)
        _report_nan("stat", feats, _spread_hints(vals, "mean"))
        out.update(feats)
    if "ih" in fam:
        levels = roi.grey[roi.int_mask]
        if roi.n_levels == 1 or int(levels.max()) == int(levels.min()):
            warnings.warn(
                "radiomics ih: all ROI voxels fall in one grey level; histogram spread features are 0",
                RadiomicsWarning,
                stacklevel=2,
            )
        feats = histogram_features(levels, roi.n_levels)
        _report_nan("ih", feats, _spread_hints(levels.astype(np.float64), "mean grey level"))
        out.update(feats)
    if "ivh" in fam:
        feats = ivh_features(vals, settings.ivh, settings.resegmentation)
        _report_nan("ivh", feats, [])
        out.update(feats)
    out.update(_texture(roi, settings))
    return out


def extract(
    image: Image, mask: Image, settings: RadiomicsSettings | str | Path | Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Compute IBSI radiomics features of one ROI.

    Parameters
    ----------
    image
        3D intensity image (HU for CT, SUV for PET, arbitrary for MR).
    mask
        Boolean ROI mask; on the image grid, or on another grid (then resampled through LPS with a
        :class:`RadiomicsWarning`).
    settings
        :class:`RadiomicsSettings`, a preset name (``ibsi-dig``, ``ibsi-a`` ... ``ibsi-e``), a YAML path,
        a settings mapping (as in the YAML files), or ``None`` for the modality-neutral defaults
        (no interpolation or re-segmentation, FBN 32 bins, IVH with 1000 bins, 3D texture).

    Returns
    -------
    dict
        ``{IBSI tag: float}``, e.g. ``morph_volume`` (mm^3), ``stat_mean`` (image units),
        ``cm_joint_max_3D_avg``. Undefined features are NaN and a :class:`RadiomicsWarning`
        names the family and the reason (empty ROI, single voxel, constant ROI, ...).
    """
    if not isinstance(image, Image) or not isinstance(mask, Image):
        raise InputError(
            f"extract needs medlens.Image objects for image and mask, got {type(image).__name__} and "
            f"{type(mask).__name__}; read them with medlens.read_image / medlens.read_mask"
        )
    if settings is None:
        settings = RadiomicsSettings(name="default")
    elif isinstance(settings, Mapping):
        settings = RadiomicsSettings.from_dict(dict(settings), source="settings mapping")
    elif not isinstance(settings, RadiomicsSettings):
        settings = load_preset(settings)
    roi = process(image, mask, settings)
    return extract_processed(roi, settings)
