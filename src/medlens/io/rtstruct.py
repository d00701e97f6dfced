"""RT Structure Sets (RTSTRUCT): rasterise ROI contours onto an image grid, list ROIs, write contours.

Reading (DICOM PS3.3 C.8.8.5 Structure Set, C.8.8.6 ROI Contour): every CLOSED_PLANAR contour of the
ROI is mapped from patient LPS millimetres to fractional array indices of the reference image, put on
the slice it lies on (it must lie within half a slice spacing of a slice plane) and filled on the
pixel centres with the **even-odd rule across all contours of that slice**. Holes drawn as inner
contours and several components therefore come out right, whatever the contour orientation.

Writing: each slice of a boolean mask is traced with marching squares at level 0.5
(:func:`skimage.measure.find_contours`), so every contour passes between pixel centres and reading it
back with the rule above reproduces the mask exactly.
"""

from __future__ import annotations

import datetime as _dt
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.core.atomic import atomic_path
from medlens.core.errors import FormatError, GeometryError, GeometryWarning, InputError, SkippedInputWarning
from medlens.core.image import Image, Units

__all__ = ["find_rtstruct", "is_rtstruct", "list_rois", "rasterize_contours", "read_rtstruct", "write_rtstruct"]

PathLike = str | os.PathLike[str]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
_DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"


# ---------------------------------------------------------------------------------------------------------------------
# locating and parsing
# ---------------------------------------------------------------------------------------------------------------------


def _dcmread(path: Path, **kwargs: Any) -> Any:
    import pydicom

    try:
        return pydicom.dcmread(str(path), **kwargs)
    except Exception as exc:
        raise FormatError(f"{path}: cannot read as DICOM ({type(exc).__name__}: {exc})") from exc


def is_rtstruct(ds: Any) -> bool:
    """True if the dataset is an RT Structure Set."""
    return str(getattr(ds, "SOPClassUID", "")) == RT_STRUCTURE_SET_STORAGE or getattr(ds, "Modality", "") == "RTSTRUCT"


