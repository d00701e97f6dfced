"""U-Net inference on full volumes (sliding window), ONNX export and ONNX Runtime inference."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError, MedlensWarning, require
from medlens.core.image import Image, Units
from medlens.segment.unet.model import UNetConfig, load_config, load_model, torch_threads

__all__ = [
    "DEFAULT_MODEL_DIR",
    "ModalityWarning",
    "check_modality",
    "export_onnx",
    "postprocess",
    "predict_probability",
    "segment_unet",
]

#: The small model shipped with MedLens (STS FDG-PET lesions, 2D U-Net).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "sts_pet_unet2d"


class ModalityWarning(MedlensWarning):
    """The image's modality differs from the one the model was trained on."""


def check_modality(image: Image, config: UNetConfig, *, allow_other_modality: bool = False) -> None:
    """Refuse (InputError) or, with ``allow_other_modality``, warn when the image is not what the model knows."""
    mod, units = image.meta.modality, image.meta.units
    problems = []
    if mod and mod != config.modality:
        problems.append(f"modality {mod!r} (model trained on {config.modality!r})")
    if units not in ("", Units.UNKNOWN) and units != config.units:
        problems.append(f"units {units!r} (model expects {config.units!r})")
    if not problems:
        if not mod:
            warnings.warn(
                f"the image has no modality; assuming {config.modality} in {config.units} as the model expects",
                ModalityWarning,
                stacklevel=3,
            )
        return
    msg = f"the image ({image.meta.source or 'input'}) has " + " and ".join(problems)
    if allow_other_modality:
        warnings.warn(msg + "; predictions are unreliable", ModalityWarning, stacklevel=3)
        return
    raise InputError(msg + "; use a model trained for this modality or pass allow_other_modality=True")


def _network_input(image: Image, cfg: UNetConfig) -> np.ndarray:
    x = (np.clip(np.asarray(image.array, np.float32), 0.0, cfg.suv_clip) / cfg.suv_scale).astype(np.float32)
    if cfg.spatial_dims == 2:
        if image.ndim == 2:
            return x[None, None]
        return x[:, None]  # slices as a batch: (Z, 1, Y, X)
    if image.ndim != 3:
        raise InputError("a 3D U-Net needs a 3D image")
    return x[None, None]


def predict_probability(
    image: Image,
    predictor: Any,
    config: UNetConfig,
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 16,
) -> np.ndarray:
    """Voxel-wise lesion probability (float32, image shape) by sliding-window inference.

    ``predictor`` is a torch module or any callable mapping a torch tensor ``(B, 1, *roi)`` to logits.
    A 2D model runs on every axial slice (the slices form the batch).
    """
    torch = require("torch", extra="dl", purpose="the U-Net")
    sliding_window_inference = require("monai.inferers", extra="dl", purpose="the U-Net").sliding_window_inference

    x = torch.from_numpy(_network_input(image, config))
    with torch.inference_mode():
        logits = sliding_window_inference(
            x, roi_size=config.roi_size, sw_batch_size=sw_batch_size, predictor=predictor, overlap=overlap
        )
        prob = torch.sigmoid(logits).numpy()  # type: ignore[arg-type]
    if config.spatial_dims == 2:
        out = prob[:, 0]
        return out[0] if image.ndim == 2 else out
    return prob[0, 0]


def postprocess(image: Image, prob: np.ndarray, config: UNetConfig) -> Image:
    """Threshold the probabilities; keep the largest component when the config asks for it."""
    from scipy import ndimage

    m = prob >= config.threshold
    if config.keep_largest and m.any():
        lab, n = ndimage.label(m)
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            m = lab == (int(np.argmax(sizes)) + 1)
    return image.with_array(m, op="unet", units=Units.MASK)


class _OnnxPredictor:
    def __init__(self, path: Path, threads: int = 1) -> None:
        ort = require("onnxruntime", extra="dl", purpose="ONNX inference")
        so = ort.SessionOptions()  # type: ignore[attr-defined]
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
        self.name = self.session.get_inputs()[0].name

    def __call__(self, x: Any) -> Any:
        torch = require("torch", extra="dl", purpose="the U-Net")

        out = self.session.run(None, {self.name: np.ascontiguousarray(x.numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


def export_onnx(net: Any, config: UNetConfig, path: str | os.PathLike[str], *, opset: int = 17) -> Path:
    """Export ``net`` to ONNX (dynamic batch, fixed window ``config.roi_size``), atomically."""
    torch = require("torch", extra="dl", purpose="the U-Net")

    require("onnx", extra="dl", purpose="ONNX export")
    dummy = torch.zeros((1, 1, *config.roi_size), dtype=torch.float32)
    net.eval()
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (dummy,),
            str(tmp),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return Path(path)


def segment_unet(
    image: Image,
    *,
    model_dir: str | os.PathLike[str] | None = None,
    backend: str = "torch",
    allow_other_modality: bool = False,
    threads: int = 1,
) -> Image:
    """Lesion mask from a U-Net model folder (default: the shipped STS PET model).

    Parameters
    ----------
    image
        PET in SUVbw (or whatever the model's ``model.json`` says).
    model_dir
        Folder with ``model.json`` and ``model.pt`` (and ``model.onnx`` for ``backend="onnx"``).
    backend
        ``"torch"`` or ``"onnx"`` (ONNX Runtime).
    allow_other_modality
        Warn instead of refusing an image of another modality/units than the model's.
    """

    folder = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    cfg, _ = load_config(folder)
    check_modality(image, cfg, allow_other_modality=allow_other_modality)
    if backend == "torch":
        net, cfg = load_model(folder, config=cfg)
        predictor: Any = net
    elif backend == "onnx":
        onnx_path = folder / "model.onnx"
        if not onnx_path.is_file():
            raise InputError(f"{folder}: no model.onnx; export one with medlens.segment.unet.export_onnx")
        predictor = _OnnxPredictor(onnx_path, threads)
    else:
        raise InputError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    with torch_threads(threads):  # restored afterwards: the thread count is process-wide
        prob = predict_probability(image, predictor, cfg)
    out = postprocess(image, prob, cfg)
    if not out.array.any():
        from medlens.segment.classic import EmptyResultWarning

        warnings.warn(f"unet: no lesion found in {image.meta.source or 'the image'}", EmptyResultWarning, stacklevel=2)
    return out
