"""Self-supervised pretraining of the U-Net encoder on unlabelled slices: SimCLR and a masked autoencoder.

The encoder is the down path of :func:`medlens.segment.unet.build_unet` (:mod:`medlens.learn.encoders`),
so the pretrained weights initialise the segmentation U-Net layer for layer.

SimCLR (Chen et al. 2020)
    Two random views of every slice (random shift crop, flips, intensity x U(0.8, 1.2), Gaussian noise)
    pass the encoder, a 4 x 4 average pool and a two-layer projection head; the NT-Xent loss
    (:func:`nt_xent`) pulls the two views of one slice together and pushes the other slices of the
    batch away.
MAE (He et al. 2022, convolutional variant)
    ``mask_ratio`` of the ``patch`` x ``patch`` blocks of the input are zeroed; the whole U-Net (one output
    channel) reconstructs the slice and the loss is the mean squared error on the hidden blocks only.
    The encoder half is kept.

Data: axial 2D slices in network units (PET: ``clip(SUV, 0, 25) / 5``; CT: ``clip(HU, -1000, 1000) / 1000
+ 1``; MR: ``clip(I / P99.5, 0, 2)`` with ``P99.5`` the 99.5th percentile of the whole volume, a per-volume
scaling because MR signal has no physical unit), zero-padded to the window, centre-cropped or cut into
random windows (``crops``); no labels are read.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.learn._torch import keeps_torch_state

__all__ = [
    "INPUT_SPECS",
    "PretrainResult",
    "SSLMethod",
    "images_from_cohort",
    "load_pretrained_encoder",
    "network_input",
    "nt_xent",
    "pretrain",
    "save_pretrained",
    "simclr_loss",
    "slices_for_pretraining",
]


class SSLMethod(StrEnum):
    SIMCLR = "simclr"
    MAE = "mae"


#: How each modality's intensities enter the networks (recorded in every checkpoint's JSON).
INPUT_SPECS: dict[str, dict[str, Any]] = {
    "PT": {"modality": "PT", "units": Units.SUVBW, "scaling": "clip(SUV, 0, 25) / 5"},
    "CT": {"modality": "CT", "units": Units.HU, "scaling": "clip(HU, -1000, 1000) / 1000 + 1"},
    "MR": {
        "modality": "MR",
        "units": Units.ARBITRARY,
        "scaling": "clip(I / P99.5, 0, 2), P99.5 = 99.5th percentile of the whole volume (per-volume scaling)",
    },
}

#: Percentile of a volume that maps to 1 in the MR network input.
MR_PERCENTILE = 99.5


def network_input(image: Image | np.ndarray, modality: str) -> np.ndarray:
    """Intensities in network units for ``modality`` (``"PT"``, ``"CT"`` or ``"MR"``), float32.

    MR is scaled per volume (:data:`INPUT_SPECS`): pass the whole volume, not a slice or a crop.
    """
    a = np.asarray(image.array if isinstance(image, Image) else image, np.float32)
    if modality == "PT":
        return (np.clip(a, 0.0, 25.0) / 5.0).astype(np.float32)
    if modality == "CT":
        return (np.clip(a, -1000.0, 1000.0) / 1000.0 + 1.0).astype(np.float32)
    if modality == "MR":
        if not np.all(np.isfinite(a)):
            raise InputError("the MR image contains NaN or infinite values")
        top = float(np.percentile(a, MR_PERCENTILE))
        if not top > 0:
            raise InputError(
                f"the MR image's {MR_PERCENTILE}th percentile is {top:g}; expected positive MR signal "
                "(an empty or already normalised image?)"
            )
        return (np.clip(a / top, 0.0, 2.0)).astype(np.float32)
    raise InputError(f"modality must be one of {sorted(INPUT_SPECS)}, got {modality!r}")


def slices_for_pretraining(
    images: Sequence[Image],
    *,
    modality: str,
    size: int = 64,
    min_signal: float | None = None,
    crops: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Every axial slice of ``images`` with some signal, as ``size`` x ``size`` windows in network units.

    Parameters
    ----------
    images
        Images of ``modality`` (another modality is refused).
    min_signal
        A window is kept when at least 5 % of its pixels exceed this (network units; default 0.05 for
        PET, 0.1 for CT (HU > -900) and MR (10 % of the volume's 99.5th percentile)).
    crops
        1: the slice (if it has signal) centre-padded or centre-cropped; more: that many random
        windows per slice at native resolution (a slice smaller than ``size`` is zero-padded first),
        those without signal dropped; for CT/MR slices larger than the window.
    seed
        Seed of the random windows.

    Returns ``(n, size, size)`` float32.
    """
    if modality not in INPUT_SPECS:
        raise InputError(f"modality must be one of {sorted(INPUT_SPECS)}, got {modality!r}")
    if crops < 1:
        raise InputError(f"crops must be at least 1, got {crops}")
    thr = min_signal if min_signal is not None else (0.05 if modality == "PT" else 0.1)
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        if im.meta.modality and im.meta.modality != modality:
            raise InputError(
                f"{im.meta.source or 'image'}: modality {im.meta.modality!r}, "
                f"expected {modality!r} for this pretraining"
            )
        vol = network_input(im, modality)
        vol = vol[None] if vol.ndim == 2 else vol
        for s in vol:
            if crops == 1:
                if float(np.mean(s > thr)) < 0.05:
                    continue  # empty slices (outside the body) teach nothing
                out.append(_fit(s, size))
            else:
                p = np.pad(s, [(max(0, size - d) // 2, max(0, size - d) - max(0, size - d) // 2) for d in s.shape])
                ys = rng.integers(0, p.shape[0] - size + 1, size=crops)
                xs = rng.integers(0, p.shape[1] - size + 1, size=crops)
                for y, x in zip(ys, xs, strict=True):
                    w = p[y : y + size, x : x + size]
                    if float(np.mean(w > thr)) >= 0.05:
                        out.append(w)
    if not out:
        raise InputError("no slice with signal among the images given for pretraining")
    return np.stack(out).astype(np.float32)


def _fit(s: np.ndarray, size: int) -> np.ndarray:
    pads = [(max(0, size - d) // 2, max(0, size - d) - max(0, size - d) // 2) for d in s.shape]
    s = np.pad(s, pads)
    y0, x0 = (s.shape[0] - size) // 2, (s.shape[1] - size) // 2
    return s[y0 : y0 + size, x0 : x0 + size]


def nt_xent(z1: Any, z2: Any, *, temperature: float = 0.2) -> Any:
    """NT-Xent loss of SimCLR for two batches of embeddings ``(B, D)`` (row i of both = one sample).

    ``-log( exp(s_ii' / T) / sum_{k != i} exp(s_ik / T) )`` with cosine similarities ``s``, averaged
    over the ``2B`` views.
    """
    import torch

    if z1.shape != z2.shape or z1.ndim != 2:
        raise InputError(f"nt_xent needs two (B, D) batches of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise InputError(f"temperature must be positive, got {temperature}")
    b = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return torch.nn.functional.cross_entropy(sim, target)


def _views(batch: np.ndarray, rng: np.random.Generator, shift: int = 8) -> np.ndarray:
    n, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (shift, shift), (shift, shift)))
    out = np.empty_like(batch)
    for i in range(n):
        dy, dx = rng.integers(0, 2 * shift + 1, size=2)
        v = padded[i, dy : dy + h, dx : dx + w]
        if rng.random() < 0.5:
            v = v[:, ::-1]
        if rng.random() < 0.5:
            v = v[::-1]
        out[i] = v * rng.uniform(0.8, 1.2) + rng.normal(0.0, 0.05, size=v.shape)
    return out.astype(np.float32)


def _block_mask(shape: tuple[int, ...], patch: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    n, h, w = shape
    gh, gw = -(-h // patch), -(-w // patch)
    hidden = rng.random((n, gh, gw)) < ratio
    return np.kron(hidden, np.ones((patch, patch), bool))[:, :h, :w]


class PretrainResult:
    """The pretrained U-Net (encoder trained), its config, the method and the loss history."""

    def __init__(
        self, net: Any, config: Any, method: SSLMethod, losses: list[float], seconds: float, head: Any = None
    ) -> None:
        self.net = net
        self.head = head  # SimCLR projection head (not saved: only the encoder transfers)
        self.config = config
        self.method = method
        self.losses = losses
        self.seconds = seconds


@keeps_torch_state
def pretrain(
    slices: np.ndarray,
    *,
    method: SSLMethod | str = SSLMethod.SIMCLR,
    config: Any = None,
    steps: int = 300,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    temperature: float = 0.2,
    mask_ratio: float = 0.6,
    mask_patch: int = 8,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Self-supervised training of the U-Net encoder on ``slices`` ``(n, h, w)`` (network units).

    ``config`` is a :class:`medlens.segment.unet.UNetConfig` (default: the shipped lesion U-Net's
    architecture, 2D, channels (8, 16, 32, 64)); ``h, w`` must equal its ``roi_size``.
    """
    import torch

    from medlens.learn.encoders import encoder_forward
    from medlens.segment.unet.model import UNetConfig, build_unet

    try:
        meth = SSLMethod(method)
    except ValueError:
        raise InputError(f"method must be one of {[m.value for m in SSLMethod]}, got {method!r}") from None
    cfg = config or UNetConfig()
    x_all = np.asarray(slices, np.float32)
    if cfg.spatial_dims != 2:
        raise InputError("pretrain: only 2D encoders (spatial_dims=2) are supported")
    if x_all.ndim != 3 or tuple(x_all.shape[1:]) != tuple(cfg.roi_size):
        raise InputError(f"pretrain needs slices shaped (n, {cfg.roi_size[0]}, {cfg.roi_size[1]}), got {x_all.shape}")
    if len(x_all) < 2:
        raise InputError(f"pretrain needs at least 2 slices, got {len(x_all)}")
    if not 0 < mask_ratio < 1:
        raise InputError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_unet(cfg)
    params = list(net.parameters())
    head: Any = None
    if meth is SSLMethod.SIMCLR:
        head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(cfg.channels[-1] * 16, 128), torch.nn.ReLU(), torch.nn.Linear(128, 32)
        )
        params += list(head.parameters())
    opt = torch.optim.Adam(params, lr=learning_rate)
    bs = min(batch_size, len(x_all))
    losses, run = [], 0.0
    t0 = time.perf_counter()
    net.train()
    every = max(1, min(50, steps // 4))
    for step in range(steps):
        batch = x_all[rng.choice(len(x_all), size=bs, replace=False)]
        if meth is SSLMethod.SIMCLR:
            v1 = torch.from_numpy(_views(batch, rng)[:, None])
            v2 = torch.from_numpy(_views(batch, rng)[:, None])
            # a 4x4 pooled map, not a global mean: the encoder's instance norm makes every channel's mean ~constant
            z1 = head(torch.nn.functional.adaptive_avg_pool2d(encoder_forward(net, v1), 4))
            z2 = head(torch.nn.functional.adaptive_avg_pool2d(encoder_forward(net, v2), 4))
            loss = nt_xent(z1, z2, temperature=temperature)
        else:
            hidden = _block_mask(batch.shape, mask_patch, mask_ratio, rng)
            target = torch.from_numpy(batch[:, None])
            inp = torch.from_numpy(np.where(hidden, 0.0, batch).astype(np.float32)[:, None])
            hid = torch.from_numpy(hidden[:, None])
            loss = torch.sum(((net(inp) - target) ** 2) * hid) / torch.clamp(hid.sum(), min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        run += float(loss.detach())
        if (step + 1) % every == 0:
            losses.append(run / every)
            run = 0.0
            if log:
                log(f"{meth.value} step {step + 1}/{steps}: loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    net.eval()
    if head is not None:
        head.eval()
    return PretrainResult(net, cfg, meth, losses, time.perf_counter() - t0, head)


def simclr_loss(net: Any, head: Any, slices: np.ndarray, *, seed: int = 0, temperature: float = 0.2) -> float:
    """NT-Xent of ``net`` + ``head`` on two random views of ``slices`` ``(n, h, w)`` (one batch, no gradient)."""
    import torch

    from medlens.learn.encoders import encoder_forward

    rng = np.random.default_rng(seed)
    v1 = torch.from_numpy(_views(np.asarray(slices, np.float32), rng)[:, None])
    v2 = torch.from_numpy(_views(np.asarray(slices, np.float32), rng)[:, None])
    with torch.inference_mode():
        z1 = head(torch.nn.functional.adaptive_avg_pool2d(encoder_forward(net, v1), 4))
        z2 = head(torch.nn.functional.adaptive_avg_pool2d(encoder_forward(net, v2), 4))
        return float(nt_xent(z1, z2, temperature=temperature))


def save_pretrained(
    result: PretrainResult, path: str | os.PathLike[str], *, modality: str, info: dict[str, Any] | None = None
) -> Path:
    """Save the encoder half of a :class:`PretrainResult` as a ``unet-encoder`` checkpoint (``.pt`` + ``.json``)."""
    from medlens.learn.encoders import encoder_state, save_checkpoint

    if modality not in INPUT_SPECS:
        raise InputError(f"modality must be one of {sorted(INPUT_SPECS)}, got {modality!r}")
    arch = {"kind": "unet-encoder", "unet": result.config.to_dict(), "encoder_only": True, "ssl": result.method.value}
    meta = {"losses": result.losses, "seconds": round(result.seconds, 1), **(info or {})}
    return save_checkpoint(
        encoder_state(result.net), path, architecture=arch, input_spec=INPUT_SPECS[modality], info=meta
    )


def load_pretrained_encoder(path: str | os.PathLike[str], *, config: Any = None, modality: str | None = None) -> dict:
    """The encoder ``state_dict`` of an SSL checkpoint, checked against the U-Net ``config`` and ``modality``.

    Raises :class:`InputError` naming the file when the checkpoint is not a U-Net encoder, was made
    for another U-Net architecture, or for another modality.
    """
    from medlens.learn.encoders import load_checkpoint
    from medlens.segment.unet.model import UNetConfig

    ck = load_checkpoint(path, expect_kind="unet-encoder", encoder_only=True)
    found = UNetConfig.from_dict(dict(ck.architecture["unet"]))
    if config is not None:
        keys = ("spatial_dims", "channels", "strides", "num_res_units")
        exp = {k: getattr(config, k) for k in keys}
        got = {k: getattr(found, k) for k in keys}
        if exp != got:
            raise InputError(f"{path}: the encoder was pretrained for the U-Net {got}, expected {exp}")
    if modality is not None and ck.input.get("modality") != modality:
        raise InputError(
            f"{path}: the encoder was pretrained on {ck.input.get('modality')!r} images, expected {modality!r}; "
            "pretrain one on this modality with `medlens pretrain`"
        )
    from medlens.learn.encoders import encoder_state

    return encoder_state(ck.net)


#: Cohort CSV column of each modality's image series (paths relative to the CSV).
COHORT_COLUMNS = {"PT": "pet_image", "CT": "ct_image", "MR": "mr_image"}
#: Without that column: the series folder ``<patient_id>/<folder>`` beside the CSV (the STS layout), where present.
SERIES_FOLDERS = {"PT": "PET/image", "CT": "CT/image", "MR": "MR_T1/image"}


def images_from_cohort(cohort_csv: str | os.PathLike[str], *, modality: str) -> list[Image]:
    """Read every ``modality`` image series a cohort CSV lists (rows without one are skipped; no labels read).

    The series come from the column :data:`COHORT_COLUMNS` names; when the CSV has no such column but a
    ``patient_id`` one, from ``<patient_id>/<SERIES_FOLDERS[modality]>`` beside the CSV (the STS layout:
    ``STS_001/MR_T1/image``), for the patients that have that folder.
    """
    import csv

    import medlens

    p = Path(cohort_csv)
    if not p.is_file():
        raise InputError(f"{p}: cohort CSV not found")
    col = COHORT_COLUMNS.get(modality)
    if col is None:
        raise InputError(f"modality must be one of {sorted(COHORT_COLUMNS)}, got {modality!r}")
    with p.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and col in rows[0]:
        return [medlens.read_image(p.parent / r[col]) for r in rows if r.get(col)]
    if rows and "patient_id" in rows[0]:
        folders = [p.parent / r["patient_id"] / SERIES_FOLDERS[modality] for r in rows if r.get("patient_id")]
        found = [f for f in folders if f.exists()]
        if found:
            return [medlens.read_image(f) for f in found]
    raise InputError(
        f"{p}: no column {col!r} for {modality} images and no <patient_id>/{SERIES_FOLDERS[modality]} series "
        f"beside it; found columns {sorted(rows[0]) if rows else []}. Add a {col!r} column of series paths"
    )
