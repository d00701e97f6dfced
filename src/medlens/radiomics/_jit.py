"""The one way MedLens compiles radiomics kernels: numba ``njit`` with an on-disk cache in a user cache dir.

Why numba: the texture matrices (runs, zones, neighbourhoods) and a few iterative morphology steps
are loops over voxels whose vectorised-numpy forms need several full-array passes and temporary
copies; compiled loops do one pass, single-threaded, with no temporaries. Kernels live in modules
named ``_kernels.py`` that callers import lazily (inside functions), so ``import medlens`` and
``medlens --help`` never pay the ~0.2 s numba import.

Where the compiled code is cached: :func:`cache_dir` — ``$NUMBA_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/medlens/numba``, else ``~/.cache/medlens/numba``; never next to the module
(numba's default writes into ``__pycache__`` of the installed package, i.e. into site-packages).
Only MedLens's own kernels use this location (a cache locator attached to each kernel), so numba's
process-wide configuration is left alone for other libraries. Compile once after installing with
``medlens warm-up`` (10-30 s); later processes load the cached machine code (~0.3 s for all kernels).
``NUMBA_DISABLE_JIT=1`` runs the same kernels as plain Python (slow; for debugging).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numba

__all__ = ["cache_dir", "njit"]

F = TypeVar("F", bound=Callable[..., Any])


def cache_dir() -> Path:
    """Folder of MedLens's compiled-kernel cache (see the module docstring for the order of precedence)."""
    env = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medlens" / "numba"


def _make_cache_class() -> type | None:
    """A numba FunctionCache whose only locator is :func:`cache_dir` (None if numba's internals moved)."""
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - numba layout changed
        return None
    impl_base = getattr(caching, "CompileResultCacheImpl", None)
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None)
    locator_base = getattr(caching, "_CacheLocator", None)
    cache_base = getattr(caching, "FunctionCache", None)
    if impl_base is None or mixin is None or locator_base is None or cache_base is None:  # pragma: no cover
        return None

    class _MedlensLocator(mixin, locator_base):  # type: ignore[misc, valid-type]
        """Cache files under :func:`cache_dir`, one sub-folder per source folder (hashed path)."""

        def __init__(self, py_func: Any, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = str(cache_dir() / self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self) -> str:
            return self._cache_path

    class _MedlensImpl(impl_base):  # type: ignore[misc, valid-type]
        _locator_classes = [_MedlensLocator]  # noqa: RUF012 - numba's own class attribute

    class _MedlensCache(cache_base):  # type: ignore[misc, valid-type]
        _impl_class = _MedlensImpl

    return _MedlensCache


_CACHE_CLASS = _make_cache_class()


def njit(fn: F) -> F:
    """Compile ``fn`` in nopython mode (cached under :func:`cache_dir`, releases the GIL, IEEE semantics kept)."""
    disp = numba.njit(nogil=True)(fn)
    if not hasattr(disp, "_cache"):  # NUMBA_DISABLE_JIT: the plain function came back
        return cast(F, disp)
    if _CACHE_CLASS is None:  # pragma: no cover - only with an incompatible numba
        warnings.warn(
            "numba's cache internals are not the expected ones: MedLens kernels are compiled in every process "
            "(not cached) rather than cached inside the installed package",
            RuntimeWarning,
            stacklevel=2,
        )
        return cast(F, disp)
    try:
        disp._cache = _CACHE_CLASS(disp.py_func)
    except RuntimeError:
        # no writable cache folder (read-only home): compile in each process, write nothing
        pass
    return cast(F, disp)
