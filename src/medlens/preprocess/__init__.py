"""Images in, images out: denoise, enhance, normalise, resample, correct and align.

Every function takes and returns :class:`medlens.Image`, keeps the geometry, records the
operation in ``meta.history`` and names its units (``sigma_mm``, ``window_hu``, ...).
Submodules are imported on first use so that ``import medlens`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # denoise
    "wavelet_denoise": "denoise",
    "estimate_noise_sigma": "denoise",
    "median_filter": "denoise",
    "gaussian_filter": "denoise",
    "nl_means_denoise": "denoise",
    "bilateral_denoise": "denoise",
    "ThresholdMethod": "denoise",
    # contrast
    "window": "contrast",
    "WINDOW_PRESETS_HU": "contrast",
    "histogram_equalise": "contrast",
    "clahe_2d": "contrast",
    "clahe_3d": "contrast",
    # normalise
    "zscore": "normalise",
    "percentile_clip": "normalise",
    "minmax": "normalise",
    # PET SUV normalisations
    "suv_normalise": "suv",
    "lean_body_mass_kg": "suv",
    "body_surface_area_m2": "suv",
    # bias
    "n4_bias_correction": "bias",
    # resample (written by the radiomics engineer)
    "resample": "resample",
    "resample_mask": "resample",
    "resample_to_reference": "resample",
    # register
    "register": "register",
    "apply_transform": "register",
    "PETCT_INPUTS": "register",
    "load_transform": "register",
    "transform_points": "register",
    "RegistrationResult": "register",
    "RegistrationWarning": "register",
    # quality
    "snr": "quality",
    "cnr": "quality",
    "psnr": "quality",
    "ssim": "quality",
    # overlay, recipe
    "fusion_overlay": "overlay",
    "Recipe": "recipe",
    "STEPS": "recipe",
}

__all__ = sorted(_EXPORTS)

# Two submodules share a name with their main function. Importing the submodule binds the package
# attribute to the module, so bind the functions eagerly here (both modules import only numpy at load).
from medlens.preprocess.register import register as register  # noqa: E402
from medlens.preprocess.resample import resample as resample  # noqa: E402


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medlens.preprocess' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"medlens.preprocess.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
