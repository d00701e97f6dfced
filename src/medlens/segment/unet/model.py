"""U-Net architecture description, construction and checkpoints (torch and MONAI imported here only).

A model folder holds ``model.pt`` (the ``state_dict``) and ``model.json`` (:class:`UNetConfig` plus the
training recipe and metrics). The JSON is the source of truth for the architecture: loading a
checkpoint whose tensors do not fit it raises :class:`~medlens.core.errors.InputError` naming the
first mismatching layer.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_path, atomic_write_text
from medlens.core.errors import FormatError, InputError, require

__all__ = ["UNetConfig", "build_unet", "load_config", "load_model", "save_model", "torch_threads"]


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the caller's setting.

    ``torch.set_num_threads`` is process-wide: a library call must not leave it changed.
    """
    torch = require("torch", extra="dl", purpose="the U-Net")

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and input conventions of a segmentation U-Net.

    Attributes
    ----------
    spatial_dims
        2 (slice-wise on axial slices) or 3 (patches).
    channels, strides, num_res_units
        Passed to :class:`monai.networks.nets.UNet` (one input channel, one output logit).
    roi_size
        Sliding-window size in voxels (array order, 2 or 3 values).
    modality, units
        What the model was trained on (``"PT"``, ``"SUVbw"``); other inputs are refused or warned about.
    suv_scale, suv_clip
        Input scaling: ``clip(x, 0, suv_clip) / suv_scale``.
    threshold
        Probability threshold for the mask.
    keep_largest
        Keep only the largest connected component of the predicted mask (one lesion per volume).
    """

    spatial_dims: int = 2
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    roi_size: tuple[int, ...] = (64, 64)
    modality: str = "PT"
    units: str = "SUVbw"
    suv_scale: float = 5.0
    suv_clip: float = 25.0
    threshold: float = 0.5
    keep_largest: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise InputError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.strides) != len(self.channels) - 1:
            raise InputError(
                f"a U-Net needs one stride per down-sampling step: {len(self.channels)} channels need "
                f"{len(self.channels) - 1} strides, got {len(self.strides)}"
            )
        if len(self.roi_size) != self.spatial_dims:
            raise InputError(f"roi_size must have {self.spatial_dims} values, got {list(self.roi_size)}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "roi_size", tuple(int(s) for s in self.roi_size))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("channels", "strides", "roi_size"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise FormatError(f"unknown U-Net configuration keys {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**d)


def build_unet(config: UNetConfig) -> Any:
    """A :class:`monai.networks.nets.UNet` for ``config`` (1 input channel, 1 output logit)."""
    require("monai", extra="dl", purpose="the U-Net")
    UNet = require("monai.networks.nets", extra="dl", purpose="the U-Net").UNet

    return UNet(
        spatial_dims=config.spatial_dims,
        in_channels=1,
        out_channels=1,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
    )


def save_model(net: Any, config: UNetConfig, folder: str | os.PathLike[str], *, info: dict[str, Any] | None = None):
    """Write ``model.pt`` and ``model.json`` (config, plus ``info``: recipe, metrics) into ``folder``."""
    torch = require("torch", extra="dl", purpose="the U-Net")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "model.pt") as tmp:
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, tmp)
    doc = {"format": "medlens-unet/1", "config": config.to_dict(), "info": info or {}}
    atomic_write_text(folder / "model.json", json.dumps(doc, indent=2))
    return folder


def load_config(folder: str | os.PathLike[str]) -> tuple[UNetConfig, dict[str, Any]]:
    """The :class:`UNetConfig` and ``info`` of a model folder (``model.json``)."""
    p = Path(folder) / "model.json"
    if not p.is_file():
        raise InputError(f"{folder}: not a MedLens U-Net folder (no model.json)")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{p}: not valid JSON ({exc})") from exc
    if doc.get("format") != "medlens-unet/1":
        raise FormatError(f"{p}: format {doc.get('format')!r} is not 'medlens-unet/1'")
    return UNetConfig.from_dict(doc["config"]), dict(doc.get("info", {}))


def state_mismatch(own: Mapping[str, Any], state: Mapping[str, Any], *, partial: bool = False) -> list[str]:
    """How a checkpoint's tensors ``state`` differ from a network's own ``state_dict`` (empty when they fit).

    ``partial``: layers of the network missing from the checkpoint are allowed (e.g. an encoder only).
    """
    missing = [] if partial else [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if k in state and state[k].shape != v.shape
    ]
    detail = []
    if wrong:
        k, got, exp = wrong[0]
        detail.append(f"layer {k} has shape {got} in the checkpoint but {exp} in the architecture")
    if missing:
        detail.append(f"{len(missing)} layers missing from the checkpoint (first: {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected layers in the checkpoint (first: {unexpected[0]})")
    return detail


def load_model(folder: str | os.PathLike[str], *, config: UNetConfig | None = None) -> tuple[Any, UNetConfig]:
    """Build the network of ``config`` (default: the folder's ``model.json``) and load ``model.pt`` into it.

    Raises :class:`InputError` when the checkpoint's tensors do not match the architecture.
    """
    torch = require("torch", extra="dl", purpose="the U-Net")

    cfg = config or load_config(folder)[0]
    ck = Path(folder) / "model.pt"
    if not ck.is_file():
        raise InputError(f"{folder}: no model.pt checkpoint")
    try:
        state = torch.load(ck, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FormatError(f"{ck}: not a readable PyTorch checkpoint ({exc})") from exc
    net = build_unet(cfg)
    detail = state_mismatch(net.state_dict(), state)
    if detail:
        raise InputError(
            f"{ck}: the checkpoint does not match the requested architecture (spatial_dims={cfg.spatial_dims}, "
            f"channels={list(cfg.channels)}): " + "; ".join(detail) + ". Use the model.json saved with it"
        )
    net.load_state_dict(state)
    net.eval()
    return net, cfg
