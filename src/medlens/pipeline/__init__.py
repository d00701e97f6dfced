"""Cohort runs: configuration, Dask execution (resumable), feature store, models, report, demo.

Entry points: :func:`medlens.pipeline.config.load_config`, :func:`medlens.pipeline.run.run_pipeline`,
:func:`medlens.pipeline.demo.run_demo`, :func:`medlens.pipeline.store.query`. Dask and
scikit-learn are imported inside these modules only when a run starts.
"""

from __future__ import annotations

__all__ = ["load_config", "query", "run_demo", "run_pipeline"]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    import importlib

    where = {"load_config": "config", "run_pipeline": "run", "run_demo": "demo", "query": "store"}
    if name in where:
        return getattr(importlib.import_module(f"medlens.pipeline.{where[name]}"), name)
    raise AttributeError(f"module 'medlens.pipeline' has no attribute {name!r}")
