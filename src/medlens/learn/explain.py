"""Grad-CAM explanations (MONAI ``GradCAM`` / ``GradCAMpp``) for the lesion U-Net and a patch classifier.

* :func:`gradcam_unet` explains the shipped 2D PET U-Net (:mod:`medlens.segment.unet`) slice by slice. The
  target is the lesion logit summed over the predicted mask of the slice (a segmentation Grad-CAM in the
  sense of Vinogradova et al., AAAI 2020), so the map answers "which features made the network call these
  pixels lesion". Slices without a predicted lesion get a zero map.
* :func:`train_patch_classifier` trains a small 2D CNN (:func:`build_patch_classifier`) on PET patches,
  lesion vs background (:func:`lesion_patches`), and :func:`gradcam_patches` explains its "lesion" logit.
* :func:`randomisation_check` is the model-parameter randomisation test of Adebayo et al., "Sanity Checks
  for Saliency Maps", NeurIPS 2018: the layers are re-initialised one after another from the output
  backwards (cascading), the map is recomputed after each step, and its Spearman rank correlation with the
  map of the trained model is reported. A map that does not change when the weights are destroyed
  explains the input, not the model.

Maps are returned on the input's grid as float32 :class:`~medlens.core.image.Image` in ``[0, 1]`` (each
slice or patch divided by its maximum; MONAI's default post-processing, which flips the scale, is not
used), written as NIfTI with :func:`medlens.io.write_image` and drawn as PNG overlays by
:func:`overlay_png`.

torch and MONAI are imported inside the functions.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError, ProcessingError, require
from medlens.core.image import Image, Units
from medlens.learn._torch import keeps_torch_state

__all__ = [
    "UNET_TARGET_LAYER",
    "RandomisationStep",
    "build_patch_classifier",
    "gradcam_patches",
    "gradcam_unet",
    "lesion_patches",
    "overlay_png",
    "randomisation_check",
    "spearman",
    "train_patch_classifier",
]

#: Default Grad-CAM layer of the MONAI U-Net: the second encoder block (half resolution, 16 channels).
#: Chosen on STS_021..030 (patients no test uses) by the map's mass inside the expert lesion relative to a
#: uniform map: median 4.0x here; 1.0x for the half-resolution decoder block ``model.1.submodule.2``,
#: whose transposed convolution leaves a row/column checkerboard in the map; 0x for the first block
#: ``model.0``. The bottleneck (1/8 resolution, 6 x 6 on a 48 x 48 slice) is too coarse for small lesions.
UNET_TARGET_LAYER = "model.1.submodule.0"
#: Grad-CAM layer of :func:`build_patch_classifier`: the last convolution block (1/4 resolution).
CLASSIFIER_TARGET_LAYER = "features.conv3"


def _require_monai() -> None:
    require("torch", extra="dl", purpose="Grad-CAM")
    require("monai", extra="dl", purpose="Grad-CAM")


def _cam_class(method: str) -> Any:
    from monai.visualize import GradCAM, GradCAMpp

    if method == "gradcam":
        return GradCAM
    if method == "gradcampp":
        return GradCAMpp
    raise InputError(f"method must be 'gradcam' or 'gradcampp', got {method!r}")


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Divide each map (axis 0) by its maximum; all-zero maps stay zero."""
    flat = maps.reshape(maps.shape[0], -1)
    peak = flat.max(axis=1)
    out = np.zeros_like(flat, dtype=np.float32)
    ok = peak > 0
    out[ok] = flat[ok] / peak[ok, None]
    return out.reshape(maps.shape)


def _layer_names(net: Any) -> list[str]:
    return [n for n, _ in net.named_modules() if n]


def _check_layer(net: Any, layer: str) -> None:
    names = _layer_names(net)
    if layer not in names:
        raise InputError(f"target layer {layer!r} is not in the network; some of its layers: {names[:12]} ...")


