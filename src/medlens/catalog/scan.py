"""Scanning a folder tree into the DuckDB catalog: headers only, in parallel, incrementally."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError
from medlens.core.parallel import BatchMapper

#: Fewer changed files than this are read in the calling process (starting workers costs more).
MIN_FILES_FOR_WORKERS = 64

_IMAGE_MODALITIES_SQL = "('RTSTRUCT','SEG','RTPLAN','RTDOSE','SR','PR','KO','REG','RWV')"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path VARCHAR PRIMARY KEY, size BIGINT, mtime_ns BIGINT, status VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS instances (
    path VARCHAR, size BIGINT, mtime_ns BIGINT, sop_instance_uid VARCHAR, sop_class_uid VARCHAR,
    transfer_syntax_uid VARCHAR, patient_id VARCHAR, patient_name VARCHAR, patient_sex VARCHAR,
    patient_birth_date VARCHAR, patient_age VARCHAR, patient_weight_kg DOUBLE, patient_size_m DOUBLE,
    study_uid VARCHAR, study_date VARCHAR, study_description VARCHAR, accession_number VARCHAR,
    series_uid VARCHAR, series_number INTEGER, series_description VARCHAR, modality VARCHAR, body_part VARCHAR,
    manufacturer VARCHAR, manufacturer_model VARCHAR, convolution_kernel VARCHAR, units VARCHAR,
    instance_number INTEGER, frame_of_reference_uid VARCHAR, ipp_x DOUBLE, ipp_y DOUBLE, ipp_z DOUBLE,
    iop VARCHAR, pixel_spacing_row DOUBLE, pixel_spacing_col DOUBLE, slice_thickness DOUBLE, rows INTEGER,
    columns INTEGER, n_frames INTEGER, has_pixels BOOLEAN, burned_in_annotation VARCHAR);
CREATE TABLE IF NOT EXISTS rois (
    path VARCHAR, sop_instance_uid VARCHAR, series_uid VARCHAR, roi_number INTEGER, roi_name VARCHAR);
CREATE TABLE IF NOT EXISTS refs (
    path VARCHAR, sop_instance_uid VARCHAR, series_uid VARCHAR, referenced_series_uid VARCHAR);
CREATE TABLE IF NOT EXISTS qa_geometry (
    series_uid VARCHAR, code VARCHAR, severity VARCHAR, message VARCHAR);
"""

