"""Synthetic 2D PET lesion patches *with* masks from a two-stage diffusion model, and how to judge them.

Generator (``diffusion-synth-pair``)
------------------------------------
Stage 1, the mask: a DDPM (MONAI ``DiffusionModelUNet``, one channel) on the GTV masks of the training
patients at ``mask_size`` x ``mask_size``, each mask represented by its clipped signed distance
``tanh(sdf / sdf_scale)`` (``sdf`` in patch pixels, positive inside; :func:`mask_to_sdf`), area-averaged
down to ``mask_size``. A smooth field is easier to learn than a binary map: trained on the binary
masks themselves (values -1/+1) the first run drew fragmented masks (4.7 components on average,
9 % accepted). Sampling clips the predicted ``x_0`` to [-1, 1] at every DDIM step (mask stage only);
a sampled field is upsampled (bilinear) to the patch size, thresholded, holes filled and only its
largest connected component kept (:func:`postprocess_mask`). The threshold is calibrated once after
training (:func:`calibrate_mask_threshold`, training masks only): the level at which the median area
of sampled masks equals the training masks' median (a short-trained DDPM draws fields biased towards
0, i.e. masks too large, at threshold 0: median 303 px against 148 px for the real crops).

Stage 2, the image given the mask ("ControlNet-lite"): a DDPM whose network sees the noisy image and
the clean binary mask (``+1`` inside, ``-1`` outside) as two input channels and predicts the noise of
the image only. Sampling runs the image stage on the *post-processed* mask, so every pair is
consistent by construction (the image is drawn for exactly the mask that is returned).

Both stages: linear betas, epsilon prediction, L2 loss, flips and 90-degree rotations applied jointly
to image and mask; DDIM (eta = 0) sampling from seeded noise. The image stage works on standardised
intensities (``(x - mean) / SD`` of the training crops, stored in the architecture) and its ``x_0``
estimates are clipped to the training crops' 0.1-99.9th percentile at every step; without both, the
first run's samples kept the bias of their first, noise-dominated ``x_0`` estimates (mean SUV 13 in
the mask and 8 in the background, against 3.3 and about 1 for the real crops).

Data: 2D axial crops of ``size`` x ``size`` (default 64) centred on the GTV centroid of each lesion
slice of the *training* patients, PET in network units ``clip(SUV, 0, 25) / 5`` (the scaling of the
shipped encoders and of the lesion U-Net).

Quality gate (:func:`quality_gate`)
-----------------------------------
A sampled pair is kept only when: the image is finite; the mask's area lies within the 1st-99th
percentile of the training masks' areas; the largest component holds at least ``min_largest_fraction``
of the raw thresholded foreground (not fragmented); the mask centroid lies within ``max_offset`` pixels
of the patch centre (the training crops are centred); the lesion-to-surround contrast (mean inside /
mean of a 3-pixel ring outside) is at least the 1st percentile of the training patches'. The report
(:func:`sample_pairs`) counts every rejection reason.

Judging
-------
:func:`frechet_distance` (Frechet / FID formula on feature vectors), :func:`encoder_features`
(mask-pooled bottleneck of the shipped SimCLR PET encoder) and :func:`first_order_features` (IBSI
first-order statistics of the SUVs in the mask plus area and compactness).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError, require

__all__ = [
    "KIND",
    "PairGenerator",
    "SampledPairs",
    "build_pair_nets",
    "calibrate_mask_threshold",
    "encoder_features",
    "first_order_features",
    "frechet_distance",
    "frechet_from_moments",
    "gtv_patches",
    "load_generator",
    "mask_to_sdf",
    "postprocess_mask",
    "quality_gate",
    "reference_stats",
    "sample_pairs",
    "save_generator",
    "train_generator",
]

KIND = "diffusion-synth-pair"
FIRST_ORDER_NAMES = ("mean", "sd", "skewness", "kurtosis", "p10", "p90", "max", "area_px", "compactness")


# ---- data ------------------------------------------------------------------------------------------


def gtv_patches(
    cases: Sequence[Any], *, size: int = 64, min_area: int = 4, suv_clip: float = 25.0, suv_scale: float = 5.0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Crops ``size`` x ``size`` centred on the GTV of every lesion slice of ``cases``.

    ``cases`` are :class:`medlens.segment.unet.Case` (PET in SUVbw and its mask). Slices whose mask has
    fewer than ``min_area`` pixels are skipped. Returns images ``(n, 1, size, size)`` float32 in network
    units (``clip(SUV, 0, suv_clip) / suv_scale``), masks ``(n, 1, size, size)`` bool and the patient id
    of every patch.
    """
    ims, mks, ids = [], [], []
    for c in cases:
        x = (np.clip(np.asarray(c.image.array, np.float32), 0.0, suv_clip) / suv_scale).astype(np.float32)
        m = np.asarray(c.mask.array, bool)
        if x.ndim != 3 or m.shape != x.shape:
            raise InputError(f"{c.patient_id}: gtv_patches needs a 3D PET and a mask of its shape, got {x.shape}")
        for z in np.flatnonzero(m.sum(axis=(1, 2)) >= min_area):
            cy, cx = np.argwhere(m[z]).mean(axis=0).round().astype(int)
            ims.append(_window(x[z], cy, cx, size))
            mks.append(_window(m[z].astype(np.float32), cy, cx, size) > 0.5)
            ids.append(str(c.patient_id))
    if not ims:
        raise InputError(f"gtv_patches: no slice with a mask of at least {min_area} pixels in {len(cases)} cases")
    return np.stack(ims)[:, None], np.stack(mks)[:, None], ids


