"""DICOM catalog: a folder tree of any size scanned (headers only, in parallel, incrementally) into DuckDB.

>>> from medlens.catalog import scan, Catalog          # doctest: +SKIP
>>> scan("/data/archive", "catalog.duckdb")             # doctest: +SKIP
>>> with Catalog("catalog.duckdb") as cat:              # doctest: +SKIP
...     pet = cat.series(modality="PT")
"""

from __future__ import annotations

from medlens.catalog.query import Catalog
from medlens.catalog.scan import ScanReport, scan

__all__ = ["Catalog", "ScanReport", "scan"]