def _raw_cam(
    net: Any, x: Any, *, target_layer: str, method: str, class_idx: int = 0, target: Callable[[Any], Any] | None = None
) -> np.ndarray:
    """Grad-CAM maps ``(B, *spatial)`` of ``net`` on ``x`` (``(B, C, *spatial)``), upsampled to the input size.

    ``target`` turns the network output into per-sample scores ``(B, K)`` (default: the output itself);
    the map explains score ``class_idx``.
    """
    import torch

    class _Scored(torch.nn.Module):
        def __init__(self, inner: Any, fn: Callable[[Any], Any] | None) -> None:
            super().__init__()
            self.inner = inner
            self.fn = fn

        def forward(self, inp: Any) -> Any:
            out = self.inner(inp)
            return out if self.fn is None else self.fn(out)

    _check_layer(net, target_layer)
    wrapped = _Scored(net, target)
    cam = _cam_class(method)(nn_module=wrapped, target_layers="inner." + target_layer, postprocessing=lambda m: m)
    with torch.enable_grad():
        if method == "gradcampp":
            # MONAI's GradCAM++ broadcasts the (B,) score against the map's last axis: one sample at a time
            maps = torch.cat([cam(x[i : i + 1], class_idx=class_idx) for i in range(x.shape[0])])
        else:
            maps = cam(x, class_idx=class_idx)
    return _normalise(maps.detach().cpu().numpy()[:, 0])


# ---- the U-Net ---------------------------------------------------------------------------------------


def _unet_input(image: Image, cfg: Any) -> tuple[np.ndarray, tuple[slice, ...]]:
    from medlens.segment.unet.data import pad_to

    if image.ndim != 3:
        raise InputError(f"gradcam_unet needs a 3D PET volume (z, y, x), got shape {image.shape}")
    x = (np.clip(np.asarray(image.array, np.float32), 0.0, cfg.suv_clip) / cfg.suv_scale).astype(np.float32)
    step = 2 ** len(cfg.strides)
    target = [int(math.ceil(s / step) * step) for s in image.shape[1:]]
    padded, crop = pad_to(x, target)
    return padded[:, None], crop


def gradcam_unet(
    image: Image,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    net: Any = None,
    target_layer: str = UNET_TARGET_LAYER,
    method: str = "gradcam",
    mask: Image | None = None,
) -> Image:
    """Grad-CAM of the 2D lesion U-Net on every axial slice of a PET volume.

    Parameters
    ----------
    image
        PET in SUVbw, ``(z, y, x)``.
    model_dir
        U-Net model folder (default: the shipped STS PET model). Ignored when ``net`` is given.
    net
        An already loaded U-Net (torch module), e.g. one with randomised weights for the sanity check.
    target_layer
        Module name whose activations are weighted (:data:`UNET_TARGET_LAYER`).
    method
        ``"gradcam"`` or ``"gradcampp"``.
    mask
        The lesion mask to explain (default: the network's own prediction at its threshold).

    Returns
    -------
    Image
        float32 map in ``[0, 1]`` on ``image``'s grid, per-slice normalised, ``units="normalised"``.
    """
    _require_monai()
    import torch

    from medlens.segment.unet import DEFAULT_MODEL_DIR, load_model
    from medlens.segment.unet.model import load_config

    folder = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    cfg, _ = load_config(folder)
    if cfg.spatial_dims != 2:
        raise InputError(f"{folder}: gradcam_unet explains 2D U-Nets; this one is {cfg.spatial_dims}D")
    if net is None:
        net, cfg = load_model(folder, config=cfg)
    net.eval()
    x_np, crop = _unet_input(image, cfg)
    x = torch.from_numpy(x_np)
    if mask is not None:
        image.require_same_grid(mask, what="mask")
        from medlens.segment.unet.data import pad_to

        target_np = pad_to(np.asarray(mask.array, np.float32), x_np.shape[2:])[0]
    else:
        with torch.no_grad():
            target_np = (torch.sigmoid(net(x)).numpy()[:, 0] >= cfg.threshold).astype(np.float32)
    out = np.zeros(x_np.shape[:1] + x_np.shape[2:], np.float32)
    rows = np.nonzero(target_np.reshape(target_np.shape[0], -1).any(axis=1))[0]
    # GradCAM++ in MONAI takes one sample per call (see _raw_cam), so its slices go one by one
    chunks = [rows] if method == "gradcam" else [rows[i : i + 1] for i in range(rows.size)]
    for chunk in chunks:
        if chunk.size == 0:
            continue
        sel = torch.from_numpy(target_np[chunk][:, None])
        area = sel.flatten(1).sum(1, keepdim=True)

        def score(logits: Any, sel: Any = sel, area: Any = area) -> Any:
            # the lesion logit summed over the target pixels, divided by their count: a positive factor per
            # slice, which leaves the normalised map unchanged and keeps GradCAM++'s exp(score) finite
            return (logits * sel).flatten(1).sum(1, keepdim=True) / area

        out[chunk] = _raw_cam(net, x[chunk], target_layer=target_layer, method=method, target=score)
    cam = out[crop]
    return image.with_array(cam, op=f"{method}:unet", units=Units.NORMALISED, modality="")


# ---- a patch classifier ------------------------------------------------------------------------------


