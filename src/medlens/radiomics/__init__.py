"""IBSI-compliant radiomics: image processing and features keyed by IBSI tags.

Use :func:`extract` (``from medlens.radiomics import extract``) with a :class:`RadiomicsSettings`
(or a preset name via :func:`load_preset`). Submodules are imported on first use.
"""

from __future__ import annotations

from typing import Any

# Imported eagerly so that the function, not the submodule of the same name, is
# ``medlens.radiomics.extract`` (the submodules import only numpy at module level).
from medlens.radiomics.extract import extract
from medlens.radiomics.settings import RadiomicsSettings, TextureSettings, load_preset, load_settings

__all__ = ["RadiomicsSettings", "TextureSettings", "extract", "load_preset", "load_settings", "warm_up"]

_LAZY: dict[str, str] = {"warm_up": "medlens.radiomics.warmup"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medlens.radiomics' has no attribute {name!r}")
