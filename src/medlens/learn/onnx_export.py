"""ONNX export of the ``medlens.learn`` networks and ONNX Runtime inference.

Every shipped checkpoint exports through :func:`export_checkpoint`: a ``unet-encoder`` as its down
path (input ``(B, 1, *roi)`` -> bottleneck map), a ``denoise-cnn`` as the noise predictor (any
``(B, 1, H, W)``), a ``diffusion-unet`` as the noise predictor with a timestep input ``(B,)`` int64.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError, require

__all__ = ["OnnxModel", "export_checkpoint", "export_module"]


def _encoder_module(net: Any) -> Any:
    import torch

    from medlens.learn.encoders import encoder_modules

    return torch.nn.Sequential(*encoder_modules(net))


class _DiffusionWrapper:
    """Adapter: ``forward(x, t)`` with ``t`` a tensor, as ONNX export needs."""

    @staticmethod
    def make(net: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: Any, t: Any) -> Any:
                return self.inner(x, timesteps=t)

        return Wrapped(net).eval()


def export_module(
    module: Any,
    example: tuple[Any, ...],
    path: str | os.PathLike[str],
    *,
    input_names: list[str],
    dynamic: dict[str, dict[int, str]],
    opset: int = 17,
) -> Path:
    """``torch.onnx.export`` (TorchScript exporter) of ``module`` to ``path``, atomically."""
    import torch

    require("onnx", extra="dl", purpose="ONNX export")
    module.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(tmp),
            input_names=input_names,
            output_names=["output"],
            dynamic_axes={**dynamic, "output": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


def export_checkpoint(checkpoint: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Path:
    """Export a ``medlens-learn/1`` checkpoint to ONNX (default: beside it, ``.onnx``)."""
    import torch

    from medlens.learn.encoders import load_checkpoint

    ck = load_checkpoint(checkpoint, encoder_only=True)
    out = Path(path) if path is not None else Path(checkpoint).with_suffix(".onnx")
    kind = ck.architecture["kind"]
    if kind == "unet-encoder":
        roi = tuple(ck.architecture["unet"]["roi_size"])
        return export_module(
            _encoder_module(ck.net),
            (torch.zeros((1, 1, *roi)),),
            out,
            input_names=["input"],
            dynamic={"input": {0: "batch"}},
        )
    if kind == "denoise-cnn":
        return export_module(
            ck.net,
            (torch.zeros((1, 1, 64, 64)),),
            out,
            input_names=["input"],
            dynamic={"input": {0: "batch", 2: "height", 3: "width"}},
        )
    if kind == "diffusion-unet":
        ex = (torch.zeros((1, 1, 32, 32)), torch.zeros((1,), dtype=torch.long))
        return export_module(
            _DiffusionWrapper.make(ck.net),
            ex,
            out,
            input_names=["input", "timestep"],
            dynamic={"input": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"}},
        )
    raise InputError(f"{checkpoint}: cannot export architecture kind {kind!r}")


class OnnxModel:
    """An ONNX Runtime session (CPU, ``threads`` intra-op threads) called with numpy arrays."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        ort: Any = require("onnxruntime", extra="dl", purpose="ONNX inference")
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: ONNX model not found; export it with medlens.learn.onnx_export.export_checkpoint")
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = p

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        if len(arrays) != len(self.inputs):
            raise InputError(f"{self.path}: the model takes {len(self.inputs)} inputs {self.inputs}, got {len(arrays)}")
        feeds = {n: np.ascontiguousarray(a) for n, a in zip(self.inputs, arrays, strict=True)}
        return np.asarray(self.session.run(None, feeds)[0])
