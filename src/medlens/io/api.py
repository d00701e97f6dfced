"""Format dispatch for the public reading/writing functions.

The implementations live in one module per format family:

* :mod:`medlens.io.dicom_series` — DICOM image series (single- and multi-frame, compressed),
  series listing and geometry QA;
* :mod:`medlens.io.volume_files` — NIfTI, NRRD, MHA/MHD;
* :mod:`medlens.io.masks` — RTSTRUCT, DICOM SEG and label-image masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from medlens.core.errors import FormatError, InputError
from medlens.core.image import Image
from medlens.io._formats import VOLUME_SUFFIXES, is_dicom_input, volume_suffix

__all__ = ["VOLUME_SUFFIXES", "list_series", "read_image", "read_mask", "volume_suffix", "write_image"]

PathLike = str | os.PathLike[str]


def read_image(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    on_irregular: Literal["error", "resample"] = "error",
) -> Image:
    """Read an image from a DICOM folder/file list or a NIfTI/NRRD/MHA file.

    Parameters
    ----------
    path
        A folder of DICOM files (searched recursively), a list of DICOM files, one DICOM file
        (single- or multi-frame) or a volume file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``,
        ``.mha``, ``.mhd``).
    series_uid
        For DICOM input holding several series: the SeriesInstanceUID to read. Without it,
        several series raise :class:`~medlens.core.errors.InputError` listing them.
    on_irregular
        What to do when slice geometry is irregular (missing slices, non-uniform spacing,
        gantry tilt): ``"error"`` (default) raises a :class:`~medlens.core.errors.GeometryError`
        listing the findings; ``"resample"`` resamples onto a regular grid and warns
        (:class:`~medlens.core.errors.GeometryWarning`).

    Returns
    -------
    Image
        Intensities in physical units where the modality defines them: HU for CT (rescale
        slope/intercept applied), SUVbw for PET (see :mod:`medlens.io.dicom_series`).
    """
    if on_irregular not in ("error", "resample"):
        raise InputError(f"on_irregular must be 'error' or 'resample', got {on_irregular!r}")
    if isinstance(path, (str, os.PathLike)) and not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")
    if is_dicom_input(path):
        from medlens.io.dicom_series import read_dicom_series

        return read_dicom_series(path, series_uid=series_uid, on_irregular=on_irregular)
    if series_uid is not None:
        raise InputError(f"series_uid applies to DICOM input only; {path} is a volume file")
    from medlens.io.volume_files import read_volume

    return read_volume(path)  # type: ignore[arg-type]


def list_series(path: PathLike | Sequence[PathLike]) -> list[Any]:
    """Describe every DICOM series under ``path`` (see :func:`medlens.io.dicom_series.list_series`)."""
    from medlens.io.dicom_series import list_series as _list

    return _list(path)


def read_mask(
    path: PathLike | Sequence[PathLike],
    *,
    reference: Image,
    roi: str | None = None,
    label: int | None = None,
) -> Image:
    """Read a mask onto the grid of ``reference`` (returns a boolean Image on that grid).

    ``path`` is an RTSTRUCT (file or folder holding one), a DICOM SEG, or a label image
    (NIfTI/NRRD/MHA). ``roi`` names the structure (RTSTRUCT ROIName, SEG SegmentLabel);
    ``label`` picks a value of a label image (default: every non-zero voxel).
    See :func:`medlens.io.masks.read_mask`.
    """
    from medlens.io.masks import read_mask as _read_mask

    return _read_mask(path, reference=reference, roi=roi, label=label)


def write_image(image: Image, path: PathLike) -> Path:
    """Write ``image`` as NIfTI, NRRD or MHA (chosen by the file suffix), atomically."""
    suf = volume_suffix(path)
    if suf is None:
        raise FormatError(
            f"{path}: cannot tell the output format from the name; use one of {', '.join(VOLUME_SUFFIXES)}"
            " (DICOM SEG masks: medlens.io.masks.write_seg)"
        )
    from medlens.io.volume_files import write_volume

    return write_volume(image, path)
