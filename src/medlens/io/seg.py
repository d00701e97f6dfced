"""DICOM Segmentation objects (SEG, PS3.3 A.51): read a segment onto an image grid; write masks as SEG.

Writing uses highdicom (BINARY segmentation referencing every source instance); reading uses highdicom
to parse the object and maps each frame onto the reference grid through its Plane Position and the
shared Plane Orientation / Pixel Measures, so the frames' order in the file does not matter and any
frame that does not fall exactly on a slice of the reference is reported, never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.core.atomic import atomic_path
from medlens.core.errors import FormatError, GeometryError, InputError, require
from medlens.core.image import Image, Units

__all__ = ["SEGMENTATION_STORAGE", "is_seg", "list_segments", "read_seg", "write_seg"]

PathLike = str | os.PathLike[str]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_LABEL_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

# Tolerances for matching frames to the reference grid.
_POS_TOL_VOXELS = 0.01
_DIR_TOL = 1e-4
_SPACING_TOL_MM = 1e-3


def _hd() -> Any:
    return require("highdicom", purpose="DICOM SEG")


def is_seg(ds: Any) -> bool:
    """True if ``ds`` is a DICOM Segmentation (or Label Map Segmentation)."""
    return str(getattr(ds, "SOPClassUID", "")) in (SEGMENTATION_STORAGE, _LABEL_MAP_STORAGE)


def _load(path: PathLike) -> Any:
    p = Path(path)
    if p.is_dir():
        from medlens.io.dicom.files import list_files
        from medlens.io.dicom.headers import read_dicom_file

        cands = []
        for f in list_files(p):
            ds = read_dicom_file(f, pixels="skip", specific_tags=["SOPClassUID"]).ds
            if ds is not None and is_seg(ds):
                cands.append(f)
        if len(cands) != 1:
            found = ", ".join(c.name for c in cands[:6]) or "none"
            raise InputError(f"{p}: expected exactly one DICOM SEG file in the folder, found {len(cands)} ({found})")
        p = cands[0]
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    hd = _hd()
    try:
        seg = hd.seg.segread(str(p))
    except Exception as exc:
        raise FormatError(f"{p}: cannot read as a DICOM Segmentation ({type(exc).__name__}: {exc})") from exc
    return p, seg


def list_segments(path: PathLike) -> list[str]:
    """Segment labels of the DICOM SEG at ``path``, in segment-number order."""
    _, seg = _load(path)
    return [str(s.SegmentLabel) for s in seg.SegmentSequence]


def _segment_number(seg: Any, roi: str | None, source: Path) -> tuple[int, str]:
    segs = [(int(s.SegmentNumber), str(getattr(s, "SegmentLabel", ""))) for s in seg.SegmentSequence]
    labels = [lab for _, lab in segs]
    if roi is None:
        if len(segs) != 1:
            raise InputError(f"{source}: several segments, choose one with roi=LABEL: {', '.join(map(repr, labels))}")
        return segs[0]
    for num, lab in segs:
        if lab == roi:
            return num, lab
    folded = [(n, lab) for n, lab in segs if lab.strip().lower() == roi.strip().lower()]
    if len(folded) == 1:
        return folded[0]
    raise InputError(f"{source}: no segment labelled {roi!r}; the SEG has: {', '.join(map(repr, labels))}")


def _functional_item(seg: Any, i: int, name: str) -> Any:
    """First item of functional group ``name`` for frame ``i`` (per-frame first, then shared), or None."""
    per_frame = getattr(seg, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and i < len(per_frame) and name in per_frame[i]:
        return getattr(per_frame[i], name)[0]
    shared = getattr(seg, "SharedFunctionalGroupsSequence", None)
    if shared and name in shared[0]:
        return getattr(shared[0], name)[0]
    return None


def _frame_geometry(seg: Any, i: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[float, float]]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing) of frame ``i``."""
    pos = _functional_item(seg, i, "PlanePositionSequence")
    ori = _functional_item(seg, i, "PlaneOrientationSequence")
    meas = _functional_item(seg, i, "PixelMeasuresSequence")
    if pos is None or ori is None or meas is None:
        raise FormatError("the SEG frames lack plane position/orientation/pixel spacing; cannot place them in space")
    ps = [float(v) for v in meas.PixelSpacing]
    return (
        np.array([float(v) for v in pos.ImagePositionPatient]),
        np.array([float(v) for v in ori.ImageOrientationPatient]),
        (ps[0], ps[1]),
    )


