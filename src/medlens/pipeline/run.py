"""Cohort execution: one task per case (read -> preprocess -> mask -> features), on Dask.

* ``workers=1`` runs the cases one after the other in this process (no Dask).
* Otherwise a :class:`distributed.LocalCluster` (processes, one thread each, a memory limit
  per worker) is started, or the run connects to ``scheduler="tcp://host:port"``.
* A case that fails is recorded with its error and the run goes on.
* Resumable: each finished case is written atomically to ``cases/<case>__<key>.json`` where
  ``key`` is a content hash of the case's input files, its table values and the feature
  settings. A re-run skips every case whose result file exists; a killed run loses nothing
  that had finished. Failed cases are retried on the next run.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path, atomic_write_text
from medlens.core.errors import InputError, MedlensError
from medlens.pipeline import steps
from medlens.pipeline.cases import Case, check_outcome, content_hash, load_cases, resolve_roi
from medlens.pipeline.config import RunConfig, settings_hash

__all__ = ["RunResult", "case_key", "execute_cases", "process_case", "run_pipeline"]

#: Feature tags describing the processing, not the tumour: kept in the table, left out of models.
DIAGNOSTIC_PREFIXES = ("img_dim_", "vox_dim_", "mean_int_", "min_int_", "max_int_", "int_mask_", "morph_mask_", "diag_")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


_CODE_PACKAGES = ("core", "io", "preprocess", "segment", "radiomics", "pipeline")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 (16 hex) of the MedLens source that computes features (core, io, preprocess, segment,
    radiomics, pipeline), so that a code change — not only a version bump — invalidates finished cases.

    Computed once per process (the code a process runs does not change after it is imported)."""
    import hashlib

    import medlens

    root = Path(medlens.__file__).resolve().parent
    h = hashlib.sha256(medlens.__version__.encode())
    for pkg in _CODE_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def case_key(case: Case, feature_settings: dict[str, Any], *, code: str | None = None) -> str:
    """Content hash of the case's files and values, the feature settings and the MedLens code."""
    # paths enter by content (moving the project folder keeps the key); which modalities exist enters by name
    present = {name: m["image"] is not None for name, m in case.modalities.items()}
    return content_hash(
        case.input_paths(),
        extra={
            "case": case.to_dict() | {"image": None, "mask": None, "modalities": present},
            "settings": feature_settings,
            "code": code if code is not None else code_fingerprint(),
        },
    )