# Derived tables, rebuilt in SQL after every scan (cheap: one pass over `instances`).
_DERIVED = f"""
CREATE OR REPLACE TABLE series AS
SELECT series_uid, any_value(patient_id) AS patient_id, any_value(study_uid) AS study_uid,
       any_value(modality) AS modality, any_value(series_number) AS series_number,
       any_value(series_description) AS series_description, any_value(manufacturer) AS manufacturer,
       any_value(manufacturer_model) AS manufacturer_model, any_value(convolution_kernel) AS convolution_kernel,
       any_value(units) AS units, any_value(frame_of_reference_uid) AS frame_of_reference_uid,
       any_value(body_part) AS body_part, count(*) AS n_instances, sum(size) AS n_bytes,
       bool_or(has_pixels) AS has_pixels, any_value(rows) AS rows, any_value(columns) AS columns,
       any_value(pixel_spacing_row) AS pixel_spacing_row, any_value(pixel_spacing_col) AS pixel_spacing_col,
       any_value(slice_thickness) AS slice_thickness,
       bool_or(burned_in_annotation = 'YES') AS burned_in_annotation,
       any_value(modality) NOT IN {_IMAGE_MODALITIES_SQL} AND bool_or(has_pixels) AS is_image,
       min(path) AS first_path
FROM instances GROUP BY series_uid;
CREATE OR REPLACE TABLE studies AS
SELECT study_uid, any_value(patient_id) AS patient_id, any_value(study_date) AS study_date,
       any_value(study_description) AS study_description, any_value(accession_number) AS accession_number,
       count(DISTINCT series_uid) AS n_series, count(*) AS n_instances
FROM instances GROUP BY study_uid;
CREATE OR REPLACE TABLE patients AS
SELECT patient_id, any_value(patient_name) AS patient_name, any_value(patient_sex) AS patient_sex,
       any_value(patient_birth_date) AS patient_birth_date, any_value(patient_age) AS patient_age,
       any_value(patient_weight_kg) AS patient_weight_kg, any_value(patient_size_m) AS patient_size_m,
       count(DISTINCT study_uid) AS n_studies, count(DISTINCT series_uid) AS n_series, count(*) AS n_instances
FROM instances GROUP BY patient_id;
CREATE OR REPLACE TABLE structure_sets AS
SELECT r.sop_instance_uid, r.series_uid, i.patient_id, i.modality, i.path, r.referenced_series_uid,
       s.series_uid IS NOT NULL AS referenced_series_found, s.modality AS referenced_modality,
       (SELECT list(roi_name ORDER BY roi_number) FROM rois o WHERE o.sop_instance_uid = r.sop_instance_uid)
           AS roi_names
FROM refs r JOIN instances i ON i.path = r.path
LEFT JOIN series s ON s.series_uid = r.referenced_series_uid;
CREATE OR REPLACE TABLE bad_files AS SELECT path, status, reason FROM files WHERE status IN ('bad', 'not_dicom');
CREATE OR REPLACE TABLE qa AS
SELECT series_uid, code, severity, message FROM qa_geometry
UNION ALL
SELECT series_uid, 'unresolved_reference', 'warning',
       modality || ' ' || sop_instance_uid || ' (' || path || ') references series ' || referenced_series_uid
       || ', which is not in the catalog'
FROM structure_sets WHERE NOT referenced_series_found
UNION ALL
SELECT series_uid, 'duplicate_sop_instance', 'error',
       'SOPInstanceUID ' || sop_instance_uid || ' occurs in ' || count(*) || ' files: ' || string_agg(path, ', ')
FROM instances GROUP BY series_uid, sop_instance_uid HAVING count(*) > 1
UNION ALL
SELECT series_uid, 'no_pixel_data', 'warning',
       count(*) || ' instance(s) of an image series have no pixel data: ' || min(path)
FROM instances WHERE NOT has_pixels AND modality NOT IN {_IMAGE_MODALITIES_SQL}
GROUP BY series_uid;
"""


@dataclass
class ScanReport:
    """Counts of one scan.

    Attributes
    ----------
    n_seen
        Files found under the root.
    n_read
        Files whose header was read (new or changed: path, size or mtime differ).
    n_skipped
        Unchanged files, not opened.
    n_removed
        Catalogued files no longer present, dropped from the catalog.
    n_bad, n_not_dicom, n_dicomdir
        Of the files read: unreadable/incomplete DICOM, not DICOM at all, DICOMDIR indexes.
    """

    root: str
    db: str
    n_seen: int = 0
    n_read: int = 0
    n_skipped: int = 0
    n_removed: int = 0
    n_bad: int = 0
    n_not_dicom: int = 0
    n_dicomdir: int = 0
    workers: int = 1
    seconds: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.totals
        return (
            f"scanned {self.root}: {self.n_seen} files, read {self.n_read}, skipped {self.n_skipped} unchanged, "
            f"removed {self.n_removed}; of those read: {self.n_bad} bad, {self.n_not_dicom} not DICOM, "
            f"{self.n_dicomdir} DICOMDIR; catalog {self.db}: {t.get('patients', 0)} patients, "
            f"{t.get('studies', 0)} studies, {t.get('series', 0)} series, {t.get('instances', 0)} instances "
            f"({self.workers} worker(s), {self.seconds:.2f} s)"
        )


def _walk(root: Path) -> Iterator[tuple[str, int, int]]:
    from medlens.io.dicom.files import walk_files  # the one lister: symlinked folders followed once

    return walk_files(root, include_hidden=True)