def read_seg(path: PathLike, *, reference: Image, roi: str | None = None) -> Image:
    """Read one segment of a DICOM SEG as a boolean mask on ``reference``'s grid.

    Parameters
    ----------
    path
        The SEG file (or a folder holding exactly one).
    reference
        The image segmented; every frame of the segment must lie on one of its slices with the same
        orientation, pixel spacing and size.
    roi
        SegmentLabel; may be omitted when the SEG holds one segment.

    Returns
    -------
    Image
        Boolean mask on the reference grid. FRACTIONAL segments are thresholded at half the maximum
        fractional value.

    Raises
    ------
    GeometryError
        The SEG is in another Frame of Reference, or a frame does not lie on the reference grid.
    InputError
        No segment of that label (the message lists those present), or the segment has no frames.
    """
    source, seg = _load(path)
    number, label = _segment_number(seg, roi, source)
    seg_for = str(getattr(seg, "FrameOfReferenceUID", ""))
    ref_for = reference.meta.frame_of_reference_uid
    if seg_for and ref_for and seg_for != ref_for:
        raise GeometryError(
            f"{source}: the SEG is in Frame of Reference {seg_for} but the image "
            f"({reference.meta.source or 'reference'}) is in Frame of Reference {ref_for}: it segments another "
            "image; read the image it was made from"
        )
    seg_type = str(getattr(seg, "SegmentationType", "BINARY")).upper()
    n_frames = int(getattr(seg, "NumberOfFrames", 1))
    pixels = np.asarray(seg.pixel_array)
    if pixels.ndim == 2:
        pixels = pixels[np.newaxis]
    if reference.ndim == 3:
        aff = reference.affine
        nz, ny, nx = reference.shape
    else:
        a = reference.affine
        aff = np.eye(4)
        aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3] = a[:3, 2], a[:3, 0], a[:3, 1], a[:3, 3]
        nz, (ny, nx) = 1, reference.shape
    inv = np.linalg.inv(aff)
    row_dir = aff[:3, 2] / np.linalg.norm(aff[:3, 2])  # direction along a row = the x (column index) axis
    col_dir = aff[:3, 1] / np.linalg.norm(aff[:3, 1])
    ref_spacing = (float(np.linalg.norm(aff[:3, 1])), float(np.linalg.norm(aff[:3, 2])))
    out = np.zeros((nz, ny, nx), dtype=bool)
    used = 0
    for i in range(n_frames):
        if seg_type != "LABELMAP":
            ident = _functional_item(seg, i, "SegmentIdentificationSequence")
            if ident is None or int(ident.ReferencedSegmentNumber) != number:
                continue
        pos, ori, ps = _frame_geometry(seg, i)
        if pixels.shape[1:] != (ny, nx):
            raise GeometryError(
                f"{source}: SEG frames are {pixels.shape[1]}x{pixels.shape[2]} pixels but the image slices are "
                f"{ny}x{nx}: the SEG is on another grid; resample or read the image it was made from"
            )
        if (
            np.abs(ori[:3] - row_dir).max() > _DIR_TOL
            or np.abs(ori[3:] - col_dir).max() > _DIR_TOL
            or abs(ps[0] - ref_spacing[0]) > _SPACING_TOL_MM
            or abs(ps[1] - ref_spacing[1]) > _SPACING_TOL_MM
        ):
            raise GeometryError(
                f"{source}: SEG frame orientation {np.round(ori, 5).tolist()} / pixel spacing {ps} mm differ from "
                f"the image's {np.round(np.concatenate([row_dir, col_dir]), 5).tolist()} / {ref_spacing} mm: "
                "the SEG is on another grid"
            )
        idx = inv[:3, :3] @ pos + inv[:3, 3]
        k = round(float(idx[0]))
        if np.abs(idx - [k, 0.0, 0.0]).max() > _POS_TOL_VOXELS or not 0 <= k < nz:
            raise GeometryError(
                f"{source}: SEG frame {i + 1} at {np.round(pos, 3).tolist()} mm is not on a slice of the image "
                f"(index {np.round(idx, 3).tolist()}, image has {nz} slices): the SEG is on another grid"
            )
        frame = pixels[i]
        if seg_type == "FRACTIONAL":
            hit = frame.astype(np.float64) >= 0.5 * float(getattr(seg, "MaximumFractionalValue", 255))
        elif seg_type == "LABELMAP":
            hit = frame == number
        else:
            hit = frame != 0
        out[k] |= hit
        used += 1
    if used == 0:
        raise InputError(f"{source}: segment {label!r} has no frames")
    arr = out if reference.ndim == 3 else out[0]
    return reference.with_array(
        arr,
        op=f"seg:{label}",
        units=Units.MASK,
        source=str(source),
        extra={"roi": label, "mask_source": "SEG"},
    )


