"""Small networks of ``medlens.learn`` and their checkpoints (torch and MONAI are imported inside functions).

Architectures
-------------
``unet-encoder``
    The down path of the lesion U-Net of :mod:`medlens.segment.unet` (its :class:`UNetConfig`), so a
    self-supervised encoder initialises the segmentation U-Net directly (same layer names).
``denoise-cnn``
    A DnCNN-style residual CNN (Zhang et al. 2017): ``depth`` 3x3 convolutions with ``width`` channels
    and ReLU, predicting the noise; the denoised image is ``x - net(x)``.
``diffusion-unet``
    :class:`monai.networks.nets.DiffusionModelUNet` (2D, one channel) for DDPM/DDIM.
``diffusion-synth-pair``
    The two-stage mask-then-image generator of :mod:`medlens.learn.diffusion_synth`.

Checkpoints
-----------
A checkpoint is ``NAME.pt`` (a ``state_dict``) beside ``NAME.json``: ``{"format": "medlens-learn/1",
"architecture": {"kind": ..., ...}, "input": {"modality": ..., "units": ..., "scaling": ...},
"sha256": <hash of NAME.pt>, "info": {data, seed, recipe, metrics}}``. :func:`load_checkpoint`
checks the kind, the hash and every tensor shape against the architecture and raises
:class:`~medlens.core.errors.InputError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_write_bytes, atomic_write_text
from medlens.core.errors import FormatError, InputError, require
from medlens.core.image import Image, Units

__all__ = [
    "CHECKPOINT_FORMAT",
    "WEIGHTS_DIR",
    "Checkpoint",
    "build",
    "build_denoise_cnn",
    "build_diffusion_unet",
    "check_input",
    "encoder_forward",
    "encoder_modules",
    "encoder_state",
    "load_checkpoint",
    "save_checkpoint",
    "sha256_file",
]

CHECKPOINT_FORMAT = "medlens-learn/1"
#: Small weights shipped with MedLens.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- architectures ---------------------------------------------------------------------------------


def _unet_config(arch: Mapping[str, Any]) -> Any:
    from medlens.segment.unet.model import UNetConfig

    return UNetConfig.from_dict(dict(arch["unet"]))


def encoder_modules(net: Any) -> list[Any]:
    """The down path of a MONAI ``UNet``: ``[down_0, down_1, ..., bottom]`` (each halves the grid but the last)."""
    from monai.networks.layers.simplelayers import SkipConnection

    mods = [net.model[0]]
    node = net.model[1]
    while isinstance(node, SkipConnection):
        sub = node.submodule
        if isinstance(sub, SkipConnection) or not hasattr(sub, "__getitem__"):
            mods.append(sub)  # the bottom layer
            break
        mods.append(sub[0])
        node = sub[1]
    return mods


def _encoder_prefixes(net: Any) -> list[str]:
    names = {id(m): n for n, m in net.named_modules()}
    return [names[id(m)] + "." for m in encoder_modules(net)]


def encoder_state(net: Any) -> dict[str, Any]:
    """The ``state_dict`` entries of the U-Net's down path (names as in the full U-Net)."""
    pre = _encoder_prefixes(net)
    return {k: v for k, v in net.state_dict().items() if any(k.startswith(p) for p in pre)}


def encoder_forward(net: Any, x: Any) -> Any:
    """Bottleneck feature map of the U-Net's down path for input ``x`` ``(B, 1, *spatial)``."""
    for m in encoder_modules(net):
        x = m(x)
    return x


def build_denoise_cnn(*, spatial_dims: int = 2, width: int = 32, depth: int = 5) -> Any:
    """DnCNN-style noise predictor (``torch.nn.Sequential``), one channel in and out."""
    import torch

    if spatial_dims not in (2, 3):
        raise InputError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if depth < 2 or width < 1:
        raise InputError(f"depth must be >= 2 and width >= 1, got depth={depth}, width={width}")
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    layers: list[Any] = [conv(1, width, 3, padding=1), torch.nn.ReLU()]
    for _ in range(depth - 2):
        layers += [conv(width, width, 3, padding=1), torch.nn.ReLU()]
    layers.append(conv(width, 1, 3, padding=1))
    return torch.nn.Sequential(*layers)


def build_diffusion_unet(*, channels: tuple[int, ...] = (32, 64, 64), num_res_blocks: int = 1) -> Any:
    """A small 2D :class:`monai.networks.nets.DiffusionModelUNet` (no attention: CPU-friendly)."""
    require("monai", extra="dl", purpose="the diffusion model")
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=tuple(channels),
        attention_levels=(False,) * len(channels),
        num_res_blocks=num_res_blocks,
        norm_num_groups=min(16, min(channels)),
    )


def build(arch: Mapping[str, Any]) -> Any:
    """The network an ``architecture`` dict describes (see the module docstring)."""
    kind = arch.get("kind")
    if kind == "unet-encoder":
        from medlens.segment.unet.model import build_unet

        return build_unet(_unet_config(arch))
    if kind == "denoise-cnn":
        return build_denoise_cnn(
            spatial_dims=int(arch.get("spatial_dims", 2)), width=int(arch["width"]), depth=int(arch["depth"])
        )
    if kind == "diffusion-unet":
        return build_diffusion_unet(channels=tuple(arch["channels"]), num_res_blocks=int(arch["num_res_blocks"]))
    if kind == "diffusion-synth-pair":
        from medlens.learn.diffusion_synth import build_pair_nets

        return build_pair_nets(arch)
    raise InputError(
        f"unknown architecture kind {kind!r}; expected 'unet-encoder', 'denoise-cnn', 'diffusion-unet' "
        "or 'diffusion-synth-pair'"
    )


