"""Torch's process-wide state around library calls (imported without importing torch)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])


def keeps_torch_state(fn: _F) -> _F:
    """Decorate a function that seeds torch or sets its intra-op threads: the caller's global RNG state and
    thread count are restored when it returns or raises (both are process-wide; a library call must not change them).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):
                return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return wrapper  # type: ignore[return-value]
