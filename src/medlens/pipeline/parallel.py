"""Dask as the provider of parallel workers for the lower layers (see :mod:`medlens.core.parallel`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medlens.core.parallel import BatchFn

__all__ = ["dask_mapper"]


def dask_mapper(fn: BatchFn, items: Sequence[Any], *, workers: int) -> list[Any]:
    """Run ``fn`` over partitions of ``items`` with ``dask.bag`` on ``workers`` spawned processes."""
    import dask
    import dask.bag as db

    bag = db.from_sequence(list(items), npartitions=min(len(items), workers * 4)).map_partitions(fn)
    with dask.config.set({"multiprocessing.context": "spawn"}):
        return list(bag.compute(scheduler="processes", num_workers=workers))
