"""The one way MedLens compiles radiomics kernels: numba ``njit`` with an on-disk cache.

Why numba: the texture matrices (runs, zones, neighbourhoods) and a few iterative morphology steps
are loops over voxels whose vectorised-numpy forms need several full-array passes and temporary
copies; compiled loops do one pass, single-threaded, with no temporaries. Kernels live in modules
named ``_kernels.py`` that callers import lazily (inside functions), so ``import medlens`` and
``medlens --help`` never pay the ~0.2 s numba import.

Compilation happens on the first call in a fresh installation (a few seconds for all kernels) and
is cached next to the module (``__pycache__``, or ``NUMBA_CACHE_DIR`` when that is not writable);
later processes load the cached machine code. ``NUMBA_DISABLE_JIT=1`` runs the same kernels as
plain Python (slow; for debugging).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba

__all__ = ["njit"]

F = TypeVar("F", bound=Callable[..., Any])


def njit(fn: F) -> F:
    """Compile ``fn`` in nopython mode (cached on disk, releases the GIL, IEEE semantics kept)."""
    return cast(F, numba.njit(cache=True, nogil=True)(fn))
