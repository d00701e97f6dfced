"""The cohort: one :class:`Case` per row of a CSV (image, mask, outcome, clinical columns)."""

from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError
from medlens.pipeline.config import RunConfig

__all__ = ["Case", "check_outcome", "content_hash", "load_cases", "resolve_roi"]


@dataclass(frozen=True)
class Case:
    """One case of a cohort run (plain data, sent to Dask workers)."""

    case_id: str
    image: str
    mask: str | None
    outcome: float | None = None
    time: float | None = None
    event: float | None = None
    batch: str | None = None
    clinical: dict[str, Any] = field(default_factory=dict)
    #: multimodal runs: modality name -> {"image": path or None, "mask": path or None} (None: series absent)
    modalities: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def input_paths(self) -> list[str | None]:
        """Every input file or folder of the case (all modalities), for its content hash."""
        if not self.modalities:
            return [self.image, self.mask]
        return [p for m in self.modalities.values() for p in (m["image"], m["mask"])]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(value: Any, *, column: str, case_id: str, source: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: column {column!r} of case {case_id!r} must be numeric, got {value!r}") from exc


def load_cases(config: RunConfig) -> list[Case]:
    """Read the cohort CSV of ``config`` into cases, checking columns and files.

    Raises :class:`InputError` for a missing CSV, a missing column (listing the available ones),
    duplicate case ids, or image/mask paths that do not exist (listing them).
    """
    import pandas as pd

    c = config.section("cohort")
    if c["catalog"] is not None:
        df, source = _catalog_frame(config)
    else:
        csv = Path(c["csv"])
        csv = csv if csv.is_absolute() else config.data_dir / csv
        if not csv.is_file():
            raise InputError(
                f"cohort CSV {csv} not found (cohort.csv is relative to the data folder {config.data_dir})"
            )
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        source = str(csv)
    mods = config.modalities
    if mods is None:
        needed = [c["id_column"], c["image_column"]]
        keys: tuple[str, ...] = ("mask_column", "outcome", "time_column", "event_column", "batch_column")
    else:
        needed = [c["id_column"]]
        keys = ("outcome", "time_column", "event_column", "batch_column")
        for spec in mods.values():
            for what in ("image", "mask"):
                if spec[f"{what}_column"] is not None:
                    needed.append(spec[f"{what}_column"])
                else:
                    needed += [f for _, f, _, _ in string.Formatter().parse(spec[what]) if f]
    for key in keys:
        if c[key] is not None:
            needed.append(c[key])
    needed += list(c["clinical"])
    for col in needed:
        if col not in df.columns:
            raise InputError(f"{source}: no column {col!r}; the CSV has: {', '.join(df.columns)}")
    ids = df[c["id_column"]].tolist()
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(f"{source}: duplicate case ids in {c['id_column']!r}: {', '.join(dup[:5])}")
    cases: list[Case] = []
    missing: list[str] = []
    for _, row in df.iterrows():
        cid = str(row[c["id_column"]])
        per_mod: dict[str, dict[str, str | None]] = {}
        if mods is None:
            img = config.data_dir / row[c["image_column"]]
            if not row[c["image_column"]] or not img.exists():
                missing.append(f"{cid}: image {img}")
            mask = None
            if c["mask_column"] is not None:
                mask = config.data_dir / row[c["mask_column"]]
                if not row[c["mask_column"]] or not mask.exists():
                    missing.append(f"{cid}: mask {mask}")
        else:
            for name, spec in mods.items():
                paths = {what: _modality_path(spec, what, row, config.data_dir) for what in ("image", "mask")}
                found = all(v is not None and v.exists() for v in paths.values())
                if not found and spec["required"]:
                    missing += [
                        f"{cid}: {name} {what} {v if v is not None else '(empty CSV cell)'}"
                        for what, v in paths.items()
                        if v is None or not v.exists()
                    ]
                per_mod[name] = {k: str(v) if found and v is not None else None for k, v in paths.items()}
            present = [m for m in per_mod.values() if m["image"] is not None]
            if not present and not any(spec["required"] for spec in mods.values()):
                missing.append(f"{cid}: none of the modalities {', '.join(mods)} is present")
            img = Path(present[0]["image"]) if present and present[0]["image"] else config.data_dir
            mask = Path(present[0]["mask"]) if present and present[0]["mask"] else None
        clinical = {}
        for col in c["clinical"]:
            v = row[col]
            try:
                clinical[col] = float(v) if v != "" else None
            except ValueError:
                clinical[col] = v
        cases.append(
            Case(
                case_id=cid,
                image=str(img),
                mask=str(mask) if mask is not None else None,
                outcome=_num(row[c["outcome"]], column=c["outcome"], case_id=cid, source=source)
                if c["outcome"]
                else None,
                time=_num(row[c["time_column"]], column=c["time_column"], case_id=cid, source=source)
                if c["time_column"]
                else None,
                event=_num(row[c["event_column"]], column=c["event_column"], case_id=cid, source=source)
                if c["event_column"]
                else None,
                batch=str(row[c["batch_column"]]) if c["batch_column"] else None,
                clinical=clinical,
                modalities=per_mod,
            )
        )
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise InputError(f"{source}: {len(missing)} cohort file(s) not found: {'; '.join(missing[:5])}{more}")
    if not cases:
        raise InputError(f"{source}: the cohort has no cases")
    return cases


def _modality_path(spec: dict[str, Any], what: str, row: Any, data_dir: Path) -> Path | None:
    """The image or mask path of one modality of a CSV row (a column, or a template of columns); None if empty."""
    if spec[f"{what}_column"] is not None:
        value = str(row[spec[f"{what}_column"]])
    else:
        value = spec[what].format(**{str(k): v for k, v in row.items()})
    return data_dir / value if value.strip() else None


_UID = re.compile(r"^[0-9]+(\.[0-9]+)+$")


def _catalog_frame(config: RunConfig) -> tuple[Any, str]:
    """Run ``cohort.query`` on the catalog; series UIDs in the image/mask columns become their folder.

    A series UID is replaced by the folder holding its instances, which must hold no other
    instance of the catalog (otherwise the series cannot be read as a folder: give paths instead).
    """
    import duckdb

    from medlens.catalog import Catalog

    c = config.section("cohort")
    db = Path(c["catalog"])
    db = db if db.is_absolute() else config.data_dir / db
    source = f"catalog {db}"
    with Catalog(db) as cat:
        try:
            df = cat.query(c["query"])
        except duckdb.Error as exc:
            raise InputError(f"{source}: cohort.query failed: {str(exc).splitlines()[0]}") from exc
        df = df.astype(object).where(df.notna(), "").astype(str)
        for key in ("image_column", "mask_column"):
            col = c[key]
            if col is None or col not in df.columns:
                continue
            folders = []
            for value in df[col]:
                if not _UID.match(value):
                    folders.append(value)
                    continue
                files = cat.files(value)
                if not files:
                    raise InputError(f"{source}: series {value} (column {col!r}) is not in the catalog")
                folder = Path(files[0]).parent
                n_in_folder = cat.query(
                    "SELECT count(*) AS n FROM instances WHERE starts_with(path, ?)", [str(folder) + "/"]
                )["n"].iloc[0]
                if n_in_folder != len(files):
                    raise InputError(
                        f"{source}: series {value} shares its folder {folder} with other DICOM files; "
                        "return file or folder paths in the query instead of series UIDs"
                    )
                folders.append(str(folder))
            df[col] = folders
    return df, source


def check_outcome(cases: list[Case], *, outcome: str | None, folds: int) -> None:
    """Check the outcome supports stratified ``folds``-fold CV: two classes 0/1, each with >= folds cases."""
    if outcome is None:
        return
    ys = [cs.outcome for cs in cases if cs.outcome is not None]
    classes = sorted(set(ys))
    if len(classes) < 2:
        found = f"only the value {classes[0]:g}" if classes else "no values"
        raise InputError(
            f"outcome column {outcome!r} has {found} across {len(cases)} cases; a classifier needs two classes"
        )
    if not set(classes) <= {0.0, 1.0}:
        raise InputError(f"outcome column {outcome!r} must be binary 0/1, found values {classes[:6]}")
    counts = {int(k): ys.count(k) for k in classes}
    if len(ys) < folds or min(counts.values()) < folds:
        raise InputError(
            f"{len(ys)} cases with outcome (class counts {counts}) are fewer than model.folds={folds} per class; "
            f"stratified {folds}-fold cross-validation needs at least {folds} cases of each class: "
            "lower model.folds or add cases"
        )


def content_hash(paths: list[str | None], *, extra: Any = None) -> str:
    """BLAKE2b (hex, 32 characters) of the bytes of every file under ``paths`` (folders recursively).

    File names relative to each path are hashed too, so renaming a slice changes the hash;
    ``extra`` (JSON-able) is mixed in (settings, clinical values).
    """
    import json

    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        if p is None:
            continue
        root = Path(p)
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        for f in files:
            h.update(str(f.relative_to(root) if f != root else f.name).encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def resolve_roi(pattern: str, available: list[str], *, source: str) -> str:
    """The one ROI name matching ``pattern`` (exact name first, then a full regular-expression match)."""
    if pattern in available:
        return pattern
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        rx = None
    hits = [n for n in available if rx is not None and rx.fullmatch(n)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise InputError(
            f"{source}: no ROI matches mask.roi {pattern!r}; available ROIs: {', '.join(available) or '(none)'}"
        )
    raise InputError(f"{source}: mask.roi {pattern!r} matches several ROIs ({', '.join(hits)}); make it specific")
