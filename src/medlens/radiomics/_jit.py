"""The one way MedLens compiles radiomics kernels: ahead-of-time machine code when it is built, numba otherwise.

Why compiled loops: the texture matrices (runs, zones, neighbourhoods) and a few iterative morphology steps
are loops over voxels whose vectorised-numpy forms need several full-array passes and temporary
copies; compiled loops do one pass, single-threaded, with no temporaries. Kernels live in modules
named ``_kernels.py`` that callers import lazily (inside functions), and are written once, in the numba
subset of Python, decorated with :func:`njit`.

:func:`njit` returns a :class:`Kernel`, which imports nothing when it is created. At its first call it picks:

1. **ahead-of-time (AOT) code** (:mod:`medlens.radiomics._aot`): ``medlens warm-up`` compiles every public
   kernel, for the argument types seen in a warm-up extraction, into one extension module in the user cache
   dir. Loading it costs milliseconds and does not import numba, so a fresh process (``medlens features`` on
   one case) pays no JIT machinery at all. A call is sent to the AOT code only when every argument has
   exactly the type (dtype, dimensions, layout, writability; Python int/float/bool) that numba would infer
   for the compiled signature — the AOT wrappers do not check types themselves;
2. otherwise **numba's JIT**, with an on-disk cache: the kernels of the module are compiled (or loaded from
   the cache) by numba in this process (~0.2 s import plus ~0.05 s per kernel from the cache).

Where the numba cache lives: :func:`cache_dir` — ``$NUMBA_CACHE_DIR`` when set, else
``$XDG_CACHE_HOME/medlens/numba``, else ``~/.cache/medlens/numba``; never next to the module
(numba's default writes into ``__pycache__`` of the installed package, i.e. into site-packages).
Only MedLens's own kernels use this location (a cache locator attached to each kernel), so numba's
process-wide configuration is left alone for other libraries. ``NUMBA_DISABLE_JIT=1`` runs the same
kernels as plain Python (slow; for debugging); ``MEDLENS_AOT=0`` ignores the AOT module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

__all__ = ["Kernel", "aot_enabled", "cache_dir", "jit_only", "kernel_stats", "njit"]

F = TypeVar("F", bound=Callable[..., Any])


def cache_dir() -> Path:
    """Folder of MedLens's compiled-kernel cache (see the module docstring for the order of precedence)."""
    env = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "medlens" / "numba"


def aot_enabled() -> bool:
    """False when ``MEDLENS_AOT`` is ``0``/``false``/``no``/``off`` (the AOT module is then never loaded)."""
    return os.environ.get("MEDLENS_AOT", "1").strip().lower() not in ("0", "false", "no", "off")


_CACHE_CLASS: Any = None
_LOCK = threading.Lock()


def _cache_class() -> type | None:
    """A numba FunctionCache whose only locator is :func:`cache_dir` (None if numba's internals moved)."""
    global _CACHE_CLASS
    if _CACHE_CLASS is not None:
        return _CACHE_CLASS if _CACHE_CLASS is not False else None
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover - numba layout changed
        _CACHE_CLASS = False
        return None
    impl_base = getattr(caching, "CompileResultCacheImpl", None)
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None)
    locator_base = getattr(caching, "_CacheLocator", None)
    cache_base = getattr(caching, "FunctionCache", None)
    if impl_base is None or mixin is None or locator_base is None or cache_base is None:  # pragma: no cover
        _CACHE_CLASS = False
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

    _CACHE_CLASS = _MedlensCache
    return _MedlensCache


def _numba_dispatcher(fn: Callable[..., Any]) -> Any:
    """``numba.njit(nogil=True)(fn)`` with the MedLens cache attached (the plain function under NUMBA_DISABLE_JIT)."""
    import numba

    disp = numba.njit(nogil=True)(fn)
    if not hasattr(disp, "_cache"):  # NUMBA_DISABLE_JIT: the plain function came back
        return disp
    cls = _cache_class()
    if cls is None:  # pragma: no cover - only with an incompatible numba
        warnings.warn(
            "numba's cache internals are not the expected ones: MedLens kernels are compiled in every process "
            "(not cached) rather than cached inside the installed package",
            RuntimeWarning,
            stacklevel=3,
        )
        return disp
    try:
        disp._cache = cls(disp.py_func)
    except RuntimeError:
        # no writable cache folder (read-only home): compile in each process, write nothing
        pass
    return disp


