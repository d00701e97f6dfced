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

__all__ = ["dicom_files", "header_facts", "make_mask", "preprocess", "rtstruct_roi_names"]


def dicom_files(path: str | os.PathLike[str]) -> list[Path]:
    """DICOM files under ``path`` (a file or a folder searched recursively), sorted by name."""
    from medlens.io.dicom.files import list_files

    return list_files(path)


def header_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Patient age (years), sex, weight (kg), height (m), BMI and UIDs from the first DICOM file.

    These feed the clinical columns of the feature table. Missing values are ``None``; not a
    DICOM input (NIfTI, ...) gives an empty dict.
    """
    import pydicom

    from medlens.io.api import volume_suffix

    if volume_suffix(Path(path)) is not None:
        return {}
    files = dicom_files(path)
    if not files:
        return {}
    try:
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    except Exception:
        return {}
    from medlens.io.dicom.headers import age_years

    age = age_years(getattr(ds, "PatientAge", None))
    weight = float(ds.PatientWeight) if getattr(ds, "PatientWeight", None) not in (None, "") else None
    height = float(ds.PatientSize) if getattr(ds, "PatientSize", None) not in (None, "") else None
    bmi = weight / height**2 if weight and height and height > 0.3 else None
    sex = str(getattr(ds, "PatientSex", "") or "") or None
    return {
        "age": age,
        "sex": sex,
        "weight_kg": weight,
        "height_m": height,
        "bmi": bmi,
        "study_uid": str(getattr(ds, "StudyInstanceUID", "")),
        "series_uid": str(getattr(ds, "SeriesInstanceUID", "")),
        "modality": str(getattr(ds, "Modality", "")),
    }


def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """ROI names of the RTSTRUCT at ``path`` (:func:`medlens.io.rtstruct.list_rois`); ``[]`` when the
    mask is not an RTSTRUCT (a SEG or a label image, whose ROI is chosen by the reader)."""
    import pydicom

    from medlens.io.api import volume_suffix
    from medlens.io.rtstruct import find_rtstruct, is_rtstruct, list_rois

    p = Path(path)
    if volume_suffix(p) is not None:
        return []
    if p.is_file():
        try:
            ds = pydicom.dcmread(str(p), stop_before_pixels=True, specific_tags=["SOPClassUID", "Modality"])
        except Exception:
            return []
        return list_rois(p) if is_rtstruct(ds) else []
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
