"""Load everything the radiomics engine needs before the first real case.

The first extraction in a process pays one-time costs: the lazy scipy / scikit-image imports, the numba
import and the loading of the compiled kernels from their on-disk cache (or their compilation, in a fresh
installation). :func:`warm_up` pays them up front on a tiny synthetic ROI, so that services and
benchmarks time steady-state work. Calling it is never required.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from medlens.radiomics._aot import AotBuild

__all__ = ["prepare_kernels", "warm_up"]


def warm_up() -> float:
    """Run one extraction of every feature family (2D, 2.5D and 3D texture) on a 9x9x9 synthetic ROI.

    Returns
    -------
    float
        Seconds spent (10-30 s when the kernels compile for the first time after installation, ~0.3-0.6 s
        when they load from the cache, milliseconds once loaded in this process).
    """
    from medlens.core.image import Image
    from medlens.radiomics.extract import extract
    from medlens.radiomics.settings import DiscretisationSettings, RadiomicsSettings, TextureSettings

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    arr = rng.normal(100.0, 20.0, (9, 9, 9))
    zz, yy, xx = np.indices(arr.shape)
    roi = (zz - 4) ** 2 + (yy - 4) ** 2 + (xx - 4) ** 2 <= 12
    image = Image.from_array(arr, spacing=(2.0, 1.0, 1.0))
    mask = image.with_array(roi, op="warm_up roi")
    for disc in (DiscretisationSettings(method="FBN", n_bins=8), DiscretisationSettings(method="FBS", bin_width=5.0)):
        settings = RadiomicsSettings(discretisation=disc, texture=TextureSettings(dims=("2D", "2_5D", "3D")))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extract(image, mask, settings)
    return time.perf_counter() - t0


def prepare_kernels(*, aot: bool = True) -> tuple[float, AotBuild | None]:
    """Compile the kernels with numba (or load them from its cache), then build the ahead-of-time module.

    The warm-up extraction runs through numba's JIT so that the signatures it compiles are exactly those of
    a real extraction; :func:`medlens.radiomics._aot.build` then compiles those into the AOT module that
    later processes load without importing numba.

    Returns
    -------
    tuple
        Seconds of the JIT warm-up, and the :class:`~medlens.radiomics._aot.AotBuild` (None when ``aot`` is
        False).
    """
    from medlens.radiomics import _jit

    with _jit.jit_only():
        seconds = warm_up()
    if not aot:
        return seconds, None
    from medlens.radiomics._aot import build

    return seconds, build()
