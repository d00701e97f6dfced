"""Image quality figures: SNR and CNR in regions, PSNR and SSIM against a reference."""

from __future__ import annotations

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.preprocess._validate import check_image, check_mask

__all__ = ["cnr", "psnr", "snr", "ssim"]


def snr(image: Image, *, signal_mask: Image, noise_mask: Image | None = None, offset: float = 0.0) -> float:
    """Signal-to-noise ratio ``mean(signal + offset) / std(noise)``.

    Without ``noise_mask`` the standard deviation is taken inside ``signal_mask`` (the SNR of a
    homogeneous region). ``offset`` shifts the intensity origin: for CT use ``offset=1000`` so the
    signal is proportional to the attenuation coefficient (HU + 1000), since water sits at 0 HU.
    """
    check_image(image)
    s = check_mask(image, signal_mask, what="signal_mask")
    n = check_mask(image, noise_mask, what="noise_mask") if noise_mask is not None else s
    data = np.asarray(image.array, dtype=np.float64)
    sd = float(data[n].std())
    if not sd > 0:
        raise InputError("snr: the noise region is constant (standard deviation 0); the SNR is infinite")
    return float((data[s].mean() + offset) / sd)


def cnr(image: Image, *, inside: Image, outside: Image) -> float:
    """Contrast-to-noise ratio ``|mean(inside) - mean(outside)| / std(outside)`` (image units cancel)."""
    check_image(image)
    a = check_mask(image, inside, what="inside")
    b = check_mask(image, outside, what="outside")
    data = np.asarray(image.array, dtype=np.float64)
    sd = float(data[b].std())
    if not sd > 0:
        raise InputError("cnr: the outside region is constant (standard deviation 0); the CNR is infinite")
    return float(abs(data[a].mean() - data[b].mean()) / sd)


def _pair(image: Image, reference: Image, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    check_image(image)
    check_image(reference, what="reference")
    reference.require_same_grid(image, what="image")
    ref = np.asarray(reference.array, dtype=np.float64)
    img = np.asarray(image.array, dtype=np.float64)
    dr = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not dr > 0:
        raise InputError(f"data_range must be positive (the reference is constant?), got {dr}")
    return img, ref, dr


def psnr(image: Image, *, reference: Image, data_range: float | None = None) -> float:
    """Peak SNR in dB against ``reference`` (:func:`skimage.metrics.peak_signal_noise_ratio`).

    ``data_range`` defaults to the reference's ``max - min`` (not the dtype range).
    """
    from skimage.metrics import peak_signal_noise_ratio

    img, ref, dr = _pair(image, reference, data_range)
    return float(peak_signal_noise_ratio(ref, img, data_range=dr))


def ssim(image: Image, *, reference: Image, data_range: float | None = None) -> float:
    """Mean structural similarity against ``reference`` (:func:`skimage.metrics.structural_similarity`,
    7-voxel window, 2D or 3D); ``data_range`` defaults to the reference's ``max - min``."""
    from skimage.metrics import structural_similarity

    img, ref, dr = _pair(image, reference, data_range)
    if min(ref.shape) < 7:
        raise InputError(f"ssim needs at least 7 voxels along every axis (7-voxel window), got shape {ref.shape}")
    return float(structural_similarity(ref, img, data_range=dr))