# ---- checkpoints -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the network (eval mode), its description and the file it came from."""

    net: Any
    architecture: dict[str, Any]
    input: dict[str, Any]
    info: dict[str, Any]
    path: Path


def save_checkpoint(
    state: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    architecture: Mapping[str, Any],
    input_spec: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``.pt``: the tensors of ``state``) and the JSON beside it, atomically.

    The ``.pt`` bytes depend only on the tensors (same weights -> same SHA-256).

    ``input_spec`` holds ``modality`` (``"CT"``, ``"PT"``, ...), ``units`` and ``scaling`` (how
    intensities enter the network); the JSON also records the SHA-256 of the ``.pt`` file.
    """
    import torch

    p = Path(path)
    if p.suffix != ".pt":
        raise InputError(f"{p}: a checkpoint path must end in .pt")
    p.parent.mkdir(parents=True, exist_ok=True)
    # serialise to memory first: torch.save names the zip archive after the file it writes, so saving
    # straight to the temporary file would put its random name into the bytes (and the SHA-256)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    atomic_write_bytes(p, buf.getvalue())
    doc = {
        "format": CHECKPOINT_FORMAT,
        "architecture": dict(architecture),
        "input": dict(input_spec),
        "sha256": sha256_file(p),
        "size_bytes": p.stat().st_size,
        "info": dict(info or {}),
    }
    atomic_write_text(p.with_suffix(".json"), json.dumps(doc, indent=2))
    return p


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON beside a checkpoint ``.pt`` (format checked)."""
    p = Path(path).with_suffix(".json")
    if not p.is_file():
        raise InputError(f"{Path(path)}: no description {p.name} beside the checkpoint; save it with save_checkpoint")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{p}: not valid JSON ({exc})") from exc
    if doc.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{p}: format {doc.get('format')!r} is not {CHECKPOINT_FORMAT!r}")
    return dict(doc)


def load_checkpoint(
    path: str | os.PathLike[str], *, expect_kind: str | None = None, encoder_only: bool = False
) -> Checkpoint:
    """Load a checkpoint into the architecture its JSON describes, checking it on the way.

    Parameters
    ----------
    path
        The ``.pt`` file (the ``.json`` must lie beside it).
    expect_kind
        Refuse a checkpoint of another architecture kind (``"unet-encoder"``, ``"denoise-cnn"``, ...).
    encoder_only
        For ``unet-encoder``: the file holds only the down path (the decoder keeps its initial weights).

    Raises
    ------
    InputError
        Wrong kind, a hash that does not match (file changed), or tensors that do not fit the
        architecture (the first mismatching layer with both shapes is named).
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    doc = read_description(p)
    arch = dict(doc["architecture"])
    if expect_kind is not None and arch.get("kind") != expect_kind:
        raise InputError(
            f"{p}: the checkpoint is a {arch.get('kind')!r} network, expected a {expect_kind!r} one; "
            "use a checkpoint made for this model"
        )
    digest = sha256_file(p)
    if doc.get("sha256") and digest != doc["sha256"]:
        raise InputError(f"{p}: SHA-256 {digest[:12]}... does not match {doc['sha256'][:12]}... in its JSON")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(f"{p}: not a readable PyTorch checkpoint ({exc})") from exc
    net = build(arch)
    check_state(state, net, path=p, arch=arch, partial=encoder_only or bool(arch.get("encoder_only")))
    net.load_state_dict(state, strict=False)
    net.eval()
    return Checkpoint(net, arch, dict(doc.get("input", {})), dict(doc.get("info", {})), p)


def check_state(state: Mapping[str, Any], net: Any, *, path: Path, arch: Mapping[str, Any], partial: bool) -> None:
    """Raise :class:`InputError` when ``state`` does not fit ``net`` (``partial``: missing layers allowed)."""
    from medlens.segment.unet.model import state_mismatch

    detail = state_mismatch(net.state_dict(), state, partial=partial)
    if detail:
        raise InputError(
            f"{path}: the checkpoint does not fit the architecture {dict(arch)}: "
            + "; ".join(detail)
            + ". It was saved for another architecture; use the JSON saved with it"
        )


def check_input(image: Image, input_spec: Mapping[str, Any], *, path: str | os.PathLike[str] = "") -> None:
    """Refuse (InputError) an image whose modality or units differ from what the model was trained on."""
    want_mod, want_units = input_spec.get("modality", ""), input_spec.get("units", "")
    mod, units = image.meta.modality, image.meta.units
    problems = []
    if want_mod and mod and mod != want_mod:
        problems.append(f"modality {mod!r}, expected {want_mod!r}")
    if want_units and units not in ("", Units.UNKNOWN) and units != want_units:
        problems.append(f"units {units!r}, expected {want_units!r}")
    if problems:
        raise InputError(
            f"the model {path or ''} was trained on {want_mod} ({want_units}); the image "
            f"({image.meta.source or 'input'}) has "
            + " and ".join(problems)
            + "; use a model trained for this modality"
        )
