"""DICOM SR measurement reports: Comprehensive 3D SR, TID 1500, one TID 1411 group per lesion (highdicom).

Each finding becomes a *Volumetric ROI Measurements and Qualitative Evaluations* group (TID 1411) that
references its segment of a DICOM SEG (``ReferencedSegment``, with the SEG's source images) and holds the
measurements with UCUM units:

=================================  =========================================  ==================
measurement                        concept name (+ derivation)                unit (UCUM)
=================================  =========================================  ==================
long axis / short axis             SCT 103339001 / 103340004                  ``mm``
mean diameter (Lung-RADS)          SCT 81827009 Diameter + SCT 373098007 Mean ``mm``
volume                             SCT 118565006 Volume                       ``mm3``
mean attenuation (CT)              DCM 112031 Attenuation Coefficient + Mean  ``[hnsf'U]``
SUVmax / SUVmean / SUVpeak (PET)   DCM 126401 SUVbw + Maximum / Mean / Peak   ``{SUVbw}g/ml``
total lesion glycolysis (PET)      DCM 126033                                 ``g``
=================================  =========================================  ==================

The Lung-RADS category, when given, is a qualitative evaluation: concept DCM 111005 "Assessment Category",
value a code of the private scheme ``99MEDLENS`` (``LR2022-4A``: "Lung-RADS v2022 category 4A"); the
``99`` prefix marks a private coding scheme as PS3.3 section 8.2 allows, since no public code exists.

References: DICOM PS3.16 TID 1500 (Measurement Report), TID 1411 (Volumetric ROI Measurements), CID 7469
(Generic Intensity and Size Measurements), CID 85 (SUV units); highdicom ``hd.sr`` API.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core._version import __version__ as _MEDLENS_VERSION
from medlens.core.atomic import atomic_path
from medlens.core.errors import FormatError, InputError

__all__ = ["MEASUREMENT_CODES", "Finding", "read_measurement_sr", "write_measurement_sr"]

PathLike = str | os.PathLike[str]
PRIVATE_SCHEME = "99MEDLENS"

#: measurement key -> (concept (value, scheme, meaning), derivation or None, UCUM unit (code, meaning)).
MEASUREMENT_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str, str] | None, tuple[str, str]]] = {
    "long_axis_mm": (("103339001", "SCT", "Long axis"), None, ("mm", "millimeter")),
    "short_axis_mm": (("103340004", "SCT", "Short axis"), None, ("mm", "millimeter")),
    "mean_diameter_mm": (("81827009", "SCT", "Diameter"), ("373098007", "SCT", "Mean"), ("mm", "millimeter")),
    "volume_mm3": (("118565006", "SCT", "Volume"), None, ("mm3", "cubic millimeter")),
    "mean_hu": (
        ("112031", "DCM", "Attenuation Coefficient"),
        ("373098007", "SCT", "Mean"),
        ("[hnsf'U]", "Hounsfield unit"),
    ),
    "suv_max": (
        ("126401", "DCM", "SUVbw"),
        ("56851009", "SCT", "Maximum"),
        ("{SUVbw}g/ml", "Standardized Uptake Value body weight"),
    ),
    "suv_mean": (
        ("126401", "DCM", "SUVbw"),
        ("373098007", "SCT", "Mean"),
        ("{SUVbw}g/ml", "Standardized Uptake Value body weight"),
    ),
    "suv_peak": (
        ("126401", "DCM", "SUVbw"),
        ("126031", "DCM", "Peak Value Within ROI"),
        ("{SUVbw}g/ml", "Standardized Uptake Value body weight"),
    ),
    "tlg_g": (("126033", "DCM", "Total Lesion Glycolysis"), None, ("g", "gram")),
}

_FINDING_TYPES = {
    "lesion": ("52988006", "SCT", "Lesion"),
    "nodule": ("27925004", "SCT", "Nodule"),
    "tumor": ("108369006", "SCT", "Neoplasm"),
}

_LUNGRADS = ("4A", "4B", "4X", "0", "1", "2", "3")


@dataclass(frozen=True)
class Finding:
    """One lesion to report.

    Attributes
    ----------
    segment_number
        Number of its segment in the SEG (1-based).
    measurements
        A :class:`~medlens.clinical.measure.LesionMeasurement`, or a mapping of keys of
        :data:`MEASUREMENT_CODES` to values (in the units named there); ``None`` values are skipped.
    label
        Tracking identifier text (``"nodule 1"``); default ``"lesion <segment_number>"``.
    finding_type
        ``"lesion"``, ``"nodule"`` or ``"tumor"``.
    lungrads_category
        Lung-RADS v2022 category (``"4A"``) to record as a qualitative evaluation, or ``None``.
    tracking_uid
        Tracking UID to keep across time points (generated when ``None``).
    """

    segment_number: int
    measurements: Any
    label: str = ""
    finding_type: str = "lesion"
    lungrads_category: str | None = None
    tracking_uid: str | None = None

    def values(self) -> dict[str, float]:
        m = self.measurements
        raw = m.to_dict() if hasattr(m, "to_dict") else dict(m)
        out: dict[str, float] = {}
        for k, v in raw.items():
            if k in MEASUREMENT_CODES and v is not None:
                out[k] = float(v)
        unknown = [k for k in raw if k not in MEASUREMENT_CODES] if isinstance(m, Mapping) else []
        if unknown:
            raise InputError(
                f"finding {self.label or self.segment_number}: unknown measurement(s) {unknown}; "
                f"use some of {sorted(MEASUREMENT_CODES)}"
            )
        if not out:
            raise InputError(f"finding {self.label or self.segment_number} has no measurement to report")
        return out


def _code(hd: Any, t: tuple[str, ...]) -> Any:
    return hd.sr.CodedConcept(value=t[0], scheme_designator=t[1], meaning=t[2])


def _unit(hd: Any, t: tuple[str, str]) -> Any:
    return hd.sr.CodedConcept(value=t[0], scheme_designator="UCUM", meaning=t[1])


def _load(item: Any, what: str) -> Any:
    import pydicom
    from pydicom.dataset import Dataset

    if isinstance(item, Dataset):
        return item
    p = Path(item)
    if not p.is_file():
        raise InputError(f"{what} {p}: no such file")
    try:
        return pydicom.dcmread(str(p))
    except Exception as exc:
        raise FormatError(f"{what} {p}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def write_measurement_sr(
    source_images: PathLike | Sequence[Any],
    seg_dataset: Any,
    findings: Sequence[Finding],
    path: PathLike,
    *,
    series_description: str = "MedLens measurements",
    series_number: int = 901,
    procedure: tuple[str, str, str] = ("363679005", "SCT", "Imaging procedure"),
) -> Path:
    """Write a Comprehensive 3D SR (TID 1500) with one volumetric measurement group per finding.

    Parameters
    ----------
    source_images
        The image series the SEG was drawn on: a folder, files, or pydicom Datasets (headers suffice).
    seg_dataset
        The DICOM SEG (path or pydicom Dataset) holding the findings' segments.
    findings
        What to report (:class:`Finding`), one group each.
    path
        Output file, written atomically.
    series_description, series_number
        Of the new SR series.
    procedure
        Procedure reported (code value, scheme, meaning).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        No findings, a segment number that is not in the SEG, a SEG that references another series,
        or measurements that cannot be coded.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from medlens.io.dicom_write import derived_study_id, source_slices

    if not findings:
        raise InputError("write_measurement_sr needs at least one finding")
    seg = _load(seg_dataset, "SEG")
    if str(getattr(seg, "Modality", "")) != "SEG":
        raise InputError(f"seg_dataset must be a DICOM SEG, got Modality {getattr(seg, 'Modality', None)!r}")
    sources = source_slices(source_images)
    src_uids = {str(ds.SOPInstanceUID) for ds in sources}
    seg_refs = {
        str(i.ReferencedSOPInstanceUID)
        for s in getattr(seg, "ReferencedSeriesSequence", [])
        for i in getattr(s, "ReferencedInstanceSequence", [])
    }
    if seg_refs and not seg_refs & src_uids:
        raise InputError(
            "the SEG references none of the source images given: pass the image series the SEG was made on"
        )
    segment_numbers = {int(s.SegmentNumber) for s in seg.SegmentSequence}
    groups = []
    for f in findings:
        if f.segment_number not in segment_numbers:
            raise InputError(
                f"finding {f.label or f.segment_number}: segment {f.segment_number} is not in the SEG "
                f"(segments {sorted(segment_numbers)})"
            )
        if f.finding_type not in _FINDING_TYPES:
            raise InputError(f"finding_type must be one of {sorted(_FINDING_TYPES)}, got {f.finding_type!r}")
        values = f.values()
        label = f.label or f"lesion {f.segment_number}"
        tracking = hd.sr.TrackingIdentifier(uid=f.tracking_uid or generate_uid(), identifier=label)
        measurements = []
        for key, value in values.items():
            name, derivation, unit = MEASUREMENT_CODES[key]
            measurements.append(
                hd.sr.Measurement(
                    name=_code(hd, name),
                    value=value,
                    unit=_unit(hd, unit),
                    derivation=None if derivation is None else _code(hd, derivation),
                )
            )
        qualitative = []
        if f.lungrads_category is not None:
            cat = str(f.lungrads_category).upper()
            if cat not in _LUNGRADS:
                raise InputError(f"lungrads_category must be one of {list(_LUNGRADS)}, got {f.lungrads_category!r}")
            qualitative.append(
                hd.sr.QualitativeEvaluation(
                    name=_code(hd, ("111005", "DCM", "Assessment Category")),
                    value=_code(hd, (f"LR2022-{cat}", PRIVATE_SCHEME, f"Lung-RADS v2022 category {cat}")),
                )
            )
        ref = _referenced_segment(hd, seg, f.segment_number, sources)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking,
                referenced_segment=ref,
                finding_type=_code(hd, _FINDING_TYPES[f.finding_type]),
                measurements=measurements,
                qualitative_evaluations=qualitative or None,
                algorithm_id=hd.sr.AlgorithmIdentification(name="MedLens", version=_MEDLENS_VERSION),
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=_code(hd, ("121007", "DCM", "Device")),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="MedLens", manufacturer_name="MedLens", model_name="medlens.clinical.sr"
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code(hd, procedure),
        imaging_measurements=groups,
    )
    evidence = [*sources, seg]
    with warnings.catch_warnings():
        # highdicom copies the source's patient/study attributes and warns about their flaws (an over-long
        # StudyID, fixed below with a MedlensWarning; a one-component PatientName, copied unchanged)
        warnings.filterwarnings("ignore", message="The value length", category=UserWarning)
        warnings.filterwarnings("ignore", message="The string .* is unlikely to represent", category=UserWarning)
        sr = _build_sr(hd, evidence, report, series_number, series_description, generate_uid)
    # Study ID is SH (16 characters); some archives hold longer ones, which the SR would otherwise copy.
    sr.StudyID = derived_study_id(sources[0])
    with atomic_path(path) as tmp:
        sr.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