@keeps_torch_state
def build_patch_classifier(*, channels: Sequence[int] = (8, 16, 32), seed: int = 0) -> Any:
    """A small 2D CNN: three conv blocks (3x3 conv, batch norm, ReLU, 2x2 max-pool after the first two),
    global average pooling and a linear layer to two logits (background, lesion). Input ``(B, 1, H, W)``."""
    require("torch", extra="dl", purpose="the patch classifier")
    import torch
    from torch import nn

    torch.manual_seed(seed)
    c1, c2, c3 = (int(c) for c in channels)

    def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return nn.Sequential(*layers)

    features = nn.Sequential()
    features.add_module("conv1", block(1, c1, True))
    features.add_module("conv2", block(c1, c2, True))
    features.add_module("conv3", block(c2, c3, False))
    net = nn.Sequential()
    net.add_module("features", features)
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(c3, 2))
    return net


@dataclass(frozen=True)
class PatchSet:
    """Axial PET patches ``(N, size, size)`` (network scale: SUV / 5, clipped at 25), labels (1 = lesion),
    the lesion masks of the patches and the patient each came from."""

    patches: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    patient: np.ndarray


def lesion_patches(
    cases: Sequence[tuple[str, Image, Image]],
    *,
    size: int = 32,
    negatives_per_case: int = 4,
    positives_per_case: int = 3,
    seed: int = 0,
) -> PatchSet:
    """Lesion and background patches from PET volumes and their lesion masks.

    Positives are centred on the lesion's centroid on the ``positives_per_case`` axial slices with the
    largest lesion area; negatives are drawn at random positions whose patch holds no lesion voxel.

    Parameters
    ----------
    cases
        ``(patient_id, pet_suvbw, mask)`` triples.
    size
        Patch side in voxels.
    """
    rng = np.random.default_rng(seed)
    xs, ys, ms, ps = [], [], [], []
    half = size // 2
    for pid, img, mask in cases:
        img.require_same_grid(mask, what="mask")
        a = np.clip(np.asarray(img.array, np.float32), 0.0, 25.0) / 5.0
        m = np.asarray(mask.array, bool)
        pad = ((0, 0), (half, half), (half, half))
        a, m = np.pad(a, pad), np.pad(m, pad)
        area = m.reshape(m.shape[0], -1).sum(axis=1)
        for z in np.argsort(area)[::-1][:positives_per_case]:
            if area[z] == 0:
                continue
            cy, cx = (round(float(v)) for v in np.argwhere(m[z]).mean(axis=0))
            xs.append(a[z, cy - half : cy + half, cx - half : cx + half])
            ms.append(m[z, cy - half : cy + half, cx - half : cx + half])
            ys.append(1)
            ps.append(pid)
        got, tries = 0, 0
        while got < negatives_per_case and tries < 200:
            tries += 1
            z = int(rng.integers(0, a.shape[0]))
            cy = int(rng.integers(half + half // 2, a.shape[1] - half - half // 2))
            cx = int(rng.integers(half + half // 2, a.shape[2] - half - half // 2))
            win = (z, slice(cy - half, cy + half), slice(cx - half, cx + half))
            if m[win].any() or a[win].max() <= 0:
                continue
            xs.append(a[win])
            ms.append(m[win])
            ys.append(0)
            ps.append(pid)
            got += 1
    if not xs or len(set(ys)) < 2:
        raise InputError("lesion_patches found no lesion or no background patch: check the masks")
    return PatchSet(np.stack(xs).astype(np.float32), np.asarray(ys), np.stack(ms), np.asarray(ps))


@keeps_torch_state
def train_patch_classifier(
    patches: PatchSet, *, epochs: int = 30, lr: float = 3e-3, batch_size: int = 32, seed: int = 0
) -> Any:
    """Train :func:`build_patch_classifier` (Adam, cross-entropy, random flips) on ``patches``; eval mode."""
    require("torch", extra="dl", purpose="the patch classifier")
    import torch

    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    net = build_patch_classifier(seed=seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    x_all = torch.from_numpy(patches.patches[:, None])
    y_all = torch.from_numpy(patches.labels.astype(np.int64))
    n = len(y_all)
    net.train()
    for _ in range(epochs):
        order = gen.permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:
                continue
            xb = x_all[idx]
            if gen.random() < 0.5:
                xb = torch.flip(xb, dims=[3])
            if gen.random() < 0.5:
                xb = torch.flip(xb, dims=[2])
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xb), y_all[idx])
            loss.backward()
            opt.step()
    net.eval()
    return net


def classifier_accuracy(net: Any, patches: PatchSet) -> float:
    """Fraction of ``patches`` the classifier labels correctly."""
    import torch

    with torch.no_grad():
        pred = net(torch.from_numpy(patches.patches[:, None])).argmax(1).numpy()
    return float(np.mean(pred == patches.labels))


def gradcam_patches(
    net: Any,
    patches: np.ndarray,
    *,
    target_layer: str = CLASSIFIER_TARGET_LAYER,
    method: str = "gradcam",
    class_idx: int = 1,
) -> np.ndarray:
    """Grad-CAM maps ``(N, H, W)`` in ``[0, 1]`` of a classifier's ``class_idx`` logit on patches ``(N, H, W)``."""
    _require_monai()
    import torch

    p = np.asarray(patches, np.float32)
    if p.ndim != 3:
        raise InputError(f"patches must be (N, H, W), got shape {p.shape}")
    net.eval()
    return _raw_cam(net, torch.from_numpy(p[:, None]), target_layer=target_layer, method=method, class_idx=class_idx)


# ---- sanity check -------------------------------------------------------------------------------------


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (ties get average ranks); 0.0 when either map is constant."""
    from scipy.stats import spearmanr

    x, y = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if x.size != y.size:
        raise InputError(f"maps differ in size: {x.size} vs {y.size}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


@dataclass(frozen=True)
class RandomisationStep:
    """After re-initialising every layer from the output down to ``layer``: the map's rank correlation."""

    layer: str
    layers_randomised: int
    spearman: float


def _parametric_layers(net: Any) -> list[tuple[str, Any]]:
    return [
        (n, m)
        for n, m in net.named_modules()
        if n and hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))
    ]


@keeps_torch_state
def randomisation_check(
    net: Any,
    explain: Callable[[Any], np.ndarray],
    *,
    seed: int = 0,
    steps: int | None = None,
) -> list[RandomisationStep]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), top layer first.

    Parameters
    ----------
    net
        The trained network (not modified: a deep copy is randomised).
    explain
        Maps a network to its explanation (an array), e.g. ``lambda n: gradcam_unet(pet, net=n).array``.
    seed
        Seed of the re-initialisation.
    steps
        Number of cascade steps to evaluate, spread evenly over the layers (default: every layer).

    Returns
    -------
    list of RandomisationStep
        One entry per evaluated step, the last with every parametric layer re-initialised.
    """
    import copy

    import torch

    reference = np.asarray(explain(net))
    if not np.any(reference):
        raise ProcessingError("the trained network's map is all zero: nothing to compare the randomised maps with")
    work = copy.deepcopy(net)
    layers = _parametric_layers(work)[::-1]  # output side first
    if not layers:
        raise InputError("the network has no layer with parameters to randomise")
    n = len(layers)
    marks = set(range(1, n + 1)) if steps is None else {max(1, round(n * (k + 1) / steps)) for k in range(steps)}
    torch.manual_seed(seed)
    out = []
    for i, (name, mod) in enumerate(layers, start=1):
        mod.reset_parameters()
        if i in marks:
            out.append(RandomisationStep(name, i, spearman(reference, np.asarray(explain(work)))))
    return out


# ---- overlays -----------------------------------------------------------------------------------------


def overlay_png(
    image2d: np.ndarray,
    cam2d: np.ndarray,
    path: str | os.PathLike[str],
    *,
    mask2d: np.ndarray | None = None,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    display_range: tuple[float, float] | None = None,
    title: str | None = None,
    alpha: float = 0.45,
) -> Path:
    """PNG of a slice in grey with the Grad-CAM map in colour (jet) and the mask contour (white), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image2d, np.float64)
    cam = np.asarray(cam2d, np.float64)
    if img.shape != cam.shape or img.ndim != 2:
        raise InputError(f"image2d and cam2d must be 2D of one shape, got {img.shape} and {cam.shape}")
    lo, hi = display_range or (float(np.percentile(img, 1)), float(np.percentile(img, 99.5)))
    aspect = spacing_mm[0] / spacing_mm[1]
    fig, ax = plt.subplots(figsize=(4, 4 * aspect * img.shape[0] / max(img.shape[1], 1)), dpi=100)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, interpolation="nearest")
    ax.imshow(np.ma.masked_less_equal(cam, 0.05), cmap="jet", vmin=0, vmax=1, alpha=alpha, aspect=aspect)
    if mask2d is not None and np.any(mask2d):
        ax.contour(np.asarray(mask2d, float), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout(pad=0.2)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), format="png")
    plt.close(fig)
    return Path(path)