def write_seg(
    mask: Image | Mapping[str, Image],
    source_datasets_or_dir: PathLike | Sequence[Any],
    out_path: PathLike,
    *,
    segment_label: str | None = None,
    algorithm_type: str = "MANUAL",
    algorithm_name: str = "MedLens",
    algorithm_version: str | None = None,
    series_description: str = "MedLens segmentation",
    property_category: Any = None,
    property_type: Any = None,
    series_uid: str | None = None,
) -> Path:
    """Write boolean mask(s) as a BINARY DICOM SEG referencing the source series (highdicom).

    Parameters
    ----------
    mask
        A boolean 3D :class:`Image`, or a mapping segment label -> boolean Image; all on the grid of
        the source series (axis 0 = its slices).
    source_datasets_or_dir
        The source series: a folder, a list of files, or pydicom Datasets (single-frame slices).
    out_path
        Output file (written atomically).
    segment_label
        SegmentLabel of a single mask (required then); ignored for a mapping (its keys are the labels).
    algorithm_type
        ``"MANUAL"``, ``"SEMIAUTOMATIC"`` or ``"AUTOMATIC"``.
    algorithm_name, algorithm_version
        Identify the algorithm (written for non-manual segments).
    series_description
        SeriesDescription of the SEG.
    property_category, property_type
        Segmented property codes (pydicom ``Code``); default SCT "Morphologically abnormal structure"
        / "Mass".
    series_uid
        Keep only the source files of this SeriesInstanceUID (when the folder holds several series).

    Raises
    ------
    InputError
        Empty mask, non-boolean mask, missing label, bad algorithm type.
    GeometryError
        The mask is not on the grid of the source series.
    """
    hd = _hd()
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    if isinstance(mask, Image):
        if not segment_label:
            raise InputError("write_seg needs segment_label=NAME for a single mask")
        masks: dict[str, Image] = {segment_label: mask}
    else:
        masks = dict(mask)
    if not masks:
        raise InputError("write_seg needs at least one mask")
    algorithm_type = algorithm_type.upper()
    if algorithm_type not in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"):
        raise InputError(f"algorithm_type must be MANUAL, SEMIAUTOMATIC or AUTOMATIC, got {algorithm_type!r}")
    first = next(iter(masks.values()))
    for name, m in masks.items():
        if not isinstance(m, Image) or not m.is_mask:
            raise InputError(f"mask {name!r} must be a boolean Image (use image.array > 0 for a label image)")
        if m.ndim != 3:
            raise InputError(f"mask {name!r} must be 3D (z, y, x); got shape {m.shape}")
        if not m.array.any():
            raise InputError(f"mask {name!r} is empty; an empty DICOM SEG is never written")
        if not m.same_grid(first):
            raise GeometryError(f"masks {next(iter(masks))!r} and {name!r} are on different grids")

    from medlens.io.dicom_write import source_slices

    refs = source_slices(source_datasets_or_dir, series_uid=series_uid, refuse_multiframe="SEG writing")
    src_for = str(getattr(refs[0], "FrameOfReferenceUID", ""))
    mask_for = first.meta.frame_of_reference_uid
    if mask_for and src_for and mask_for != src_for:
        raise GeometryError(
            f"the mask is in Frame of Reference {mask_for} but the source series is in {src_for}: "
            "it belongs to another image"
        )
    nz, ny, nx = first.shape
    positions = np.array([[float(v) for v in d.ImagePositionPatient] for d in refs])
    kidx = first.world_to_index(positions)
    ks = np.rint(kidx[:, 0]).astype(int)
    bad = np.abs(kidx - np.column_stack([ks, np.zeros_like(ks), np.zeros_like(ks)])).max(axis=1) > _POS_TOL_VOXELS
    dims_bad = [d for d in refs if (int(d.Rows), int(d.Columns)) != (ny, nx)]
    if bad.any() or dims_bad or sorted(ks.tolist()) != list(range(nz)):
        raise GeometryError(
            f"the mask (shape {first.shape}, origin {tuple(round(v, 3) for v in first.origin)} mm) is not on the grid "
            f"of the source series ({len(refs)} slices of {int(refs[0].Rows)}x{int(refs[0].Columns)}): "
            "a SEG must match its source images slice for slice"
        )
    stack = np.stack([np.asarray(m.array) for m in masks.values()], axis=-1)[ks]  # source order, (f, y, x, seg)
    category = property_category or Code("49755003", "SCT", "Morphologically abnormal structure")
    prop_type = property_type or Code("4147007", "SCT", "Mass")
    algo = None
    if algorithm_type != "MANUAL":
        import medlens

        algo = hd.AlgorithmIdentificationSequence(
            name=algorithm_name,
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm_version or medlens.__version__,
        )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=prop_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues[algorithm_type],
            algorithm_identification=algo,
        )
        for n, name in enumerate(masks, start=1)
    ]
    import warnings

    from medlens.io.dicom_write import derived_study_id

    study_id = derived_study_id(refs[0])
    with warnings.catch_warnings():
        # highdicom warns about single-component patient names copied from the source; not ours to change.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name.*")
        # an over-long source StudyID is copied by highdicom (pydicom warns) and replaced just below
        warnings.filterwarnings("ignore", message=".*exceeds the maximum length of 16 allowed for VR SH.*")
        seg = _build(
            hd,
            refs,
            stack,
            descriptions,
            series_description,
        )
    seg.StudyID = study_id
    target = Path(out_path)
    with atomic_path(target) as tmp:
        seg.save_as(str(tmp), enforce_file_format=True)
    return target


def _build(hd: Any, refs: list[Any], stack: npt.NDArray[Any], descriptions: list[Any], series_description: str) -> Any:
    import medlens

    return hd.seg.Segmentation(
        source_images=refs,
        pixel_array=stack.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=902,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MedLens",
        manufacturer_model_name="medlens",
        software_versions=medlens.__version__,
        device_serial_number="0",
        series_description=series_description,
    )