def _read_all(todo: list[tuple[str, int, int]], workers: int, mapper: BatchMapper | None) -> list[dict[str, Any]]:
    from medlens.catalog._headers import read_headers
    from medlens.core.parallel import map_batches

    return map_batches(read_headers, todo, workers=workers, min_items=MIN_FILES_FOR_WORKERS, mapper=mapper)


def _geometry_findings(con: Any, series_uids: list[str]) -> list[dict[str, str]]:
    import json

    from medlens.io.geometry_qa import check_slice_geometry

    if not series_uids:
        return []
    df = con.execute(
        f"""SELECT series_uid, path, ipp_x, ipp_y, ipp_z, iop, pixel_spacing_row, pixel_spacing_col, rows, columns
            FROM instances WHERE series_uid IN (SELECT unnest(?)) AND ipp_x IS NOT NULL AND iop IS NOT NULL
            AND modality NOT IN {_IMAGE_MODALITIES_SQL} AND coalesce(n_frames, 1) = 1
            ORDER BY series_uid, path""",
        [series_uids],
    ).df()
    out: list[dict[str, str]] = []
    for uid, g in df.groupby("series_uid", sort=False):
        if len(g) < 2:
            continue
        ps = g[["pixel_spacing_row", "pixel_spacing_col"]]
        shapes = g[["rows", "columns"]]
        findings = check_slice_geometry(
            g[["ipp_x", "ipp_y", "ipp_z"]].to_numpy(),
            [json.loads(v) for v in g["iop"]],
            pixel_spacings=None if ps.isna().any().any() else ps.to_numpy(),
            shapes=None if shapes.isna().any().any() else [tuple(r) for r in shapes.to_numpy().astype(int)],
            files=[os.path.basename(p) for p in g["path"]],
        )
        out += [
            {"series_uid": str(uid), "code": f.code, "severity": f.severity, "message": f.message} for f in findings
        ]
    return out


