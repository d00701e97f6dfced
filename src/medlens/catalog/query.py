"""Read-only queries on a catalog made by :func:`medlens.catalog.scan`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medlens.core.errors import FormatError, InputError


class Catalog:
    """A read-only connection to a DuckDB catalog; results are pandas DataFrames.

    Use as a context manager (``with Catalog(db) as cat: ...``) or call :meth:`close`.
    """

    def __init__(self, db: str | os.PathLike[str]) -> None:
        import duckdb

        self.path = Path(db)
        if not self.path.is_file():
            raise InputError(f"catalog {self.path} does not exist; create it with `medlens catalog scan DIR --db {db}`")
        try:
            self._con = duckdb.connect(str(self.path), read_only=True)
            self._con.execute("SELECT count(*) FROM series").fetchone()
        except Exception as exc:
            raise FormatError(f"{self.path} is not a MedLens catalog (DuckDB with a 'series' table): {exc}") from exc

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def query(self, sql: str, params: list[Any] | None = None) -> Any:
        """Run any SQL on the catalog's tables and return a DataFrame."""
        return self._con.execute(sql, params or []).df()

    def series(self, *, modality: str | None = None, patient_id: str | None = None) -> Any:
        """Series, optionally of one modality (``CT``, ``PT``, ``RTSTRUCT``, ...) and/or patient."""
        where, params = [], []
        if modality is not None:
            where.append("modality = ?")
            params.append(modality)
        if patient_id is not None:
            where.append("patient_id = ?")
            params.append(patient_id)
        sql = "SELECT * FROM series" + (" WHERE " + " AND ".join(where) if where else "")
        return self.query(sql + " ORDER BY patient_id, modality, series_uid", params)

    def patients(self) -> Any:
        return self.query("SELECT * FROM patients ORDER BY patient_id")

    def structure_sets(self) -> Any:
        """RTSTRUCT/SEG objects with ROI names, referenced series and whether it is catalogued."""
        return self.query("SELECT * FROM structure_sets ORDER BY patient_id, series_uid")

    def bad_files(self) -> Any:
        return self.query("SELECT * FROM bad_files ORDER BY path")

    def qa(self) -> Any:
        return self.query("SELECT * FROM qa ORDER BY series_uid, code")

    def files(self, series_uid: str) -> list[str]:
        """Paths of a series' instances, sorted."""
        return [
            r[0]
            for r in self._con.execute(
                "SELECT path FROM instances WHERE series_uid = ? ORDER BY path", [series_uid]
            ).fetchall()
        ]
