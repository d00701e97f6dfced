"""STS PET cases for the U-Net: building a case from Images, intensity scaling and 2D slice / 3D patch extraction.

A training case is built from Images (:func:`make_case`), never from paths: whoever holds the
images (a cohort reader, a federated client, a test) checks nothing twice. :func:`load_case` and
:func:`read_cohort` are thin wrappers for files: they read with :func:`medlens.read_image` (PET in
SUVbw) and :func:`medlens.read_mask` (RTSTRUCT ROI ``GTV_Mass_PET``), then call :func:`make_case`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, Units

__all__ = ["SUV_SCALE", "Case", "load_case", "make_case", "read_cohort", "scale_suv"]

#: SUVs are divided by this and clipped to [0, SUV_CLIP / SUV_SCALE] before entering the network.
SUV_SCALE = 5.0
SUV_CLIP = 25.0


@dataclass(frozen=True)
class Case:
    """One patient: PET (SUVbw) and the expert mask on its grid."""

    patient_id: str
    image: Image
    mask: Image


def read_cohort(cohort_csv: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Rows of a cohort CSV with at least ``patient_id``, ``pet_image``, ``pet_rtstruct`` (paths relative to it)."""
    p = Path(cohort_csv)
    if not p.is_file():
        raise InputError(f"{p}: cohort CSV not found")
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"patient_id", "pet_image", "pet_rtstruct"}
    if not rows or not need <= set(rows[0]):
        have = sorted(rows[0]) if rows else []
        raise InputError(f"{p}: a cohort CSV needs the columns {sorted(need)}; found {have}")
    for r in rows:
        r["pet_image"] = str(p.parent / r["pet_image"])
        r["pet_rtstruct"] = str(p.parent / r["pet_rtstruct"])
    return rows


def make_case(image: Image, mask: Image, *, patient_id: str = "") -> Case:
    """A training case from a PET image (SUVbw) and its mask on the image's grid.

    Parameters
    ----------
    image
        PET, ``(z, y, x)``, ``meta.units == "SUVbw"``.
    mask
        Boolean mask on ``image``'s grid (the one off-grid rule: :meth:`Image.require_same_grid`).
    patient_id
        Case name; default ``image.meta.patient_id``.

    Raises
    ------
    InputError
        Not Images, the PET not in SUVbw or not 3D, or the mask not boolean.
    GeometryError
        The mask is on another grid.
    """
    if not isinstance(image, Image) or not isinstance(mask, Image):
        raise InputError(
            f"make_case needs two medlens Images (PET, mask), got {type(image).__name__} and {type(mask).__name__}; "
            "read files with load_case"
        )
    where = image.meta.source or "the PET"
    if image.meta.units != Units.SUVBW:
        raise InputError(f"{where}: the PET is in {image.meta.units}, the U-Net needs SUVbw")
    if image.ndim != 3:
        raise InputError(f"{where}: the U-Net needs a 3D PET (z, y, x), got shape {image.shape}")
    if not mask.is_mask:
        raise InputError(f"{mask.meta.source or 'the mask'}: the mask must be boolean, got dtype {mask.dtype}")
    image.require_same_grid(mask, what="mask", source=mask.meta.source or None)
    return Case(patient_id or image.meta.patient_id, image, mask)


def load_case(
    image_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    *,
    roi: str = "GTV_Mass_PET",
    patient_id: str = "",
) -> Case:
    """Read one PET (:func:`medlens.read_image`, SUVbw) and its RTSTRUCT ROI (:func:`medlens.read_mask`).

    A thin wrapper: reading is medlens.io's, the case is :func:`make_case`'s.
    """
    from medlens.io import read_image, read_mask

    image = read_image(image_path)
    if image.meta.units != Units.SUVBW:  # before reading the mask: say what is wrong with the PET first
        raise InputError(f"{image_path}: the PET is in {image.meta.units}, the U-Net needs SUVbw")
    return make_case(image, read_mask(mask_path, reference=image, roi=roi), patient_id=patient_id)


def scale_suv(array: np.ndarray) -> np.ndarray:
    """Network input from SUVbw: ``clip(SUV, 0, SUV_CLIP) / SUV_SCALE`` as float32."""
    return (np.clip(np.asarray(array, dtype=np.float32), 0.0, SUV_CLIP) / SUV_SCALE).astype(np.float32)


def pad_to(array: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the trailing axes of ``array`` up to ``shape`` (centred); returns the array and the crop back."""
    pads, crop = [], []
    lead = array.ndim - len(shape)
    for _ in range(lead):
        pads.append((0, 0))
        crop.append(slice(None))
    for s, t in zip(array.shape[lead:], shape, strict=True):
        extra = max(0, int(t) - s)
        pads.append((extra // 2, extra - extra // 2))
        crop.append(slice(extra // 2, extra // 2 + s))
    return np.pad(array, pads), tuple(crop)
