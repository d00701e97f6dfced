"""Write an :class:`~medlens.core.image.Image` as a DICOM CT Image Storage series.

One single-frame file per slice (axis 0), each a complete CT Image IOD (PS3.3 A.3): Patient,
General Study, Patient Study, General Series, Frame of Reference, General Equipment, General
Acquisition, General Image, Image Plane, Image Pixel, CT Image and SOP Common modules.
Pixels are stored as unsigned 16-bit values with ``RescaleIntercept = -1024`` and
``RescaleSlope = 1`` so that ``stored * slope + intercept`` gives Hounsfield units back exactly
for integer HU in ``[-1024, 64511]``.

Used by ``medlens demo`` to produce real DICOM series from synthetic volumes (their contours are
written by :func:`medlens.io.rtstruct.write_rtstruct`).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError
from medlens.core.image import Image

__all__ = ["derived_study_id", "source_slices", "write_ct_series"]

SH_MAX = 16  # characters of a DICOM SH (short string) value, e.g. StudyID


def source_slices(
    source: str | os.PathLike[str] | Sequence[Any],
    *,
    series_uid: str | None = None,
    refuse_multiframe: str | None = None,
) -> list[Any]:
    """Header-only datasets of the image slices of one source series (what a SEG or RTSTRUCT references).

    ``source`` is a folder (searched recursively), one file, or a list of files and/or pydicom Datasets.
    Unreadable and non-DICOM files are skipped, and so are segmentations (Modality SEG) and objects that are
    not image slices (no ImagePositionPatient / Rows / SOPInstanceUID). ``series_uid`` keeps one series.

    Raises
    ------
    InputError
        No image slice found, the slices belong to several series, or a multi-frame image is given while
        ``refuse_multiframe`` names what cannot take one (e.g. ``"SEG writing"``).
    """
    from pydicom.dataset import Dataset

    from medlens.io.dicom.files import list_files
    from medlens.io.dicom.headers import read_dicom_file

    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        items: list[Any] = list_files(p)
    else:
        items = list(source)
    out = []
    for it in items:
        if isinstance(it, Dataset):
            ds = it
        else:
            ds = read_dicom_file(it, pixels="skip").ds
            if ds is None:
                continue
        if str(ds.get("Modality", "")).upper() == "SEG":
            continue
        if refuse_multiframe and int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"{it if not isinstance(it, Dataset) else source}: multi-frame source images are not supported for "
                f"{refuse_multiframe} yet; convert the series to single-frame files or write the mask as NIfTI"
            )
        if "ImagePositionPatient" in ds and "Rows" in ds and "SOPInstanceUID" in ds:
            out.append(ds)
    if series_uid is not None:
        out = [d for d in out if str(getattr(d, "SeriesInstanceUID", "")) == series_uid]
    if not out:
        which = f" of series {series_uid}" if series_uid is not None else ""
        raise InputError(f"{source}: no DICOM image slices{which} found among {len(items)} inputs")
    series = {str(d.SeriesInstanceUID) for d in out}
    if len(series) > 1:
        raise InputError(f"{source}: the source files hold {len(series)} series; give the files of one series")
    return out


def derived_study_id(source_ds: Any) -> str:
    """The StudyID to write in an object derived from a source series (SEG, RTSTRUCT).

    The study attributes are copied from the source dataset, but a source StudyID longer than the 16 characters SH
    allows would make the derived object invalid DICOM (``dciodvfy`` error): it is cut to 16 characters and
    a :class:`~medlens.core.errors.MedlensWarning` names the source and both values.
    """
    import warnings

    from medlens.core.errors import MedlensWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own length warning: the one below says what happens
        raw = getattr(source_ds, "StudyID", "")
    value = "" if raw is None else str(raw)
    source = f"series {getattr(source_ds, 'SeriesInstanceUID', '?')}"
    if len(value) <= SH_MAX:
        return value
    short = value[:SH_MAX]
    warnings.warn(
        f"{source}: StudyID {value!r} has {len(value)} characters, more than the {SH_MAX} that DICOM SH allows; "
        f"the derived object gets {short!r} (the StudyInstanceUID, which identifies the study, is unchanged)",
        MedlensWarning,
        stacklevel=3,
    )
    return short


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
# Implementation Class UID: a fixed UUID-derived UID (PS3.5 B.2), under no one else's root.
_IMPL_UID = "2.25.255001038622518776472730935234314768183"


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=None, entropy_srcs=[str(p) for p in parts]))


def _file_meta(sop_class: str, sop_instance: str) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop_class)
    fm.MediaStorageSOPInstanceUID = UID(sop_instance)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = UID(_IMPL_UID)
    fm.ImplementationVersionName = "MEDLENS_010"
    return fm


def _ds_str(v: float) -> str:
    """A Decimal String value of at most 16 characters."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    if s in ("-0", ""):
        s = "0"
    return s[:16]


