"""DDPM training and DDIM denoising / sampling (MONAI DiffusionModelUNet)."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.learn.diffusion import ddim_denoise, ddim_sample, train_ddpm

pytest.importorskip("monai")


def _blobs(n: int, seed: int) -> np.ndarray:
    """Smooth patches: a bright disc of random centre on a flat background (values -1 / +1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16]
    out = np.full((n, 1, 16, 16), -1.0, np.float32)
    for i in range(n):
        cy, cx = rng.uniform(5, 11, size=2)
        out[i, 0][np.hypot(yy - cy, xx - cx) < 4] = 1.0
    return out


@pytest.mark.slow
def test_ddpm_prior_denoises_held_out_patches():
    setup = train_ddpm(
        _blobs(256, 0),
        channels=(16, 32),
        num_res_blocks=1,
        num_train_timesteps=200,
        steps=200,
        batch_size=16,
        learning_rate=2e-3,
        seed=0,
    )
    assert setup.losses[-1] < setup.losses[0]
    clean = _blobs(16, 99)
    sigma = 0.3
    noisy = clean + np.random.default_rng(1).normal(0, sigma, clean.shape).astype(np.float32)
    den = ddim_denoise(setup, noisy, sigma=sigma, n_steps=5)
    mse_noisy = float(np.mean((noisy - clean) ** 2))
    mse_den = float(np.mean((den - clean) ** 2))
    assert mse_den < 0.6 * mse_noisy
    samples = ddim_sample(setup, (4, 1, 16, 16), n_steps=10, seed=0)
    assert samples.shape == (4, 1, 16, 16) and np.all(np.isfinite(samples))


def test_bad_inputs():
    with pytest.raises(InputError, match="divisible by 2"):
        train_ddpm(np.zeros((4, 1, 15, 16), np.float32), channels=(16, 32), steps=1)
    with pytest.raises(InputError, match=r"\(n, 1, h, w\)"):
        train_ddpm(np.zeros((4, 16, 16), np.float32), steps=1)
