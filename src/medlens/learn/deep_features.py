"""Deep features of a lesion from a self-supervised encoder: another feature family beside IBSI radiomics.

For each axial slice that the mask touches, a ``roi`` window (64 x 64 for the shipped encoder)
centred on the mask's centroid in that slice goes through the encoder's down path; the bottleneck
map (64 channels, 8 x 8) is averaged over the mask (the mask resampled to the bottleneck grid by
area averaging: a weighted mean), then over slices, weighting each slice by its mask area.
Keys are ``deep_<checkpoint stem>_<channel>`` (``deep_sts_pet_simclr_000`` ... ``_063``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image
from medlens.learn._torch import keeps_torch_state

__all__ = ["DEFAULT_ENCODER", "deep_features"]

#: The shipped SimCLR encoder (STS FDG-PET, SUVbw).
DEFAULT_ENCODER = Path(__file__).resolve().parent / "weights" / "sts_pet_simclr.pt"

_CACHE: dict[str, tuple[float, object]] = {}


def _encoder(path: Path):  # type: ignore[no-untyped-def]
    from medlens.learn.encoders import load_checkpoint

    key, mtime = str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0
    hit = _CACHE.get(key)
    if hit is None or hit[0] != mtime:
        hit = (mtime, load_checkpoint(path, expect_kind="unet-encoder", encoder_only=True))
        _CACHE[key] = hit
    return hit[1]


@keeps_torch_state
def deep_features(
    image: Image, mask: Image, *, checkpoint: str | os.PathLike[str] | None = None, threads: int = 1
) -> dict[str, float]:
    """Mask-pooled bottleneck features of ``image`` inside ``mask`` (``{"deep_...": float}``).

    Parameters
    ----------
    image
        2D or 3D image of the modality and units the encoder was trained on (its JSON's ``input``;
        the shipped one: PET in SUVbw).
    mask
        Boolean mask on the image's grid, not empty.
    checkpoint
        A ``unet-encoder`` checkpoint (``.pt`` with its ``.json``); default :data:`DEFAULT_ENCODER`.

    Raises
    ------
    InputError
        Image of another modality/units than the encoder's, a mask on another grid or empty,
        a checkpoint of another architecture.
    """
    import torch

    from medlens.learn.encoders import check_input, encoder_forward
    from medlens.learn.ssl import network_input

    path = Path(checkpoint) if checkpoint is not None else DEFAULT_ENCODER
    ck = _encoder(path)
    check_input(image, ck.input, path=path)  # type: ignore[attr-defined]
    image.require_same_grid(mask, what="mask")
    m = np.asarray(mask.array, bool)
    if not m.any():
        raise InputError(f"deep_features: the mask of {image.meta.source or 'the image'} is empty")
    roi = tuple(int(s) for s in ck.architecture["unet"]["roi_size"])  # type: ignore[attr-defined]
    x = network_input(image, ck.input["modality"])  # type: ignore[attr-defined]
    x, m = (x[None], m[None]) if x.ndim == 2 else (x, m)
    torch.set_num_threads(max(1, int(threads)))
    wins, wmasks, weights = [], [], []
    for z in np.flatnonzero(m.any(axis=(1, 2))):
        cy, cx = np.argwhere(m[z]).mean(axis=0).round().astype(int)
        wins.append(_window(x[z], cy, cx, roi))
        wmasks.append(_window(m[z].astype(np.float32), cy, cx, roi))
        weights.append(float(m[z].sum()))
    xb = torch.from_numpy(np.stack(wins)[:, None])
    with torch.inference_mode():
        feat = encoder_forward(ck.net, xb)  # type: ignore[attr-defined]
        mk = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(np.stack(wmasks)[:, None]), feat.shape[-2:])
        pooled = (feat * mk).sum(dim=(2, 3)) / torch.clamp(mk.sum(dim=(2, 3)), min=1e-6)
    w = np.asarray(weights) / np.sum(weights)
    vec = (pooled.numpy() * w[:, None]).sum(axis=0)
    stem = path.stem
    return {f"deep_{stem}_{i:03d}": float(v) for i, v in enumerate(vec)}


def _window(a: np.ndarray, cy: int, cx: int, roi: tuple[int, ...]) -> np.ndarray:
    h, w = roi
    pad = ((h, h), (w, w))
    p = np.pad(a, pad)
    y0, x0 = cy + h - h // 2, cx + w - w // 2
    return np.ascontiguousarray(p[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)
