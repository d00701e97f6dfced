"""Denoising, contrast and normalisation: invariants, reference values, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import GeometryError, InputError, ProcessingError
from medlens.core.image import Image, Units


def _vol(seed: int = 0, shape: tuple[int, ...] = (12, 40, 36), spacing: tuple[float, ...] = (3.0, 0.8, 0.8)) -> Image:
    rng = np.random.default_rng(seed)
    _, y, x = np.indices(shape)
    base = np.where((y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (shape[1] / 3) ** 2, 60.0, -50.0)
    arr = (base + rng.normal(0.0, 20.0, shape)).astype(np.float32)
    return Image.from_array(arr, spacing=spacing, origin=(10.0, -20.0, 5.0), modality="CT", units=Units.HU)


def _const(value: float = 42.0, shape: tuple[int, ...] = (6, 20, 20)) -> Image:
    return Image.from_array(np.full(shape, value, np.float32), spacing=(2.0, 1.0, 1.0)[-len(shape) :], units=Units.HU)


def _filters():  # type: ignore[no-untyped-def]
    from medlens import preprocess as p

    return {
        "wavelet_bayes": lambda im: p.wavelet_denoise(im, method="BayesShrink", levels=1),
        "wavelet_visu": lambda im: p.wavelet_denoise(im, method="VisuShrink", wavelet="db2", levels=1),
        "median_mm": lambda im: p.median_filter(im, size_mm=3.0),
        "median_vox": lambda im: p.median_filter(im, size_voxels=3),
        "gaussian": lambda im: p.gaussian_filter(im, sigma_mm=1.5),
        "nl_means": lambda im: p.nl_means_denoise(im, patch_size_voxels=3, patch_distance_voxels=2),
        "bilateral": lambda im: p.bilateral_denoise(im, sigma_mm=1.5, sigma_range=30.0),
        "percentile_clip": lambda im: p.percentile_clip(im, percentiles=(1, 99)),
    }


@pytest.mark.parametrize("name", list(_filters()))
def test_preprocess_filter_constant_image_stays_constant_and_grid_kept(name: str) -> None:
    f = _filters()[name]
    for im in (_const(), _const(shape=(20, 24))):
        out = f(im)
        assert out.same_grid(im) and out.meta.units == Units.HU
        np.testing.assert_allclose(out.array, 42.0, atol=1e-3)
        assert len(out.meta.history) == len(im.meta.history) + 1
    vol = _vol()
    out = f(vol)
    assert out.same_grid(vol) and np.array_equal(out.affine, vol.affine) and out.shape == vol.shape
    assert out.meta.modality == "CT" and len(out.meta.history) == 1 and out.meta.history[0].endswith(")")


def test_preprocess_wavelet_matches_skimage() -> None:
    from skimage.restoration import denoise_wavelet

    from medlens.preprocess import estimate_noise_sigma, wavelet_denoise

    vol = _vol(1, shape=(16, 48, 48))
    for method, wavelet, levels in (("BayesShrink", "db1", 2), ("VisuShrink", "db2", 1), ("BayesShrink", "sym4", 1)):
        ours = wavelet_denoise(vol, method=method, wavelet=wavelet, levels=levels).array
        ref = denoise_wavelet(
            vol.array.astype(np.float64), method=method, wavelet=wavelet, wavelet_levels=levels, rescale_sigma=False
        )
        np.testing.assert_allclose(ours, ref, atol=1e-3)
    # 2D too
    sl = vol.slice2d(5)
    ref2 = denoise_wavelet(sl.array.astype(np.float64), method="BayesShrink", wavelet_levels=2, rescale_sigma=False)
    np.testing.assert_allclose(wavelet_denoise(sl, levels=2).array, ref2, atol=1e-3)
    # noise estimate: white Gaussian sigma 20 HU on a piecewise-constant image
    assert abs(estimate_noise_sigma(vol) - 20.0) < 2.0


def test_preprocess_median_matches_simpleitk() -> None:
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk, to_sitk
    from medlens.preprocess import median_filter

    vol = _vol(2)
    # 3 mm on (3, 0.8, 0.8) mm voxels -> (1, 3, 3) voxels... (odd count closest to 3 mm / spacing)
    ours = median_filter(vol, size_mm=(3.0, 2.4, 4.0))
    assert "size_voxels=[1, 3, 5]" in ours.meta.history[-1]
    ref = from_sitk(sitk.Median(to_sitk(vol), [2, 1, 0])).array  # sitk radius is (x, y, z)
    np.testing.assert_allclose(ours.array, ref)


def test_preprocess_gaussian_impulse_has_sigma_in_mm() -> None:
    from medlens.preprocess import gaussian_filter

    arr = np.zeros((31, 41, 41), np.float64)
    arr[15, 20, 20] = 1.0
    im = Image.from_array(arr, spacing=(2.0, 0.5, 1.0))
    out = gaussian_filter(im, sigma_mm=2.0).array
    assert out.sum() == pytest.approx(1.0, abs=1e-6)
    for axis, sp in enumerate((2.0, 0.5, 1.0)):
        prof = out.sum(axis=tuple(a for a in range(3) if a != axis))
        pos = (np.arange(prof.size) - prof.size // 2) * sp
        assert np.sqrt((prof * pos**2).sum()) == pytest.approx(2.0, rel=0.02)


def test_preprocess_edge_preserving_filters_reduce_noise_keep_edges() -> None:
    from medlens.preprocess import bilateral_denoise, gaussian_filter, nl_means_denoise

    vol = _vol(3)
    inside = np.zeros(vol.shape, bool)
    inside[:, 17:23, 15:21] = True
    for out in (nl_means_denoise(vol), bilateral_denoise(vol, sigma_mm=1.5, sigma_range=60.0)):
        assert out.array[inside].std() < 0.7 * vol.array[inside].std()
    # the edge step survives better than under a Gaussian of the same spatial size
    g = gaussian_filter(vol, sigma_mm=1.5).array
    b = bilateral_denoise(vol, sigma_mm=1.5, sigma_range=60.0).array
    col = vol.shape[2] // 2
    edge_row = int(vol.shape[1] / 2 - vol.shape[1] / 3)
    step_b = b[:, edge_row + 2, col].mean() - b[:, edge_row - 3, col].mean()
    step_g = g[:, edge_row + 2, col].mean() - g[:, edge_row - 3, col].mean()
    assert step_b > 0.9 * step_g


def test_preprocess_clahe_2d_slicewise_equals_stack() -> None:
    import cv2

    from medlens.preprocess import clahe_2d

    sl = _vol(4, shape=(1, 64, 64)).slice2d(0)
    out2 = clahe_2d(sl)
    stacked = Image.from_array(np.stack([sl.array] * 4), spacing=(2.0, *sl.spacing))
    out3 = clahe_2d(stacked)
    for k in range(4):
        np.testing.assert_array_equal(out3.array[k], out2.array)
    assert out2.meta.units == Units.NORMALISED and 0.0 <= out2.array.min() and out2.array.max() <= 1.0
    # reference: OpenCV on the documented uint8 mapping
    a = sl.array.astype(np.float64)
    u8 = np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(u8) / 255.0
    np.testing.assert_allclose(out2.array, ref, atol=1e-6)
    assert np.all(clahe_2d(_const()).array == 0.0)


def test_preprocess_clahe_3d_and_histogram_equalise_match_skimage() -> None:
    from skimage.exposure import equalize_adapthist, equalize_hist

    from medlens.preprocess import clahe_3d, histogram_equalise

    vol = _vol(5, shape=(16, 32, 32))
    a = vol.array.astype(np.float64)
    unit = (a - a.min()) / (a.max() - a.min())
    ref = equalize_adapthist(unit, kernel_size=(8, 8, 8), clip_limit=0.01)
    out = clahe_3d(vol, kernel_size_voxels=8)
    np.testing.assert_allclose(out.array, ref, atol=1e-6)
    assert out.meta.units == Units.NORMALISED and out.same_grid(vol)
    np.testing.assert_allclose(histogram_equalise(vol).array, equalize_hist(a, nbins=256), atol=1e-6)
    assert np.all(clahe_3d(_const()).array == 0.0) and np.all(histogram_equalise(_const()).array == 0.0)


def test_preprocess_window_presets_and_values() -> None:
    from medlens.preprocess import WINDOW_PRESETS_HU, window

    assert WINDOW_PRESETS_HU == {
        "lung": (-600.0, 1500.0),
        "mediastinum": (40.0, 400.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
        "liver": (60.0, 160.0),
    }
    im = Image.from_array(np.array([[-1000.0, -160.0, 40.0, 240.0, 1000.0]]), units=Units.HU)
    out = window(im, preset="mediastinum")  # [-160, 240] -> [0, 1]
    np.testing.assert_allclose(out.array, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-7)
    assert out.meta.units == Units.NORMALISED and "window(mediastinum,center=40,width=400)" in out.meta.history
    np.testing.assert_allclose(window(im, window_hu=(-600, 1500)).array[0, :2], [(-1000 + 1350) / 1500, 1190 / 1500])


def test_preprocess_normalise_values_and_units() -> None:
    from medlens.preprocess import minmax, percentile_clip, zscore

    vol = _vol(6)
    mask = vol.with_array(vol.array > 0)
    z = zscore(vol, mask=mask)
    assert z.meta.units == Units.NORMALISED and z.meta.extra["normalised_from_units"] == Units.HU
    assert z.array[mask.array].mean() == pytest.approx(0.0, abs=1e-4)
    assert z.array[mask.array].std() == pytest.approx(1.0, abs=1e-4)
    assert zscore(vol).array.std() == pytest.approx(1.0, abs=1e-4)
    mm = minmax(vol, out_range=(-1, 1))
    assert mm.array.min() == pytest.approx(-1.0) and mm.array.max() == pytest.approx(1.0)
    c = percentile_clip(vol, percentiles=(5, 95))
    lo, hi = np.percentile(vol.array, [5, 95])
    assert c.array.min() == pytest.approx(lo) and c.array.max() == pytest.approx(hi) and c.meta.units == Units.HU
    with pytest.raises(ProcessingError, match="standard deviation is 0"):
        zscore(_const())


def test_preprocess_n4_removes_a_smooth_field() -> None:
    from medlens.preprocess import n4_bias_correction

    shape = (24, 48, 48)
    z, y, x = np.indices(shape)
    truth = np.where((y - 24) ** 2 + (x - 24) ** 2 < 18**2, 100.0, 0.0) + 1.0
    field = np.exp(0.3 * (x - 24) / 24 + 0.15 * (z - 12) / 12)
    im = Image.from_array((truth * field).astype(np.float32), spacing=(2.0, 2.0, 2.0), units=Units.ARBITRARY)
    body = im.with_array(truth > 50)
    out, est = n4_bias_correction(im, mask=body, shrink_factor=2, return_bias_field=True)
    cv_before = im.array[body.array].std() / im.array[body.array].mean()
    cv_after = out.array[body.array].std() / out.array[body.array].mean()
    assert cv_after < 0.5 * cv_before
    assert out.same_grid(im) and est.same_grid(im) and out.meta.units == Units.ARBITRARY


def test_preprocess_quality_metrics() -> None:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from medlens.preprocess import cnr, gaussian_filter, psnr, snr, ssim

    vol = _vol(7)
    a = vol.array.astype(np.float64)
    inside = vol.with_array(a > 0)
    outside = vol.with_array(a <= 0)
    assert snr(vol, signal_mask=inside) == pytest.approx(a[a > 0].mean() / a[a > 0].std())
    assert snr(vol, signal_mask=inside, offset=1000.0) == pytest.approx((a[a > 0].mean() + 1000) / a[a > 0].std())
    assert cnr(vol, inside=inside, outside=outside) == pytest.approx(
        abs(a[a > 0].mean() - a[a <= 0].mean()) / a[a <= 0].std()
    )
    g = gaussian_filter(vol, sigma_mm=1.0)
    dr = float(a.max() - a.min())
    assert psnr(g, reference=vol) == pytest.approx(
        peak_signal_noise_ratio(a, g.array.astype(np.float64), data_range=dr)
    )
    assert ssim(g, reference=vol) == pytest.approx(structural_similarity(a, g.array.astype(np.float64), data_range=dr))


def test_preprocess_bad_input_messages() -> None:
    from medlens import preprocess as p

    vol = _vol()
    other = Image.from_array(np.ones((12, 40, 36), bool), spacing=(2.0, 0.8, 0.8))
    with pytest.raises(GeometryError, match="mask is on a different grid"):
        p.zscore(vol, mask=other)
    with pytest.raises(InputError, match="boolean array"):
        p.zscore(vol, mask=vol)
    with pytest.raises(InputError, match="mask is empty"):
        p.minmax(vol, mask=vol.with_array(np.zeros(vol.shape, bool)))
    with pytest.raises(InputError, match="sigma_mm must be non-negative"):
        p.gaussian_filter(vol, sigma_mm=-1.0)
    with pytest.raises(InputError, match="sigma_mm must be positive on at least one axis"):
        p.gaussian_filter(vol, sigma_mm=0.0)
    with pytest.raises(InputError, match="sigma_mm has 2 values but the image is 3D"):
        p.gaussian_filter(vol, sigma_mm=(1.0, 1.0))
    with pytest.raises(InputError, match="exactly one of size_mm"):
        p.median_filter(vol)
    with pytest.raises(InputError, match="odd integers"):
        p.median_filter(vol, size_voxels=4)
    with pytest.raises(InputError, match="window width must be a positive"):
        p.window(vol, window_hu=(40, 0))
    with pytest.raises(InputError, match="unknown window preset 'abdomen'; allowed"):
        p.window(vol, preset="abdomen")
    with pytest.raises(InputError, match="units are 'SUVbw'"):
        p.window(vol.with_meta(units=Units.SUVBW), preset="lung")
    with pytest.raises(InputError, match="method must be one of"):
        p.wavelet_denoise(vol, method="SureShrink")
    with pytest.raises(InputError, match="discrete PyWavelets wavelet"):
        p.wavelet_denoise(vol, wavelet="morl")
    with pytest.raises(InputError, match="exceeds the maximum"):
        p.wavelet_denoise(vol, levels=9)
    with pytest.raises(InputError, match="must be 3D; got a 2D image"):
        p.clahe_3d(vol.slice2d(0))
    with pytest.raises(InputError, match="boolean mask; this operation needs intensities"):
        p.gaussian_filter(other, sigma_mm=1.0)
    with pytest.raises(InputError, match="clip_limit must be positive"):
        p.clahe_2d(vol, clip_limit=0)
    with pytest.raises(InputError, match="positive intensities"):
        p.n4_bias_correction(vol.with_array(np.full(vol.shape, -5.0, np.float32)))
    with pytest.raises(InputError, match=r"must be a medlens\.Image"):
        p.median_filter(np.zeros((4, 4)), size_voxels=3)  # type: ignore[arg-type]


def test_preprocess_more_bad_input_messages() -> None:
    from medlens import preprocess as p

    vol = _vol()
    small = Image.from_array(np.arange(100, dtype=np.float32).reshape(4, 5, 5))
    with pytest.raises(InputError, match=r"percentiles must be \(low, high\)"):
        p.percentile_clip(vol, percentiles=(99, 1))
    with pytest.raises(InputError, match=r"out_range must be \(low, high\)"):
        p.minmax(vol, out_range=(1, 1))
    with pytest.raises(InputError, match="tiles must be two positive integers"):
        p.clahe_2d(vol, tiles=(8, 0))
    with pytest.raises(InputError, match="in_range must be"):
        p.clahe_2d(vol, in_range=(5, 1))
    with pytest.raises(InputError, match="normalised limit in"):
        p.clahe_3d(vol, clip_limit=2.0)
    with pytest.raises(InputError, match="kernel_size_voxels must be"):
        p.clahe_3d(vol, kernel_size_voxels=(4, 4))
    with pytest.raises(InputError, match="bins must be an integer"):
        p.histogram_equalise(vol, bins=1)
    with pytest.raises(InputError, match="patch_size_voxels must be a positive integer"):
        p.nl_means_denoise(vol, patch_size_voxels=0)
    with pytest.raises(InputError, match="sigma_range must be positive"):
        p.bilateral_denoise(vol, sigma_mm=1.0, sigma_range=0.0)
    with pytest.raises(InputError, match="sigma_mm must be a positive number"):
        p.bilateral_denoise(vol, sigma_mm=-1.0, sigma_range=10.0)
    with pytest.raises(InputError, match="shrink_factor must be a positive integer"):
        p.n4_bias_correction(vol, shrink_factor=0)
    with pytest.raises(InputError, match="noise_sigma must be a non-negative"):
        p.wavelet_denoise(vol, noise_sigma=-1.0)
    with pytest.raises(InputError, match="slice_wise needs a 3D image"):
        p.wavelet_denoise(vol.slice2d(0), slice_wise=True)
    with pytest.raises(InputError, match="exactly one of window_hu"):
        p.window(vol)
    with pytest.raises(InputError, match="at least 7 voxels"):
        p.ssim(small, reference=small)
    with pytest.raises(GeometryError, match="image is on a different grid"):
        p.psnr(vol, reference=Image.from_array(vol.array, spacing=(1.0, 1.0, 1.0)))
    const = _const()
    m = const.with_array(np.ones(const.shape, bool))
    with pytest.raises(InputError, match="noise region is constant"):
        p.snr(const, signal_mask=m)
    with pytest.raises(InputError, match="outside region is constant"):
        p.cnr(const, inside=m, outside=m)