def find_rtstruct(path: PathLike) -> list[Path]:
    """The RTSTRUCT files at ``path`` (a file, or a folder searched recursively)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    from medlens.io.dicom.files import list_files
    from medlens.io.dicom.headers import read_dicom_file

    found = []
    for f in list_files(p):
        ds = read_dicom_file(f, pixels="skip", specific_tags=["SOPClassUID", "Modality"]).ds
        if ds is not None and is_rtstruct(ds):
            found.append(f)
    return found


def _load(path: PathLike) -> tuple[Path, Any]:
    files = find_rtstruct(path)
    if not files:
        raise InputError(f"{path}: no RTSTRUCT file found (looked for SOP Class {RT_STRUCTURE_SET_STORAGE})")
    if len(files) > 1:
        raise InputError(
            f"{path}: {len(files)} RTSTRUCT files found ({', '.join(f.name for f in files[:6])}); "
            "pass the one to use as a file path"
        )
    ds = _dcmread(files[0])
    if not is_rtstruct(ds):
        raise FormatError(
            f"{files[0]}: not an RTSTRUCT (SOP Class {getattr(ds, 'SOPClassUID', '?')}, "
            f"Modality {getattr(ds, 'Modality', '?')})"
        )
    return files[0], ds


def list_rois(path: PathLike) -> list[str]:
    """ROI names (StructureSetROISequence ROIName) of the RTSTRUCT at ``path``, in file order."""
    _, ds = _load(path)
    return [str(getattr(r, "ROIName", "")) for r in getattr(ds, "StructureSetROISequence", [])]


@dataclass(frozen=True)
class _Roi:
    number: int
    name: str
    frame_of_reference_uid: str
    contours: list[tuple[str, npt.NDArray[np.float64]]]  # (geometric type, (n, 3) LPS points)


def _roi(ds: Any, roi: str | None, source: Path) -> _Roi:
    entries = list(getattr(ds, "StructureSetROISequence", []))
    names = [str(getattr(r, "ROIName", "")) for r in entries]
    if not entries:
        raise InputError(f"{source}: the structure set holds no ROI")
    if roi is None:
        if len(entries) > 1:
            raise InputError(f"{source}: several ROIs, choose one with roi=NAME: {', '.join(map(repr, names))}")
        chosen = entries[0]
    else:
        matches = [r for r, n in zip(entries, names, strict=True) if n == roi]
        if not matches:
            folded = [r for r, n in zip(entries, names, strict=True) if n.strip().lower() == roi.strip().lower()]
            if len(folded) == 1:
                matches = folded
        if not matches:
            raise InputError(f"{source}: no ROI named {roi!r}; the structure set has: {', '.join(map(repr, names))}")
        chosen = matches[0]
    number = int(chosen.ROINumber)
    contours: list[tuple[str, npt.NDArray[np.float64]]] = []
    for rc in getattr(ds, "ROIContourSequence", []):
        if int(getattr(rc, "ReferencedROINumber", -1)) != number:
            continue
        for c in getattr(rc, "ContourSequence", []) or []:
            data = _contour_data(c)
            if data.size % 3:
                raise FormatError(
                    f"{source}: a contour of ROI {chosen.ROIName!r} has {data.size} coordinates, not x,y,z"
                )
            contours.append((str(getattr(c, "ContourGeometricType", "")).upper(), data.reshape(-1, 3)))
    return _Roi(number, str(chosen.ROIName), str(getattr(chosen, "ReferencedFrameOfReferenceUID", "")), contours)


def _contour_data(contour: Any) -> npt.NDArray[np.float64]:
    """ContourData as floats, parsed from the raw Decimal String bytes when possible (30x faster)."""
    if "ContourData" not in contour:
        return np.zeros(0)
    raw = contour.get_item(0x30060050)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes):
        try:
            return np.array(value.strip(b" \x00").split(b"\\"), dtype=np.float64)
        except ValueError:
            pass
    return np.asarray([float(v) for v in contour.ContourData], dtype=np.float64)


def _structure_set_frames(ds: Any) -> set[str]:
    return {
        str(getattr(f, "FrameOfReferenceUID", ""))
        for f in getattr(ds, "ReferencedFrameOfReferenceSequence", [])
        if getattr(f, "FrameOfReferenceUID", "")
    }


# ---------------------------------------------------------------------------------------------------------------------
# rasterisation
# ---------------------------------------------------------------------------------------------------------------------


def _volume_affine(reference: Image) -> npt.NDArray[np.float64]:
    """A 3D (k, i, j) affine for the reference: itself, or a 2D image's plane as a one-slice volume."""
    if reference.ndim == 3:
        return np.asarray(reference.affine)
    a = reference.affine
    out = np.eye(4)
    out[:3, 0] = a[:3, 2]
    out[:3, 1] = a[:3, 0]
    out[:3, 2] = a[:3, 1]
    out[:3, 3] = a[:3, 3]
    return out