def _window(a: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    p = np.pad(a, ((size, size), (size, size)))
    y0, x0 = cy + size - size // 2, cx + size - size // 2
    return np.ascontiguousarray(p[y0 : y0 + size, x0 : x0 + size], dtype=np.float32)


# ---- mask post-processing and the quality gate -----------------------------------------------------


def mask_to_sdf(mask: np.ndarray, *, scale: float = 3.0) -> np.ndarray:
    """``tanh(sdf / scale)`` of a 2D boolean mask: ``sdf`` = distance to the background inside (positive)
    minus the distance to the mask outside (Euclidean, pixels). Its zero level set is the mask boundary:
    ``mask_to_sdf(m) > 0`` gives ``m`` back. An empty mask maps to -1 everywhere.
    """
    from scipy import ndimage

    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise InputError(f"mask_to_sdf needs one 2D mask, got shape {m.shape}")
    if not m.any():
        return -np.ones(m.shape, np.float32)
    if m.all():
        return np.ones(m.shape, np.float32)
    inside = ndimage.distance_transform_edt(m)
    outside = ndimage.distance_transform_edt(~m)
    sdf = np.where(m, inside - 0.5, -(outside - 0.5))
    return np.tanh(sdf / float(scale)).astype(np.float32)


def postprocess_mask(soft: np.ndarray, *, threshold: float = 0.0) -> tuple[np.ndarray, float]:
    """Binary mask from a sampled mask channel: ``> threshold``, holes filled, largest component only.

    Returns the mask (bool, the shape of ``soft``, 2D) and the fraction of the thresholded foreground
    that the largest component holds (1.0 for one component, 0.0 for an empty mask).
    """
    from scipy import ndimage

    a = np.asarray(soft)
    if a.ndim != 2:
        raise InputError(f"postprocess_mask needs one 2D mask, got shape {a.shape}")
    raw = a > threshold
    total = int(raw.sum())
    if total == 0:
        return raw, 0.0
    lab, _ = ndimage.label(raw)
    sizes = np.bincount(lab.ravel())[1:]
    keep = lab == (int(np.argmax(sizes)) + 1)
    frac = float(sizes.max() / total)
    return ndimage.binary_fill_holes(keep), frac


def _ring_contrast(image: np.ndarray, mask: np.ndarray, width: int = 3) -> float:
    from scipy import ndimage

    if not mask.any():
        return float("nan")
    ring = ndimage.binary_dilation(mask, iterations=width) & ~mask
    inside = float(image[mask].mean())
    outside = float(image[ring].mean()) if ring.any() else 0.0
    return inside / max(outside, 1e-3)


def reference_stats(images: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Bounds of the quality gate from real training patches ``(n, 1, h, w)``: area and contrast percentiles."""
    m = np.asarray(masks, bool)[:, 0]
    x = np.asarray(images, np.float32)[:, 0]
    areas = m.sum(axis=(1, 2))
    contrast = np.array([_ring_contrast(a, b) for a, b in zip(x, m, strict=True)])
    contrast = contrast[np.isfinite(contrast)]
    inside = np.array([float(a[b].mean()) for a, b in zip(x, m, strict=True) if b.any()])
    return {
        "mean_lo": float(np.percentile(inside, 1)),
        "mean_hi": float(np.percentile(inside, 99)),
        "area_lo": float(np.percentile(areas, 1)),
        "area_hi": float(np.percentile(areas, 99)),
        "area_median": float(np.median(areas)),
        "contrast_lo": float(np.percentile(contrast, 1)) if contrast.size else 0.0,
        "contrast_median": float(np.median(contrast)) if contrast.size else 0.0,
        "n_patches": len(m),
    }


def quality_gate(
    image: np.ndarray,
    mask: np.ndarray,
    largest_fraction: float,
    ref: Mapping[str, float],
    *,
    min_largest_fraction: float = 0.9,
    max_offset: float = 8.0,
    intensity: bool = False,
) -> list[str]:
    """Reasons to reject one synthetic pair (2D ``image`` in network units, 2D bool ``mask``); empty = keep.

    ``intensity``: also reject a mean inside the mask outside the training crops' 1st-99th percentile.
    """
    reasons = []
    if not np.all(np.isfinite(image)):
        return ["non-finite image"]
    area = float(mask.sum())
    if area == 0:
        return ["empty mask"]
    if not ref["area_lo"] <= area <= ref["area_hi"]:
        reasons.append("area out of range")
    if largest_fraction < min_largest_fraction:
        reasons.append("fragmented mask")
    cy, cx = np.argwhere(mask).mean(axis=0)
    h, w = mask.shape
    if np.hypot(cy - (h - 1) / 2, cx - (w - 1) / 2) > max_offset:
        reasons.append("off-centre mask")
    if _ring_contrast(image, mask) < ref["contrast_lo"]:
        reasons.append("low lesion contrast")
    if intensity and not ref["mean_lo"] <= float(image[mask].mean()) <= ref["mean_hi"]:
        reasons.append("lesion intensity out of range")
    return reasons


# ---- networks --------------------------------------------------------------------------------------


def _diffusion_unet(in_channels: int, channels: Sequence[int], num_res_blocks: int) -> Any:
    require("monai", extra="dl", purpose="the diffusion model")
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=int(in_channels),
        out_channels=1,
        channels=tuple(int(c) for c in channels),
        attention_levels=(False,) * len(channels),
        num_res_blocks=int(num_res_blocks),
        norm_num_groups=min(16, min(int(c) for c in channels)),
    )


def build_pair_nets(arch: Mapping[str, Any]) -> Any:
    """``torch.nn.ModuleDict`` ``{"mask": 1-channel DDPM net, "image": 2-channel (image, mask) DDPM net}``."""
    import torch

    return torch.nn.ModuleDict(
        {
            "mask": _diffusion_unet(1, arch["mask_channels"], int(arch["num_res_blocks"])),
            "image": _diffusion_unet(2, arch["image_channels"], int(arch["num_res_blocks"])),
        }
    )


@dataclass
class PairGenerator:
    """The two trained stages, their scheduler, the architecture and the quality-gate reference."""

    nets: Any
    architecture: dict[str, Any]
    reference: dict[str, float]
    losses: dict[str, list[float]] = field(default_factory=dict)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        from medlens.learn.diffusion import make_scheduler

        sched = make_scheduler(int(self.architecture["num_train_timesteps"]))
        return np.asarray(sched.alphas_cumprod.numpy(), np.float64)


def _check_pairs(images: np.ndarray, masks: np.ndarray, size_div: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(images, np.float32)
    m = np.asarray(masks)
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(
            f"train_generator: images must be shaped (n, 1, h, w) (one PET channel), got {x.shape}; "
            "pass the image and the mask as two separate arrays"
        )
    if m.shape != x.shape:
        raise InputError(f"train_generator: masks must have the images' shape {x.shape}, got {m.shape}")
    if m.dtype != bool and not np.isin(np.unique(m), (0, 1)).all():
        raise InputError("train_generator: masks must be binary (bool or 0/1)")
    if x.shape[2] != x.shape[3] or x.shape[2] % size_div:
        raise InputError(
            f"train_generator: patches must be square with a side divisible by {size_div}, got {x.shape[2:]}"
        )
    if len(x) < 2:
        raise InputError(f"train_generator: need at least 2 patches, got {len(x)}")
    return x, m.astype(bool)


def _dihedral(a: np.ndarray, k: np.ndarray, flip: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    for i in range(len(a)):
        v = np.rot90(a[i], int(k[i]), axes=(-2, -1))
        out[i] = v[..., ::-1] if flip[i] else v
    return out


def train_generator(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    mask_size: int = 8,
    mask_channels: tuple[int, ...] = (16, 32, 32),
    image_channels: tuple[int, ...] = (16, 32, 32),
    num_res_blocks: int = 1,
    num_train_timesteps: int = 1000,
    sdf_scale: float = 3.0,
    mask_steps: int = 800,
    image_steps: int = 1200,
    batch_size: int = 16,
    mask_batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> PairGenerator:
    """Train both stages on real pairs: ``images`` ``(n, 1, s, s)`` network units, ``masks`` the same shape.

    ``s`` must be ``mask_size`` times a power of two (the mask stage works at ``mask_size``) and both
    sizes divisible by ``2 ** (len(channels) - 1)``.
    """
    import torch

    div = 2 ** (max(len(mask_channels), len(image_channels)) - 1)
    x, m = _check_pairs(images, masks, div)
    size = int(x.shape[2])
    factor = size // int(mask_size)
    if factor < 1 or factor * int(mask_size) != size or mask_size % div:
        raise InputError(
            f"mask_size {mask_size} must divide the patch size {size} and be divisible by {div} "
            f"(channels {list(mask_channels)})"
        )
    arch = {
        "kind": KIND,
        "size": size,
        "mask_size": int(mask_size),
        "mask_channels": [int(c) for c in mask_channels],
        "image_channels": [int(c) for c in image_channels],
        "num_res_blocks": int(num_res_blocks),
        "num_train_timesteps": int(num_train_timesteps),
        "schedule": "linear_beta",
        "mask_representation": f"tanh(sdf / {float(sdf_scale):g})",
    }
    m_pm = m.astype(np.float32) * 2 - 1  # +1 inside, -1 outside: the condition of the image stage
    # the image stage works on standardised intensities (zero mean, unit SD over the training crops);
    # without it the DDIM trajectory kept the bias of its first x_0 estimates (backgrounds of SUV 8)
    shift, scale = float(x.mean()), float(x.std()) or 1.0
    xd = (x - shift) / scale
    arch["image_shift"], arch["image_scale"] = shift, scale
    arch["image_clip"] = [float(np.percentile(xd, 0.1)), float(np.percentile(xd, 99.9))]
    sdf = np.stack([mask_to_sdf(a[0], scale=sdf_scale) for a in m])[:, None]
    small = sdf.reshape(len(m), 1, mask_size, factor, mask_size, factor).mean(axis=(3, 5))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_pair_nets(arch)
    from medlens.learn.diffusion import make_scheduler

    sched = make_scheduler(num_train_timesteps)
    losses = {
        "mask": _train_eps(
            nets["mask"], sched, small, None, mask_steps, mask_batch_size, learning_rate, seed, log, "mask"
        ),
        "image": _train_eps(
            nets["image"], sched, xd, m_pm, image_steps, batch_size, learning_rate, seed + 1, log, "image"
        ),
    }
    nets.eval()
    gen = PairGenerator(nets, arch, reference_stats(x, m), losses)
    gen.reference["mask_threshold"] = calibrate_mask_threshold(gen, seed=seed)
    if log:
        log(f"mask threshold calibrated to {gen.reference['mask_threshold']:+.2f}")
    return gen


def _sample_fields(gen: PairGenerator, n: int, seed: int, n_steps: int) -> np.ndarray:
    """Mask-stage fields ``(n, size, size)``: DDIM from seeded noise, upsampled (bilinear) to the patch size."""
    import torch

    size, msize = int(gen.architecture["size"]), int(gen.architecture["mask_size"])
    abar = torch.as_tensor(gen.alphas_cumprod, dtype=torch.float32)
    ts = [int(t) for t in np.unique(np.linspace(len(abar) - 1, 0, int(n_steps)).round().astype(int))[::-1]]
    z = torch.randn((n, 1, msize, msize), generator=torch.Generator().manual_seed(int(seed)))
    soft = _ddim(gen.nets["mask"], abar, z, ts, clip=(-1.0, 1.0))
    soft = torch.nn.functional.interpolate(soft, size=(size, size), mode="bilinear", align_corners=False)
    return np.asarray(soft.numpy()[:, 0])


def calibrate_mask_threshold(gen: PairGenerator, *, n: int = 256, seed: int = 0, n_steps: int = 25) -> float:
    """The level in [-0.9, 0.9] at which sampled masks' median area is closest to the training median.

    Uses ``n`` mask-stage samples (noise seeded ``seed + 7919``) and the generator's training reference
    only (``gen.reference["area_median"]``); empty masks count as area 0.
    """
    fields = _sample_fields(gen, n, seed + 7919, n_steps)
    target = float(gen.reference["area_median"])
    best, best_err = 0.0, float("inf")
    for level in np.round(np.linspace(-0.9, 0.9, 37), 3):
        areas = [postprocess_mask(f, threshold=float(level))[0].sum() for f in fields]
        err = abs(float(np.median(areas)) - target)
        if err < best_err:
            best, best_err = float(level), err
    return best


def _train_eps(
    net: Any,
    sched: Any,
    x0_all: np.ndarray,
    cond_all: np.ndarray | None,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[str], None] | None,
    name: str,
) -> list[float]:
    import torch

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    T = int(sched.num_train_timesteps)
    losses, run, count = [], 0.0, 0
    net.train()
    for step in range(int(steps)):
        idx = rng.integers(len(x0_all), size=batch_size)
        k, flip = rng.integers(4, size=batch_size), rng.random(batch_size) < 0.5
        x0 = torch.from_numpy(np.ascontiguousarray(_dihedral(x0_all[idx], k, flip)))
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, T, (batch_size,), generator=gen)
        xt = sched.add_noise(original_samples=x0, noise=noise, timesteps=t)
        if cond_all is not None:
            xt = torch.cat([xt, torch.from_numpy(np.ascontiguousarray(_dihedral(cond_all[idx], k, flip)))], dim=1)
        opt.zero_grad()
        loss = torch.mean((net(xt, timesteps=t) - noise) ** 2)
        loss.backward()
        opt.step()
        run += float(loss.detach())
        count += 1
        if count == 100 or step + 1 == steps:
            losses.append(run / count)
            run, count = 0.0, 0
            if log:
                log(f"{name} stage step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    net.eval()
    return losses


# ---- sampling --------------------------------------------------------------------------------------


def _ddim(
    net: Any, abar: Any, x: Any, ts: Sequence[int], cond: Any = None, clip: tuple[float, float] | None = None
) -> Any:
    import torch

    with torch.inference_mode():
        for i, t in enumerate(ts):
            a_t = abar[t]
            inp = x if cond is None else torch.cat([x, cond], dim=1)
            eps = net(inp, timesteps=torch.full((x.shape[0],), int(t), dtype=torch.long))
            x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
            if clip is not None:  # x_0 kept in the data's range; eps re-derived so the step stays consistent
                x0 = torch.clamp(x0, clip[0], clip[1])
                eps = (x - torch.sqrt(a_t) * x0) / torch.sqrt(1 - a_t)
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev) * eps
    return x


@dataclass
class SampledPairs:
    """Accepted synthetic pairs and the quality report."""

    images: np.ndarray  # (n, 1, s, s) float32, network units
    masks: np.ndarray  # (n, 1, s, s) bool
    report: dict[str, Any]


def sample_pairs(
    gen: PairGenerator,
    n: int,
    *,
    seed: int = 0,
    n_steps: int = 25,
    mask_steps: int = 50,
    clip_image: bool = True,
    base_images: np.ndarray | None = None,
    strength: float = 0.5,
    batch_size: int = 64,
    max_batches: int = 20,
    gate: bool = True,
    min_largest_fraction: float = 0.9,
    max_offset: float = 8.0,
    gate_intensity: bool = False,
) -> SampledPairs:
    """Draw pairs (mask stage, post-processing, image stage on the final mask) until ``n`` pass the gate.

    ``n_steps`` DDIM steps for the image stage, ``mask_steps`` for the (small, cheap) mask stage;
    ``clip_image``: clip the image stage's ``x_0`` estimates to the training range (0.1-99.9th percentile).

    Deterministic for a given ``seed`` (batch ``b``: mask noise seeded ``seed * 1000 + b``, image noise
    ``seed * 1000 + b + 500``); the mask threshold is the calibrated ``gen.reference["mask_threshold"]``. Stops after
    ``max_batches`` batches even when fewer than ``n`` passed (the report says so). ``gate=False`` keeps
    every non-empty mask (the post-processing still applies).
    """
    import torch

    if n < 1:
        raise InputError(f"sample_pairs: n must be >= 1, got {n}")
    arch = gen.architecture
    size = int(arch["size"])
    abar = torch.as_tensor(gen.alphas_cumprod, dtype=torch.float32)
    T = len(abar)
    ts = [int(t) for t in np.unique(np.linspace(T - 1, 0, int(n_steps)).round().astype(int))[::-1]]
    level = float(gen.reference.get("mask_threshold", 0.0))
    lo, hi = (float(v) for v in arch["image_clip"])
    clip = (lo, hi) if clip_image else None
    shift, scale = float(arch["image_shift"]), float(arch["image_scale"])
    if base_images is not None:
        base = np.asarray(base_images, np.float32)
        if base.ndim != 4 or base.shape[1:] != (1, size, size):
            raise InputError(f"sample_pairs: base_images must be (n, 1, {size}, {size}), got {base.shape}")
        if not 0 < strength <= 1:
            raise InputError(f"sample_pairs: strength must be in (0, 1], got {strength}")
        t_start = round(strength * (T - 1))
        ts = [int(t) for t in np.unique(np.linspace(t_start, 0, int(n_steps)).round().astype(int))[::-1]]
    kept_x: list[np.ndarray] = []
    kept_m: list[np.ndarray] = []
    reasons: dict[str, int] = {}
    n_drawn, fractions, n_components = 0, [], []
    for b in range(int(max_batches)):
        if len(kept_x) >= n:
            break
        g = torch.Generator().manual_seed(int(seed) * 1000 + b + 500)
        soft_np = _sample_fields(gen, batch_size, int(seed) * 1000 + b, mask_steps)
        zx = torch.randn((batch_size, 1, size, size), generator=g)
        if base_images is not None:  # SDEdit: a real crop, standardised, noised to t_start
            pick = np.random.default_rng(int(seed) * 1000 + b).integers(len(base), size=batch_size)
            x0b = torch.from_numpy((base[pick] - shift) / scale)
            a0 = abar[t_start]
            zx = torch.sqrt(a0) * x0b + torch.sqrt(1 - a0) * zx
        masks = np.zeros((batch_size, size, size), bool)
        for i in range(batch_size):
            masks[i], frac = postprocess_mask(soft_np[i], threshold=level)
            fractions.append(frac)
            n_components.append(_n_components(soft_np[i] > 0))
        cond = torch.from_numpy(masks[:, None].astype(np.float32) * 2 - 1)
        xd = _ddim(gen.nets["image"], abar, zx, ts, cond=cond, clip=clip).numpy()[:, 0]
        imgs = np.clip(xd * scale + shift, 0.0, 5.0)
        for i in range(batch_size):
            n_drawn += 1
            if gate:
                why = quality_gate(
                    imgs[i],
                    masks[i],
                    fractions[-batch_size + i],
                    gen.reference,
                    min_largest_fraction=min_largest_fraction,
                    max_offset=max_offset,
                    intensity=gate_intensity,
                )
            else:
                why = [] if masks[i].any() else ["empty mask"]
            for r in why:
                reasons[r] = reasons.get(r, 0) + 1
            if not why and len(kept_x) < n:
                kept_x.append(imgs[i])
                kept_m.append(masks[i])
    if not kept_x:
        raise InputError(f"sample_pairs: none of {n_drawn} samples passed the quality gate ({reasons})")
    xs = np.stack(kept_x)[:, None].astype(np.float32)
    ms = np.stack(kept_m)[:, None]
    areas = ms[:, 0].sum(axis=(1, 2))
    report = {
        "requested": int(n),
        "accepted": len(kept_x),
        "drawn": n_drawn,
        "acceptance_rate": len(kept_x) / n_drawn if gate else 1.0,
        "rejections": reasons,
        "raw_components_mean": float(np.mean(n_components)),
        "largest_fraction_mean": float(np.mean(fractions)),
        "area_median": float(np.median(areas)),
        "area_iqr": [float(np.percentile(areas, 25)), float(np.percentile(areas, 75))],
        "reference": dict(gen.reference),
        "seed": int(seed),
        "ddim_steps": int(n_steps),
        "mask_ddim_steps": int(mask_steps),
        "gate": bool(gate),
        "gate_intensity": bool(gate and gate_intensity),
    }
    return SampledPairs(xs, ms, report)


def _n_components(a: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(a)[1])


# ---- checkpoints -----------------------------------------------------------------------------------


def save_generator(gen: PairGenerator, path: str | os.PathLike[str], *, info: Mapping[str, Any] | None = None) -> Path:
    """Write the two stages as one ``medlens-learn/1`` checkpoint (``.pt`` + ``.json``), atomically."""
    from medlens.learn.encoders import save_checkpoint
    from medlens.learn.ssl import INPUT_SPECS

    doc = {"reference": dict(gen.reference), "losses": dict(gen.losses), **dict(info or {})}
    return save_checkpoint(
        gen.nets.state_dict(), path, architecture=gen.architecture, input_spec=INPUT_SPECS["PT"], info=doc
    )


def load_generator(path: str | os.PathLike[str]) -> PairGenerator:
    """Load a generator saved by :func:`save_generator` (kind, hash and every tensor shape checked).

    Raises :class:`InputError` naming the file for a checkpoint of another kind or architecture.
    """
    from medlens.learn.encoders import load_checkpoint

    ck = load_checkpoint(path, expect_kind=KIND)
    ref = ck.info.get("reference")
    if not isinstance(ref, dict) or "area_lo" not in ref:
        raise InputError(f"{path}: the checkpoint's JSON has no quality-gate reference (info.reference)")
    return PairGenerator(ck.net, dict(ck.architecture), dict(ref), dict(ck.info.get("losses", {})))


# ---- feature distributions -------------------------------------------------------------------------


def frechet_from_moments(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the squared 2-Wasserstein distance of two Gaussians."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"frechet: means {mu1.shape}/{mu2.shape} and covariances {s1.shape}/{s2.shape} do not match")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):  # near-singular product: regularise as in the FID reference code
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(max(0.0, d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to feature sets ``a`` ``(n, d)`` and ``b`` ``(m, d)``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"frechet_distance needs two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise InputError(f"frechet_distance needs at least 2 rows in each set, got {len(a)} and {len(b)}")
    return frechet_from_moments(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def first_order_features(images: np.ndarray, masks: np.ndarray, *, suv_scale: float = 5.0) -> np.ndarray:
    """Per patch: IBSI first-order statistics of the SUVs in the mask, its area (pixels) and compactness.

    Columns :data:`FIRST_ORDER_NAMES`: mean, SD, skewness, (excess) kurtosis, 10th and 90th percentile,
    maximum (SUV), area, compactness ``4 pi area / perimeter^2`` (perimeter: boundary pixel edges).
    """
    x = np.asarray(images, np.float64)[:, 0] * suv_scale
    m = np.asarray(masks, bool)[:, 0]
    out = np.zeros((len(x), len(FIRST_ORDER_NAMES)))
    for i, (im, mk) in enumerate(zip(x, m, strict=True)):
        v = im[mk]
        if v.size == 0:
            out[i] = np.nan
            continue
        mu, sd = v.mean(), v.std()
        z = (v - mu) / sd if sd > 0 else np.zeros_like(v)
        p = np.pad(mk, 1)
        perim = sum(int(np.sum(p & ~np.roll(p, s, axis=a))) for a in (0, 1) for s in (1, -1))
        out[i] = [
            mu,
            sd,
            float(np.mean(z**3)),
            float(np.mean(z**4) - 3),
            *np.percentile(v, [10, 90]),
            v.max(),
            v.size,
            4 * np.pi * v.size / perim**2,
        ]
    return out


def encoder_features(
    images: np.ndarray, masks: np.ndarray, *, checkpoint: str | os.PathLike[str] | None = None, batch: int = 128
) -> np.ndarray:
    """Mask-pooled bottleneck (64 values) of the shipped SimCLR PET encoder for patches ``(n, 1, 64, 64)``.

    The pooling is that of :func:`medlens.learn.deep_features` (the mask area-averaged to the 8 x 8 grid).
    """
    import torch

    from medlens.learn.deep_features import DEFAULT_ENCODER
    from medlens.learn.encoders import encoder_forward, load_checkpoint

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_ENCODER
    ck = load_checkpoint(path, expect_kind="unet-encoder", encoder_only=True)
    roi = tuple(int(s) for s in ck.architecture["unet"]["roi_size"])
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != roi:
        raise InputError(f"encoder_features: patches must be (n, 1, {roi[0]}, {roi[1]}) for {path.name}, got {x.shape}")
    m = np.asarray(masks, np.float32)
    feats = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            f = encoder_forward(ck.net, torch.from_numpy(np.ascontiguousarray(x[i : i + batch])))
            mk = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(m[i : i + batch]), f.shape[-2:])
            feats.append(((f * mk).sum(dim=(2, 3)) / torch.clamp(mk.sum(dim=(2, 3)), min=1e-6)).numpy())
    return np.concatenate(feats).astype(np.float64)