def _build_sr(hd: Any, evidence: list[Any], report: Any, series_number: int, description: str, uid: Any) -> Any:
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=uid(),
        series_number=series_number,
        sop_instance_uid=uid(),
        instance_number=1,
        manufacturer="MedLens",
        series_description=description,
        is_complete=True,
    )


def _referenced_segment(hd: Any, seg: Any, number: int, sources: list[Any]) -> Any:
    """ReferencedSegment with the segment's frames and the source images they derive from.

    Built here rather than with ``ReferencedSegment.from_segmentation``, which (highdicom 0.28) fails
    on a SEG whose Segment Identification is in the shared functional groups (one-segment SEGs).
    """
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    shared_seg = None
    if shared is not None and "SegmentIdentificationSequence" in shared:
        shared_seg = int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    frames: list[int] = []
    refs: dict[str, str] = {}
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        if "SegmentIdentificationSequence" in fg:
            n = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        else:
            n = shared_seg if shared_seg is not None else -1
        if n != number:
            continue
        frames.append(i)
        for d in getattr(fg, "DerivationImageSequence", []):
            for src in getattr(d, "SourceImageSequence", []):
                refs[str(src.ReferencedSOPInstanceUID)] = str(src.ReferencedSOPClassUID)
    if not frames:
        raise InputError(f"segment {number} of the SEG has no frames")
    if not refs:  # no per-frame derivation: the segment derives from the whole source series
        refs = {str(ds.SOPInstanceUID): str(ds.SOPClassUID) for ds in sources}
    images = [
        hd.sr.SourceImageForSegmentation(referenced_sop_class_uid=c, referenced_sop_instance_uid=u)
        for u, c in refs.items()
    ]
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=number,
        # no frame numbers: PS3.3 C.18.3 forbids Referenced Frame Number beside Referenced Segment Number
        frame_numbers=None,
        source_images=images,
    )


