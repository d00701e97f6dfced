"""Write an :class:`~medlens.core.image.Image` as a DICOM CT Image Storage series.

One single-frame file per slice (axis 0), each a complete CT Image IOD (PS3.3 A.3): Patient,
General Study, Patient Study, General Series, Frame of Reference, General Equipment, General
Acquisition, General Image, Image Plane, Image Pixel, CT Image and SOP Common modules.
Pixels are stored as unsigned 16-bit values with ``RescaleIntercept = -1024`` and
``RescaleSlope = 1`` so that ``stored * slope + intercept`` gives Hounsfield units back exactly
for integer HU in ``[-1024, 64511]``.

Used by ``medlens demo`` to produce real DICOM series from synthetic volumes; a fallback
RTSTRUCT writer (:func:`write_rtstruct_minimal`) lives here too, for when
:mod:`medlens.io.rtstruct` is not available.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError
from medlens.core.image import Image

__all__ = ["write_ct_series", "write_rtstruct_minimal"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_IMPL_UID = "1.2.826.0.1.3680043.10.1342.1"  # arbitrary implementation class UID (2.25-free, fixed)


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


def _mask_contours(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Closed planar contours of a boolean (z, y, x) mask: (slice, (n, 2) array of (y, x) indices)."""
    from skimage import measure

    out: list[tuple[int, np.ndarray]] = []
    for k in range(mask.shape[0]):
        sl = mask[k]
        if not sl.any():
            continue
        padded = np.pad(sl.astype(np.float64), 1)
        for c in measure.find_contours(padded, 0.5):
            c = c - 1.0  # undo the padding
            if len(c) >= 4:
                out.append((k, c[:-1] if np.allclose(c[0], c[-1]) else c))
    return out


def write_rtstruct_minimal(
    masks: Mapping[str, Image],
    reference_dicom_files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    uid_seed: str | None = None,
) -> Path:
    """Write boolean masks as an RT Structure Set (closed planar contours) referencing a CT series.

    A fallback used only when :func:`medlens.io.rtstruct.write_rtstruct` is not available.
    Contours are iso-lines at 0.5 of each slice of the mask (marching squares), so a voxel is
    inside when its centre is inside the polygon, which is how rasterisers read them back.
    """
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DSeq

    if not masks:
        raise InputError("write_rtstruct_minimal needs at least one mask")
    refs = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in reference_dicom_files]
    refs.sort(key=lambda d: int(d.InstanceNumber))
    ref0 = refs[0]
    seed = uid_seed if uid_seed is not None else os.urandom(16).hex()
    sop_uid = _uid(seed, "rtstruct")
    ds = Dataset()
    ds.file_meta = _file_meta(RT_STRUCTURE_SET_STORAGE, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        setattr(ds, kw, getattr(ref0, kw, ""))
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = "MedLens synthetic"
    ds.SeriesInstanceUID = _uid(seed, "rtseries")
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = ref0.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "MEDLENS"
    ds.StructureSetDate = getattr(ref0, "StudyDate", "20260101")
    ds.StructureSetTime = getattr(ref0, "StudyTime", "120000")

    contour_image_seq = []
    for r in refs:
        ci = Dataset()
        ci.ReferencedSOPClassUID = r.SOPClassUID
        ci.ReferencedSOPInstanceUID = r.SOPInstanceUID
        contour_image_seq.append(ci)
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = ref0.SeriesInstanceUID
    rt_series.ContourImageSequence = DSeq(contour_image_seq)
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    rt_study.ReferencedSOPInstanceUID = ref0.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = DSeq([rt_series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = ref0.FrameOfReferenceUID
    ref_for.RTReferencedStudySequence = DSeq([rt_study])
    ds.ReferencedFrameOfReferenceSequence = DSeq([ref_for])

    roi_seq, contour_seq, obs_seq = [], [], []
    for n, (name, mask) in enumerate(masks.items(), start=1):
        if not mask.is_mask or mask.ndim != 3:
            raise InputError(f"mask {name!r} must be a 3D boolean Image, got {mask!r}")
        if len(refs) != mask.shape[0]:
            raise InputError(f"mask {name!r} has {mask.shape[0]} slices but {len(refs)} reference files were given")
        roi = Dataset()
        roi.ROINumber = n
        roi.ReferencedFrameOfReferenceUID = ref0.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi_seq.append(roi)
        contours = []
        for k, yx in _mask_contours(np.asarray(mask.array)):
            idx = np.column_stack([np.full(len(yx), float(k)), yx])
            pts = mask.index_to_world(idx)
            c = Dataset()
            img_ref = Dataset()
            img_ref.ReferencedSOPClassUID = refs[k].SOPClassUID
            img_ref.ReferencedSOPInstanceUID = refs[k].SOPInstanceUID
            c.ContourImageSequence = DSeq([img_ref])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourData = [_ds_str(float(v)) for v in pts.ravel()]
            contours.append(c)
        rc = Dataset()
        rc.ROIDisplayColor = [255, 0, 0]
        rc.ReferencedROINumber = n
        rc.ContourSequence = DSeq(contours)
        contour_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = n
        obs.RTROIInterpretedType = "GTV"
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    ds.StructureSetROISequence = DSeq(roi_seq)
    ds.ROIContourSequence = DSeq(contour_seq)
    ds.RTROIObservationsSequence = DSeq(obs_seq)
    target = Path(out)
    with atomic_path(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target
