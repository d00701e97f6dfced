"""Local intensity features (IBSI 1): ``loc_peak_loc`` and ``loc_peak_glob``.

The local mean around a voxel is the mean intensity of all image voxels whose centres lie within
a sphere of volume ``volume_cm3`` (1 cm^3, radius 6.2 mm). It is a convolution with a spherical
kernel, done once by FFT on the ROI's bounding box padded by the radius (voxels outside the
image do not count: the mean is normalised by the convolved image-support indicator).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["local_intensity_features", "spherical_kernel"]


def spherical_kernel(spacing_mm: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """Boolean kernel of voxel offsets whose centre distance is ``<= radius_mm``."""
    half = [math.floor(radius_mm / s) for s in spacing_mm]
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return (zz**2 + yy**2 + xx**2) <= radius_mm**2 + 1e-9


def local_intensity_features(
    image: np.ndarray, int_mask: np.ndarray, spacing_mm: tuple[float, ...], *, volume_cm3: float = 1.0
) -> dict[str, float]:
    """Local (around the maximum) and global intensity peaks.

    Parameters
    ----------
    image
        Interpolated image ``(z, y, x)`` (not discretised).
    int_mask
        Intensity mask: candidate centre voxels.
    spacing_mm
        Voxel size ``(dz, dy, dx)``.
    volume_cm3
        Sphere volume (IBSI: 1 cm^3).
    """
    from scipy import fft

    if not int_mask.any():
        return {"loc_peak_loc": math.nan, "loc_peak_glob": math.nan}
    radius = (3.0 * volume_cm3 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    kern = spherical_kernel(spacing_mm, radius).astype(np.float64)
    half = [k // 2 for k in kern.shape]
    idx = np.nonzero(int_mask)
    lo = [max(0, int(i.min()) - h) for i, h in zip(idx, half)]
    hi = [min(n, int(i.max()) + 1 + h) for i, n, h in zip(idx, image.shape, half)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = image[sl]
    size = [fft.next_fast_len(c + k - 1, real=True) for c, k in zip(crop.shape, kern.shape)]
    kf = fft.rfftn(kern, size)
    same = tuple(slice(h, h + c) for h, c in zip(half, crop.shape))
    num = fft.irfftn(fft.rfftn(crop, size) * kf, size)[same]
    clipped = any(a != int(i.min()) - h or b != int(i.max()) + 1 + h for a, b, i, h in zip(lo, hi, idx, half))
    if clipped:  # near the image edge: count only the sphere voxels that exist
        den = fft.irfftn(fft.rfftn(np.ones_like(crop), size) * kf, size)[same]
    else:  # every ROI voxel's sphere lies inside the image
        den = np.full(crop.shape, float(kern.sum()))
    local_mean = num / np.maximum(np.round(den), 1.0)
    m = int_mask[sl]
    vals = crop[m]
    means = local_mean[m]
    at_max = vals == vals.max()
    return {"loc_peak_loc": float(means[at_max].max()), "loc_peak_glob": float(means.max())}
