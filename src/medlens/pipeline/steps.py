"""Pipeline-specific steps between the science packages: clinical header facts, ROI names, the
preprocess recipe from the run configuration, and the mask from ``mask.method``.

Reading, features and the audit log are done by the real modules directly (:mod:`medlens.io`,
:mod:`medlens.radiomics`, :mod:`medlens.core.audit`); only what the pipeline adds lives here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medlens.core.image import Image, Units

__all__ = ["header_facts", "make_mask", "preprocess", "rtstruct_roi_names"]


def header_facts(image: Image) -> dict[str, Any]:
    """Patient age (years), sex, weight (kg), height (m), BMI and UIDs of an image read by :mod:`medlens.io`.

    Everything comes from :attr:`Image.meta` (the reader fills ``meta.extra`` from the DICOM header), so the
    pipeline never parses DICOM itself. These feed the clinical columns of the feature table. Missing
    values are ``None``; an image without a DICOM header (NIfTI, ...) gives ``None`` everywhere.
    """
    extra = image.meta.extra

    def num(key: str) -> float | None:
        v = extra.get(key)
        try:
            return float(v) if v not in (None, "") else None
        except (TypeError, ValueError):
            return None

    weight, height = num("patient_weight_kg"), num("patient_size_m")
    bmi = weight / height**2 if weight and height and height > 0.3 else None
    sex = str(extra.get("patient_sex") or "") or None
    return {
        "age": num("patient_age_years"),
        "sex": sex,
        "weight_kg": weight,
        "height_m": height,
        "bmi": bmi,
        "study_uid": image.meta.study_uid or "",
        "series_uid": image.meta.series_uid or "",
        "modality": image.meta.modality or "",
    }


def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """ROI names of the RTSTRUCT at ``path`` (:func:`medlens.io.rtstruct.list_rois`); ``[]`` when the
    mask is not an RTSTRUCT (a SEG or a label image, whose ROI is chosen by the reader)."""
    from medlens.core.errors import FormatError, InputError
    from medlens.io.api import volume_suffix
    from medlens.io.rtstruct import find_rtstruct, list_rois

    p = Path(path)
    if volume_suffix(p) is not None:
        return []
    if p.is_file():
        try:
            return list_rois(p)
        except (FormatError, InputError):  # a SEG or another DICOM object: its reader picks the ROI
            return []
    return list_rois(p) if find_rtstruct(p) else []


def preprocess(image: Image, recipe_spec: Any, base_dir: Path) -> Image:
    """Apply the ``preprocess.recipe`` of the run configuration (path to YAML, relative to the config
    folder, or the recipe as a mapping); ``None`` returns ``image`` unchanged."""
    if recipe_spec is None:
        return image
    from medlens.preprocess import Recipe

    if isinstance(recipe_spec, str):
        p = Path(recipe_spec)
        recipe = Recipe.from_yaml(p if p.is_absolute() else base_dir / p)
    else:
        recipe = Recipe.from_dict(recipe_spec, source="config preprocess.recipe")
    return recipe.apply(image)


def make_mask(image: Image, method: str, options: dict[str, Any] | None = None) -> Image:
    """The ROI from ``mask.method`` / ``mask.options`` (:func:`medlens.segment.segment`).

    A label image (``multi-otsu``, ``lungs``) becomes the mask of every non-zero label.
    """
    from medlens.segment import segment

    out = segment(image, method=method, **(options or {}))
    if not out.is_mask:
        out = out.with_array(out.array > 0, op=f"{method}: labels > 0", units=Units.MASK)
    return out
