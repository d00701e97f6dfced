"""Training and patient-level cross-validation of the lesion U-Net (CPU-friendly recipe).

Recipe (2D, the shipped model): axial PET slices scaled ``clip(SUV, 0, 25) / 5``, zero-padded to at
least 64x64 and cropped to 64x64 windows (around the lesion with a random shift on lesion slices,
random elsewhere); every lesion slice plus as many random lesion-free slices per epoch; random flips
on both in-plane axes and an intensity jitter (x U(0.9, 1.1)); MONAI UNet channels (8, 16, 32, 64),
strides (2, 2, 2), one residual unit; Dice + cross-entropy loss (sigmoid); Adam, lr 2e-3, batch 32.
The 3D variant uses 32^3 patches with the same scheme. Folds split patients, never slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError, require
from medlens.segment.unet.data import Case
from medlens.segment.unet.model import UNetConfig, build_unet, torch_threads

__all__ = ["TrainResult", "patient_folds", "train"]


def patient_folds(patient_ids: Sequence[str], *, k: int = 5, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """K folds of (train ids, test ids) over unique patients, shuffled with ``seed``.

    Every patient is in exactly one test fold; train and test never share a patient.
    """
    ids = sorted(set(patient_ids))
    if k < 2 or k > len(ids):
        raise InputError(f"k must be between 2 and the number of patients ({len(ids)}), got {k}")
    rng = np.random.default_rng(seed)
    order = list(rng.permutation(ids))
    folds = [order[i::k] for i in range(k)]
    return [([p for p in ids if p not in set(f)], sorted(f)) for f in folds]


class TrainResult:
    """A trained network, its config and the per-epoch mean losses."""

    def __init__(self, net: Any, config: UNetConfig, losses: list[float], seconds: float) -> None:
        self.net = net
        self.config = config
        self.losses = losses
        self.seconds = seconds


def _scaled(case: Case, cfg: UNetConfig) -> tuple[np.ndarray, np.ndarray]:
    x = (np.clip(np.asarray(case.image.array, np.float32), 0.0, cfg.suv_clip) / cfg.suv_scale).astype(np.float32)
    y = np.asarray(case.mask.array, bool)
    return x, y


def _crop(x: np.ndarray, y: np.ndarray, size: Sequence[int], centre: np.ndarray | None, rng) -> tuple:
    """A window of ``size`` (trailing axes) around ``centre`` (with a random shift) or at random."""
    pads = [(0, 0)] * (x.ndim - len(size)) + [
        (max(0, s - d) // 2 + 1, max(0, s - d) - max(0, s - d) // 2 + 1) for d, s in zip(x.shape[-len(size) :], size)
    ]
    x, y = np.pad(x, pads), np.pad(y, pads)
    starts = []
    for ax, s in enumerate(size):
        dim = x.shape[x.ndim - len(size) + ax]
        hi = dim - s
        if centre is not None:
            c = int(centre[ax]) + pads[x.ndim - len(size) + ax][0]
            st = c - s // 2 + int(rng.integers(-s // 4, s // 4 + 1))
        else:
            st = int(rng.integers(0, hi + 1))
        starts.append(int(np.clip(st, 0, hi)))
    sl: tuple[Any, ...] = (Ellipsis, *[slice(a, a + s) for a, s in zip(starts, size)])
    return x[sl], y[sl]


def _samples_2d(arrays, cfg: UNetConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in arrays:
        pos = np.flatnonzero(y.any(axis=(1, 2)))
        neg = np.flatnonzero(~y.any(axis=(1, 2)))
        chosen_neg = rng.choice(neg, size=min(len(neg), max(1, len(pos))), replace=False) if len(neg) else []
        for z in list(pos) + list(chosen_neg):
            yy = y[z]
            centre = np.argwhere(yy).mean(axis=0) if yy.any() else None
            cx, cy = _crop(x[z], yy, cfg.roi_size, centre, rng)
            xs.append(cx)
            ys.append(cy)
    return np.stack(xs)[:, None], np.stack(ys)[:, None]


def _samples_3d(arrays, cfg: UNetConfig, rng, per_case: int = 8) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in arrays:
        vox = np.argwhere(y)
        for i in range(per_case):
            centre = vox[rng.integers(len(vox))] if (len(vox) and i % 2 == 0) else None
            cx, cy = _crop(x, y, cfg.roi_size, centre, rng)
            xs.append(cx)
            ys.append(cy)
    return np.stack(xs)[:, None], np.stack(ys)[:, None]


def _augment(x: np.ndarray, y: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    x, y = x.copy(), y.copy()
    nd = x.ndim - 2
    for ax in range(2, 2 + nd):
        flip = rng.random(len(x)) < 0.5
        x[flip] = np.flip(x[flip], axis=ax - 1)
        y[flip] = np.flip(y[flip], axis=ax - 1)
    scale = rng.uniform(0.9, 1.1, size=(len(x),) + (1,) * (x.ndim - 1)).astype(np.float32)
    return x * scale, y


def train(
    cases: Sequence[Case],
    config: UNetConfig,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
    initial_state: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a fresh U-Net on ``cases`` (PET in SUVbw with masks) and return it with its loss history.

    The seed drives a forked copy of torch's global generator (weight initialisation): the caller's
    random state and thread count are the same afterwards as before. ``initial_state`` (a partial
    ``state_dict``, e.g. a self-supervised encoder from :mod:`medlens.learn.ssl`) initialises those
    layers instead of the random initialisation.
    """
    torch = require("torch", extra="dl", purpose="the U-Net")

    if not cases:
        raise InputError("train: no training cases")
    with torch_threads(threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(
            cases,
            config,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            log=log,
            initial_state=initial_state,
        )


def _train(
    cases: Sequence[Case],
    config: UNetConfig,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    log: Callable[[str], None] | None,
    initial_state: Mapping[str, Any] | None,
) -> TrainResult:
    torch = require("torch", extra="dl", purpose="the U-Net")
    DiceCELoss = require("monai.losses", extra="dl", purpose="the U-Net").DiceCELoss

    rng = np.random.default_rng(seed)
    net = build_unet(config)
    if initial_state is not None:
        unexpected = sorted(set(initial_state) - set(net.state_dict()))
        if unexpected:
            raise InputError(f"initial_state has {len(unexpected)} layers the U-Net lacks (first: {unexpected[0]})")
        net.load_state_dict(dict(initial_state), strict=False)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    loss_fn = DiceCELoss(sigmoid=True)
    arrays = [_scaled(c, config) for c in cases]
    losses: list[float] = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        if config.spatial_dims == 2:
            xs, ys = _samples_2d(arrays, config, rng)
        else:
            xs, ys = _samples_3d(arrays, config, rng)
        xs, ys = _augment(xs, ys, rng)
        order = rng.permutation(len(xs))
        net.train()
        tot, n = 0.0, 0
        for i in range(0, len(order), batch_size):
            b = order[i : i + batch_size]
            xb = torch.from_numpy(np.ascontiguousarray(xs[b]))
            yb = torch.from_numpy(np.ascontiguousarray(ys[b]).astype(np.float32))
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
            n += len(b)
        losses.append(tot / max(n, 1))
        if log:
            log(f"epoch {ep + 1}/{epochs}: loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    net.eval()
    return TrainResult(net, config, losses, time.perf_counter() - t0)
