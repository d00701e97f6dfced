"""The feature store: Parquet, partitioned by run, one row per case/ROI, queried with DuckDB.

Layout: ``<run dir>/features/run_id=<name>-<settings hash>/features.parquet``. The partition is
named after the settings, so re-running (or resuming) the same configuration rewrites the same
partition and a table never holds two rows for one case; other settings get their own partition.

Columns: ``case_id``, ``roi``, ``status`` (``ok``/``error``), ``error``, the outcome columns
(``outcome``, ``time``, ``event``, ``batch``), clinical predictors (``clin_*``: the CSV's
clinical columns and age/sex/BMI read from the DICOM headers), lineage (``study_uid``,
``series_uid``, ``sop_uids_hash``, ``n_sop_instances``, ``modality``, ``units``, ``input_hash``,
``settings_hash``, ``medlens_version``, ``code_hash`` (fingerprint of the feature code),
``started_at``, ``finished_at``, ``run_id``) and one column per IBSI feature tag.

A multimodal run (``modalities`` in the configuration) still writes one row per case: ``roi`` lists
``name:ROI`` per modality, ``modalities`` the configured names, ``modality`` the DICOM modalities
present (``PT+MR+CT``), and every modality ``m`` has its own lineage columns ``m_study_uid``,
``m_series_uid``, ``m_sop_uids_hash``, ``m_n_sop_instances``, ``m_modality``, ``m_units``, ``m_roi``,
``m_status`` (``ok``/``absent``) and ``m_history`` (the preprocessing as applied), and its features
prefixed ``m_`` (``pet_stat_max``, ``mr_cm_contrast_3D_avg``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError

__all__ = [
    "LINEAGE_COLUMNS",
    "MODALITY_LINEAGE",
    "feature_columns",
    "feature_groups",
    "query",
    "read_features",
    "write_features",
]

LINEAGE_COLUMNS = (
    "study_uid",
    "series_uid",
    "sop_uids_hash",
    "n_sop_instances",
    "modality",
    "units",
    "input_hash",
    "settings_hash",
    "medlens_version",
    "code_hash",
    "started_at",
    "finished_at",
    "run_id",
)
_BASE_COLUMNS = ("case_id", "roi", "status", "error", "outcome", "time", "event", "batch", "modalities")
#: Per-modality lineage column suffixes of a multimodal run (``pet_series_uid``, ...).
MODALITY_LINEAGE = (
    "study_uid",
    "series_uid",
    "sop_uids_hash",
    "n_sop_instances",
    "modality",
    "units",
    "roi",
    "status",
    "history",
)


def results_frame(results: list[dict[str, Any]], *, run_id: str, settings_hash: str) -> Any:
    """A pandas DataFrame with one row per case result (see the module docstring for the columns)."""
    import pandas as pd

    import medlens

    rows = []
    for r in results:
        case = r.get("case", {})
        row: dict[str, Any] = {
            "case_id": r["case_id"],
            "roi": r.get("roi", ""),
            "status": r["status"],
            "error": r.get("error") or "",
            "outcome": case.get("outcome"),
            "time": case.get("time"),
            "event": case.get("event"),
            "batch": case.get("batch"),
        }
        for k, v in (case.get("clinical") or {}).items():
            row[f"clin_{k}"] = v
        for k, v in (r.get("clinical_dicom") or {}).items():
            row[f"clin_dicom_{k}"] = v
        lin = r.get("lineage") or {}
        for k in LINEAGE_COLUMNS:
            row[k] = lin.get(k)
        if r.get("modalities") is not None or any(k.endswith("_status") for k in lin):
            row["modalities"] = ",".join(k[: -len("_status")] for k in lin if k.endswith("_status") and k != "status")
            for k, v in lin.items():
                row.setdefault(k, v)
        row.update(
            input_hash=r["key"],
            settings_hash=settings_hash,
            medlens_version=medlens.__version__,
            code_hash=r.get("code_hash", ""),
            started_at=r.get("started_at"),
            finished_at=r.get("finished_at"),
            run_id=run_id,
        )
        for k, v in (r.get("features") or {}).items():
            row[k] = float(v) if v is not None else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _modality_names(df: Any) -> set[str]:
    if "modalities" not in df.columns:
        return set()
    return {m for v in df["modalities"].dropna() for m in str(v).split(",") if m}


def feature_columns(df: Any) -> list[str]:
    """Names of the feature columns (IBSI tags, prefixed by the modality in a multimodal run) of a feature table."""
    fixed = set(_BASE_COLUMNS) | set(LINEAGE_COLUMNS)
    fixed |= {f"{m}_{k}" for m in _modality_names(df) for k in MODALITY_LINEAGE}
    return [c for c in df.columns if c not in fixed and not c.startswith("clin_")]


def feature_groups(df: Any) -> dict[str, list[str]]:
    """Feature columns by group: one group per modality of a multimodal run (by prefix), and ``clinical``."""
    mods = sorted(_modality_names(df))
    groups: dict[str, list[str]] = {m: [] for m in mods}
    for c in feature_columns(df):
        head = c.split("_", 1)[0]
        if head in groups:
            groups[head].append(c)
    groups["clinical"] = [c for c in df.columns if c.startswith("clin_")]
    return groups


def write_features(
    results: list[dict[str, Any]], run_dir: str | os.PathLike[str], *, run_id: str, settings_hash: str
) -> Path:
    """Write the run's partition atomically; returns the Parquet file path."""
    df = results_frame(results, run_id=run_id, settings_hash=settings_hash)
    target = Path(run_dir) / "features" / f"run_id={run_id}" / "features.parquet"
    with atomic_path(target, suffix=".parquet") as tmp:
        df.drop(columns=["run_id"]).to_parquet(tmp, index=False)
    return target


def _glob(store: str | os.PathLike[str]) -> str:
    p = Path(store)
    if (p / "features").is_dir():
        p = p / "features"
    if not p.is_dir() or not any(p.rglob("*.parquet")):
        raise InputError(f"{store}: no feature store here (expected a run folder or its features/ folder of Parquet)")
    return str(p / "**" / "*.parquet")


def read_features(store: str | os.PathLike[str]) -> Any:
    """All rows of a feature store (every run partition) as a pandas DataFrame."""
    return query("SELECT * FROM features", store)


def query(sql: str, store: str | os.PathLike[str]) -> Any:
    """Run a DuckDB SQL query over the store, exposed as the view ``features``; returns a DataFrame."""
    import duckdb

    con = duckdb.connect()
    try:
        pattern = _glob(store).replace("'", "''")
        con.execute(
            "CREATE VIEW features AS SELECT * FROM "
            f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
        )
        try:
            return con.execute(sql).df()
        except duckdb.Error as exc:
            raise InputError(f"query failed: {exc}".splitlines()[0] + " (the table is called 'features')") from exc
    finally:
        con.close()
