"""Reading one DICOM file's header into catalog records (runs inside the scan's worker processes).

Only the tags in :data:`HEADER_TAGS` are kept and parsing stops before the pixel data, so a file
costs one partial read of its header, whatever its size.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: DICOMDIR media storage SOP class (PS3.4 Annex F).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

HEADER_TAGS = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientID",
    "PatientName",
    "PatientSex",
    "PatientBirthDate",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "FrameOfReferenceUID",
    "ConvolutionKernel",
    "Units",
    "BurnedInAnnotation",
    "StructureSetROISequence",
    "ReferencedFrameOfReferenceSequence",
    "SegmentSequence",
    "ReferencedSeriesSequence",
]


def _s(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None


def _f(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def _i(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return None


def _floats(v: Any, n: int) -> list[float] | None:
    if v is None:
        return None
    try:
        vals = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


def _rt_refs(ds: Any) -> list[str]:
    out: list[str] = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in fr.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                uid = _s(se.get("SeriesInstanceUID"))
                if uid:
                    out.append(uid)
    return out


_ASCII_SETS = {"", "ISO_IR 6", "ISO_IR 100", "ISO 2022 IR 6", "ISO 2022 IR 100"}
_BINARY_VR = {"US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "UN", "SQ", "AT"}


class _Header:
    """Value access that decodes text attributes straight from the raw bytes.

    pydicom converts (and validates) a value on first access, which costs more than parsing the file;
    for text VRs in an ASCII/Latin-1 character set we decode the bytes ourselves. Everything else
    (binary VRs, sequences, other character sets) goes through pydicom.
    """

    def __init__(self, ds: Any) -> None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        self.ds = ds
        cs = ds.get_item(0x00080005)
        raw = cs.value if cs is not None else b""
        cs_text = raw.decode("ascii", "replace").strip(" \x00") if isinstance(raw, bytes) else str(raw or "")
        self.simple = cs_text in _ASCII_SETS
        self._tag = tag_for_keyword
        self._vr = dictionary_VR

    def get(self, keyword: str) -> Any:
        if not self.simple:
            return self.ds.get(keyword)
        tag = self._tag(keyword)
        if tag is None:
            return None
        elem = self.ds.get_item(tag)
        if elem is None:
            return None
        value = elem.value
        vr = elem.VR or self._vr(tag)
        if not isinstance(value, bytes) or vr in _BINARY_VR:
            return self.ds.get(keyword)
        text = value.decode("latin-1").strip(" \x00")
        return text.split("\\") if "\\" in text else text


def read_header(path: str, size: int, mtime_ns: int) -> dict[str, Any]:
    """Catalog records of one file.

    Returns
    -------
    dict
        ``file``: (path, size, mtime_ns, status, reason) with status one of ``dicom``, ``dicomdir``,
        ``not_dicom``, ``bad``; ``instance``: the instance row (or None); ``rois``: ROI rows of an
        RTSTRUCT/SEG; ``refs``: referenced series UIDs of an RTSTRUCT/SEG.
    """
    from medlens.io.dicom.headers import read_dicom_file

    rec: dict[str, Any] = {
        "file": {"path": path, "size": size, "mtime_ns": mtime_ns, "status": "dicom", "reason": None},
        "instance": None,
        "rois": [],
        "refs": [],
    }
    try:
        # The one robust reader of medlens.io: preamble-less files, DICOMDIR and damage are told apart there.
        got = read_dicom_file(path, pixels="skip", specific_tags=HEADER_TAGS)
        if got.ds is None:
            reason = {
                "not_dicom": "not a DICOM file (no DICM preamble, no UIDs)",
                "dicomdir": "DICOMDIR (a media index, not an instance)",
            }.get(got.status, got.reason)
            rec["file"].update(status=got.status, reason=reason)
            return rec
        ds = got.ds
        meta = getattr(ds, "file_meta", None)
        sop_class = _s(ds.get("SOPClassUID")) or _s(meta.get("MediaStorageSOPClassUID") if meta else None)
        if sop_class == DICOMDIR_SOP_CLASS or os.path.basename(path).upper() == "DICOMDIR":
            rec["file"].update(status="dicomdir", reason="DICOMDIR (a media index, not an instance)")
            return rec
        missing = [k for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID") if not _s(ds.get(k))]
        if missing:
            rec["file"].update(status="bad", reason="missing required attribute(s): " + ", ".join(missing))
            return rec
        h = _Header(ds)
        modality = _s(h.get("Modality"))
        ipp = _floats(h.get("ImagePositionPatient"), 3)
        iop = _floats(h.get("ImageOrientationPatient"), 6)
        ps = _floats(h.get("PixelSpacing"), 2)
        ts = _s(meta.get("TransferSyntaxUID")) if meta is not None else None
        series_uid = _s(h.get("SeriesInstanceUID"))
        sop_uid = _s(h.get("SOPInstanceUID"))
        rec["instance"] = {
            "path": path,
            "size": size,
            "mtime_ns": mtime_ns,
            "sop_instance_uid": sop_uid,
            "sop_class_uid": sop_class,
            "transfer_syntax_uid": ts,
            "patient_id": _s(h.get("PatientID")),
            "patient_name": _s(h.get("PatientName")),
            "patient_sex": _s(h.get("PatientSex")),
            "patient_birth_date": _s(h.get("PatientBirthDate")),
            "patient_age": _s(h.get("PatientAge")),
            "patient_weight_kg": _f(h.get("PatientWeight")),
            "patient_size_m": _f(h.get("PatientSize")),
            "study_uid": _s(h.get("StudyInstanceUID")),
            "study_date": _s(h.get("StudyDate")),
            "study_description": _s(h.get("StudyDescription")),
            "accession_number": _s(h.get("AccessionNumber")),
            "series_uid": series_uid,
            "series_number": _i(h.get("SeriesNumber")),
            "series_description": _s(h.get("SeriesDescription")),
            "modality": modality,
            "body_part": _s(h.get("BodyPartExamined")),
            "manufacturer": _s(h.get("Manufacturer")),
            "manufacturer_model": _s(h.get("ManufacturerModelName")),
            "convolution_kernel": _s(h.get("ConvolutionKernel")),
            "units": _s(h.get("Units")),
            "instance_number": _i(h.get("InstanceNumber")),
            "frame_of_reference_uid": _s(h.get("FrameOfReferenceUID")),
            "ipp_x": ipp[0] if ipp else None,
            "ipp_y": ipp[1] if ipp else None,
            "ipp_z": ipp[2] if ipp else None,
            "iop": json.dumps(iop) if iop else None,
            "pixel_spacing_row": ps[0] if ps else None,
            "pixel_spacing_col": ps[1] if ps else None,
            "slice_thickness": _f(h.get("SliceThickness")),
            "rows": _i(h.get("Rows")),
            "columns": _i(h.get("Columns")),
            "n_frames": _i(h.get("NumberOfFrames")),
            "has_pixels": got.has_pixels,
            "burned_in_annotation": _s(h.get("BurnedInAnnotation")),
        }
        if modality == "RTSTRUCT":
            for roi in ds.get("StructureSetROISequence", []) or []:
                rec["rois"].append(
                    {
                        "sop_instance_uid": sop_uid,
                        "series_uid": series_uid,
                        "roi_number": _i(roi.get("ROINumber")),
                        "roi_name": _s(roi.get("ROIName")),
                    }
                )
            refs = _rt_refs(ds)
        elif modality == "SEG":
            for seg in ds.get("SegmentSequence", []) or []:
                rec["rois"].append(
                    {
                        "sop_instance_uid": sop_uid,
                        "series_uid": series_uid,
                        "roi_number": _i(seg.get("SegmentNumber")),
                        "roi_name": _s(seg.get("SegmentLabel")),
                    }
                )
            refs = [
                u for u in (_s(s.get("SeriesInstanceUID")) for s in ds.get("ReferencedSeriesSequence", []) or []) if u
            ]
        else:
            refs = []
        rec["refs"] = [
            {"sop_instance_uid": sop_uid, "series_uid": series_uid, "referenced_series_uid": r}
            for r in dict.fromkeys(refs)
        ]
    except Exception as exc:  # one bad file never stops a scan: it is listed with the reason
        rec["file"].update(status="bad", reason=f"{type(exc).__name__}: {exc}"[:500])
        rec["instance"], rec["rois"], rec["refs"] = None, [], []
    return rec


def read_headers(items: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """:func:`read_header` over a batch (one Dask partition)."""
    return [read_header(p, s, m) for p, s, m in items]
