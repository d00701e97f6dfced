"""Fusion overlay PNG: the fixed image in grey, the moving image in colour, three central planes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.preprocess._validate import check_image

__all__ = ["fusion_overlay"]


def _display_range(arr: np.ndarray, rng: Sequence[float] | None) -> tuple[float, float]:
    if rng is not None:
        lo, hi = float(rng[0]), float(rng[1])
        if not hi > lo:
            raise InputError(f"display range must be (low, high) with high > low, got {list(rng)}")
        return lo, hi
    lo, hi = np.percentile(arr, [1.0, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def fusion_overlay(
    fixed: Image,
    moving: Image,
    path: str | os.PathLike[str],
    *,
    transform: Any = None,
    cmap: str = "hot",
    alpha: float = 0.5,
    fixed_range: Sequence[float] | None = None,
    moving_range: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG with the central axial, coronal and sagittal slices of ``fixed`` (grey) with
    ``moving`` (colour map ``cmap``, opacity ``alpha``) on top.

    ``moving`` is resampled onto the fixed grid, through ``transform`` if given (see
    :func:`~medlens.preprocess.register.apply_transform`), otherwise through world coordinates
    (images sharing a frame of reference). Display ranges default to the 1st-99.5th percentiles.
    Pixels are drawn with their physical aspect ratio. Written atomically with matplotlib (Agg).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from medlens.preprocess.register import apply_transform

    check_image(fixed, what="fixed", ndims=(3,))
    check_image(moving, what="moving", ndims=(3,))
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if Path(path).suffix.lower() != ".png":
        raise InputError(f"{path}: the overlay is written as PNG; give a path ending in .png")
    if transform is not None:
        mov = apply_transform(moving, transform, reference=fixed, fill_value=np.nan)
    else:
        import SimpleITK as sitk

        mov = apply_transform(moving, sitk.Transform(3, sitk.sitkIdentity), reference=fixed, fill_value=np.nan)
    f = np.asarray(fixed.array, dtype=np.float64)
    m = np.asarray(mov.array, dtype=np.float64)
    flo, fhi = _display_range(f, fixed_range)
    finite = m[np.isfinite(m)]
    mlo, mhi = _display_range(finite if finite.size else np.zeros(1), moving_range)
    dz, dy, dx = fixed.spacing
    nz, ny, nx = fixed.shape
    planes = [
        ("axial", f[nz // 2], m[nz // 2], dy / dx, "upper"),
        ("coronal", f[:, ny // 2, :], m[:, ny // 2, :], dz / dx, "lower"),
        ("sagittal", f[:, :, nx // 2], m[:, :, nx // 2], dz / dy, "lower"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), facecolor="black")
    for ax, (name, fs, ms, aspect, origin) in zip(axes, planes, strict=True):
        ax.imshow(fs, cmap="gray", vmin=flo, vmax=fhi, aspect=aspect, origin=origin, interpolation="nearest")
        ax.imshow(
            np.ma.masked_invalid(ms),
            cmap=cmap,
            vmin=mlo,
            vmax=mhi,
            alpha=alpha,
            aspect=aspect,
            origin=origin,
            interpolation="nearest",
        )
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout()
    target = Path(path)
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100, facecolor="black")
    finally:
        plt.close(fig)
    return target
