"""One DICOM image series into an :class:`~medlens.core.image.Image`.

Reading (:func:`read_dicom_series`)
    1. Collect the files (:func:`medlens.io.dicom.files.collect_files`) and read every header with
       the pixel data deferred (:func:`medlens.io.dicom.headers.read_dicom_file`). Files that are not
       DICOM, or are truncated, are skipped with a :class:`~medlens.core.errors.SkippedInputWarning`
       naming them; nothing usable left is an error.
    2. Group by SeriesInstanceUID. Non-image objects (RTSTRUCT, SEG, SR, RT plans/doses, ...) are
       ignored when picking the image series; several image series raise
       :class:`~medlens.core.errors.InputError` listing them (pass ``series_uid``).
    3. Slices (or the frames of an enhanced multi-frame object) are sorted along the slice normal
       (row cosines x column cosines of ImageOrientationPatient) and checked
       (:mod:`medlens.io.geometry_qa`); irregular stacks fail or are resampled (``on_irregular``).
    4. Only then are the chosen series' pixels read and decoded (:mod:`medlens.io.dicom.pixels`), the
       modality rescale applied per slice (float32; CT in HU), PET converted to SUVbw
       (:mod:`medlens.io.dicom.pet`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medlens.core.errors import FormatError, GeometryError, GeometryWarning, InputError, SkippedInputWarning
from medlens.core.image import Image, ImageMeta, Units
from medlens.io.dicom.files import collect_files
from medlens.io.dicom.geometry import Slice, affine, qa, slice_records, sorted_records
from medlens.io.dicom.headers import age_years, header, read_dicom_file, text, to_float
from medlens.io.dicom.pixels import pixels as decode_pixels
from medlens.io.dicom.pixels import workers
from medlens.io.geometry_qa import format_findings, resample_to_regular_grid

__all__ = ["NON_IMAGE_MODALITIES", "read_dicom_series"]

PathLike = str | os.PathLike[str]

#: Modalities never read as images (masks, structure sets, reports, plans, dose grids, ...).
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "RTIMAGE", "SEG", "SR", "PR", "KO", "REG", "RWV", "DOC", "FID"}
)

NO_UID = "(no SeriesInstanceUID)"


def _read_one(path: Path, pixels: Literal["skip", "defer", "read"]) -> tuple[Path, Any, str | None]:
    r = read_dicom_file(path, pixels=pixels)
    if r.ds is None:
        return path, None, r.reason
    h = header(r.ds)
    if h["SeriesInstanceUID"] is None and h["Rows"] is None:
        return path, None, "no SeriesInstanceUID and no image (not a DICOM image object)"
    return path, r.ds, None


def read_headers(files: list[Path], *, pixels: Literal["skip", "defer"]) -> list[tuple[Path, Any]]:
    """Headers of ``files`` (pixel data skipped or deferred); unusable files warned about, none usable an error."""
    if len(files) > 4:
        with ThreadPoolExecutor(max_workers=workers(len(files))) as ex:
            results = list(ex.map(lambda f: _read_one(f, pixels), files))
    else:
        results = [_read_one(f, pixels) for f in files]
    good = [(p, ds) for p, ds, why in results if ds is not None]
    skipped = [(p, why) for p, ds, why in results if ds is None]
    quiet = {"a DICOMDIR index, not an image"}
    loud = [(p, why) for p, why in skipped if why not in quiet]
    if loud:
        shown = "; ".join(f"{p} ({why})" for p, why in loud[:10])
        more = f"; and {len(loud) - 10} more" if len(loud) > 10 else ""
        warnings.warn(f"skipped {len(loud)} file(s) that are not usable DICOM: {shown}{more}", SkippedInputWarning, 3)
    if not good:
        listed = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        raise FormatError(
            f"no usable DICOM file among {len(files)} file(s): {listed}"
            + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        )
    return good


def is_image(ds: Any) -> bool:
    h = header(ds)
    if str(h["Modality"] or "").upper() in NON_IMAGE_MODALITIES:
        return False
    return h["Rows"] is not None and h["Columns"] is not None


def group(items: list[tuple[Path, Any]]) -> dict[str, list[tuple[Path, Any]]]:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in items:
        groups.setdefault(header(ds)["SeriesInstanceUID"] or NO_UID, []).append((p, ds))
    return groups


def _describe(uid: str, members: list[tuple[Path, Any]]) -> str:
    ds = members[0][1]
    desc = str(ds.get("SeriesDescription", "") or "")
    return f"{uid} ({ds.get('Modality', '?')}, {desc!r}, {len(members)} file(s))"


def _extra(ds: Any, rec: Slice) -> dict[str, Any]:
    return {
        "patient_age_years": age_years(ds.get("PatientAge")),
        "patient_sex": text(ds.get("PatientSex")),
        "patient_weight_kg": to_float(ds.get("PatientWeight"), None),
        "patient_size_m": to_float(ds.get("PatientSize"), None),
        "manufacturer": text(ds.get("Manufacturer")),
        "convolution_kernel": text(ds.get("ConvolutionKernel")),
        "slice_thickness_mm": rec.thickness,
        "kvp": to_float(ds.get("KVP"), None),
        "body_part": text(ds.get("BodyPartExamined")),
        "series_description": text(ds.get("SeriesDescription")),
        "study_date": text(ds.get("StudyDate")),
    }


def units_and_factors(records: list[Slice], source: str) -> tuple[str, list[float] | None]:
    ds = records[0].ds
    mod = str(ds.get("Modality", "") or "").upper()
    if mod == "CT":
        return Units.HU, None
    if mod == "PT":
        from medlens.io.dicom.pet import suv_factors

        factors, units = suv_factors([r.ds for r in records], source)
        return units, factors
    if str(ds.get("RescaleType", "") or "").upper() == "HU":
        return Units.HU, None
    return Units.ARBITRARY, None


def _is_localizer(ds: Any) -> bool:
    return any(v.upper() == "LOCALIZER" for v in header(ds)["ImageType"] or [])


def drop_localizers(members: list[tuple[Path, Any]], source: str) -> list[tuple[Path, Any]]:
    """Scout/localizer images stored in the series of the axial slices are left out, with a warning."""
    scouts = [p for p, ds in members if _is_localizer(ds)]
    if not scouts or len(scouts) == len(members):
        return members
    warnings.warn(
        f"{source}: left out {len(scouts)} localizer image(s) (ImageType LOCALIZER) of the series: "
        + ", ".join(str(p) for p in scouts[:5]),
        SkippedInputWarning,
        3,
    )
    return [(p, ds) for p, ds in members if not _is_localizer(ds)]


_STACK_KEYS = ("EchoNumbers", "AcquisitionNumber", "TemporalPositionIdentifier", "DiffusionBValue", "ImageType")


def _stack_hint(members: list[tuple[Path, Any]]) -> str:
    """Name the header attributes that tell mixed stacks apart (echoes, time points, acquisitions)."""
    parts = []
    for key in _STACK_KEYS:
        values = {text(ds.get(key)) or "absent" for _, ds in members}
        if len(values) > 1:
            shown = ", ".join(sorted(str(v) for v in values)[:6])
            parts.append(f"{key} ({shown})")
    return f" (the files differ in {'; '.join(parts)})" if parts else ""


def _select(
    groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, source: str
) -> tuple[str, list[tuple[Path, Any]]]:
    if series_uid is not None:
        if series_uid not in groups:
            listed = "; ".join(_describe(u, m) for u, m in groups.items())
            raise InputError(f"{source}: no series with SeriesInstanceUID {series_uid}; found: {listed}")
        members = groups[series_uid]
        if not is_image(members[0][1]):
            mod = members[0][1].get("Modality", "?")
            raise InputError(
                f"{source}: series {series_uid} is a {mod} object, not an image; read masks with medlens.read_mask"
            )
        return series_uid, members
    images = {u: m for u, m in groups.items() if is_image(m[0][1])}
    if not images:
        listed = "; ".join(_describe(u, m) for u, m in groups.items())
        raise FormatError(f"{source}: no image series found, only non-image objects: {listed}")
    if len(images) > 1:
        listed = "\n  ".join(_describe(u, m) for u, m in images.items())
        raise InputError(
            f"{source}: {len(images)} image series found; pass series_uid= (CLI: --series UID) to choose one:\n  "
            + listed
        )
    uid = next(iter(images))
    return uid, images[uid]


def read_dicom_series(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    on_irregular: Literal["error", "resample"] = "error",
) -> Image:
    """Read one DICOM image series (single-frame files or an enhanced multi-frame object).

    Parameters
    ----------
    path
        A folder (searched recursively), a list of files, or one file.
    series_uid
        SeriesInstanceUID to read when the input holds several image series.
    on_irregular
        ``"error"``: raise :class:`~medlens.core.errors.GeometryError` listing the geometry findings;
        ``"resample"``: resample missing slices, non-uniform spacing or gantry tilt onto a regular grid
        along the slice normal (linear interpolation) with a :class:`~medlens.core.errors.GeometryWarning`.
        Duplicate positions and inconsistent orientation/spacing/size always raise.

    Returns
    -------
    Image
        float32 pixels, ``(z, y, x)`` (several slices or frames) or ``(y, x)`` (one slice, CR/DX).
        Units: HU for CT, SUVbw for PET (BQML converted with the decay-corrected dose, GML kept), else
        ``arbitrary`` (or BQML/unknown with a warning when SUV cannot be computed).
    """
    if on_irregular not in ("error", "resample"):
        raise InputError(f"on_irregular must be 'error' or 'resample', got {on_irregular!r}")
    files, source = collect_files(path)
    items = read_headers(files, pixels="defer")
    groups = group(items)
    uid, members = _select(groups, series_uid, source)
    members = drop_localizers(members, source)
    records = slice_records(members)
    findings = qa(records)
    blocking = [f for f in findings if f.severity == "error"]
    resample = False
    if blocking:
        fixable = all(f.resampleable for f in blocking)
        if on_irregular == "error" or not fixable:
            hint = (
                "pass on_irregular='resample' (CLI: --resample-irregular) to resample onto a regular grid"
                if fixable
                else "resampling cannot repair "
                + ", ".join(sorted({f.code for f in blocking if not f.resampleable}))
                + "; select the files of one acquisition"
                + _stack_hint(members)
            )
            raise GeometryError(
                f"{source}: series {uid} has irregular geometry ({len(blocking)} finding(s)): "
                f"{format_findings(blocking)}. {hint}"
            )
        resample = True
    records = sorted_records(records)
    units, factors = units_and_factors(records, source)
    pixels = decode_pixels(records)
    if factors is not None:
        pixels *= np.asarray(factors, dtype=np.float32)[:, None, None]
    history: tuple[str, ...] = ()
    if resample:
        first = records[0]
        pixels, aff = resample_to_regular_grid(
            pixels,
            np.array([r.position for r in records]),
            first.orientation,  # type: ignore[arg-type]
            first.pixel_spacing or (1.0, 1.0),
        )
        warnings.warn(
            f"{source}: series {uid} resampled onto a regular grid of {pixels.shape[0]} slices "
            f"({aff[:3, 0].tolist()} mm step) because: {format_findings(blocking)}",
            GeometryWarning,
            2,
        )
        history = ("resample_irregular_slices",)
    elif len(records) == 1:
        aff = affine(records, source)
        pixels = pixels[0]
    else:
        aff = affine(records, source)
    ds0 = records[0].ds
    sops: list[str] = []
    for r in records:
        s = header(r.ds)["SOPInstanceUID"] or ""
        if not sops or r.frame is None:
            sops.append(s)
    meta = ImageMeta(
        modality=str(ds0.get("Modality", "") or ""),
        units=units,
        study_uid=str(ds0.get("StudyInstanceUID", "") or ""),
        series_uid="" if uid == NO_UID else uid,
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "") or ""),
        sop_instance_uids=tuple(sops) if not resample else (),
        patient_id=str(ds0.get("PatientID", "") or ""),
        source=source,
        extra=_extra(ds0, records[0]),
        history=history,
    )
    pixels.flags.writeable = False  # nothing else holds these pixels: the Image keeps them without a copy
    return Image(pixels, aff, meta)
