"""STS PET cases for the U-Net: reading, intensity scaling and 2D slice / 3D patch extraction.

Cases are read with :func:`medlens.read_image` (PET in SUVbw) and :func:`medlens.read_mask`
(RTSTRUCT ROI ``GTV_Mass_PET``). While those readers are unavailable (``medlens.io`` still being
written) a documented fallback reads the series with SimpleITK (via the bridge) and rasterises the
RTSTRUCT polygons slice by slice.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medlens.core.errors import FormatError, InputError
from medlens.core.image import Image, ImageMeta, Units

__all__ = ["SUV_SCALE", "Case", "load_case", "read_cohort", "scale_suv"]

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


def _read_pet_fallback(folder: Path) -> Image:
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise FormatError(f"{folder}: no DICOM series found")
    reader.SetFileNames(files)
    img = reader.Execute()
    import pydicom

    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    units = str(getattr(ds, "Units", ""))
    if units not in ("GML", "SUV", "SUVbw"):
        raise FormatError(f"{folder}: PET units are {units!r}; the fallback reader only accepts series already in SUV")
    meta = ImageMeta(
        modality=str(getattr(ds, "Modality", "PT")),
        units=Units.SUVBW,
        patient_id=str(getattr(ds, "PatientID", "")),
        source=str(folder),
    )
    return from_sitk(img, meta=meta)


def _rasterise_rtstruct(path: Path, reference: Image, roi: str) -> Image:
    import pydicom
    from skimage.draw import polygon

    files = [path] if path.is_file() else sorted(q for q in path.rglob("*") if q.is_file())
    if not files:
        raise FormatError(f"{path}: no RTSTRUCT file found")
    ds = pydicom.dcmread(files[0])
    numbers = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    wanted = [n for n, name in numbers.items() if name == roi]
    if not wanted:
        raise InputError(f"{path}: no ROI named {roi!r}; available: {sorted(numbers.values())}")
    out = np.zeros(reference.shape, bool)
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) != wanted[0]:
            continue
        for c in getattr(rc, "ContourSequence", []):
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            idx = reference.world_to_index(pts)
            k = round(float(np.median(idx[:, 0])))
            if not 0 <= k < reference.shape[0]:
                continue
            rr, cc = polygon(idx[:, 1], idx[:, 2], shape=reference.shape[1:])
            sl = np.zeros(reference.shape[1:], bool)
            sl[rr, cc] = True
            out[k] ^= sl  # XOR so inner contours cut holes
    return reference.with_array(out, op=f"rtstruct({roi})", units=Units.MASK)


def load_case(
    image_path: str | os.PathLike[str],
    mask_path: str | os.PathLike[str],
    *,
    roi: str = "GTV_Mass_PET",
    patient_id: str = "",
) -> Case:
    """Read one PET and its RTSTRUCT ROI (public readers first, documented fallback otherwise)."""
    try:
        import medlens

        image = medlens.read_image(image_path)
        mask = medlens.read_mask(mask_path, reference=image, roi=roi)
    except (ImportError, AttributeError):
        image = _read_pet_fallback(Path(image_path))
        mask = _rasterise_rtstruct(Path(mask_path), image, roi)
    return Case(patient_id or image.meta.patient_id, image, mask)


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