def scan(
    root: str | os.PathLike[str],
    db: str | os.PathLike[str],
    *,
    workers: int | None = None,
    audit_log: str | os.PathLike[str] | None = None,
    mapper: BatchMapper | None = None,
) -> ScanReport:
    """Scan ``root`` recursively into the DuckDB catalog ``db`` (created or updated).

    Parameters
    ----------
    root
        Folder tree (only read, never modified).
    db
        DuckDB file. A rescan opens only files whose (path, size, mtime_ns) differ from the
        catalog's; files that disappeared are dropped.
    workers
        Processes reading headers (default: the number of CPU cores). ``1`` reads in this
        process, without starting any worker.
    mapper
        Who provides the workers (:class:`medlens.core.parallel.BatchMapper`); default a
        standard-library process pool. ``medlens catalog scan`` passes Dask's
        (:func:`medlens.pipeline.parallel.dask_mapper`).
    audit_log
        Optional audit log (:class:`medlens.core.audit.AuditLog`) to which the scan is appended.

    Returns
    -------
    ScanReport
        Counts read/skipped/removed/bad and catalog totals.

    Notes
    -----
    Tables: ``files`` (scan state), ``instances``, ``series``, ``studies``, ``patients``, ``rois``,
    ``refs``, ``structure_sets`` (RTSTRUCT/SEG with referenced series and whether it is catalogued),
    ``bad_files``, ``qa`` (geometry findings of :mod:`medlens.io.geometry_qa`, unresolved references,
    duplicate SOP instances, image instances without pixel data).
    """
    import duckdb
    import pandas as pd

    t0 = time.perf_counter()
    rootp = Path(root)
    if not rootp.is_dir():
        raise InputError(f"catalog scan: {root} is not a folder; give the top folder of a DICOM tree")
    if workers is not None and workers < 1:
        raise InputError(f"catalog scan: workers must be >= 1, got {workers}")
    nworkers = workers or os.cpu_count() or 1
    rootp = rootp.resolve()
    dbp = Path(db).resolve()
    dbp.parent.mkdir(parents=True, exist_ok=True)
    rep = ScanReport(root=str(rootp), db=str(dbp), workers=nworkers)
    try:
        con = duckdb.connect(str(dbp))
    except duckdb.IOException as exc:
        raise InputError(
            f"catalog {dbp} cannot be opened for writing ({exc}); another scan or a query may hold it — "
            "wait for it to finish, or close it"
        ) from exc
    except duckdb.Error as exc:
        raise InputError(f"{dbp} is not a DuckDB catalog ({exc}); give a new file or an existing catalog") from exc
    try:
        con.execute(_SCHEMA)
        skip = {str(dbp), str(dbp) + ".wal"}  # the catalog itself may live inside the tree
        found = {p: (s, m) for p, s, m in _walk(rootp) if p not in skip}
        prefix = str(rootp).rstrip(os.sep) + os.sep
        known = {
            p: (s, m)
            for p, s, m in con.execute(
                "SELECT path, size, mtime_ns FROM files WHERE starts_with(path, ?)", [prefix]
            ).fetchall()
        }
        todo = [(p, s, m) for p, (s, m) in found.items() if known.get(p) != (s, m)]
        removed = [p for p in known if p not in found]
        rep.n_seen, rep.n_read, rep.n_skipped, rep.n_removed = (
            len(found),
            len(todo),
            len(found) - len(todo),
            len(removed),
        )
        records = _read_all(todo, nworkers, mapper) if todo else []
        files = pd.DataFrame([r["file"] for r in records], columns=["path", "size", "mtime_ns", "status", "reason"])
        inst = pd.DataFrame([r["instance"] for r in records if r["instance"] is not None])
        rois = pd.DataFrame([dict(roi, path=r["file"]["path"]) for r in records for roi in r["rois"]])
        refs = pd.DataFrame([dict(ref, path=r["file"]["path"]) for r in records for ref in r["refs"]])
        rep.n_bad = int((files["status"] == "bad").sum())
        rep.n_not_dicom = int((files["status"] == "not_dicom").sum())
        rep.n_dicomdir = int((files["status"] == "dicomdir").sum())
        stale = pd.DataFrame({"path": pd.Series([p for p, _, _ in todo] + removed + [""], dtype=object)})

        con.execute("BEGIN TRANSACTION")
        # Series touched by this scan (before and after) get their geometry QA recomputed.
        con.register("stale_df", stale)
        touched = {
            u
            for (u,) in con.execute(
                "SELECT DISTINCT series_uid FROM instances WHERE path IN (SELECT path FROM stale_df)"
            ).fetchall()
        }
        for table in ("files", "instances", "rois", "refs"):
            con.execute(f"DELETE FROM {table} WHERE path IN (SELECT path FROM stale_df)")
        for table, df in (("files", files), ("instances", inst), ("rois", rois), ("refs", refs)):
            if len(df):
                con.register("new_df", df)
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_df")
                con.unregister("new_df")
        con.unregister("stale_df")
        if len(inst):
            touched |= set(inst["series_uid"])
        touched_l = sorted(u for u in touched if u)
        con.execute("DELETE FROM qa_geometry WHERE series_uid IN (SELECT unnest(?))", [touched_l])
        geo = pd.DataFrame(_geometry_findings(con, touched_l), columns=["series_uid", "code", "severity", "message"])
        if len(geo):
            con.register("geo_df", geo)
            con.execute("INSERT INTO qa_geometry SELECT * FROM geo_df")
            con.unregister("geo_df")
        con.execute(_DERIVED)
        con.execute("COMMIT")
        for t in ("patients", "studies", "series", "instances", "structure_sets", "bad_files", "qa"):
            rep.totals[t] = int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()
    rep.seconds = time.perf_counter() - t0
    if audit_log is not None:
        from medlens.core.audit import AuditLog

        AuditLog(audit_log).append(
            action="catalog.scan",
            inputs={"root": str(rootp)},
            outputs={"db": str(dbp)},
            details={k: v for k, v in rep.__dict__.items() if k not in ("root", "db")},
        )
    return rep
