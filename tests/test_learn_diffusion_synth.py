"""Two-stage (mask, then image given the mask) diffusion generator of synthetic lesion patches, and its judges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.core.errors import InputError

pytest.importorskip("monai")

from medlens.learn import diffusion_synth as ds


def _discs(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (value 2) of random radius near the centre on a background of 0.5 (network units)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    m = np.zeros((n, 1, size, size), bool)
    for i in range(n):
        cy, cx = (size - 1) / 2 + rng.uniform(-1, 1, 2)
        m[i, 0] = np.hypot(yy - cy, xx - cx) < rng.uniform(2.5, 4.5)
    x = np.where(m, 2.0, 0.5).astype(np.float32) + rng.normal(0, 0.05, m.shape).astype(np.float32)
    return x, m


# ---- Frechet distance: worked values ----------------------------------------------------------------


def test_frechet_of_known_gaussians():
    # 1D: N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert ds.frechet_from_moments(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == (
        pytest.approx(2.0)
    )
    # 2D diagonal: |(3, 4)|^2 + (1 - 3)^2 + (2 - 4)^2 = 25 + 8 = 33
    fd = ds.frechet_from_moments(np.zeros(2), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([9.0, 16.0]))
    assert fd == pytest.approx(33.0)
    # a full covariance against itself, shifted by (1, 1): only the mean term, 2
    s = np.array([[2.0, 0.8], [0.8, 1.0]])
    assert ds.frechet_from_moments(np.zeros(2), s, np.ones(2), s) == pytest.approx(2.0, abs=1e-6)


def test_frechet_from_samples_approaches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (20000, 2))
    b = rng.normal(0, 2, (20000, 2)) + np.array([1.0, 0.0])
    # 1 + 2 * (1 - 2)^2 = 3
    assert ds.frechet_distance(a, b) == pytest.approx(3.0, abs=0.1)
    assert ds.frechet_distance(a[:10000], a[10000:]) < 0.01
    with pytest.raises(InputError, match="same d"):
        ds.frechet_distance(a, b[:, :1])
    with pytest.raises(InputError, match="at least 2 rows"):
        ds.frechet_distance(a[:1], b)


# ---- mask post-processing, features, gate -------------------------------------------------------------


def test_postprocess_keeps_the_largest_component_and_fills_holes():
    soft = -np.ones((12, 12))
    soft[1:6, 1:6] = 1.0  # 25 px with a hole at (3, 3)
    soft[3, 3] = -1.0
    soft[9:11, 9:11] = 0.5  # 4 px, a second fragment
    soft[0, 11] = 0.0  # exactly at the threshold: outside
    mask, frac = ds.postprocess_mask(soft)
    assert mask.dtype == bool and mask.sum() == 25  # hole filled, fragment dropped
    assert not mask[9:11, 9:11].any() and mask[3, 3]
    assert frac == pytest.approx(24 / 28)  # 24 of the 28 raw foreground pixels were in the largest one
    empty, f0 = ds.postprocess_mask(-np.ones((4, 4)))
    assert not empty.any() and f0 == 0.0
    with pytest.raises(InputError, match="2D"):
        ds.postprocess_mask(np.zeros((2, 4, 4)))


def test_signed_distance_representation_gives_the_mask_back():
    m = np.zeros((9, 9), bool)
    m[2:7, 3:6] = True
    f = ds.mask_to_sdf(m, scale=1.0)
    np.testing.assert_array_equal(f > 0, m)
    assert f[4, 4] == pytest.approx(np.tanh(1.5))  # 2 px to the nearest background pixel, minus 0.5
    assert f[4, 0] == pytest.approx(np.tanh(-2.5))  # 3 px to the nearest mask pixel
    assert np.all(ds.mask_to_sdf(np.zeros((3, 3), bool)) == -1)


def test_first_order_features_worked_values():
    img = np.zeros((1, 1, 6, 6), np.float32)
    msk = np.zeros((1, 1, 6, 6), bool)
    msk[0, 0, 2:4, 2:4] = True
    img[0, 0, 2:4, 2:4] = np.array([[1, 2], [3, 4]]) / 5.0  # SUV 1, 2, 3, 4 in network units
    f = dict(zip(ds.FIRST_ORDER_NAMES, ds.first_order_features(img, msk)[0], strict=True))
    assert f["mean"] == pytest.approx(2.5)
    assert f["sd"] == pytest.approx(np.sqrt(1.25))
    assert f["skewness"] == pytest.approx(0.0, abs=1e-6)  # float32 pixels
    assert f["kurtosis"] == pytest.approx(1.64 - 3, abs=1e-6)  # mean(z^4) of (+-0.447, +-1.342) = 1.64
    assert f["max"] == pytest.approx(4.0) and f["area_px"] == 4
    assert f["compactness"] == pytest.approx(4 * np.pi * 4 / 8**2)  # 2 x 2 square: perimeter 8


def test_quality_gate_names_each_reason():
    x, m = _discs(20, 16, 0)
    ref = ds.reference_stats(x, m)
    assert ds.quality_gate(x[0, 0], m[0, 0], 1.0, ref) == []
    big = np.zeros((16, 16), bool)
    big[1:15, 1:15] = True
    assert "area out of range" in ds.quality_gate(np.where(big, 2.0, 0.5), big, 1.0, ref)
    assert ds.quality_gate(x[0, 0], m[0, 0], 0.5, ref) == ["fragmented mask"]
    off = np.roll(m[0, 0], (6, 6), axis=(0, 1))
    assert ds.quality_gate(np.where(off, 2.0, 0.5), off, 1.0, ref, max_offset=3) == ["off-centre mask"]
    assert ds.quality_gate(np.where(m[0, 0], 0.1, 0.5), m[0, 0], 1.0, ref) == ["low lesion contrast"]
    assert ds.quality_gate(np.full((16, 16), np.nan), m[0, 0], 1.0, ref) == ["non-finite image"]
    bright = np.where(m[0, 0], 4.0, 1.0)  # contrast 4 as before, but twice the training lesions' intensity
    assert ds.quality_gate(bright, m[0, 0], 1.0, ref) == []
    assert ds.quality_gate(bright, m[0, 0], 1.0, ref, intensity=True) == ["lesion intensity out of range"]


def test_gtv_patches_are_centred_on_the_mask():
    from medlens.core.image import Image, Units
    from medlens.segment.unet import make_case

    vol = np.zeros((3, 20, 24), np.float32)
    msk = np.zeros((3, 20, 24), bool)
    msk[1, 4:7, 15:18] = True  # 9 px centred at (5, 16)
    vol[1, 4:7, 15:18] = 10.0  # SUV 10 -> 2 network units
    img = Image.from_array(vol, spacing=(3.0, 4.0, 4.0), modality="PT", units=Units.SUVBW)
    case = make_case(img, img.with_array(msk, units=Units.MASK), patient_id="P1")
    x, m, ids = ds.gtv_patches([case], size=8)
    assert x.shape == (1, 1, 8, 8) and ids == ["P1"]
    assert m[0, 0, 3:6, 3:6].all() and m.sum() == 9
    assert x[0, 0, 4, 4] == pytest.approx(2.0)
    with pytest.raises(InputError, match="at least 20 pixels"):
        ds.gtv_patches([case], size=8, min_area=20)


# ---- the generator -------------------------------------------------------------------------------------

_TINY = {"mask_size": 8, "mask_channels": (8, 8), "image_channels": (8, 8), "num_train_timesteps": 50}


@pytest.fixture(scope="module")
def tiny_gen():
    x, m = _discs(16, 16, 1)
    return ds.train_generator(x, m, mask_steps=1, image_steps=1, batch_size=4, seed=0, **_TINY)


def test_tiny_generator_trains_and_samples_reproducibly(tiny_gen):
    assert tiny_gen.architecture["kind"] == ds.KIND
    assert -0.9 <= tiny_gen.reference["mask_threshold"] <= 0.9
    assert len(tiny_gen.losses["mask"]) == 1 and np.isfinite(tiny_gen.losses["image"][0])
    a = ds.sample_pairs(tiny_gen, 5, seed=3, n_steps=3, batch_size=8, max_batches=1, gate=False)
    assert a.images.shape[1:] == (1, 16, 16) and a.masks.shape == a.images.shape and a.masks.dtype == bool
    assert 1 <= len(a.images) <= 5 and a.report["drawn"] == 8 and a.report["gate"] is False
    assert np.all((a.images >= 0) & (a.images <= 5))
    b = ds.sample_pairs(tiny_gen, 5, seed=3, n_steps=3, batch_size=8, max_batches=1, gate=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    c = ds.sample_pairs(tiny_gen, 5, seed=4, n_steps=3, batch_size=8, max_batches=1, gate=False)
    assert not np.array_equal(a.images[: len(c.images)], c.images[: len(a.images)])


def test_sdedit_start_from_real_crops(tiny_gen):
    x, _ = _discs(4, 16, 7)
    a = ds.sample_pairs(
        tiny_gen, 3, seed=2, n_steps=2, base_images=x, strength=0.3, batch_size=4, max_batches=1, gate=False
    )
    assert a.images.shape[1:] == (1, 16, 16)
    with pytest.raises(InputError, match=r"base_images must be \(n, 1, 16, 16\)"):
        ds.sample_pairs(tiny_gen, 3, base_images=x[:, :, :8], max_batches=1)
    with pytest.raises(InputError, match=r"strength must be in \(0, 1\]"):
        ds.sample_pairs(tiny_gen, 3, base_images=x, strength=0.0, max_batches=1)


def test_generator_checkpoint_round_trip_and_refusals(tiny_gen, tmp_path):
    from medlens.learn.encoders import save_checkpoint

    p = ds.save_generator(tiny_gen, tmp_path / "gen.pt", info={"data": "discs"})
    back = ds.load_generator(p)
    assert back.reference == tiny_gen.reference
    a = ds.sample_pairs(tiny_gen, 3, seed=1, n_steps=2, batch_size=4, max_batches=1, gate=False)
    b = ds.sample_pairs(back, 3, seed=1, n_steps=2, batch_size=4, max_batches=1, gate=False)
    np.testing.assert_array_equal(a.images, b.images)
    # a checkpoint of another kind
    from medlens.learn.encoders import build_diffusion_unet

    other = tmp_path / "ddpm.pt"
    save_checkpoint(
        build_diffusion_unet(channels=(8, 8)).state_dict(),
        other,
        architecture={"kind": "diffusion-unet", "channels": [8, 8], "num_res_blocks": 1},
        input_spec={"modality": "PT"},
    )
    with pytest.raises(InputError, match=r"'diffusion-unet' network, expected a 'diffusion-synth-pair'"):
        ds.load_generator(other)
    # the JSON describing another architecture than the tensors
    doc = json.loads(p.with_suffix(".json").read_text())
    doc["architecture"]["image_channels"] = [16, 16]
    p.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"does not fit the architecture.*layer image\."):
        ds.load_generator(p)


def test_bad_training_input_is_refused():
    x, m = _discs(4, 16, 0)
    with pytest.raises(InputError, match=r"\(n, 1, h, w\) \(one PET channel\), got \(4, 2, 16, 16\)"):
        ds.train_generator(np.concatenate([x, m.astype(np.float32)], axis=1), m, **_TINY)
    with pytest.raises(InputError, match="masks must have the images' shape"):
        ds.train_generator(x, m[:2], **_TINY)
    with pytest.raises(InputError, match="binary"):
        ds.train_generator(x, m * 0.5, **_TINY)
    with pytest.raises(InputError, match="mask_size 6 must divide"):
        ds.train_generator(x, m, **{**_TINY, "mask_size": 6})


def test_encoder_features_of_the_shipped_encoder():
    x, m = _discs(3, 64, 2)
    f = ds.encoder_features(x, m)
    assert f.shape == (3, 64) and np.all(np.isfinite(f))
    with pytest.raises(InputError, match=r"must be \(n, 1, 64, 64\)"):
        ds.encoder_features(x[:, :, :32, :32], m[:, :, :32, :32])
