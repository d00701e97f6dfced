"""Denoising on the real IBSI CT phantom with simulated low-dose noise (SNR inside tissue masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlens.core.image import Image

SIGMA_HU = 40.0  # standard deviation of the added noise, HU


@pytest.fixture(scope="module")
def noisy_phantom(ct_phantom_dir: Path) -> tuple[Image, Image, dict[str, Image]]:
    from scipy import ndimage

    import medlens

    ct = medlens.read_image(ct_phantom_dir / "nifti" / "image" / "phantom.nii.gz")
    mid = ct.shape[0] // 2
    shift = np.eye(4)
    shift[0, 3] = mid - 6
    sub = Image(ct.array[mid - 6 : mid + 6], ct.affine @ shift, ct.meta)
    a = sub.array.astype(np.float64)
    # spatially correlated Gaussian noise: white noise smoothed in-plane (0.8 px), scaled to SIGMA_HU
    rng = np.random.default_rng(20261124)
    n = ndimage.gaussian_filter(rng.standard_normal(a.shape), sigma=(0, 0.8, 0.8))
    noisy = sub.with_array((a + n * (SIGMA_HU / n.std())).astype(np.float32), op="add_noise")
    smooth = ndimage.median_filter(a, size=(1, 5, 5))
    masks = {}
    for name, (lo, hi) in {"soft_tissue": (-100, 100), "lung": (-950, -700)}.items():
        m = ndimage.binary_erosion((smooth > lo) & (smooth < hi), structure=np.ones((1, 7, 7), bool))
        assert m.sum() > 1000, name
        masks[name] = sub.with_array(m)
    return sub, noisy, masks


@pytest.mark.parametrize("method", ["BayesShrink", "VisuShrink"])
@pytest.mark.parametrize("slice_wise", [False, True])
def test_preprocess_wavelet_raises_snr_on_noisy_ct_phantom(noisy_phantom, method: str, slice_wise: bool) -> None:  # type: ignore[no-untyped-def]
    from medlens.preprocess import snr, wavelet_denoise

    _, noisy, masks = noisy_phantom
    levels = 3 if slice_wise else 2
    out = wavelet_denoise(noisy, method=method, wavelet="db2", levels=levels, slice_wise=slice_wise)
    assert out.same_grid(noisy) and out.meta.units == noisy.meta.units
    for name, m in masks.items():
        before = snr(noisy, signal_mask=m, offset=1000.0)
        after = snr(out, signal_mask=m, offset=1000.0)
        gain = 100 * (after / before - 1)
        print(f"{method} slice_wise={slice_wise} {name}: SNR {before:.2f} -> {after:.2f} ({gain:+.1f} %)")
        assert after > before
        # the tissue level is kept (denoising must not shift the mean)
        assert abs(out.array[m.array].mean() - noisy.array[m.array].mean()) < 5.0


def test_preprocess_median_and_gaussian_raise_snr_on_noisy_ct_phantom(noisy_phantom) -> None:  # type: ignore[no-untyped-def]
    from medlens.preprocess import gaussian_filter, median_filter, snr

    _, noisy, masks = noisy_phantom
    m = masks["soft_tissue"]
    before = snr(noisy, signal_mask=m, offset=1000.0)
    assert snr(median_filter(noisy, size_voxels=(1, 3, 3)), signal_mask=m, offset=1000.0) > before
    assert snr(gaussian_filter(noisy, sigma_mm=(0.0, 1.0, 1.0)), signal_mask=m, offset=1000.0) > before


def test_preprocess_slice_wise_wavelet_equals_2d_on_each_slice(noisy_phantom) -> None:  # type: ignore[no-untyped-def]
    from medlens.preprocess import wavelet_denoise

    _, noisy, _ = noisy_phantom
    vol = wavelet_denoise(noisy, levels=2, slice_wise=True)
    for k in (0, 5, 11):
        np.testing.assert_allclose(vol.array[k], wavelet_denoise(noisy.slice2d(k), levels=2).array, atol=1e-4)
