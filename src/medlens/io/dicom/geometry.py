"""Geometry of a DICOM series from its headers: slice records, sorting along the normal, QA, affine.

Geometry: axis 0 of the array follows the slice order; the affine's column 0 is the step vector
``(last position - first position) / (n - 1)``, columns 1 and 2 are the column cosines (second
IOP triplet, direction of increasing row index) x row spacing and the row cosines (first IOP
triplet, direction of increasing column index) x column spacing. This equals what SimpleITK's
``ImageSeriesReader`` builds for a regular stack.

No silent defaults (docs/io-dicom.md, "Missing geometry"): a stack without positions/orientation is
a :class:`~medlens.core.errors.GeometryError`; a single image without ImageOrientationPatient, or
without any pixel spacing, or a cross-sectional slice without SliceThickness, gets the documented
default *and* a :class:`~medlens.core.errors.GeometryWarning` naming it; a RescaleSlope of 0 is a
:class:`~medlens.core.errors.FormatError` (every pixel would become the intercept).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.core.errors import FormatError, GeometryWarning, InputError
from medlens.io.dicom.headers import header
from medlens.io.dicom.headers import nframes as _frames_of
from medlens.io.geometry_qa import GeometryFinding, check_slice_geometry, slice_normal

__all__ = ["Slice", "affine", "geometry_findings", "qa", "slice_records", "sorted_records"]

#: Cross-sectional modalities: a single slice of these without SliceThickness is warned about.
_CROSS_SECTIONAL = frozenset({"CT", "MR", "PT", "NM"})


@dataclass
class Slice:
    """One 2D slice (a file, or a frame of a multi-frame object), from the headers."""

    name: str
    ds: Any  # header dataset the slice belongs to
    frame: int | None  # frame index in a multi-frame object
    position: npt.NDArray[np.float64] | None
    orientation: npt.NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    shape: tuple[int, int]
    slope: float
    intercept: float
    thickness: float | None


def _floats(value: Any, n: int) -> npt.NDArray[np.float64] | None:
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _float(value: Any, default: float | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first(values: list[float] | None, default: float | None) -> float | None:
    return float(values[0]) if values else default


def _slope(value: float | None, name: str) -> float:
    """RescaleSlope (1 when absent); 0 or a non-finite value is refused, never replaced."""
    if value is None:
        return 1.0
    if value == 0.0 or not np.isfinite(value):
        raise FormatError(
            f"{name}: RescaleSlope is {value}; a zero/non-finite slope would map every pixel to the intercept. "
            "The header is damaged: correct RescaleSlope (1 if the stored values are the intended units)"
        )
    return float(value)


def _group_attr(groups: Sequence[Any], seq_name: str, attr: str) -> Any:
    for g in groups:
        if g is None:
            continue
        seq = g.get(seq_name)
        if seq:
            v = seq[0].get(attr)
            if v is not None:
                return v
    return None


def slice_records(members: list[tuple[Path, Any]]) -> list[Slice]:
    """One record per 2D slice (per file, or per frame of an enhanced multi-frame object)."""
    out: list[Slice] = []
    multi = [(p, ds) for p, ds in members if _frames_of(header(ds)) > 1]
    if multi and len(members) > 1:
        raise FormatError(
            f"series {members[0][1].get('SeriesInstanceUID', '')} mixes {len(multi)} multi-frame object(s) with "
            f"{len(members)} files in all; MedLens reads one multi-frame object or a set of single-frame files: "
            "pass one file"
        )
    for p, ds in members:
        nframes = _frames_of(header(ds))
        shape = (int(header(ds)["Rows"]), int(header(ds)["Columns"]))
        top_ps = ds.get("PixelSpacing")
        if nframes > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            shared_seq = ds.get("SharedFunctionalGroupsSequence")
            shared = shared_seq[0] if shared_seq else None
            per = ds.get("PerFrameFunctionalGroupsSequence")
            if not per or len(per) != nframes:
                if nframes == 1:
                    per = [None]
                else:
                    raise FormatError(
                        f"{p}: multi-frame object ({nframes} frames, modality {ds.get('Modality', '?')}) without "
                        "per-frame plane positions (PerFrameFunctionalGroupsSequence/PlanePositionSequence); "
                        "cine, ultrasound or NM frames are not a volume MedLens can place in space"
                    )
            for i in range(nframes):
                groups = [per[i], shared]
                pos = _floats(_group_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
                iop = _floats(_group_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
                ps = _floats(_group_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
                th = _float(_group_attr(groups, "PixelMeasuresSequence", "SliceThickness"), None)
                slope = _group_attr(groups, "PixelValueTransformationSequence", "RescaleSlope")
                icpt = _group_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept")
                if pos is None and nframes == 1:
                    pos = _floats(ds.get("ImagePositionPatient"), 3)
                if iop is None:
                    iop = _floats(ds.get("ImageOrientationPatient"), 6)
                if ps is None:
                    ps = _floats(top_ps, 2)
                if pos is None and nframes > 1:
                    raise FormatError(f"{p}: frame {i + 1} of {nframes} has no PlanePositionSequence position")
                out.append(
                    Slice(
                        name=f"{p} frame {i + 1}" if nframes > 1 else str(p),
                        ds=ds,
                        frame=i if nframes > 1 else None,
                        position=pos,
                        orientation=iop,
                        pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
                        shape=shape,
                        slope=_slope(_float(slope if slope is not None else ds.get("RescaleSlope"), None), f"{p}"),
                        intercept=_float(icpt if icpt is not None else ds.get("RescaleIntercept"), 0.0) or 0.0,
                        thickness=th if th is not None else _float(ds.get("SliceThickness"), None),
                    )
                )
        else:
            h = header(ds)
            ps = _floats(h["PixelSpacing"], 2)
            out.append(
                Slice(
                    name=str(p),
                    ds=ds,
                    frame=None,
                    position=_floats(h["ImagePositionPatient"], 3),
                    orientation=_floats(h["ImageOrientationPatient"], 6),
                    pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
                    shape=shape,
                    slope=_slope(_first(h["RescaleSlope"], None), str(p)),
                    intercept=_first(h["RescaleIntercept"], 0.0) or 0.0,
                    thickness=_first(h["SliceThickness"], None),
                )
            )
    return out


def qa(records: list[Slice]) -> list[GeometryFinding]:
    if len(records) < 2:
        return []
    missing = [r.name for r in records if r.position is None or r.orientation is None]
    if missing:
        return [
            GeometryFinding(
                "missing_position",
                "error",
                f"{len(missing)} of {len(records)} slices lack ImagePositionPatient/ImageOrientationPatient, so the "
                "slices cannot be placed in space: " + ", ".join(missing[:5]),
            )
        ]
    return check_slice_geometry(
        np.array([r.position for r in records]),
        np.array([r.orientation for r in records]),
        pixel_spacings=np.array([r.pixel_spacing or (0.0, 0.0) for r in records]),
        shapes=[r.shape for r in records],
        files=[r.name for r in records],
    )


def geometry_findings(datasets: Sequence[Any], names: Sequence[str] | None = None) -> list[GeometryFinding]:
    """Geometry QA of one series from its headers (pydicom datasets, pixels not needed).

    For a catalog that already holds the headers (e.g. read with ``stop_before_pixels=True``).
    ``names`` (one per dataset, default ``"file i"``) are used in the messages.
    """
    labels = list(names) if names is not None else [f"file {i}" for i in range(len(datasets))]
    if len(labels) != len(datasets):
        raise InputError(f"names has {len(labels)} entries for {len(datasets)} datasets; give one name per dataset")
    return qa(slice_records([(Path(n), ds) for n, ds in zip(labels, datasets, strict=True)]))


def sorted_records(records: list[Slice]) -> list[Slice]:
    if len(records) < 2:
        return records
    normal = slice_normal(records[0].orientation)  # type: ignore[arg-type]
    proj = np.array([float(r.position @ normal) for r in records])  # type: ignore[operator]
    return [records[i] for i in np.argsort(proj, kind="stable")]


def _plane_vectors(rec: Slice, source: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float, float]:
    """(row cosines, column cosines, row spacing dy, column spacing dx) of a slice."""
    if rec.orientation is not None:
        row_dir, col_dir = rec.orientation[:3], rec.orientation[3:6]
    else:
        # Only a single image gets here (a stack without orientation fails the QA); affine() warns.
        row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    if rec.pixel_spacing is not None and min(rec.pixel_spacing) > 0:
        dy, dx = rec.pixel_spacing
    else:
        ips = _floats(rec.ds.get("ImagerPixelSpacing"), 2)
        if ips is None:
            ips = _floats(rec.ds.get("NominalScannedPixelSpacing"), 2)
        if ips is not None and min(ips) > 0:
            dy, dx = float(ips[0]), float(ips[1])
        else:
            found = "zero" if rec.pixel_spacing is not None else "absent"
            warnings.warn(
                f"{source}: no PixelSpacing or ImagerPixelSpacing; pixel spacing set to 1 mm (PixelSpacing {found}), "
                "so sizes and volumes in mm are not physical",
                GeometryWarning,
                4,
            )
            dy, dx = 1.0, 1.0
    return row_dir, col_dir, dy, dx


def affine(records: list[Slice], source: str) -> npt.NDArray[np.float64]:
    rec0 = records[0]
    row_dir, col_dir, dy, dx = _plane_vectors(rec0, source)
    aff = np.eye(4)
    if len(records) == 1:
        normal = np.cross(row_dir, col_dir)
        th = rec0.thickness if rec0.thickness and rec0.thickness > 0 else 1.0
        modality = str(header(rec0.ds)["Modality"] or "").upper()
        if th == 1.0 and rec0.thickness != 1.0 and modality in _CROSS_SECTIONAL:
            warnings.warn(
                f"{source}: single {modality} slice without a positive SliceThickness ({rec0.thickness}); its "
                "extent along the normal is taken as 1 mm (voxel volumes assume it)",
                GeometryWarning,
                3,
            )
        aff[:3, 0] = col_dir * dy
        aff[:3, 1] = row_dir * dx
        aff[:3, 2] = normal / max(float(np.linalg.norm(normal)), 1e-12) * th
        aff[:3, 3] = rec0.position if rec0.position is not None else 0.0
        known = (("ImageOrientationPatient", rec0.orientation), ("ImagePositionPatient", rec0.position))
        missing = [k for k, v in known if v is None]
        if missing:
            # Projection radiographs (CR/DX) legitimately have neither; the plane is then unknown, and said so.
            warnings.warn(
                f"{source}: no {' and no '.join(missing)}; the image is placed in the axial plane at the origin "
                "(rows along +L, columns along +P), which is not where it was acquired",
                GeometryWarning,
                3,
            )
        return aff
    first, last = records[0].position, records[-1].position
    aff[:3, 0] = (last - first) / (len(records) - 1)  # type: ignore[operator]
    aff[:3, 1] = col_dir * dy
    aff[:3, 2] = row_dir * dx
    aff[:3, 3] = first  # type: ignore[assignment]
    return aff
