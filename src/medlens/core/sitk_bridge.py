"""Conversion between :class:`~medlens.core.image.Image` and ``SimpleITK.Image``.

SimpleITK also works in LPS millimetres, but indexes pixels (x, y, z) and stores the
direction with one column per (x, y, z) axis. This is the one place that reverses the order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medlens.core.image import Image, ImageMeta

__all__ = ["from_sitk", "sitk_geometry_affine", "to_sitk"]


def sitk_geometry_affine(sitk_image: Any) -> np.ndarray:
    """The MedLens (z, y, x)-index affine of a SimpleITK image's geometry."""
    dim = sitk_image.GetDimension()
    sp = np.array(sitk_image.GetSpacing(), dtype=np.float64)
    org = np.array(sitk_image.GetOrigin(), dtype=np.float64)
    d = np.array(sitk_image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    aff = np.eye(4)
    if dim == 3:
        m = d * sp[np.newaxis, :]  # columns: x, y, z axes
        aff[:3, :3] = m[:, ::-1]
        aff[:3, 3] = org
    elif dim == 2:
        m2 = d * sp[np.newaxis, :]
        aff[:2, 0] = m2[:, 1]  # rows (y)
        aff[:2, 1] = m2[:, 0]  # columns (x)
        aff[2, 2] = 1.0 if np.linalg.det(d) > 0 else -1.0
        aff[:2, 3] = org
    else:
        raise ValueError(f"only 2D and 3D SimpleITK images are supported, got {dim}D")
    return aff


def from_sitk(sitk_image: Any, meta: ImageMeta | None = None) -> Image:
    """Make an Image from a SimpleITK image (pixels copied, geometry kept exactly)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk_image)
    return Image(arr, sitk_geometry_affine(sitk_image), meta or ImageMeta())


def to_sitk(image: Image) -> Any:
    """Make a SimpleITK image with the same pixels and geometry.

    2D images become 2D SimpleITK images only when their plane is axial-like (the in-plane
    axes have no out-of-plane component); otherwise the image is promoted to a one-slice volume.
    Boolean masks become ``sitkUInt8``.
    """
    import SimpleITK as sitk

    arr = np.ascontiguousarray(image.array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    aff = image.affine
    if image.ndim == 3:
        out = sitk.GetImageFromArray(arr)
        m = aff[:3, :3][:, ::-1]  # columns x, y, z
        sp = np.linalg.norm(m, axis=0)
        out.SetSpacing(tuple(float(v) for v in sp))
        out.SetDirection(tuple(float(v) for v in (m / sp).ravel()))
        out.SetOrigin(tuple(float(v) for v in aff[:3, 3]))
        return out
    in_plane = aff[:3, :2]
    if np.allclose(in_plane[2], 0.0) and np.isclose(aff[2, 3], 0.0):
        out = sitk.GetImageFromArray(arr)
        m2 = np.stack([in_plane[:2, 1], in_plane[:2, 0]], axis=1)
        sp = np.linalg.norm(m2, axis=0)
        out.SetSpacing(tuple(float(v) for v in sp))
        out.SetDirection(tuple(float(v) for v in (m2 / sp).ravel()))
        out.SetOrigin(tuple(float(v) for v in aff[:2, 3]))
        return out
    # A 2D image outside the z = 0 plane becomes a one-slice volume: axis 0 is the slice normal.
    vol_aff = np.eye(4)
    vol_aff[:3, 0] = aff[:3, 2]
    vol_aff[:3, 1] = aff[:3, 0]
    vol_aff[:3, 2] = aff[:3, 1]
    vol_aff[:3, 3] = aff[:3, 3]
    return to_sitk(Image(arr[np.newaxis], vol_aff, image.meta))
