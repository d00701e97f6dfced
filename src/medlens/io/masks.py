"""Masks from any source onto a reference grid: RTSTRUCT, DICOM SEG or a label image.

:func:`read_mask` looks at what ``path`` holds and dispatches:

* a volume file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``): a label image that must
  already be on the reference grid (same shape, affine equal within ``atol_mm``); it is never
  resampled silently;
* a DICOM RT Structure Set (file, or folder holding one): :func:`medlens.io.rtstruct.read_rtstruct`;
* a DICOM Segmentation: :func:`medlens.io.seg.read_seg`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import FormatError, InputError
from medlens.core.image import Image, Units
from medlens.io._formats import volume_suffix

__all__ = ["describe_mask_source", "read_label_image", "read_mask"]

PathLike = str | os.PathLike[str]

_LABEL_GRID_TOL_MM = 1e-3


def _volume_suffix(path: Path) -> bool:
    return volume_suffix(path) is not None


def _dicom_kinds(path: Path) -> dict[str, list[Path]]:
    """RTSTRUCT and SEG files at ``path`` (file or folder, recursive)."""
    from medlens.io.dicom.files import list_files
    from medlens.io.dicom.headers import read_dicom_file
    from medlens.io.rtstruct import is_rtstruct
    from medlens.io.seg import is_seg

    kinds: dict[str, list[Path]] = {"RTSTRUCT": [], "SEG": []}
    for f in list_files(path):
        ds = read_dicom_file(f, pixels="skip", specific_tags=["SOPClassUID", "Modality"]).ds
        if ds is None:
            if path.is_file():
                raise FormatError(
                    f"{f}: not a DICOM RTSTRUCT/SEG and not a label image "
                    "(.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd); cannot read a mask from it"
                ) from None
            continue
        if is_rtstruct(ds):
            kinds["RTSTRUCT"].append(f)
        elif is_seg(ds):
            kinds["SEG"].append(f)
    return kinds


def describe_mask_source(path: PathLike) -> tuple[str, list[str]]:
    """``(kind, names)`` of a mask file: kind ``"RTSTRUCT"``, ``"SEG"`` or ``"LABEL"``; ROI/segment names.

    For a label image the names are its non-zero label values as strings.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file() and _volume_suffix(p):
        from medlens.io.volume_files import read_volume

        arr = read_volume(p).array
        return "LABEL", [str(v) for v in np.unique(arr) if v != 0]
    kinds = _dicom_kinds(p)
    if kinds["RTSTRUCT"] and not kinds["SEG"]:
        from medlens.io.rtstruct import list_rois

        return "RTSTRUCT", list_rois(kinds["RTSTRUCT"][0] if len(kinds["RTSTRUCT"]) == 1 else p)
    if kinds["SEG"] and not kinds["RTSTRUCT"]:
        from medlens.io.seg import list_segments

        return "SEG", list_segments(kinds["SEG"][0] if len(kinds["SEG"]) == 1 else p)
    return _no_or_mixed(p, kinds)


def _no_or_mixed(p: Path, kinds: dict[str, list[Path]]) -> Any:
    if kinds["RTSTRUCT"] and kinds["SEG"]:
        raise InputError(
            f"{p}: holds both RTSTRUCT ({', '.join(f.name for f in kinds['RTSTRUCT'][:4])}) and SEG "
            f"({', '.join(f.name for f in kinds['SEG'][:4])}) files; pass the file to use"
        )
    raise InputError(
        f"{p}: no RTSTRUCT or DICOM SEG found, and it is not a label image (.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd)"
    )


def read_label_image(
    path: PathLike,
    *,
    reference: Image,
    label: int | None = None,
    atol_mm: float = _LABEL_GRID_TOL_MM,
) -> Image:
    """Read a label image (NIfTI/NRRD/MHA) as a boolean mask on ``reference``'s grid.

    Parameters
    ----------
    path
        Label image file.
    reference
        The image it belongs to; the label image must have the same shape and an affine equal
        within ``atol_mm`` (mm) - it is not resampled.
    label
        Label value to select; ``None`` takes every non-zero voxel.

    Raises
    ------
    GeometryError
        The label image is on another grid (the message gives both grids).
    InputError
        The label value is absent (the message lists those present) or the mask is empty.
    """
    from medlens.io.volume_files import read_volume

    p = Path(path)
    lab = read_volume(p)
    if lab.ndim == 3 and reference.ndim == 2 and lab.shape[0] == 1:
        lab = lab.slice2d(0)
    reference.require_same_grid(lab, what="label image", atol_mm=atol_mm, source=str(p))  # the one off-grid rule
    arr = np.asarray(lab.array)
    if label is None:
        sel = arr != 0
        what = "non-zero voxels"
    else:
        sel = arr == label
        what = f"label {label}"
    if not sel.any():
        present = [v.item() for v in np.unique(arr) if v != 0][:20]
        raise InputError(f"{p}: the label image has no {what}; labels present: {present or 'none (all zero)'}")
    return reference.with_array(
        sel,
        op=f"label:{label if label is not None else 'nonzero'}",
        units=Units.MASK,
        source=str(p),
        extra={"roi": str(label) if label is not None else "nonzero", "mask_source": "LABEL"},
    )


def read_mask(
    path: PathLike | Sequence[PathLike],
    *,
    reference: Image,
    roi: str | None = None,
    label: int | None = None,
) -> Image:
    """Read a mask onto ``reference``'s grid from an RTSTRUCT, a DICOM SEG or a label image.

    Parameters
    ----------
    path
        RTSTRUCT file or folder holding one, DICOM SEG file (or folder holding one), or a label
        image (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``).
    reference
        The image the mask belongs to.
    roi
        ROIName (RTSTRUCT) or SegmentLabel (SEG). For a label image, a number selects that label.
    label
        Label value of a label image (default: every non-zero voxel).

    Returns
    -------
    Image
        Boolean mask on ``reference``'s grid, ``meta.units == "mask"``, ``meta.extra["roi"]`` naming it.
    """
    if not isinstance(reference, Image):
        raise InputError(f"reference must be a medlens Image, got {type(reference).__name__}")
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            raise InputError(f"read_mask takes one mask file or folder, got {len(path)} paths")
        path = path[0]
    p = Path(path)  # type: ignore[arg-type]
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_file() and _volume_suffix(p):
        if roi is not None:
            if label is None and str(roi).strip().lstrip("-").isdigit():
                label = int(roi)
            elif label is None:
                raise InputError(
                    f"{p} is a label image: ROI names ({roi!r}) apply to RTSTRUCT/SEG; select a label value "
                    "with label=N (or roi='N')"
                )
        return read_label_image(p, reference=reference, label=label)
    if label is not None:
        raise InputError(f"{p}: label= applies to label images only; use roi=NAME for RTSTRUCT/SEG")
    kinds = _dicom_kinds(p)
    if kinds["RTSTRUCT"] and not kinds["SEG"]:
        from medlens.io.rtstruct import read_rtstruct

        return read_rtstruct(kinds["RTSTRUCT"][0] if len(kinds["RTSTRUCT"]) == 1 else p, reference=reference, roi=roi)
    if kinds["SEG"] and not kinds["RTSTRUCT"]:
        from medlens.io.seg import read_seg

        return read_seg(kinds["SEG"][0] if len(kinds["SEG"]) == 1 else p, reference=reference, roi=roi)
    return _no_or_mixed(p, kinds)  # type: ignore[no-any-return]
