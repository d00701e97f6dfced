"""IBSI image processing before feature computation.

Steps (IBSI 1, "Image processing"): interpolation of image and mask, the partial-volume mask
rule, re-segmentation of the *intensity* mask (range, then outlier filter; the *morphological*
mask keeps the interpolated ROI), discretisation of the intensity-mask voxels, and the
diagnostic features that describe each stage.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from medlens.core.errors import GeometryError, InputError
from medlens.core.image import Image
from medlens.radiomics.diagnostics import RadiomicsWarning, image_diagnostics, roi_diagnostics
from medlens.radiomics.settings import DiscretisationSettings, RadiomicsSettings, ResegmentationSettings

__all__ = ["ProcessedROI", "discretise", "process", "resegment"]


@dataclass
class ProcessedROI:
    """The processed image and masks that the feature families read.

    Attributes
    ----------
    image
        Interpolated image, float64 ``(z, y, x)``, cropped to the ROI bounding box grown by the
        local-intensity radius; non-finite input values replaced by 0 and excluded from ``int_mask``.
    spacing_mm
        Voxel size ``(dz, dy, dx)`` in mm.
    morph_mask
        Morphological mask (interpolated ROI), bool.
    int_mask
        Intensity mask (morphological mask after re-segmentation), bool.
    grey
        Discretised levels ``1..n_levels`` inside ``int_mask``, 0 elsewhere (int32).
    n_levels
        Number of grey levels used for the histogram and texture.
    affine
        Index-to-LPS affine of the processed (cropped) grid.
    diagnostics
        Diagnostic feature values (IBSI tags).
    reasons
        Why the ROI cannot support features (empty, ...); empty when all is well.
    """

    image: np.ndarray
    spacing_mm: tuple[float, float, float]
    morph_mask: np.ndarray
    int_mask: np.ndarray
    grey: np.ndarray
    n_levels: int
    affine: np.ndarray
    diagnostics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def resegment(values: np.ndarray, mask: np.ndarray, settings: ResegmentationSettings) -> np.ndarray:
    """Re-segment an intensity mask: the range first, then the outlier filter on what remains."""
    out = mask.copy()
    if settings.range_lo is not None:
        out &= values >= settings.range_lo
    if settings.range_hi is not None:
        out &= values <= settings.range_hi
    if settings.outlier_sigma is not None and out.any():
        v = values[out]
        mu, sd = float(v.mean()), float(v.std())
        k = settings.outlier_sigma
        out &= (values >= mu - k * sd) & (values <= mu + k * sd)
    return out


def discretise(
    values: np.ndarray, settings: DiscretisationSettings, resegmentation: ResegmentationSettings
) -> tuple[np.ndarray, int]:
    """Discretise ROI intensities (1-D array) into levels ``1..n_levels``.

    FBN: ``floor(N (x - min) / (max - min)) + 1`` with ``x = max`` mapped to ``N``. FBS:
    ``floor((x - lo) / w) + 1`` where ``lo`` is the re-segmentation lower bound when set (IBSI),
    else the ROI minimum. ``none``: values are integer levels already (must be >= 1).
    A constant ROI (FBN) gets level 1 with a :class:`RadiomicsWarning`.

    Returns
    -------
    levels, n_levels
    """
    if values.size == 0:
        return values.astype(np.int32), 0
    if settings.method == "FBN":
        lo, hi = float(values.min()), float(values.max())
        n = settings.n_bins
        if hi == lo:
            warnings.warn(
                "radiomics discretisation: the ROI is constant, every voxel gets grey level 1",
                RadiomicsWarning,
                stacklevel=2,
            )
            return np.ones(values.shape, np.int32), n
        lev = np.floor(n * (values - lo) / (hi - lo)).astype(np.int64) + 1
        lev = np.minimum(lev, n)
        return lev.astype(np.int32), n
    if settings.method == "FBS":
        w = settings.bin_width
        use_range = settings.lower_bound == "resegmentation" and resegmentation.range_lo is not None
        lo = float(resegmentation.range_lo) if use_range else float(values.min())  # type: ignore[arg-type]
        lev = np.floor((values - lo) / w).astype(np.int64) + 1
        lev = np.maximum(lev, 1)
        n = int(lev.max())
        if use_range and resegmentation.range_hi is not None:
            n = max(n, math.ceil((float(resegmentation.range_hi) - lo) / w))
        return lev.astype(np.int32), n
    # "none": integer levels as given
    r = np.round(values)
    if not np.allclose(values, r) or r.min() < 1:
        raise InputError(
            "discretisation method 'none' needs integer intensities >= 1 inside the ROI; found "
            f"range [{values.min():g}, {values.max():g}]. Use method FBN or FBS"
        )
    return r.astype(np.int32), int(r.max())


def _prepare(image: Image, mask: Image) -> tuple[Image, Image, np.ndarray | None]:
    """Check inputs; put the mask on the image grid; zero non-finite voxels (returned mask of finite ones)."""
    if image.ndim != 3:
        raise InputError(f"radiomics needs a 3D image (z, y, x); got a {image.ndim}D image {image.shape}")
    if image.is_mask:
        raise InputError("the image argument is a boolean mask; pass the intensity image first, then the mask")
    if mask.ndim != 3:
        raise InputError(f"the mask must be 3D like the image; got {mask.ndim}D {mask.shape}")
    if not mask.is_mask:
        raise InputError(
            f"the mask must be boolean (dtype bool); got {mask.dtype}. Convert a label map with "
            "mask.with_array(mask.array == label)"
        )
    image.require_same_grid(mask, what="mask")  # the one off-grid rule: never resampled silently
    arr = image.array
    finite = None
    if arr.dtype.kind == "f":
        ok = np.isfinite(arr)
        if not ok.all():
            n_bad = int((~ok & mask.array).sum())
            warnings.warn(
                f"the image has {int((~ok).sum())} non-finite voxels ({n_bad} inside the ROI); they are set to 0 "
                "for interpolation and left out of the intensity mask",
                RadiomicsWarning,
                stacklevel=3,
            )
            finite = ok
            image = image.with_array(np.where(ok, arr, 0.0))
    return image, mask, finite


def _box(mask: np.ndarray, margin: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels per axis (whole grid if the mask is empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for ax, n in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        hit = np.flatnonzero(mask.any(axis=other))
        out.append(slice(max(0, int(hit[0]) - margin[ax]), min(n, int(hit[-1]) + 1 + margin[ax])))
    return tuple(out)


def process(image: Image, mask: Image, settings: RadiomicsSettings) -> ProcessedROI:
    """Apply the IBSI processing chain of ``settings`` to ``image`` (intensities) and ``mask`` (bool ROI).

    The whole image is interpolated (the IBSI grid and the ``*_interp_img`` diagnostics depend on
    it); features are then computed on the ROI bounding box grown by the local-intensity sphere
    radius, which gives the same values with far less memory on large scans.

    Raises
    ------
    InputError
        Not 3D, or the mask is not boolean.
    """
    image, mask, finite = _prepare(image, mask)
    full = image.array
    diag: dict[str, float] = {}
    diag.update(image_diagnostics(full, image.spacing, "init"))  # type: ignore[arg-type]
    m0 = np.asarray(mask.array, dtype=bool)
    b0 = _box(m0, (0, 0, 0))
    int_init = m0[b0] if finite is None else m0[b0] & finite[b0]
    diag.update(roi_diagnostics(full[b0], int_init, m0[b0], "init", full_shape=m0.shape))

    interp = settings.interpolation
    valid = finite
    if interp.enabled:
        from medlens.preprocess.resample import resample, resample_mask

        sp = interp.spacing_mm
        if len(sp) not in (2, 3):
            raise InputError(f"interpolation.spacing_mm needs 3 values (dz, dy, dx), got {list(sp)}")
        img_r = resample(
            image,
            sp,
            order=interp.order,  # type: ignore[arg-type]
            in_plane_only=interp.in_plane_only,
            round_intensities=interp.round_intensities,
        )
        msk_r = resample_mask(
            mask,
            sp,
            threshold=interp.mask_threshold,
            order=interp.mask_order,  # type: ignore[arg-type]
            in_plane_only=interp.in_plane_only,
        )
        if finite is not None:
            valid = resample_mask(
                image.with_array(finite), sp, threshold=0.999, in_plane_only=interp.in_plane_only
            ).array
        grid_arr = img_r.array
        morph_full = np.asarray(msk_r.array, dtype=bool)
        affine = np.array(img_r.affine)
        spacing = tuple(float(v) for v in img_r.spacing)
    else:
        grid_arr = full
        morph_full = m0
        affine = np.array(image.affine)
        spacing = tuple(float(v) for v in image.spacing)
    if morph_full.shape != grid_arr.shape:  # pragma: no cover - resample guarantees equal grids
        raise GeometryError(f"interpolated mask {morph_full.shape} and image {grid_arr.shape} differ")
    diag.update(image_diagnostics(grid_arr, spacing, "interp"))  # type: ignore[arg-type]

    radius = (3.0 * settings.local_intensity_volume_cm3 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    margin = tuple(math.floor(radius / s) + 1 for s in spacing)
    box = _box(morph_full, margin)
    lo = np.array([b.start for b in box], dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    arr = np.asarray(grid_arr[box], dtype=np.float64)
    morph = np.ascontiguousarray(morph_full[box])
    int0 = morph if valid is None else morph & valid[box]
    diag.update(roi_diagnostics(arr, int0, morph, "interp", full_shape=morph_full.shape))
    int_mask = resegment(arr, int0, settings.resegmentation)
    diag.update(roi_diagnostics(arr, int_mask, morph, "reseg", full_shape=morph_full.shape))

    reasons: list[str] = []
    if not m0.any():
        reasons.append("the mask is empty (no ROI voxel)")
    elif not morph.any():
        reasons.append("the ROI vanished after interpolation (it is smaller than the partial-volume threshold)")
    elif not int_mask.any():
        reasons.append("no ROI voxel is left after re-segmentation (check the re-segmentation range)")

    grey = np.zeros(arr.shape, np.int32)
    n_levels = 0
    if int_mask.any():
        lev, n_levels = discretise(arr[int_mask], settings.discretisation, settings.resegmentation)
        grey[int_mask] = lev
    return ProcessedROI(
        image=arr,
        spacing_mm=spacing,  # type: ignore[arg-type]
        morph_mask=morph,
        int_mask=int_mask,
        grey=grey,  # type: ignore[arg-type]
        n_levels=n_levels,
        affine=affine,
        diagnostics=diag,
        reasons=reasons,
    )
