"""Preprocessing recipes: a list of named steps with parameters, as data (YAML), run in order.

A recipe file::

    name: ct-soft-tissue
    steps:
      - resample: {spacing_mm: [2.0, 2.0, 2.0], order: linear}
      - wavelet_denoise: {method: BayesShrink, wavelet: db2}
      - window: {preset: mediastinum}

Each step is a one-key mapping ``{step_name: {param: value}}`` (or just ``step_name`` when it takes
no parameters). Step names and parameters are checked when the recipe is built, and errors name what
is allowed. Steps that accept a ``mask`` receive the recipe's mask; when a step changes the grid
(``resample``) the mask is carried to the new grid with the IBSI rule (linear, threshold 0.5).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError
from medlens.core.image import Image

__all__ = ["STEPS", "Recipe", "Step"]

#: Step name -> ``module:function`` inside :mod:`medlens.preprocess`.
STEPS: dict[str, str] = {
    "resample": "resample:resample",
    "wavelet_denoise": "denoise:wavelet_denoise",
    "median_filter": "denoise:median_filter",
    "gaussian_filter": "denoise:gaussian_filter",
    "nl_means_denoise": "denoise:nl_means_denoise",
    "bilateral_denoise": "denoise:bilateral_denoise",
    "window": "contrast:window",
    "histogram_equalise": "contrast:histogram_equalise",
    "clahe_2d": "contrast:clahe_2d",
    "clahe_3d": "contrast:clahe_3d",
    "zscore": "normalise:zscore",
    "percentile_clip": "normalise:percentile_clip",
    "minmax": "normalise:minmax",
    "percentile_normalise": "normalise:percentile_normalise",
    "fat_normalise": "normalise:fat_normalise",
    "suv_normalise": "suv:suv_normalise",
    "n4_bias_correction": "bias:n4_bias_correction",
}

# fat_mask is an image too: a recipe (data) cannot carry it, so fat_normalise in a recipe uses its percentile estimate
_NOT_PARAMS = {"image", "mask", "return_bias_field", "fat_mask"}


def _function(name: str) -> Callable[..., Any]:
    module, func = STEPS[name].split(":")
    return getattr(importlib.import_module(f"medlens.preprocess.{module}"), func)  # type: ignore[no-any-return]


def _params(fn: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    sig = inspect.signature(fn)
    params = {k: p for k, p in sig.parameters.items() if k not in _NOT_PARAMS}
    return params, "mask" in sig.parameters


@dataclass(frozen=True)
class Step:
    """One recipe step: a name from :data:`STEPS` and its keyword parameters."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in STEPS:
            raise InputError(f"unknown preprocessing step {self.name!r}; allowed steps: {', '.join(sorted(STEPS))}")
        allowed, _ = _params(_function(self.name))
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise InputError(
                f"step {self.name!r}: unknown parameter(s) {unknown}; allowed: {', '.join(sorted(allowed)) or '(none)'}"
            )
        missing = [k for k, p in allowed.items() if p.default is inspect.Parameter.empty and k not in self.params]
        if missing:
            raise InputError(f"step {self.name!r}: missing required parameter(s) {missing}")
        object.__setattr__(self, "params", dict(self.params))

    def run(self, image: Image, mask: Image | None) -> Image:
        fn = _function(self.name)
        _, takes_mask = _params(fn)
        kwargs = dict(self.params)
        if takes_mask and mask is not None:
            kwargs["mask"] = mask
        out = fn(image, **kwargs)
        return out  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Recipe:
    """An ordered list of :class:`Step` s, run by :meth:`apply`."""

    steps: tuple[Step, ...]
    name: str = ""

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "recipe") -> Recipe:
        """Build from ``{"name": ..., "steps": [...]}`` or a bare list of steps."""
        if isinstance(data, Mapping):
            extra = sorted(set(data) - {"name", "steps"})
            if extra:
                raise InputError(f"{source}: unknown top-level key(s) {extra}; allowed: name, steps")
            name = str(data.get("name", ""))
            raw = data.get("steps")
        else:
            name, raw = "", data
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)) or not raw:
            raise InputError(f"{source}: 'steps' must be a non-empty list of steps")
        steps = []
        for i, item in enumerate(raw, start=1):
            if isinstance(item, str):
                steps.append(Step(item))
                continue
            if not isinstance(item, Mapping) or len(item) != 1:
                raise InputError(
                    f"{source}: step {i} must be a step name or a one-key mapping "
                    f"{{name: {{param: value}}}}, got {item!r}"
                )
            ((sname, params),) = item.items()
            if params is None:
                params = {}
            if not isinstance(params, Mapping):
                raise InputError(f"{source}: parameters of step {i} ({sname!r}) must be a mapping, got {params!r}")
            try:
                steps.append(Step(str(sname), dict(params)))
            except InputError as exc:
                raise InputError(f"{source}: step {i}: {exc}") from None
        return cls(tuple(steps), name=name)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Recipe:
        """Load a recipe YAML file (see the module docstring for the format)."""
        from medlens.core.config_file import read_config_file  # the one rule for config files

        if not Path(path).is_file():
            raise InputError(f"{path}: no such recipe file")
        return cls.from_dict(read_config_file(path, what="recipe"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The recipe as data (round-trips through :meth:`from_dict`; stored in lineage)."""
        return {"name": self.name, "steps": [{s.name: dict(s.params)} for s in self.steps]}

    def apply(self, image: Image, mask: Image | None = None) -> Image:
        """Run the steps in order and return the final image (geometry changes only via ``resample``)."""
        if not isinstance(image, Image):
            raise InputError(f"image must be a medlens.Image, got {type(image).__name__}")
        if mask is not None:
            if not isinstance(mask, Image) or not mask.is_mask:
                raise InputError("mask must be a boolean medlens.Image on the image's grid")
            image.require_same_grid(mask)
        out = image
        for step in self.steps:
            new = step.run(out, mask)
            if mask is not None and not new.same_grid(out):
                from medlens.preprocess.resample import resample_to_reference

                mask = resample_to_reference(mask, new)
            out = new
        return out
