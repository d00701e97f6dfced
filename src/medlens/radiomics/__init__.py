"""IBSI-compliant radiomics: image processing and features keyed by IBSI tags.

Use :func:`extract` (``from medlens.radiomics import extract``) with a :class:`RadiomicsSettings`
(or a preset name via :func:`load_preset`). Submodules are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["extract", "RadiomicsSettings", "TextureSettings", "load_preset", "load_settings"]

_LAZY = {
    "extract": "medlens.radiomics.extract",
    "RadiomicsSettings": "medlens.radiomics.settings",
    "TextureSettings": "medlens.radiomics.settings",
    "load_preset": "medlens.radiomics.settings",
    "load_settings": "medlens.radiomics.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medlens.radiomics' has no attribute {name!r}")
