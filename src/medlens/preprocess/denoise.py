"""Denoising filters: wavelet soft-thresholding, median, Gaussian, and edge-preserving filters.

All filters take and return :class:`~medlens.core.image.Image`, keep the grid and the intensity
units (a denoised HU image is still in HU), and append the operation to ``meta.history``.
Sizes are physical (``sigma_mm``, ``size_mm``) unless the name says voxels (``size_voxels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.preprocess._validate import as_float, check_image, per_axis

__all__ = [
    "ThresholdMethod",
    "bilateral_denoise",
    "estimate_noise_sigma",
    "gaussian_filter",
    "median_filter",
    "nl_means_denoise",
    "wavelet_denoise",
]

#: Median absolute deviation of a standard normal variable (its 75th percentile).
_MAD_TO_SIGMA = 0.6744897501960817


class ThresholdMethod(StrEnum):
    """How the wavelet threshold is chosen."""

    BAYES = "BayesShrink"  #: one threshold per sub-band, sigma^2 / sigma_signal (Chang, Yu, Vetterli 2000)
    VISU = "VisuShrink"  #: one universal threshold sigma * sqrt(2 ln N) (Donoho, Johnstone 1994)


def _wavelet(name: str) -> Any:
    import pywt

    if name not in pywt.wavelist(kind="discrete"):
        raise InputError(
            f"wavelet must be a discrete PyWavelets wavelet name (e.g. 'db1', 'db2', 'sym4', 'coif1'), got {name!r}"
        )
    return pywt.Wavelet(name)


def _mad_sigma(detail: np.ndarray) -> float:
    # exact zeros come from constant regions (air outside the field of view, padding); they carry no noise
    vals = np.abs(detail[detail != 0])
    if vals.size == 0:
        return 0.0
    return float(np.median(vals) / _MAD_TO_SIGMA)


def estimate_noise_sigma(image: Image, *, wavelet: str = "db1") -> float:
    """Robust noise standard deviation from the finest diagonal wavelet detail band.

    ``sigma = median(|d|) / 0.6745`` over the non-zero coefficients ``d`` of the finest
    all-high-pass band (``'dd'`` in 2D, ``'ddd'`` in 3D) of a one-level orthogonal DWT
    (Donoho & Johnstone 1994). Units: the image's intensity units.
    """
    import pywt

    check_image(image)
    w = _wavelet(wavelet)
    coeffs = pywt.dwtn(np.asarray(image.array, dtype=np.float64), w)
    return _mad_sigma(coeffs["d" * image.ndim])


def wavelet_denoise(
    image: Image,
    *,
    method: ThresholdMethod | str = ThresholdMethod.BAYES,
    wavelet: str = "db1",
    levels: int | None = None,
    noise_sigma: float | None = None,
    mode: str = "soft",
    slice_wise: bool = False,
) -> Image:
    """Wavelet shrinkage denoising in 2D or 3D (the whole array at once).

    Parameters
    ----------
    image
        2D ``(y, x)`` or 3D ``(z, y, x)`` image in any intensity units.
    method
        ``"BayesShrink"`` (sub-band adaptive threshold ``sigma^2 / sqrt(max(var_band - sigma^2, eps))``;
        a band with no signal above the noise is zeroed) or ``"VisuShrink"`` (universal threshold
        ``sigma * sqrt(2 ln N)``, N = number of voxels; smooths strongly).
    wavelet
        Discrete PyWavelets wavelet (``"db1"`` = Haar, ``"db2"``, ``"sym4"``, ...).
    levels
        Decomposition levels; default ``max(max_level - 3, 1)`` (as scikit-image).
    noise_sigma
        Noise standard deviation in the image's units; default: estimated by
        :func:`estimate_noise_sigma` on the decomposition's finest diagonal band.
    mode
        ``"soft"`` (default) or ``"hard"`` thresholding.
    slice_wise
        For a volume: a 2D decomposition of every slice (axis 0) with its own noise estimate,
        for thick slices or few slices; the history records the median noise sigma.

    Returns
    -------
    Image
        Same grid and units; ``meta.history`` gains ``wavelet_denoise(...)``.

    Notes
    -----
    The transform treats voxels as isotropic; on volumes with thick slices consider a 2D run per
    slice. The same computation as :func:`skimage.restoration.denoise_wavelet` with
    ``rescale_sigma=False`` (checked in the tests).
    """
    import pywt

    check_image(image)
    try:
        meth = ThresholdMethod(method)
    except ValueError:
        raise InputError(f"method must be one of {[m.value for m in ThresholdMethod]}, got {method!r}") from None
    if mode not in ("soft", "hard"):
        raise InputError(f"mode must be 'soft' or 'hard', got {mode!r}")
    w = _wavelet(wavelet)
    data = np.asarray(image.array, dtype=np.float64)
    if slice_wise and data.ndim != 3:
        raise InputError(f"slice_wise needs a 3D image, got a {data.ndim}D one")
    max_level = pywt.dwtn_max_level(data.shape[1:] if slice_wise else data.shape, w)
    if levels is None:
        levels = max(max_level - 3, 1)
    if not isinstance(levels, (int, np.integer)) or levels < 1:
        raise InputError(f"levels must be a positive integer, got {levels!r}")
    if max_level < 1:
        raise InputError(f"image shape {image.shape} is too small for one level of wavelet {wavelet!r}")
    if levels > max_level:
        raise InputError(f"levels={levels} exceeds the maximum {max_level} for shape {image.shape} and {wavelet!r}")
    if noise_sigma is not None and (not np.isfinite(noise_sigma) or noise_sigma < 0):
        raise InputError(f"noise_sigma must be a non-negative finite number (image units), got {noise_sigma}")

    if slice_wise:
        parts = [_shrink(sl, meth, w, int(levels), noise_sigma, mode) for sl in data]
        rec = np.stack([r for r, _ in parts])
        sigma = float(np.median([sg for _, sg in parts]))
    else:
        rec, sigma = _shrink(data, meth, w, int(levels), noise_sigma, mode)
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float64
    op = (
        f"wavelet_denoise(method={meth.value},wavelet={wavelet},levels={levels},sigma={sigma:.4g},mode={mode}"
        f"{',slice_wise' if slice_wise else ''})"
    )
    return image.with_array(rec.astype(dtype), op=op)


def _shrink(
    data: np.ndarray, meth: ThresholdMethod, w: Any, levels: int, noise_sigma: float | None, mode: str
) -> tuple[np.ndarray, float]:
    import pywt

    coeffs = pywt.wavedecn(data, wavelet=w, level=levels)
    details = coeffs[1:]
    sigma = _mad_sigma(details[-1]["d" * data.ndim]) if noise_sigma is None else float(noise_sigma)
    var = sigma * sigma
    eps = np.finfo(np.float64).eps
    out_details = []
    for band in details:
        new = {}
        for key, c in band.items():
            if meth is ThresholdMethod.BAYES:
                thr = var / np.sqrt(max(float(np.mean(c * c)) - var, eps))
            else:
                thr = sigma * np.sqrt(2.0 * np.log(data.size))
            # a zero threshold (noise-free input) keeps the band; pywt would divide 0 by 0 on zero coefficients
            new[key] = pywt.threshold(c, value=thr, mode=mode) if thr > 0 else c
        out_details.append(new)
    rec = pywt.waverecn([coeffs[0], *out_details], w)
    rec = rec[tuple(slice(s) for s in data.shape)]
    return rec, sigma


def _odd_sizes(image: Image, size_mm: Any, size_voxels: Any) -> np.ndarray:
    if (size_mm is None) == (size_voxels is None):
        raise InputError("give exactly one of size_mm (physical window width) or size_voxels (window in voxels)")
    if size_voxels is not None:
        sv = per_axis(size_voxels, image.ndim, name="size_voxels")
        if np.any(sv != np.round(sv)) or np.any(sv % 2 == 0):
            raise InputError(f"size_voxels must be odd integers (a centred window), got {sv.tolist()}")
        return sv.astype(int)
    smm = per_axis(size_mm, image.ndim, name="size_mm")
    sp = np.asarray(image.spacing)
    # the odd voxel count whose width is closest to size_mm (at least one voxel)
    return np.maximum(2 * np.round((smm / sp - 1.0) / 2.0).astype(int) + 1, 1)


def median_filter(
    image: Image,
    *,
    size_mm: float | Sequence[float] | None = None,
    size_voxels: int | Sequence[int] | None = None,
) -> Image:
    """Median filter over a box window, edges handled by repeating the border voxel.

    Parameters
    ----------
    size_mm
        Window width in mm (one number, or per array axis). Converted per axis to the odd number
        of voxels whose width is closest to it, ``2 * round((size_mm / spacing - 1) / 2) + 1``
        (so 5 mm on 0.98 mm pixels gives 5 voxels, on 3 mm slices 1 voxel).
    size_voxels
        Window width in voxels (odd), instead of ``size_mm``.
    """
    from scipy import ndimage

    check_image(image)
    sizes = _odd_sizes(image, size_mm, size_voxels)
    out = ndimage.median_filter(np.asarray(image.array), size=tuple(int(s) for s in sizes), mode="nearest")
    return image.with_array(out, op=f"median_filter(size_voxels={sizes.tolist()})")


def gaussian_filter(image: Image, *, sigma_mm: float | Sequence[float], truncate: float = 4.0) -> Image:
    """Gaussian smoothing with a physical standard deviation.

    Parameters
    ----------
    sigma_mm
        Standard deviation in mm, one number (isotropic in space) or per array axis; converted to
        voxels per axis with the spacing (``sigma_mm / spacing``). Zero on an axis leaves it alone.
    truncate
        Kernel radius in standard deviations.
    """
    from scipy import ndimage

    check_image(image)
    smm = per_axis(sigma_mm, image.ndim, name="sigma_mm", allow_zero=True)
    if not np.any(smm > 0):
        raise InputError(f"sigma_mm must be positive on at least one axis, got {smm.tolist()}")
    if not truncate > 0:
        raise InputError(f"truncate must be positive, got {truncate}")
    sv = smm / np.asarray(image.spacing)
    out = ndimage.gaussian_filter(as_float(image), sigma=tuple(sv), mode="nearest", truncate=truncate)
    return image.with_array(out, op=f"gaussian_filter(sigma_mm={smm.tolist()})")


def nl_means_denoise(
    image: Image,
    *,
    patch_size_voxels: int = 5,
    patch_distance_voxels: int = 6,
    h_sigma: float = 0.8,
    noise_sigma: float | None = None,
) -> Image:
    """Non-local means (scikit-image ``denoise_nl_means``, fast mode), 2D or 3D.

    Parameters
    ----------
    patch_size_voxels, patch_distance_voxels
        Patch width and search radius in voxels (isotropic in index space).
    h_sigma
        Filter strength as a multiple of the noise standard deviation (``h = h_sigma * sigma``).
    noise_sigma
        Noise standard deviation in image units; default :func:`estimate_noise_sigma`.
    """
    from skimage.restoration import denoise_nl_means

    check_image(image)
    for name, v in (("patch_size_voxels", patch_size_voxels), ("patch_distance_voxels", patch_distance_voxels)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    if not h_sigma > 0:
        raise InputError(f"h_sigma must be positive, got {h_sigma}")
    sigma = estimate_noise_sigma(image) if noise_sigma is None else float(noise_sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise InputError(f"noise_sigma must be a non-negative finite number, got {noise_sigma}")
    data = np.asarray(image.array, dtype=np.float64)
    if sigma == 0:
        return image.with_array(np.array(image.array, copy=True), op="nl_means_denoise(sigma=0)")
    out = denoise_nl_means(
        data,
        patch_size=int(patch_size_voxels),
        patch_distance=int(patch_distance_voxels),
        h=h_sigma * sigma,
        sigma=sigma,
        fast_mode=True,
        channel_axis=None,
    )
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float64
    return image.with_array(out.astype(dtype), op=f"nl_means_denoise(h={h_sigma * sigma:.4g})")


def bilateral_denoise(image: Image, *, sigma_mm: float, sigma_range: float) -> Image:
    """Bilateral filter (SimpleITK): Gaussian in space (``sigma_mm``) and in intensity (``sigma_range``).

    Parameters
    ----------
    sigma_mm
        Spatial standard deviation in mm (SimpleITK uses the spacing per axis).
    sigma_range
        Intensity standard deviation in the image's units (e.g. 50 HU); edges with a larger
        step are preserved.
    """
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk, to_sitk

    check_image(image)
    if not (np.isfinite(sigma_mm) and sigma_mm > 0):
        raise InputError(f"sigma_mm must be a positive number of millimetres, got {sigma_mm}")
    if not (np.isfinite(sigma_range) and sigma_range > 0):
        raise InputError(f"sigma_range must be positive (image intensity units), got {sigma_range}")
    src = to_sitk(image.with_array(np.asarray(image.array, dtype=np.float64)))
    out = sitk.Bilateral(src, domainSigma=float(sigma_mm), rangeSigma=float(sigma_range))
    arr = from_sitk(out).array.reshape(image.shape)
    dtype = image.dtype if np.issubdtype(image.dtype, np.floating) else np.float64
    return image.with_array(arr.astype(dtype), op=f"bilateral_denoise(sigma_mm={sigma_mm},sigma_range={sigma_range})")
