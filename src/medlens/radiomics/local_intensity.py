"""Local intensity features (IBSI 1): ``loc_peak_loc`` and ``loc_peak_glob``.

The local mean around a voxel is the mean intensity of all image voxels whose centres lie within
a sphere of volume ``volume_cm3`` (1 cm^3, radius 6.2 mm). It is computed only at ROI voxels by a compiled
kernel that sums the sphere row by row from x prefix sums of the ROI's bounding box padded by the
radius (voxels outside the image do not count: the mean is over the sphere voxels that exist).
"""

from __future__ import annotations

import math

import numpy as np

from medlens.radiomics.texture._common import bbox

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
    from medlens.radiomics._kernels import sphere_means

    if not int_mask.any():
        return {"loc_peak_loc": math.nan, "loc_peak_glob": math.nan}
    radius = (3.0 * volume_cm3 * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    kern = spherical_kernel(spacing_mm, radius)
    # the sphere row by row: the half-width in x of each (dz, dy) row (-1 where the row is empty)
    half_x = np.where(kern.any(axis=2), kern.sum(axis=2) // 2, -1).astype(np.int64)
    half = [k // 2 for k in kern.shape]
    box = bbox(int_mask)
    lo = [max(0, b.start - h) for b, h in zip(box, half)]
    hi = [min(n, b.stop + h) for b, n, h in zip(box, image.shape, half)]
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    # spheres around ROI voxels stay inside this crop or leave the image: voxels outside it do not count
    crop = np.ascontiguousarray(image[sl], dtype=np.float64)
    m = np.ascontiguousarray(int_mask[sl])
    means = sphere_means(crop, m, half_x)
    vals = crop[m]
    at_max = vals == vals.max()
    return {"loc_peak_loc": float(means[at_max].max()), "loc_peak_glob": float(means.max())}
