"""N4 bias-field correction (Tustison et al. 2010) through SimpleITK."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image
from medlens.preprocess._validate import check_image, check_mask

__all__ = ["n4_bias_correction"]


def n4_bias_correction(
    image: Image,
    *,
    mask: Image | None = None,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence_threshold: float = 1e-3,
    return_bias_field: bool = False,
) -> Image | tuple[Image, Image]:
    """Remove a smooth multiplicative intensity inhomogeneity (MR bias field) with N4.

    The field is estimated on an image shrunk by ``shrink_factor`` (speed), then evaluated on the
    full grid and divided out: ``corrected = image / exp(log_bias)``.

    Parameters
    ----------
    image
        3D (or 2D) image with positive intensities in the estimation region (MR signal, arbitrary units).
    mask
        Boolean mask on the image's grid restricting the estimation (e.g. the head); default:
        every voxel with a positive intensity.
    shrink_factor
        Integer downsampling factor per axis for the estimation (1 = none).
    iterations
        Maximum iterations per fitting level (one entry per level).
    convergence_threshold
        N4's convergence threshold.
    return_bias_field
        Also return the multiplicative bias field (same grid, dimensionless).

    Returns
    -------
    Image or (Image, Image)
        The corrected image (same units) and optionally the field.
    """
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk, to_sitk

    check_image(image)
    m = check_mask(image, mask)
    if not isinstance(shrink_factor, (int, np.integer)) or shrink_factor < 1:
        raise InputError(f"shrink_factor must be a positive integer, got {shrink_factor!r}")
    its = [int(v) for v in iterations]
    if not its or any(v < 1 for v in its):
        raise InputError(f"iterations must be a non-empty list of positive integers, got {list(iterations)}")
    data = np.asarray(image.array, dtype=np.float32)
    if m is None:
        m = data > 0
        if not m.any():
            raise InputError("n4_bias_correction needs positive intensities (MR signal); this image has none")
    elif np.any(data[m] <= 0):
        raise InputError("n4_bias_correction needs positive intensities inside the mask (it models log intensity)")
    img_s = to_sitk(image.with_array(data))
    mask_s = to_sitk(image.with_array(m))
    small, small_mask = img_s, mask_s
    if shrink_factor > 1:
        f = [int(shrink_factor)] * img_s.GetDimension()
        small = sitk.Shrink(img_s, f)
        small_mask = sitk.Shrink(mask_s, f)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(its)
    n4.SetConvergenceThreshold(float(convergence_threshold))
    try:
        n4.Execute(small, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(img_s)
    except RuntimeError as exc:
        raise ProcessingError(f"N4 bias correction failed: {exc}") from exc
    field = np.exp(from_sitk(log_field).array.reshape(image.shape).astype(np.float64))
    corrected = (data / field).astype(np.float32)
    out = image.with_array(corrected, op=f"n4_bias_correction(shrink={shrink_factor},iterations={its})")
    if return_bias_field:
        return out, image.with_array(field.astype(np.float32), op="n4_bias_field", units="dimensionless")
    return out