def read_measurement_sr(path: PathLike) -> list[dict[str, Any]]:
    """The measurement groups of an SR written by :func:`write_measurement_sr` (or any TID 1500 SR).

    Returns one dictionary per group: ``label``, ``tracking_uid``, ``segment_number``,
    ``seg_sop_instance_uid``, ``measurements`` (key of :data:`MEASUREMENT_CODES` -> value; unrecognised
    concepts under ``"<meaning>"``), ``units`` (same keys -> UCUM code) and ``lungrads_category``.
    """
    import highdicom as hd

    p = Path(path)
    try:
        sr = hd.sr.srread(str(p))
    except Exception as exc:
        raise FormatError(f"{p}: not a readable DICOM SR ({type(exc).__name__}: {exc})") from exc
    report: Any = sr.content  # a MeasurementReport for TID 1500 documents
    by_codes = {(c[0][0], c[0][1], None if c[1] is None else c[1][0]): k for k, c in MEASUREMENT_CODES.items()}
    out = []
    for g in report.get_volumetric_roi_measurement_groups():
        seg_ref = g.referenced_segment
        item: dict[str, Any] = {
            "label": g.tracking_identifier,
            "tracking_uid": g.tracking_uid,
            "segment_number": None,
            "seg_sop_instance_uid": None,
            "measurements": {},
            "units": {},
            "lungrads_category": None,
        }
        if seg_ref is not None:
            first = seg_ref[0]
            ref = first.ReferencedSOPSequence[0]
            item["seg_sop_instance_uid"] = str(ref.ReferencedSOPInstanceUID)
            item["segment_number"] = int(ref.ReferencedSegmentNumber)
        for m in g.get_measurements():
            deriv = m.derivation
            key = by_codes.get(
                (m.name.value, m.name.scheme_designator, None if deriv is None else deriv.value),
                str(m.name.meaning),
            )
            item["measurements"][key] = float(m.value)
            item["units"][key] = str(m.unit.value)
        for q in g.get_qualitative_evaluations():
            if q.name.value == "111005" and q.value.scheme_designator == PRIVATE_SCHEME:
                item["lungrads_category"] = str(q.value.value).removeprefix("LR2022-")
        out.append(item)
    return out
