"""The lesion U-Net (MONAI): model description, training, cross-validation, inference and ONNX.

Importing this package does not import torch; the functions do, on first call.
"""

from __future__ import annotations

from medlens.segment.unet.data import Case, load_case, make_case, read_cohort
from medlens.segment.unet.infer import (
    DEFAULT_MODEL_DIR,
    ModalityWarning,
    check_modality,
    export_onnx,
    postprocess,
    predict_probability,
    segment_unet,
)
from medlens.segment.unet.model import UNetConfig, build_unet, load_config, load_model, save_model
from medlens.segment.unet.train import TrainResult, patient_folds, train

__all__ = [
    "DEFAULT_MODEL_DIR",
    "Case",
    "ModalityWarning",
    "TrainResult",
    "UNetConfig",
    "build_unet",
    "check_modality",
    "export_onnx",
    "load_case",
    "load_config",
    "load_model",
    "make_case",
    "patient_folds",
    "postprocess",
    "predict_probability",
    "read_cohort",
    "save_model",
    "segment_unet",
    "train",
]
