"""Denoising diffusion (MONAI ``DiffusionModelUNet`` + ``DDPMScheduler``): training, sampling, denoising.

Training is the DDPM recipe (Ho et al. 2020): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with a
linear beta schedule over ``num_train_timesteps`` steps, the network predicts ``eps`` (L2 loss).

Denoising with the learnt prior (the "noisy image is an intermediate diffusion state" view, as in
SDEdit, Meng et al. 2022, and Xie et al. 2023): an image with additive noise of standard deviation
``sigma`` (network units) is, after scaling by ``sqrt(abar_t*)``, a sample of the forward process at the
step ``t*`` where ``(1 - abar) / abar = sigma^2``; deterministic DDIM steps (eta = 0, Song et al. 2021)
from ``t*`` down to 0 then give the denoised image. CT low-dose noise is not white (FBP correlates it),
so this is an approximation, and the table in docs/learn.md shows how far it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.learn._torch import keeps_torch_state

__all__ = ["DiffusionSetup", "ddim_denoise", "ddim_sample", "train_ddpm"]


class DiffusionSetup:
    """A diffusion network, its DDPM scheduler and its description (``architecture`` dict)."""

    def __init__(self, net: Any, scheduler: Any, architecture: dict[str, Any], losses: list[float]) -> None:
        self.net = net
        self.scheduler = scheduler
        self.architecture = architecture
        self.losses = losses

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.asarray(self.scheduler.alphas_cumprod.numpy(), np.float64)


def make_scheduler(num_train_timesteps: int = 1000) -> Any:
    from monai.networks.schedulers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(num_train_timesteps), schedule="linear_beta", clip_sample=False)


@keeps_torch_state
def train_ddpm(
    patches: np.ndarray,
    *,
    channels: tuple[int, ...] = (32, 64, 64),
    num_res_blocks: int = 1,
    num_train_timesteps: int = 1000,
    steps: int = 1500,
    batch_size: int = 16,
    learning_rate: float = 2e-4,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> DiffusionSetup:
    """Train a 2D DDPM on ``patches`` ``(n, 1 or C, h, w)`` in network units (float32; flips as augmentation).

    ``h`` and ``w`` must be divisible by ``2 ** (len(channels) - 1)``.
    """
    import torch

    from medlens.learn.encoders import build_diffusion_unet

    x_all = np.asarray(patches, np.float32)
    if x_all.ndim != 4 or x_all.shape[1] != 1:
        raise InputError(f"train_ddpm needs patches shaped (n, 1, h, w), got {x_all.shape}")
    div = 2 ** (len(channels) - 1)
    if x_all.shape[2] % div or x_all.shape[3] % div:
        raise InputError(f"patch size {x_all.shape[2:]} must be divisible by {div} for channels {list(channels)}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_diffusion_unet(channels=channels, num_res_blocks=num_res_blocks)
    sched = make_scheduler(num_train_timesteps)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    gen = torch.Generator().manual_seed(seed)
    losses, run = [], 0.0
    net.train()
    for step in range(steps):
        idx = rng.integers(len(x_all), size=batch_size)
        xb = x_all[idx].copy()
        flip = rng.random(batch_size) < 0.5
        xb[flip] = xb[flip][..., ::-1]
        x0 = torch.from_numpy(np.ascontiguousarray(xb))
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, num_train_timesteps, (batch_size,), generator=gen)
        xt = sched.add_noise(original_samples=x0, noise=noise, timesteps=t)
        opt.zero_grad()
        loss = torch.mean((net(xt, timesteps=t) - noise) ** 2)
        loss.backward()
        opt.step()
        run += float(loss.detach())
        if (step + 1) % 100 == 0:
            losses.append(run / 100)
            run = 0.0
            if log:
                log(f"ddpm step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    net.eval()
    arch = {
        "kind": "diffusion-unet",
        "channels": list(channels),
        "num_res_blocks": int(num_res_blocks),
        "num_train_timesteps": int(num_train_timesteps),
        "schedule": "linear_beta",
    }
    return DiffusionSetup(net, sched, arch, losses)


def _ddim_steps(setup: DiffusionSetup, x: Any, timesteps: Sequence[int] | np.ndarray) -> Any:
    """Deterministic DDIM (eta = 0) along decreasing ``timesteps`` (the last target is t = -1, i.e. x_0)."""
    import torch

    abar = torch.as_tensor(setup.alphas_cumprod, dtype=torch.float32)
    ts = [int(t) for t in timesteps]
    with torch.inference_mode():
        for i, t in enumerate(ts):
            a_t = abar[t]
            eps = setup.net(x, timesteps=torch.full((x.shape[0],), int(t), dtype=torch.long))
            x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev) * eps
    return x


def ddim_sample(setup: DiffusionSetup, shape: Sequence[int], *, n_steps: int = 50, seed: int = 0) -> np.ndarray:
    """Draw samples ``shape`` = ``(n, 1, h, w)`` from pure noise with ``n_steps`` DDIM steps (network units)."""
    import torch

    T = len(setup.alphas_cumprod)
    ts = np.linspace(T - 1, 0, int(n_steps)).round().astype(int)
    x = torch.randn(tuple(int(s) for s in shape), generator=torch.Generator().manual_seed(seed))
    return np.asarray(_ddim_steps(setup, x, ts).numpy())


def ddim_denoise(setup: DiffusionSetup, noisy: np.ndarray, *, sigma: float, n_steps: int = 10) -> np.ndarray:
    """Denoise ``noisy`` ``(n, 1, h, w)`` (network units, additive noise of std ``sigma``) with the learnt prior.

    Starts the reverse process at ``t*`` with ``(1 - abar_t*) / abar_t* = sigma^2`` (see the module docstring).
    """
    import torch

    if not (np.isfinite(sigma) and sigma > 0):
        raise InputError(f"sigma must be a positive noise standard deviation (network units), got {sigma}")
    abar = setup.alphas_cumprod
    snr_noise = (1 - abar) / abar
    t_star = int(np.clip(np.searchsorted(snr_noise, sigma**2), 0, len(abar) - 1))
    x = torch.from_numpy(np.ascontiguousarray(np.asarray(noisy, np.float32))) * float(np.sqrt(abar[t_star]))
    ts = np.unique(np.linspace(t_star, 0, max(1, int(n_steps))).round().astype(int))[::-1]
    return np.asarray(_ddim_steps(setup, x, ts).numpy())