def _fill_even_odd(polygons: Sequence[npt.NDArray[np.float64]], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Pixel centres inside ``polygons`` ((n, 2) arrays of (row, col)) by the even-odd rule over all of them.

    Scanline crossing count: the edge from ``p`` to ``q`` crosses row ``r`` when ``r`` lies in the
    half-open interval between their rows; a pixel ``(r, c)`` is inside when an odd number of
    crossings of its row lie strictly left of ``c``.
    """
    ny, nx = shape
    starts = np.concatenate([p for p in polygons])
    ends = np.concatenate([np.roll(p, -1, axis=0) for p in polygons])
    y0, x0, y1, x1 = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]
    keep = y0 != y1  # horizontal edges never cross a row under the half-open rule
    y0, x0, y1, x1 = y0[keep], x0[keep], y1[keep], x1[keep]
    counts = np.zeros((ny, nx + 1), dtype=np.int32)
    if y0.size == 0:
        return np.zeros(shape, dtype=bool)
    lo = np.minimum(y0, y1)
    hi = np.maximum(y0, y1)
    r_first = np.clip(np.ceil(lo), 0, ny).astype(np.int64)  # first row r with lo <= r
    r_end = np.clip(np.ceil(hi), 0, ny).astype(np.int64)  # rows r < hi
    n_rows = np.maximum(r_end - r_first, 0)
    if n_rows.sum() == 0:
        return np.zeros(shape, dtype=bool)
    edge = np.repeat(np.arange(y0.size), n_rows)
    offs = np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    rows = r_first[edge] + offs
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    # The crossing counts for every pixel column c > xs: the first such column is floor(xs) + 1.
    cols = np.clip(np.floor(xs).astype(np.int64) + 1, 0, nx)
    np.add.at(counts, (rows, cols), 1)
    parity = np.cumsum(counts[:, :nx], axis=1) & 1
    return parity.astype(bool)


def rasterize_contours(
    contours: Sequence[npt.ArrayLike],
    reference: Image,
    *,
    name: str = "ROI",
    source: str = "",
) -> Image:
    """Rasterise closed planar contours (LPS mm) onto ``reference``'s grid.

    Parameters
    ----------
    contours
        Sequence of ``(n, 3)`` arrays of LPS points (mm), each a closed polygon lying in a slice plane.
    reference
        The image whose grid the mask takes (2D or 3D).
    name, source
        Used in messages.

    Returns
    -------
    Image
        Boolean mask on ``reference``'s grid (``meta.units == "mask"``).

    Raises
    ------
    GeometryError
        A contour is not within half a slice of a slice plane (drawn on another grid or tilted),
        or no contour lies inside the image.

    Warns
    -----
    GeometryWarning
        Some contours lie outside the image's slice range and were left out.
    """
    aff3 = _volume_affine(reference)
    inv = np.linalg.inv(aff3)
    nz, ny, nx = (1, *reference.shape) if reference.ndim == 2 else reference.shape
    per_slice: dict[int, list[npt.NDArray[np.float64]]] = {}
    outside = 0
    where = f"{source}: " if source else ""
    for pts in contours:
        p = np.asarray(pts, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3 or len(p) < 3:
            continue
        idx = p @ inv[:3, :3].T + inv[:3, 3]
        k_mean = float(np.mean(idx[:, 0]))
        k = int(np.floor(k_mean + 0.5))
        dev = float(np.max(np.abs(idx[:, 0] - k)))
        if dev > 0.5:
            slice_mm = float(np.linalg.norm(aff3[:3, 0]))
            raise GeometryError(
                f"{where}a contour of {name!r} is {dev * slice_mm:.3g} mm off the nearest slice plane of the image "
                f"(more than half the {slice_mm:.4g} mm slice spacing; contour at z~{float(np.mean(p[:, 2])):.2f} mm): "
                "the contours were drawn on another grid or orientation; read them onto the image they were drawn on"
            )
        if not 0 <= k < nz:
            outside += 1
            continue
        per_slice.setdefault(k, []).append(idx[:, 1:])
    if outside:
        warnings.warn(
            f"{where}{outside} of {len(contours)} contours of {name!r} lie outside the image's "
            f"{nz} slices and were left out",
            GeometryWarning,
            stacklevel=2,
        )
    if not per_slice:
        raise GeometryError(
            f"{where}no contour of {name!r} lies inside the image (shape {reference.shape}); "
            "is the structure set drawn on another image?"
        )
    arr = np.zeros((nz, ny, nx), dtype=bool)
    for k, polys in per_slice.items():
        arr[k] = _fill_even_odd(polys, (ny, nx))
    if not arr.any():
        raise GeometryError(
            f"{where}{name!r} contains no voxel centre of the image grid (spacing {reference.spacing} mm): "
            "the contours are smaller than a voxel"
        )
    out = arr if reference.ndim == 3 else arr[0]
    return reference.with_array(out, op=f"rasterize:{name}", units=Units.MASK, source=source or reference.meta.source)


def read_rtstruct(path: PathLike, *, reference: Image, roi: str | None = None) -> Image:
    """Read one ROI of an RTSTRUCT as a boolean mask on ``reference``'s grid.

    Parameters
    ----------
    path
        The RTSTRUCT file, or a folder holding exactly one.
    reference
        The image the structures were drawn on (its ``meta.frame_of_reference_uid`` is checked
        against the structure set's when both are known).
    roi
        ROIName; may be omitted when the structure set holds a single ROI.

    Raises
    ------
    InputError
        No RTSTRUCT, or no ROI of that name (the message lists those present), or the ROI has no contours.
    GeometryError
        The structure set refers to another Frame of Reference, or the contours do not fit the grid.
    """
    file, ds = _load(path)
    r = _roi(ds, roi, file)
    frames = _structure_set_frames(ds) | ({r.frame_of_reference_uid} if r.frame_of_reference_uid else set())
    ref_for = reference.meta.frame_of_reference_uid
    if ref_for and frames and ref_for not in frames:
        raise GeometryError(
            f"{file}: the structure set refers to Frame of Reference {', '.join(sorted(frames))} but the image "
            f"({reference.meta.source or 'reference'}) is in Frame of Reference {ref_for}: the contours belong to "
            "another image; read the image they were drawn on"
        )
    if not ref_for:
        warnings.warn(
            f"{file}: the reference image has no Frame of Reference UID (not read from DICOM?); the contours are "
            "placed by patient coordinates only",
            GeometryWarning,
            stacklevel=2,
        )
    closed = [pts for kind, pts in r.contours if kind == "CLOSED_PLANAR"]
    skipped = len(r.contours) - len(closed)
    if skipped:
        kinds = sorted({kind for kind, _ in r.contours if kind != "CLOSED_PLANAR"})
        warnings.warn(
            f"{file}: {skipped} contours of {r.name!r} are {'/'.join(kinds)}, not CLOSED_PLANAR; left out",
            SkippedInputWarning,
            stacklevel=2,
        )
    if not closed:
        raise InputError(f"{file}: ROI {r.name!r} has no CLOSED_PLANAR contour to rasterise")
    mask = rasterize_contours(closed, reference, name=r.name, source=str(file))
    return mask.with_meta(extra={"roi": r.name, "mask_source": "RTSTRUCT"})


# ---------------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------------


def _slice_contours(mask2d: npt.NDArray[np.bool_]) -> list[npt.NDArray[np.float64]]:
    from skimage import measure

    if not mask2d.any():
        return []
    padded = np.pad(mask2d.astype(np.float64), 1)
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c - 1.0
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c)
    return out


def _ds(v: float) -> str:
    s = f"{v:.10g}"
    return "0" if s in ("-0", "") else s


def write_rtstruct(
    masks: Mapping[str, Image],
    reference_dicom_files: PathLike | Sequence[PathLike],
    out_path: PathLike,
    *,
    label: str = "MEDLENS",
    interpreted_type: str = "GTV",
    algorithm: str = "AUTOMATIC",
    colors: Mapping[str, tuple[int, int, int]] | None = None,
) -> Path:
    """Write boolean masks as an RT Structure Set of CLOSED_PLANAR contours referencing their DICOM series.

    Parameters
    ----------
    masks
        ROI name -> boolean 3D :class:`Image` on the grid of the reference series (axis 0 = slices).
    reference_dicom_files
        The single-frame DICOM image files of the series the masks belong to (or their folder).
    out_path
        Output ``.dcm`` file (written atomically).
    label
        StructureSetLabel.
    interpreted_type
        RTROIInterpretedType of every ROI (``"GTV"``, ``"ORGAN"``, ...).
    algorithm
        ROIGenerationAlgorithm: ``"AUTOMATIC"``, ``"SEMIAUTOMATIC"`` or ``"MANUAL"``.
    colors
        Optional ROI name -> RGB display colour.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    InputError
        No masks, a mask that is not boolean 3D, an empty mask, or slices of a mask with no
        reference file at that position.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DSeq
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    if not masks:
        raise InputError("write_rtstruct needs at least one mask (name -> boolean Image)")
    if algorithm not in ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"):
        raise InputError(f"algorithm must be AUTOMATIC, SEMIAUTOMATIC or MANUAL, got {algorithm!r}")
    from medlens.io.dicom_write import source_slices

    refs = source_slices(reference_dicom_files)
    ref0 = refs[0]
    for_uid = str(getattr(ref0, "FrameOfReferenceUID", ""))
    if not for_uid:
        raise InputError("the reference series has no FrameOfReferenceUID; an RTSTRUCT cannot reference it")

    sop_uid = generate_uid()
    ds = Dataset()
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(RT_STRUCTURE_SET_STORAGE)
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    now = _dt.datetime.now()
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, kw, getattr(ref0, kw, ""))
    for kw in ("StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber"):
        setattr(ds, kw, getattr(ref0, kw, ""))
    from medlens.io.dicom_write import derived_study_id

    ds.StudyID = derived_study_id(ref0)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 901
    ds.OperatorsName = ""
    ds.Manufacturer = "MedLens"
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = getattr(ref0, "PositionReferenceIndicator", "")
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    rt_series = Dataset()
    rt_series.SeriesInstanceUID = ref0.SeriesInstanceUID
    cis = []
    for r in refs:
        ci = Dataset()
        ci.ReferencedSOPClassUID = r.SOPClassUID
        ci.ReferencedSOPInstanceUID = r.SOPInstanceUID
        cis.append(ci)
    rt_series.ContourImageSequence = DSeq(cis)
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = _DETACHED_STUDY_MANAGEMENT
    rt_study.ReferencedSOPInstanceUID = ref0.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = DSeq([rt_series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = for_uid
    ref_for.RTReferencedStudySequence = DSeq([rt_study])
    ds.ReferencedFrameOfReferenceSequence = DSeq([ref_for])

    positions = np.array([[float(v) for v in r.ImagePositionPatient] for r in refs])
    roi_seq, contour_seq, obs_seq = [], [], []
    palette = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (200, 0, 200), (0, 200, 200)]
    for n, (name, mask) in enumerate(masks.items(), start=1):
        if not isinstance(mask, Image) or not mask.is_mask or mask.ndim != 3:
            raise InputError(f"mask {name!r} must be a boolean 3D Image, got {mask!r}")
        if not mask.array.any():
            raise InputError(f"mask {name!r} is empty; an RTSTRUCT ROI needs at least one voxel")
        mask_for = mask.meta.frame_of_reference_uid
        if mask_for and mask_for != for_uid:
            raise GeometryError(
                f"mask {name!r} is in Frame of Reference {mask_for} but the reference series is in {for_uid}: "
                "the mask belongs to another image"
            )
        # Which reference slice holds each mask slice: match slice positions along the mask's axis 0.
        kidx = mask.world_to_index(positions)
        slice_of = {}
        for r, ki in zip(refs, kidx, strict=True):
            k = round(float(ki[0]))
            if abs(ki[0] - k) < 0.01 and abs(ki[1]) < 0.01 and abs(ki[2]) < 0.01:
                slice_of[k] = r
        roi = Dataset()
        roi.ROINumber = n
        roi.ReferencedFrameOfReferenceUID = for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = algorithm
        roi_seq.append(roi)
        contours = []
        arr = np.asarray(mask.array)
        for k in range(arr.shape[0]):
            polys = _slice_contours(arr[k])
            if not polys:
                continue
            if k not in slice_of:
                raise InputError(
                    f"mask {name!r}: slice {k} holds voxels but no reference file lies at its position "
                    f"{mask.index_to_world([k, 0, 0]).round(3).tolist()} mm; the mask is not on the grid of the series"
                )
            for yx in polys:
                pts = mask.index_to_world(np.column_stack([np.full(len(yx), float(k)), yx]))
                c = Dataset()
                img_ref = Dataset()
                img_ref.ReferencedSOPClassUID = slice_of[k].SOPClassUID
                img_ref.ReferencedSOPInstanceUID = slice_of[k].SOPInstanceUID
                c.ContourImageSequence = DSeq([img_ref])
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(pts)
                c.ContourData = [_ds(float(v)) for v in pts.ravel()]
                contours.append(c)
        rc = Dataset()
        rc.ROIDisplayColor = list((colors or {}).get(name, palette[(n - 1) % len(palette)]))
        rc.ReferencedROINumber = n
        rc.ContourSequence = DSeq(contours)
        contour_seq.append(rc)
        obs = Dataset()
        obs.ObservationNumber = n
        obs.ReferencedROINumber = n
        obs.RTROIInterpretedType = interpreted_type
        obs.ROIInterpreter = ""
        obs_seq.append(obs)
    ds.StructureSetROISequence = DSeq(roi_seq)
    ds.ROIContourSequence = DSeq(contour_seq)
    ds.RTROIObservationsSequence = DSeq(obs_seq)
    target = Path(out_path)
    with atomic_path(target) as tmp:
        pydicom.dcmwrite(str(tmp), ds, enforce_file_format=True)
    return target