def _thumbnail(image: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The slice with the largest mask area, cropped around the mask with a margin."""
    if image.ndim == 2:
        image, mask = image[None], mask[None]
    areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
    k = int(np.argmax(areas))
    ys, xs = np.nonzero(mask[k])
    if ys.size == 0:
        return {"image": image[k].astype(np.float32), "mask": mask[k]}
    m = max(8, int(0.75 * max(np.ptp(ys) + 1, np.ptp(xs) + 1)))
    y0, y1 = max(0, ys.min() - m), min(mask.shape[1], ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(mask.shape[2], xs.max() + m + 1)
    return {"image": image[k, y0:y1, x0:x1].astype(np.float32), "mask": mask[k, y0:y1, x0:x1]}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB): VmHWM (reset at exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def _one_image(
    image_path: str,
    mask_path: str | None,
    *,
    mask_cfg: dict[str, Any],
    roi_pattern: str | None,
    recipe: Any,
    radiomics: Any,
    base_dir: str,
    case_id: str,
    timings: dict[str, float],
    label: str = "",
    deep: bool | str | None = None,
) -> dict[str, Any]:
    """Read, preprocess, mask and extract one image of a case; returns features, lineage, qa, facts, thumbnail."""
    import hashlib

    from medlens.io.api import read_image, read_mask
    from medlens.radiomics import extract

    def add(stage: str, t0: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0

    what = f"case {case_id}" + (f" ({label})" if label else "")
    t = time.perf_counter()
    image = read_image(image_path)
    facts = steps.header_facts(image)
    add("read", t)

    t = time.perf_counter()
    image = steps.preprocess(image, recipe, Path(base_dir))
    add("preprocess", t)

    t = time.perf_counter()
    roi_name = None
    if mask_cfg.get("method") is not None:
        mask = steps.make_mask(image, mask_cfg["method"], mask_cfg.get("options"))
        roi_name = mask_cfg["method"]
    else:
        if not mask_path:
            raise InputError(f"{what}: no mask file and no mask.method to make one")
        if roi_pattern is not None:
            names = steps.rtstruct_roi_names(mask_path)
            roi_name = resolve_roi(roi_pattern, names, source=str(mask_path)) if names else roi_pattern
        mask = read_mask(mask_path, reference=image, roi=roi_name)
    m = np.asarray(mask.array, dtype=bool)
    if not m.any():
        raise InputError(f"{what}: the mask {roi_name or ''} is empty on the image grid")
    add("mask", t)

    t = time.perf_counter()
    feats = {str(k): float(v) for k, v in extract(image, mask, radiomics).items()}
    if deep:
        from medlens.learn.deep_features import deep_features

        ckpt = None if deep is True else Path(base_dir) / str(deep)
        feats.update(deep_features(image, mask, checkpoint=ckpt))
    add("features", t)
    sops = sorted(image.meta.sop_instance_uids)
    return {
        "roi": roi_name or "",
        "features": feats,
        "facts": facts,
        "lineage": {
            "study_uid": image.meta.study_uid or facts.get("study_uid", ""),
            "series_uid": image.meta.series_uid or facts.get("series_uid", ""),
            "sop_uids_hash": hashlib.sha256("\\".join(sops).encode()).hexdigest()[:16] if sops else "",
            "n_sop_instances": len(sops),
            "modality": image.meta.modality or facts.get("modality", ""),
            "units": image.meta.units,
        },
        "qa": {
            "shape": list(image.shape),
            "spacing_mm": [round(s, 4) for s in image.spacing],
            "mask_voxels": int(m.sum()),
            "mask_volume_ml": float(m.sum() * image.voxel_volume_mm3 / 1000.0),
            "roi_min": float(np.asarray(image.array)[m].min()),
            "roi_max": float(np.asarray(image.array)[m].max()),
            "history": list(image.meta.history),
        },
        "thumb": _thumbnail(np.asarray(image.array), m),
    }


def process_case(case: dict[str, Any], settings: dict[str, Any], key: str, cases_dir: str, base_dir: str) -> dict:
    """Run one case and write its result file; never raises (errors are recorded in the result).

    Returns the result dictionary: ``status`` ("ok"/"error"), ``error``, ``features``,
    ``lineage``, ``qa``, ``clinical_dicom``, ``timings_s`` (read, preprocess, mask, features),
    ``worker_pid``, ``peak_rss_mb``. With ``modalities`` in the settings every modality of the case is
    processed: features and lineage are prefixed by the modality name (``pet_stat_max``,
    ``mr_series_uid``), ``modalities`` holds each modality's status, ROI, lineage and QA, and a
    modality that the case does not have (``required: false``) is recorded as ``absent``.
    """
    c = Case(**case)
    started = _now()
    timings: dict[str, float] = {}
    result: dict[str, Any] = {
        "case_id": c.case_id,
        "key": key,
        "case": case,
        "started_at": started,
        "status": "error",
        "error": None,
        "features": {},
        "lineage": {},
        "qa": {},
        "clinical_dicom": {},
    }
    import warnings

    caught = warnings.catch_warnings(record=True)
    seen = caught.__enter__()
    warnings.simplefilter("always")
    fact_keys = ("age", "sex", "weight_kg", "height_m", "bmi")
    try:
        mods = settings.get("modalities")
        if not mods:
            one = _one_image(
                c.image,
                c.mask,
                mask_cfg=settings["mask"],
                roi_pattern=settings["mask"]["roi"],
                recipe=settings["preprocess"]["recipe"],
                radiomics=settings["radiomics"]["settings"],
                deep=settings["radiomics"].get("deep_features"),
                base_dir=base_dir,
                case_id=c.case_id,
                timings=timings,
            )
            result.update(
                status="ok",
                roi=one["roi"],
                features=one["features"],
                clinical_dicom={k: one["facts"].get(k) for k in fact_keys},
                lineage=one["lineage"],
                qa=one["qa"],
            )
            thumbs = {"image": one["thumb"]["image"], "mask": one["thumb"]["mask"]}
        else:
            feats: dict[str, float] = {}
            lineage: dict[str, Any] = {}
            per_mod: dict[str, Any] = {}
            facts: dict[str, Any] = {}
            thumbs = {}
            for name, spec in mods.items():
                paths = c.modalities.get(name, {"image": None, "mask": None})
                if paths["image"] is None:
                    per_mod[name] = {"status": "absent"}
                    lineage[f"{name}_status"] = "absent"
                    continue
                one = _one_image(
                    paths["image"],
                    paths["mask"],
                    mask_cfg={"method": None},
                    roi_pattern=spec["roi"],
                    recipe=spec["preprocess"] if spec["preprocess"] is not None else settings["preprocess"]["recipe"],
                    radiomics=spec["radiomics"] if spec["radiomics"] is not None else settings["radiomics"]["settings"],
                    deep=spec["deep_features"]
                    if spec.get("deep_features") is not None
                    else settings["radiomics"].get("deep_features"),
                    base_dir=base_dir,
                    case_id=c.case_id,
                    timings=timings,
                    label=name,
                )
                feats.update({f"{name}_{k}": v for k, v in one["features"].items()})
                lineage.update({f"{name}_{k}": v for k, v in one["lineage"].items()})
                lineage[f"{name}_status"] = "ok"
                lineage[f"{name}_roi"] = one["roi"]
                # the recipe as applied (operations with their fitted parameters, e.g. the z-score mean and SD)
                lineage[f"{name}_history"] = "; ".join(one["qa"]["history"])
                per_mod[name] = {"status": "ok", "roi": one["roi"], "lineage": one["lineage"], "qa": one["qa"]}
                for k in fact_keys:
                    if facts.get(k) is None and one["facts"].get(k) is not None:
                        facts[k] = one["facts"][k]
                if not thumbs:
                    thumbs = {"image": one["thumb"]["image"], "mask": one["thumb"]["mask"]}
                thumbs[f"{name}_image"], thumbs[f"{name}_mask"] = one["thumb"]["image"], one["thumb"]["mask"]
            present = [n for n, v in per_mod.items() if v["status"] == "ok"]
            lineage["modality"] = "+".join(per_mod[n]["lineage"]["modality"] for n in present)
            result.update(
                status="ok",
                roi=";".join(f"{n}:{per_mod[n]['roi']}" for n in present),
                features=feats,
                clinical_dicom={k: facts.get(k) for k in fact_keys},
                lineage=lineage,
                qa=per_mod[present[0]]["qa"],
                modalities=per_mod,
            )
        with atomic_path(Path(cases_dir) / f"{c.case_id}__{key}.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **thumbs)
    except MedlensError as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a bug or an unexpected file: recorded, the run goes on
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc(limit=8)
    finally:
        caught.__exit__(None, None, None)
    result["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in seen})
    result.update(
        finished_at=_now(),
        timings_s=timings,
        worker_pid=os.getpid(),
        peak_rss_mb=_peak_rss_mb(),
    )
    _write_result(result, cases_dir)
    return result


def _result_path(cases_dir: str | Path, case_id: str, key: str, status: str) -> Path:
    suffix = ".json" if status == "ok" else ".error.json"
    return Path(cases_dir) / f"{case_id}__{key}{suffix}"


def _write_result(result: dict[str, Any], cases_dir: str | Path) -> None:
    path = _result_path(cases_dir, result["case_id"], result["key"], result["status"])
    atomic_write_text(path, json.dumps(result, sort_keys=True, default=str))
    if result["status"] == "ok":  # a retried case that now succeeds: drop its old error record
        _result_path(cases_dir, result["case_id"], result["key"], "error").unlink(missing_ok=True)


def _finished(cases_dir: Path, case_id: str, key: str) -> dict[str, Any] | None:
    p = _result_path(cases_dir, case_id, key, "ok")
    if p.exists():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:  # cannot happen with atomic writes, but never trust a file blindly
            return None
    return None


@dataclass
class ExecutionSummary:
    results: list[dict[str, Any]]
    n_skipped: int
    n_computed: int
    n_failed: int
    wall_s: float
    mode: str


def execute_cases(
    cases: list[Case],
    config: RunConfig,
    *,
    progress: bool = True,
) -> ExecutionSummary:
    """Run every unfinished case of ``cases`` and return all results (finished ones included)."""
    settings = config.feature_settings()
    hash_settings = config.settings_for_hash()
    cases_dir = config.out_dir / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    base_dir = str(config.source.resolve().parent) if config.source else str(Path.cwd())
    code = code_fingerprint()
    keyed = [(cs, case_key(cs, hash_settings, code=code)) for cs in cases]
    done: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Case, str]] = []
    for cs, key in keyed:
        res = _finished(cases_dir, cs.case_id, key)
        if res is not None:
            done[cs.case_id] = res
        else:
            todo.append((cs, key))
    n_skipped = len(done)
    ex = config.section("execution")
    workers = ex["workers"] or os.cpu_count() or 1
    t0 = time.perf_counter()
    mode = "synchronous" if (workers == 1 and not ex["scheduler"]) else ("scheduler" if ex["scheduler"] else "local")
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("[bold]cases"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        disable=not progress,
        transient=False,
    )
    with bar:
        task = bar.add_task("", total=len(todo))
        if not todo:
            pass
        elif mode == "synchronous":
            for cs, key in todo:
                res = process_case(cs.to_dict(), settings, key, str(cases_dir), base_dir)
                done[cs.case_id] = res
                bar.update(task, advance=1, description=f"{cs.case_id} {res['status']}")
        else:
            for cs, res in _run_dask(todo, settings, cases_dir, base_dir, workers, ex):
                done[cs.case_id] = res
                bar.update(task, advance=1, description=f"{cs.case_id} {res['status']}")
    results = [done[cs.case_id] for cs in cases if cs.case_id in done]
    for r in results:  # every key embeds this fingerprint, so cached results were made by this code too
        r["code_hash"] = code
    n_failed = sum(r["status"] != "ok" for r in results)
    return ExecutionSummary(results, n_skipped, len(todo), n_failed, time.perf_counter() - t0, mode)


#: Every worker process computes with one thread: BLAS/OpenMP, numba, ITK (SimpleITK) and numexpr pools
#: would otherwise each start one thread per core in every worker (workers x cores threads in all).
WORKER_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
}


def local_cluster(workers: int | None, *, memory_limit: str | int | None = "auto") -> Any:
    """A Dask LocalCluster of single-threaded worker processes (see :data:`WORKER_THREAD_ENV`).

    The variables are in each worker's environment before it starts (so BLAS and ITK read them
    when they load). Distributed writes its "pre-spawn" variables (and a parent-PID marker) into *this*
    process's environment while it spawns the workers; they are put back as they were, so the caller's
    process is unchanged.
    """
    import logging

    import dask
    from distributed import LocalCluster

    pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_THREAD_ENV}
    saved = dict(os.environ)
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
            return LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                env=WORKER_THREAD_ENV,
            )
    finally:
        for k in set(os.environ) - set(saved):
            del os.environ[k]
        os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})


def _run_dask(todo, settings, cases_dir, base_dir, workers, ex):  # type: ignore[no-untyped-def]
    """Yield (case, result) as Dask tasks complete (a lost worker is recorded as the case's error)."""
    import logging

    from distributed import Client, as_completed

    dlog = logging.getLogger("distributed")
    dlog_level = dlog.level  # restored in the finally below: loggers are process-wide
    dlog.setLevel(logging.ERROR)
    cluster = None
    if ex["scheduler"]:
        try:
            client = Client(ex["scheduler"], timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot connect to the Dask scheduler {ex['scheduler']} ({exc}); check the address "
                "(tcp://HOST:PORT) and that the scheduler is running, or leave --scheduler out for a local cluster"
            ) from exc
    else:
        cluster = local_cluster(workers, memory_limit=ex["memory_limit"])
        client = Client(cluster)
    try:
        futures = {}
        for cs, key in todo:
            fut = client.submit(
                process_case,
                cs.to_dict(),
                settings,
                key,
                str(cases_dir),
                base_dir,
                key=f"medlens-case-{key}",
                pure=False,
            )
            futures[fut] = (cs, key)
        for fut in as_completed(list(futures)):
            cs, key = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:  # the worker died (memory limit, crash): record it, go on
                res = {
                    "case_id": cs.case_id,
                    "key": key,
                    "case": cs.to_dict(),
                    "status": "error",
                    "error": f"{type(exc).__name__}: {exc} (the Dask worker failed; memory limit {ex['memory_limit']})",
                    "features": {},
                    "lineage": {},
                    "qa": {},
                    "clinical_dicom": {},
                    "timings_s": {},
                    "started_at": _now(),
                    "finished_at": _now(),
                }
                _write_result(res, cases_dir)
            if not _result_path(cases_dir, cs.case_id, key, res["status"]).exists():
                _write_result(res, cases_dir)  # a remote worker without our filesystem
            yield cs, res
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        dlog.setLevel(dlog_level)


@dataclass
class RunResult:
    """What :func:`run_pipeline` produced."""

    out_dir: Path
    run_id: str
    n_cases: int
    n_ok: int
    n_failed: int
    n_skipped: int
    features_path: Path
    report_path: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


def run_pipeline(config: RunConfig, *, progress: bool = True) -> RunResult:
    """Run a whole cohort: cases -> feature store -> model with cross-validation -> HTML report."""
    import medlens
    from medlens.core.audit import AuditLog
    from medlens.pipeline import store

    t0 = time.perf_counter()
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cases = load_cases(config)
    cohort = config.section("cohort")
    model_cfg = config.section("model")
    check_outcome(cases, outcome=cohort["outcome"], folds=model_cfg["folds"])
    _check_roi_first_case(cases, config)

    s_hash = settings_hash(config.settings_for_hash())
    run_id = f"{config.name}-{s_hash}"
    audit = AuditLog(out / "audit.jsonl")
    import yaml

    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.raw, sort_keys=False))
    audit.append(
        action="run.start",
        inputs={
            "config": str(config.source) if config.source else None,
            "n_cases": len(cases),
            "data_dir": str(config.data_dir),
        },
        outputs={"run_dir": str(out)},
        details={
            "run_id": run_id,
            "settings_hash": s_hash,
            "medlens_version": medlens.__version__,
            "workers": config.section("execution")["workers"],
            "scheduler": config.section("execution")["scheduler"],
        },
    )
    summary = execute_cases(cases, config, progress=progress)
    audit.append(
        action="run.cases",
        inputs={"n_cases": len(cases)},
        outputs={"cases_dir": str(out / "cases")},
        details={
            "computed": summary.n_computed,
            "skipped_finished": summary.n_skipped,
            "failed": summary.n_failed,
            "mode": summary.mode,
            "wall_s": round(summary.wall_s, 2),
            "failed_cases": {r["case_id"]: r["error"] for r in summary.results if r["status"] != "ok"},
        },
    )
    features_path = store.write_features(summary.results, out, run_id=run_id, settings_hash=s_hash)
    audit.append(
        action="features.write",
        inputs={"cases": len(summary.results)},
        outputs={"parquet": str(features_path)},
        details={"run_id": run_id},
    )
    metrics: dict[str, Any] = {}
    ok = [r for r in summary.results if r["status"] == "ok"]
    if cohort["outcome"] is not None or cohort["time_column"] is not None:
        from medlens.pipeline import model as model_mod

        try:
            if cohort["outcome"] is not None:
                check_outcome([Case(**r["case"]) for r in ok], outcome=cohort["outcome"], folds=model_cfg["folds"])
            metrics = model_mod.fit_and_validate(ok, config, out / "model")
            audit.append(
                action="model.validate",
                inputs={"cases": len(ok)},
                outputs={"model": str(out / "model" / "model.joblib")},
                details={k: metrics.get(k) for k in ("auc", "auc_ci95", "permutation_p", "c_index")},
            )
        except InputError as exc:
            metrics = {"error": str(exc)}
            audit.append(action="model.skipped", inputs={"cases": len(ok)}, outputs=None, details={"reason": str(exc)})
        if model_cfg["variants"] and "error" not in metrics:
            try:
                metrics["fusion"] = model_mod.compare_variants(ok, config)
                audit.append(
                    action="model.variants",
                    inputs={"cases": len(ok)},
                    outputs=None,
                    details={
                        v["name"]: {"auc": round(v["auc"], 4), "auc_ci95": [round(x, 4) for x in v["auc_ci95"]]}
                        for v in metrics["fusion"]["variants"]
                    },
                )
            except InputError as exc:
                metrics["fusion"] = {"error": str(exc)}
    run_info = {
        "run_id": run_id,
        "name": config.name,
        "settings_hash": s_hash,
        "medlens_version": medlens.__version__,
        "n_cases": len(cases),
        "n_ok": len(ok),
        "n_failed": summary.n_failed,
        "n_skipped": summary.n_skipped,
        "n_computed": summary.n_computed,
        "mode": summary.mode,
        "cases_wall_s": summary.wall_s,
        "finished_at": _now(),
    }
    atomic_write_text(out / "run.json", json.dumps(run_info, indent=2, default=str))
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=str))
    from medlens.pipeline import report

    report_path = report.write_report(out, config=config, results=summary.results, metrics=metrics, run_info=run_info)
    audit.append(
        action="report.write", inputs={"run_dir": str(out)}, outputs={"report": str(report_path)}, details=None
    )
    return RunResult(
        out_dir=out,
        run_id=run_id,
        n_cases=len(cases),
        n_ok=len(ok),
        n_failed=summary.n_failed,
        n_skipped=summary.n_skipped,
        features_path=features_path,
        report_path=report_path,
        metrics=metrics,
        wall_s=time.perf_counter() - t0,
    )


def _check_roi_first_case(cases: list[Case], config: RunConfig) -> None:
    """Fail before the run if mask.roi matches no ROI of the first case's RTSTRUCT (lists the available ones)."""
    if config.modalities is not None:
        for name, spec in config.modalities.items():
            first = next((cs for cs in cases if cs.modalities[name]["mask"]), None)
            if spec["roi"] is None or first is None:
                continue
            mask = first.modalities[name]["mask"]
            names = steps.rtstruct_roi_names(mask)  # type: ignore[arg-type]
            if names:
                resolve_roi(spec["roi"], names, source=f"case {first.case_id}, modality {name} ({mask})")
        return
    pattern = config.section("mask")["roi"]
    if pattern is None or config.section("mask")["method"] is not None or not cases[0].mask:
        return
    names = steps.rtstruct_roi_names(cases[0].mask)
    if names:
        resolve_roi(pattern, names, source=f"case {cases[0].case_id} ({cases[0].mask})")
