"""Low-dose CT simulation (physics), metrics and the supervised CNN denoiser."""

from __future__ import annotations

import numpy as np
import pytest

import medlens
from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.learn import lowdose as ld


def _phantom(n: int = 96) -> np.ndarray:
    """Air outside, a water disc (0 HU) with a fat (-100 HU) and a bone (+700 HU) insert."""
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(yy, xx)
    hu = np.full((n, n), -1000.0)
    hu[r < 0.42 * n] = 0.0
    hu[np.hypot(yy - 0.15 * n, xx) < 0.08 * n] = -100.0
    hu[np.hypot(yy + 0.15 * n, xx) < 0.06 * n] = 700.0
    return hu


def test_poisson_log_noise_has_the_variance_the_photon_count_predicts():
    rng = np.random.default_rng(0)
    p = np.repeat([[1.0], [3.0], [5.0]], 100_000, axis=1)  # line integrals
    photons = 2.5e4
    out = ld.noisy_line_integrals(p, photons_per_ray=photons, rng=rng)
    predicted = 1.0 / (photons * np.exp(-p[:, 0]))  # var(-log N/I) ~ 1 / E[N]
    measured = out.var(axis=1)
    np.testing.assert_allclose(measured, predicted, rtol=0.03)
    # second-order delta method: E[-log(N/I)] = p + 1 / (2 E[N]); within 5 standard errors
    se = np.sqrt(predicted / 100_000)
    assert np.all(np.abs(out.mean(axis=1) - (p[:, 0] + predicted / 2)) < 5 * se)


@pytest.mark.slow
def test_noise_free_fbp_reproduces_a_real_ct_slice(sts_dir):
    ct = medlens.read_image(sts_dir / "STS_001" / "CT" / "image")
    hu = np.asarray(ct.array[ct.shape[0] // 2], np.float64)
    rec = ld.simulate_low_dose_slice(hu, pixel_mm=ct.spacing[-1], dose_fraction=None)
    body = hu > -900
    err = np.abs(rec - hu)[body]
    # radon/iradon discretisation only: a few HU on average, no offset
    assert err.mean() < 20.0
    assert abs(float(np.mean((rec - hu)[body]))) < 3.0


def test_image_noise_scales_as_one_over_sqrt_dose():
    hu = _phantom()
    yy, xx = np.mgrid[:96, :96] - 47.5
    water = (np.hypot(yy, xx) < 0.3 * 96) & (np.hypot(yy - 14.4, xx) > 12) & (np.hypot(yy + 14.4, xx) > 10)
    model = ld.LowDoseModel(i0_full=2e4, n_views=180)
    sd = {}
    for dose in (0.1, 0.4):
        rec = ld.simulate_low_dose_slice(
            hu, pixel_mm=1.0, dose_fraction=dose, model=model, rng=np.random.default_rng(1)
        )
        clean = ld.simulate_low_dose_slice(hu, pixel_mm=1.0, dose_fraction=None, model=model)
        sd[dose] = float(np.std((rec - clean)[water]))
    assert sd[0.1] / sd[0.4] == pytest.approx(2.0, rel=0.15)  # sqrt(0.4 / 0.1)


def test_simulation_is_reproducible_and_keeps_geometry(sts_dir):
    ct = medlens.read_image(sts_dir / "STS_002" / "CT" / "image")
    a = ld.simulate_low_dose(ct, dose_fraction=0.25, seed=3, slices=[5])
    b = ld.simulate_low_dose(ct, dose_fraction=0.25, seed=3, slices=[5])
    np.testing.assert_array_equal(a.array, b.array)
    assert a.same_grid(ct) and a.meta.units == ct.meta.units
    np.testing.assert_array_equal(a.array[4], np.asarray(ct.array[4], np.float32))  # untouched slice
    assert not np.array_equal(a.array[5], ct.array[5])
    assert "simulate_low_dose(dose=0.25" in a.meta.history[-1]


def test_bad_inputs_are_refused(sts_dir):
    pet = medlens.read_image(sts_dir / "STS_001" / "PET" / "image")
    with pytest.raises(InputError, match="needs a CT in HU, got modality 'PT'"):
        ld.simulate_low_dose(pet, dose_fraction=0.1)
    ct2d = Image.from_array(_phantom(32), spacing=(1.0, 1.0), modality="CT", units="HU")
    with pytest.raises(InputError, match=r"dose_fraction must be in \(0, 1\]"):
        ld.simulate_low_dose(ct2d, dose_fraction=0.0)
    with pytest.raises(InputError, match="i0_full"):
        ld.LowDoseModel(i0_full=-1)


def test_metrics_worked_values():
    ref = np.zeros((4, 4))
    test = ref.copy()
    test[0, 0] = 200.0  # one pixel off by 200 HU: mse = 200^2 / 16 = 2500
    assert ld.psnr_hu(test, ref) == pytest.approx(10 * np.log10(2000.0**2 / 2500.0))
    assert ld.hu_bias(test, ref, np.ones((4, 4), bool)) == pytest.approx(12.5)
    # ICC(2,1) by hand: rows 1,3,5 and +1 offset -> MSR = 8, MSC = 1.5, MSE = 0 -> 8 / (8 + 2 * 1.5 / 3) = 8/9
    assert ld.icc_absolute(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])) == pytest.approx(8 / 9)
    assert ld.icc_absolute(np.array([[1.0, 1.0], [2.0, 2.0], [7.0, 7.0]])) == pytest.approx(1.0)


@pytest.mark.slow
def test_trained_cnn_denoiser_beats_the_noisy_input_on_held_out_images():
    hu = _phantom(64)
    model = ld.LowDoseModel(i0_full=2e4, n_views=120)

    def noisy(seed: int) -> np.ndarray:
        shifted = np.roll(hu, (seed % 5) - 2, axis=1)
        return ld.simulate_low_dose_slice(
            shifted, pixel_mm=1.0, dose_fraction=0.1, model=model, rng=np.random.default_rng(seed)
        ), shifted

    pairs = [noisy(s) for s in range(6)]
    net, losses = ld.train_denoise_cnn(pairs, width=8, depth=4, patch=32, steps=200, batch_size=8, seed=0)
    assert losses[-1] < losses[0]
    low, ref = noisy(101)
    den = ld.apply_denoise_cnn(net, low)
    assert ld.psnr_hu(den, ref) > ld.psnr_hu(low, ref) + 2.0


def test_cli_lowdose_writes_a_noisier_volume(tmp_path):
    from medlens.cli import main
    from medlens.io.api import read_image, write_image

    vol = np.stack([_phantom(64), _phantom(64)]).astype(np.float32)
    src = tmp_path / "ct.nii.gz"
    write_image(Image.from_array(vol, spacing=(3.0, 1.0, 1.0), modality="CT", units="HU"), src)
    out = tmp_path / "low.nii.gz"
    assert main(["lowdose", str(src), "--out", str(out), "--dose", "0.1", "--views", "90", "--i0", "2e4"]) == 0
    low = np.asarray(read_image(out).array)
    water = np.abs(vol) < 1  # the 0 HU disc
    assert low.shape == vol.shape and 20 < float(np.std(low[water])) < 500
    assert main(["lowdose", str(src), "--out", str(out), "--dose", "1.5"]) == 2
