"""Mapping a batch function over items in parallel, without knowing who provides the workers.

The io and catalog layers read many files in parallel (catalog scan, de-identification) but must
not depend on Dask, which belongs to :mod:`medlens.pipeline`. They call :func:`map_batches`,
which runs in this process for one worker or few items, on a standard-library process pool
(spawned, so no state is inherited) by default, or on whatever ``mapper`` the caller passes —
:func:`medlens.pipeline.parallel.dask_mapper` is the Dask one the command line uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

__all__ = ["BatchMapper", "map_batches", "partitions"]

BatchFn = Callable[[list[Any]], list[Any]]


class BatchMapper(Protocol):
    """Applies ``fn`` to contiguous partitions of ``items`` on ``workers`` workers; results in item order."""

    def __call__(self, fn: BatchFn, items: Sequence[Any], *, workers: int) -> list[Any]: ...


def partitions(items: Sequence[Any], n: int) -> list[list[Any]]:
    """``items`` cut into ``n`` contiguous parts of near-equal length (fewer when there are fewer items)."""
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        stop = start + size + (1 if i < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out


def _process_pool(fn: BatchFn, items: Sequence[Any], *, workers: int) -> list[Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Several partitions per worker keep them busy when items differ in cost.
    parts = partitions(items, workers * 4)
    out: list[Any] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        for res in ex.map(fn, parts):
            out.extend(res)
    return out


def map_batches(
    fn: BatchFn,
    items: Sequence[Any],
    *,
    workers: int,
    min_items: int = 1,
    mapper: BatchMapper | None = None,
) -> list[Any]:
    """``fn`` over ``items`` in batches; the concatenated results, in the order of ``items``.

    ``fn`` must be picklable (a module-level function or a :func:`functools.partial` of one) when
    ``workers > 1``. With ``workers <= 1`` or fewer than ``min_items`` items it runs here, once.
    """
    if workers <= 1 or len(items) < min_items:
        return list(fn(list(items)))
    if mapper is not None:
        return list(mapper(fn, items, workers=workers))
    return _process_pool(fn, items, workers=workers)
