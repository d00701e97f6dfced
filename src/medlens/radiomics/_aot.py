"""Ahead-of-time (AOT) machine code of the radiomics kernels, so that a fresh process does not import numba.

:func:`build` (run by ``medlens warm-up``) compiles every public kernel of the kernel modules with
``numba.pycc`` for the signatures numba compiled in this process (i.e. after a warm-up extraction), into one
extension module with a JSON manifest, in ``<cache_dir>/aot/<key>/``. ``<key>`` hashes the kernel sources, the
numpy version, the Python ABI and the machine type, so an edited kernel or another numpy never loads stale
code (a different key is simply absent: the kernels then run through numba's JIT, as before the build).
The code targets the generic CPU of the machine type (no host-specific instructions), so a cache shared by
machines of one type over a network home stays valid.

:func:`entries_for` gives, per kernel, ``(matches, function)`` pairs: ``matches(args)`` is True only when
every argument has exactly the numba type of that compiled signature. This check is essential: the AOT
wrappers do not check argument types (an int64 array passed for a float64 one would be read as float64),
so anything else goes to numba's JIT.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.radiomics._jit import cache_dir

__all__ = ["AotBuild", "aot_dir", "build", "entries_for", "loaded_path", "reset"]

MODULE_NAME = "medlens_radiomics_aot"
KERNEL_MODULES = ("medlens.radiomics._kernels", "medlens.radiomics.texture._kernels")
_FORMAT = "1"  # bump when the manifest or the export scheme changes

_HERE = Path(__file__).resolve().parent
_SOURCES = (_HERE / "_kernels.py", _HERE / "texture" / "_kernels.py", _HERE / "_jit.py", Path(__file__).resolve())

Matcher = Callable[[tuple[Any, ...]], bool]


def key() -> str:
    """Hash of what the compiled code depends on: kernel sources, numpy, Python ABI, machine type, format."""
    h = hashlib.sha256()
    for p in _SOURCES:
        h.update(p.read_bytes())
    h.update(f"{np.__version__}|{sys.implementation.cache_tag}|{os.uname().machine}|{_FORMAT}".encode())
    return h.hexdigest()[:20]


def aot_dir() -> Path:
    """Folder of the AOT module for the current sources and environment (it may not exist)."""
    return cache_dir() / "aot" / key()


# --------------------------------------------------------------------------------------------- argument checks


def _array_check(dtype: str, ndim: int, layout: str, readonly: bool) -> Callable[[Any], bool]:
    dt = np.dtype(dtype)

    def check(a: Any) -> bool:
        if type(a) is not np.ndarray or a.ndim != ndim or a.dtype != dt:
            return False
        f = a.flags
        if not f.aligned:
            return False
        if layout == "C" and not f.c_contiguous:
            return False
        if layout == "F" and not f.f_contiguous:
            return False
        # a kernel compiled for a writable array may write into it: never hand it a read-only one
        return readonly or bool(f.writeable)

    return check


def _scalar_check(dtype: str) -> Callable[[Any], bool]:
    # the Python types numba infers as this scalar type (int -> int64, float -> float64, bool -> boolean)
    types: tuple[type, ...] = (np.dtype(dtype).type,)
    if dtype == "int64":
        types += (int,)
    elif dtype == "float64":
        types += (float,)
    elif dtype == "bool":
        types += (bool,)

    def check(a: Any) -> bool:
        return type(a) in types

    return check


def _matcher(specs: list[dict[str, Any]]) -> Matcher:
    checks = tuple(
        _array_check(s["dtype"], int(s["ndim"]), s["layout"], bool(s["readonly"]))
        if s["kind"] == "array"
        else _scalar_check(s["dtype"])
        for s in specs
    )
    n = len(checks)

    def matches(args: tuple[Any, ...]) -> bool:
        if len(args) != n:
            return False
        for check, a in zip(checks, args, strict=True):
            if not check(a):
                return False
        return True

    return matches


def _spec_of(ty: Any) -> dict[str, Any] | None:
    """The manifest entry of a numba argument type, or None when the AOT path does not handle it."""
    from numba.core import types

    if isinstance(ty, types.Array):
        if ty.layout not in ("C", "F", "A") or not ty.aligned:
            return None
        try:
            dtype = np.dtype(str(ty.dtype)).name
        except TypeError:
            return None
        return {"kind": "array", "dtype": dtype, "ndim": ty.ndim, "layout": ty.layout, "readonly": not ty.mutable}
    if isinstance(ty, types.Boolean) and not isinstance(ty, types.Literal):
        return {"kind": "scalar", "dtype": "bool"}
    if isinstance(ty, types.Integer | types.Float) and not isinstance(ty, types.Literal):
        return {"kind": "scalar", "dtype": np.dtype(str(ty)).name}
    return None


# --------------------------------------------------------------------------------------------- loading

_TABLE: dict[str, list[tuple[Matcher, Callable[..., Any]]]] | None = None
_LOADED_PATH: Path | None = None


def reset() -> None:
    """Forget the loaded table (the next kernel call looks for the AOT module again)."""
    global _TABLE, _LOADED_PATH
    from medlens.radiomics import _jit

    _TABLE, _LOADED_PATH = None, None
    for k in _jit._ALL:
        k._aot = None


def loaded_path() -> Path | None:
    """Path of the AOT extension module loaded in this process (None if none)."""
    _table()
    return _LOADED_PATH


def _table() -> dict[str, list[tuple[Matcher, Callable[..., Any]]]]:
    global _TABLE, _LOADED_PATH
    from medlens.radiomics._jit import aot_enabled

    if not aot_enabled():
        return {}
    if _TABLE is not None:
        return _TABLE
    _TABLE = {}
    folder = aot_dir()
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return _TABLE
    so = folder / "?"
    try:
        meta = json.loads(manifest.read_text())
        so = folder / meta["file"]
        spec = importlib.util.spec_from_file_location(MODULE_NAME, so)
        if spec is None or spec.loader is None:
            raise ImportError("not an extension module")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        table = {
            qual: [(_matcher(e["args"]), getattr(mod, e["export"])) for e in entries]
            for qual, entries in meta["kernels"].items()
        }
    except Exception as exc:  # a broken cache must never break an extraction: fall back to the JIT
        warnings.warn(
            f"the ahead-of-time radiomics kernels in {so} could not be loaded ({type(exc).__name__}: {exc}); "
            "using numba's JIT instead. Run `medlens warm-up` to rebuild them.",
            RuntimeWarning,
            stacklevel=4,
        )
        return _TABLE
    _TABLE, _LOADED_PATH = table, so
    return _TABLE


def entries_for(module: str, name: str) -> list[tuple[Matcher, Callable[..., Any]]]:
    """``(matches, compiled_function)`` pairs of kernel ``module.name`` (empty when not built)."""
    return _table().get(f"{module}.{name}", [])


# --------------------------------------------------------------------------------------------- building


@dataclass(frozen=True)
class AotBuild:
    """Result of :func:`build`."""

    path: Path | None
    kernels: int
    signatures: int
    seconds: float
    skipped: tuple[str, ...]
    error: str | None = None


def build() -> AotBuild:
    """Compile the public kernels, for the signatures numba compiled in this process, into the AOT module.

    Call it after a warm-up extraction run through numba's JIT (``medlens warm-up`` does both). Needs numba
    and a C compiler (``numba.pycc`` links the module); when either is missing the result has ``error`` set
    and nothing is written. The module is built in a temporary folder and moved into place atomically.
    """
    import importlib

    from medlens.radiomics import _jit

    t0 = time.perf_counter()
    for m in KERNEL_MODULES:
        importlib.import_module(m)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycc's pending-deprecation notice
            from numba.pycc import CC
    except ImportError as exc:
        return AotBuild(None, 0, 0, 0.0, (), f"numba.pycc is not available ({exc})")
    kernels: dict[str, list[dict[str, Any]]] = {}
    skipped: list[str] = []
    target = aot_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        cc = CC(MODULE_NAME)
        cc.output_dir = str(tmp)
        cc.verbose = False
        n_sig = 0
        for k in _jit._ALL:
            mod = sys.modules.get(k.__module__)
            if k.__module__ not in KERNEL_MODULES or mod is None or k.__name__ not in getattr(mod, "__all__", ()):
                continue  # private helpers are compiled into the kernels that call them
            disp = k._jit
            if disp is None or not hasattr(disp, "overloads"):
                skipped.append(f"{k.__name__} (not called in the warm-up)")
                continue
            qual = f"{k.__module__}.{k.__name__}"
            for i, sig in enumerate(disp.signatures):
                specs = [_spec_of(t) for t in sig]
                if any(s is None for s in specs):
                    skipped.append(f"{k.__name__}{tuple(str(t) for t in sig)}")
                    continue
                export = f"k{len(kernels)}_{i}"
                ret = disp.overloads[sig].signature.return_type
                cc.export(export, ret(*sig))(disp.py_func)  # the copy whose globals hold dispatchers
                kernels.setdefault(qual, []).append({"export": export, "args": specs})
                n_sig += 1
        if not kernels:
            return AotBuild(None, 0, 0, time.perf_counter() - t0, tuple(skipped), "no kernel was compiled by numba")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cc.compile()
        built = [p for p in tmp.iterdir() if p.name.startswith(MODULE_NAME) and p.suffix in (".so", ".pyd")]
        if len(built) != 1:
            raise RuntimeError(f"numba.pycc wrote {sorted(p.name for p in tmp.iterdir())}, expected one module")
        (tmp / "manifest.json").write_text(
            json.dumps({"file": built[0].name, "key": key(), "kernels": kernels}, indent=1, sort_keys=True)
        )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except Exception as exc:  # no compiler, a pycc failure: report it, keep the JIT path
        shutil.rmtree(tmp, ignore_errors=True)
        return AotBuild(None, 0, 0, time.perf_counter() - t0, tuple(skipped), f"{type(exc).__name__}: {exc}")
    reset()
    return AotBuild(target / built[0].name, len(kernels), n_sig, time.perf_counter() - t0, tuple(skipped))
