"""Feature extraction entry point: :func:`extract` returns ``{IBSI tag: value}``."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

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
    n_int = int(roi.int_mask.sum())
    if "morph" in fam:
        if int(roi.morph_mask.sum()) < 2:
            warn_feature("morph", "the ROI has a single voxel: PCA axes, Moran's I and Geary's C are undefined")
        elif n_int >= 2 and float(np.ptp(vals)) == 0.0:
            warn_feature("morph", "the ROI is constant: Moran's I and Geary's C are undefined (zero variance)")
        with np.errstate(divide="ignore", invalid="ignore"):
            out.update(morphology_features(roi.image, roi.morph_mask, roi.int_mask, roi.spacing_mm))
    if "loc" in fam:
        out.update(
            local_intensity_features(
                roi.image, roi.int_mask, roi.spacing_mm, volume_cm3=settings.local_intensity_volume_cm3
            )
        )
    if "stat" in fam:
        out.update(statistics_features(vals))
        if out["stat_mean"] == 0:
            warn_feature("stat", "the ROI mean is 0, so stat_cov is undefined")
    if "ih" in fam:
        levels = roi.grey[roi.int_mask]
        if roi.n_levels == 1 or int(levels.max()) == int(levels.min()):
            warnings.warn(
                "radiomics ih: all ROI voxels fall in one grey level; histogram spread features are 0 and "
                "ih_cov/ih_qcod may be undefined",
                RadiomicsWarning,
                stacklevel=2,
            )
        out.update(histogram_features(levels, roi.n_levels))
    if "ivh" in fam:
        out.update(ivh_features(vals, settings.ivh, settings.resegmentation))
    out.update(_texture(roi, settings))
    return out


def extract(image: Image, mask: Image, settings: RadiomicsSettings | str | Path = "ibsi-c") -> dict[str, float]:
    """Compute IBSI radiomics features of one ROI.

    Parameters
    ----------
    image
        3D intensity image (HU for CT, SUV for PET, arbitrary for MR).
    mask
        Boolean ROI mask; on the image grid, or on another grid (then resampled through LPS with a
        :class:`RadiomicsWarning`).
    settings
        :class:`RadiomicsSettings`, a preset name (``ibsi-dig``, ``ibsi-a`` ... ``ibsi-e``) or a YAML path.

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
    if not isinstance(settings, RadiomicsSettings):
        settings = load_preset(settings)
    roi = process(image, mask, settings)
    return extract_processed(roi, settings)