class Kernel(Generic[F]):
    """A radiomics kernel: the Python (numba-subset) definition plus the compiled code chosen at its first call.

    Attributes
    ----------
    py_func
        The undecorated function.
    aot_calls, jit_calls
        How many calls went to the ahead-of-time code and to numba's JIT in this process.
    """

    def __init__(self, fn: F) -> None:
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._jit: Any = None
        self._aot: list[tuple[Callable[[tuple[Any, ...]], bool], Callable[..., Any]]] | None = None
        self.aot_calls = 0
        self.jit_calls = 0

    def __repr__(self) -> str:
        return f"<medlens kernel {self.__module__}.{self.__name__}>"

    def jit_dispatcher(self) -> Any:
        """numba's dispatcher of this kernel (created with its module's other kernels on first use)."""
        if self._jit is None:
            with _LOCK:  # threads of one process (a threaded Dask worker) share the dispatchers
                if self._jit is None:
                    _materialise_module(self)
        return self._jit

    @property
    def signatures(self) -> list[Any]:
        """The signatures numba has compiled for this kernel in this process (``[]`` when the JIT was not used)."""
        return list(getattr(self._jit, "signatures", None) or [])

    def __call__(self, *args: Any) -> Any:
        if self._aot is None:
            self._aot = _aot_entries(self)
        for matches, fn in self._aot:
            if matches(args):
                self.aot_calls += 1
                return fn(*args)
        self.jit_calls += 1
        return self.jit_dispatcher()(*args)


_ALL: list[Kernel[Any]] = []
_FORCE_JIT = False


@contextlib.contextmanager
def jit_only() -> Iterator[None]:
    """Within the block, every kernel call goes to numba's JIT (used to record the signatures to build AOT)."""
    global _FORCE_JIT
    previous = _FORCE_JIT
    _FORCE_JIT = True
    for k in _ALL:
        k._aot = None
    try:
        yield
    finally:
        _FORCE_JIT = previous
        for k in _ALL:
            k._aot = None


def njit(fn: F) -> F:
    """Make ``fn`` a :class:`Kernel` (compiled in nopython mode at first call; see the module docstring)."""
    k: Kernel[F] = Kernel(fn)
    _ALL.append(k)
    return k  # type: ignore[return-value]


def kernel_stats() -> dict[str, tuple[int, int]]:
    """``{"module.name": (aot_calls, jit_calls)}`` for every kernel called in this process."""
    return {f"{k.__module__}.{k.__name__}": (k.aot_calls, k.jit_calls) for k in _ALL if k.aot_calls or k.jit_calls}


def _materialise_module(kernel: Kernel[Any]) -> None:
    """Create numba dispatchers for every kernel of ``kernel``'s module (compiled lazily by numba).

    numba resolves a kernel's calls to other kernels through its globals at compile time, so those must be
    numba dispatchers, not :class:`Kernel` objects. Each kernel is therefore compiled from a copy of its
    function whose globals are a copy of the module's namespace with every Kernel replaced by its
    dispatcher; the module itself keeps the Kernel objects.
    """
    module = sys.modules.get(kernel.__module__)
    namespace = vars(module) if module is not None else {}
    members = {name: v for name, v in namespace.items() if isinstance(v, Kernel)}
    if kernel not in members.values():  # a kernel not bound to a module-level name
        members[f"<{kernel.__name__}>"] = kernel
    shared = dict(namespace) if module is not None else dict(kernel.py_func.__globals__)
    for name, k in members.items():
        if k._jit is None:
            fn = k.py_func
            clone = types.FunctionType(fn.__code__, shared, fn.__name__, fn.__defaults__, fn.__closure__)
            clone.__qualname__ = fn.__qualname__
            clone.__module__ = fn.__module__
            clone.__doc__ = fn.__doc__
            k._jit = _numba_dispatcher(clone)
        shared[name] = k._jit


def _aot_entries(kernel: Kernel[Any]) -> list[tuple[Callable[[tuple[Any, ...]], bool], Callable[..., Any]]]:
    if _FORCE_JIT or not aot_enabled():
        return []
    from medlens.radiomics import _aot

    return _aot.entries_for(kernel.__module__, kernel.__name__)
