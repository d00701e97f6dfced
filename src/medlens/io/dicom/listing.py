"""Listing the DICOM series under a path from headers only (:func:`list_series`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medlens.core.errors import FormatError, GeometryError, SkippedInputWarning
from medlens.core.image import Image
from medlens.io.dicom.files import collect_files
from medlens.io.dicom.geometry import affine, qa, slice_records, sorted_records
from medlens.io.dicom.series import NO_UID, drop_localizers, group, is_image, read_headers, units_and_factors

__all__ = ["SeriesInfo", "list_series"]

PathLike = str | os.PathLike[str]


@dataclass
class SeriesInfo:
    """What a DICOM series is, read from headers only.

    Attributes
    ----------
    series_uid, study_uid, patient_id, modality, description, frame_of_reference_uid
        From the DICOM headers.
    n_files, files
        The files of the series (paths as strings).
    is_image
        True for an image series that :func:`read_dicom_series` can read.
    shape, spacing_mm, origin_mm, direction, units
        Geometry and intensity units of the image as it would be read (image series with a regular
        grid only; None otherwise).
    qa
        Geometry findings (``GeometryFinding.to_dict()``), empty for a regular stack.
    rois
        ROI names (RTSTRUCT StructureSetROISequence) or segment labels (SEG SegmentSequence).
    referenced_series_uid
        The image series an RTSTRUCT/SEG refers to (``""`` if none is recorded).
    """

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    description: str
    n_files: int
    files: list[str]
    frame_of_reference_uid: str
    is_image: bool
    qa: list[dict[str, Any]] = field(default_factory=list)
    rois: list[str] = field(default_factory=list)
    referenced_series_uid: str = ""
    shape: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None
    origin_mm: tuple[float, float, float] | None = None
    direction: list[list[float]] | None = None
    units: str | None = None

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["spacing_mm"] = list(self.spacing_mm) if self.spacing_mm is not None else None
        d["origin_mm"] = list(self.origin_mm) if self.origin_mm is not None else None
        return d


def _referenced_series(ds: Any) -> str:
    for rfor in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in rfor.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                if se.get("SeriesInstanceUID"):
                    return str(se.SeriesInstanceUID)
    for se in ds.get("ReferencedSeriesSequence", []) or []:
        if se.get("SeriesInstanceUID"):
            return str(se.SeriesInstanceUID)
    return ""


def _rois(ds: Any) -> list[str]:
    names: list[str] = []
    for item in ds.get("StructureSetROISequence", []) or []:
        names.append(str(item.get("ROIName", "") or ""))
    for item in ds.get("SegmentSequence", []) or []:
        names.append(str(item.get("SegmentLabel", "") or ""))
    return names


def list_series(path: PathLike | Sequence[PathLike]) -> list[SeriesInfo]:
    """Describe every DICOM series under ``path`` from the headers (pixels are not decoded).

    Image series get their geometry QA findings, and, for a regular grid, the shape, spacing,
    origin, direction and units :func:`read_dicom_series` would return; RTSTRUCT and SEG objects
    get their ROI names / segment labels and the series they refer to.
    """
    files, source = collect_files(path)
    items = read_headers(files, pixels="skip")
    out: list[SeriesInfo] = []
    for uid, members in group(items).items():
        ds = members[0][1]
        info = SeriesInfo(
            series_uid="" if uid == NO_UID else uid,
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""),
            n_files=len(members),
            files=[str(p) for p, _ in members],
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
            is_image=is_image(ds),
        )
        if not info.is_image:
            for _, d in members:
                info.rois.extend(_rois(d))
                info.referenced_series_uid = info.referenced_series_uid or _referenced_series(d)
                if not info.frame_of_reference_uid:
                    for rfor in d.get("ReferencedFrameOfReferenceSequence", []) or []:
                        info.frame_of_reference_uid = str(rfor.get("FrameOfReferenceUID", "") or "")
                        break
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SkippedInputWarning)
                    members = drop_localizers(members, source)
                records = slice_records(members)
                findings = qa(records)
                info.qa = [f.to_dict() for f in findings]
                if not any(f.severity == "error" for f in findings):
                    records = sorted_records(records)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        aff = affine(records, source)
                        info.units, _ = units_and_factors(records, source)
                    ndim = 2 if len(records) == 1 else 3
                    img = Image(np.zeros((1,) * ndim, dtype=np.uint8), aff)
                    info.shape = (len(records), *records[0].shape) if ndim == 3 else records[0].shape
                    info.spacing_mm = img.spacing
                    info.origin_mm = img.origin
                    info.direction = img.direction.tolist()
            except (FormatError, GeometryError) as exc:
                info.qa.append({"code": "unreadable", "severity": "error", "message": str(exc)})
        out.append(info)
    return out