def write_ct_series(
    image: Image,
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str,
    patient_name: str = "",
    patient_sex: str = "O",
    patient_age_years: int | None = None,
    patient_weight_kg: float | None = None,
    patient_size_m: float | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = "20260101",
    series_description: str = "synthetic chest CT",
    manufacturer: str = "MedLens synthetic",
    uid_seed: str | None = None,
) -> list[Path]:
    """Write a 3D CT ``image`` (HU) as one DICOM file per slice in ``out_dir``.

    Parameters
    ----------
    image
        3D image in Hounsfield units, indexed ``(z, y, x)``; its affine gives the slice
        positions (ImagePositionPatient) and orientation (ImageOrientationPatient).
    out_dir
        Folder created if needed; files are named ``CT_0000.dcm``, ``CT_0001.dcm``, ...
    patient_id, patient_name, patient_sex, patient_age_years, patient_weight_kg, patient_size_m
        Patient module values (sex ``"M"``, ``"F"`` or ``"O"``; age in years, weight in kg,
        height in metres).
    study_uid, series_uid, frame_of_reference_uid
        UIDs to use; generated when omitted (deterministically from ``uid_seed`` if given).
    uid_seed
        Makes generated UIDs reproducible (same seed, same UIDs).

    Returns
    -------
    list of Path
        The written files in slice order.
    """
    from pydicom.dataset import Dataset

    if image.ndim != 3:
        raise InputError(f"write_ct_series needs a 3D image, got {image.ndim}D {image.shape}")
    if patient_sex not in ("M", "F", "O"):
        raise InputError(f"patient_sex must be 'M', 'F' or 'O', got {patient_sex!r}")
    hu = np.rint(np.asarray(image.array, dtype=np.float64))
    if hu.min() < -1024 or hu.max() > 64511:
        raise InputError(
            f"CT values must lie in [-1024, 64511] HU to be stored as unsigned 16-bit with intercept -1024; "
            f"found [{hu.min():.0f}, {hu.max():.0f}]; clip the image first"
        )
    stored = (hu + 1024).astype(np.uint16)
    seed = uid_seed if uid_seed is not None else os.urandom(16).hex()
    study_uid = study_uid or _uid(seed, "study")
    series_uid = series_uid or _uid(seed, "series")
    for_uid = frame_of_reference_uid or _uid(seed, "for")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    aff = image.affine
    col_dir = aff[:3, 2] / np.linalg.norm(aff[:3, 2])  # along x (columns): the row direction cosine
    row_dir = aff[:3, 1] / np.linalg.norm(aff[:3, 1])  # along y (rows): the column direction cosine
    dz, dy, dx = image.spacing
    nz, ny, nx = image.shape
    now = _dt.datetime(2026, 1, 1, 12, 0, 0)
    files: list[Path] = []
    for k in range(nz):
        sop_uid = _uid(seed, "sop", k)
        ds = Dataset()
        ds.file_meta = _file_meta(CT_IMAGE_STORAGE, sop_uid)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.ContentDate = study_date
        ds.StudyTime = now.strftime("%H%M%S")
        ds.SeriesTime = now.strftime("%H%M%S")
        ds.ContentTime = now.strftime("%H%M%S")
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = manufacturer
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "MedLens synthetic cohort"
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name or f"Synthetic^{patient_id}"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = patient_sex
        if patient_age_years is not None:
            ds.PatientAge = f"{int(patient_age_years):03d}Y"
        if patient_size_m is not None:
            ds.PatientSize = _ds_str(patient_size_m)
        if patient_weight_kg is not None:
            ds.PatientWeight = _ds_str(patient_weight_kg)
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = _ds_str(dz)
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        pos = aff[:3, :3] @ np.array([k, 0.0, 0.0]) + aff[:3, 3]
        ds.ImagePositionPatient = [_ds_str(float(v)) for v in pos]
        ds.ImageOrientationPatient = [_ds_str(float(v)) for v in (*col_dir, *row_dir)]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds_str(float(pos[2]))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ny
        ds.Columns = nx
        ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        target = out / f"CT_{k:04d}.dcm"
        with atomic_path(target) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        files.append(target)
    return files
