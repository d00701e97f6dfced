"""Jobs of the service: segment a study, extract its radiomics features, write its report.

A :class:`JobManager` runs jobs in a bounded pool of worker threads. Each job is a record
(``data_dir/jobs/<id>.json``, rewritten atomically at every state change) and, when it succeeds,
a results folder ``data_dir/results/<id>/``: the job writes into a hidden ``.<id>.partial``
folder which is renamed into place only when every file is complete, so a failed or cancelled
job never leaves half its outputs. A failure (any exception) is caught and recorded in the job
(``failed`` with the error's message); the service keeps running.

States: ``queued`` → ``running`` → ``done`` | ``failed`` | ``cancelled``. Cancelling a queued job
takes effect at once; a running job is stopped at its next checkpoint (between steps: a step
in progress, such as one U-Net inference, finishes first and its output is discarded).

The kinds call the public functions and hold no science:

``segment``
    An image series (default: the study's PET) → :func:`medlens.segment.segment` (default method:
    the shipped PET U-Net for PET, ``otsu`` otherwise) → DICOM SEG (:func:`medlens.io.seg.write_seg`)
    plus the mask as NIfTI for the viewer, and with ``gradcam: true`` the U-Net's Grad-CAM
    (:func:`medlens.learn.explain.gradcam_unet`) as a NIfTI heat map.
``features``
    IBSI radiomics (:func:`medlens.radiomics.extract`) of the ROIs of an RTSTRUCT/SEG series of the
    study, or of the SEG of an earlier ``segment`` job → ``features.json`` and ``features.csv``.
``report``
    :func:`medlens.clinical.report.study_report` for a mask (RTSTRUCT/SEG series or a ``segment``
    job) on its image series: measurements, DICOM SEG (for an RTSTRUCT), Comprehensive 3D SR,
    JSON, HTML (and PDF on request).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import math
import os
import shutil
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError, MedlensError

__all__ = ["JOB_KINDS", "JobCancelled", "JobContext", "JobManager", "JobRecord", "JobState"]


class JobState(StrEnum):
    """Where a job is in its life."""

    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"


_FINAL = {JobState.done, JobState.failed, JobState.cancelled}


class JobCancelled(Exception):
    """Raised inside a job at a checkpoint after :meth:`JobManager.cancel`."""


@dataclass
class JobRecord:
    """One job as stored in ``data_dir/jobs/<id>.json`` and returned by the API.

    Attributes
    ----------
    id, kind, study_uid, params
        What was asked.
    state, progress, message
        Where it is: ``progress`` runs from 0 to 1; ``message`` says what it does or why it failed.
    created, started, finished
        ISO-8601 UTC times (``""`` until they happen).
    results
        File names in the results folder (once ``done``).
    actor
        Who submitted it (audit name).
    """

    id: str
    kind: str
    study_uid: str
    params: dict[str, Any]
    state: JobState = JobState.queued
    progress: float = 0.0
    message: str = "queued"
    created: str = ""
    started: str = ""
    finished: str = ""
    results: list[str] = field(default_factory=list)
    actor: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class JobContext:
    """What a running job sees: its study, parameters, output folder, progress and cancellation."""

    def __init__(self, manager: JobManager, record: JobRecord, out_dir: Path, cancel: threading.Event) -> None:
        self._manager = manager
        self.record = record
        self.out_dir = out_dir
        self._cancel = cancel

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def study_uid(self) -> str:
        return self.record.study_uid

    @property
    def study_folder(self) -> Path:
        return self._manager.study_folder(self.record.study_uid)

    def progress(self, fraction: float, message: str) -> None:
        """Record progress (0..1) and check for cancellation."""
        self.check_cancelled()
        self._manager._update(self.record.id, progress=max(0.0, min(1.0, fraction)), message=message)

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` when the job was cancelled."""
        if self._cancel.is_set():
            raise JobCancelled()

    def job_result(self, job_id: str, name: str) -> Path:
        """A result file of an earlier, finished job (e.g. the SEG of a ``segment`` job)."""
        return self._manager.result_path(job_id, name)


# ---------------------------------------------------------------------------------------------
# The kinds. Each takes a JobContext, writes files into ctx.out_dir and returns nothing.


def _check_params(kind: str, params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise InputError(
            f"job kind {kind!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(sorted(allowed))}"
        )


def _series_list(folder: Path) -> list[Any]:
    from medlens.io import list_series

    return list_series(folder)


def _pick_image_series(series: list[Any], uid: str | None, study: str) -> Any:
    images = [s for s in series if s.is_image]
    if uid:
        for s in images:
            if s.series_uid == uid:
                return s
        raise InputError(
            f"study {study} has no image series {uid}; its image series are: "
            + (", ".join(f"{s.series_uid} ({s.modality})" for s in images) or "none")
        )
    pet = [s for s in images if s.modality == "PT"]
    if pet:
        return pet[0]
    if len(images) == 1:
        return images[0]
    raise InputError(
        f"study {study} has {len(images)} image series and none is PET; choose one with params.series_uid from: "
        + ", ".join(f"{s.series_uid} ({s.modality})" for s in images)
    )


def _mask_sources(ctx: JobContext, series: list[Any], kind: str) -> tuple[Any, Path, list[str]]:
    """(image SeriesInfo, mask file/folder, ROI names) from params ``mask_job`` / ``mask_series_uid``."""
    p = ctx.params
    by_uid = {s.series_uid: s for s in series}
    if p.get("mask_job"):
        seg = ctx.job_result(str(p["mask_job"]), "seg.dcm")
        meta = json.loads(ctx.job_result(str(p["mask_job"]), "segment.json").read_text(encoding="utf-8"))
        image = by_uid.get(meta["series_uid"])
        if image is None:
            raise InputError(f"the image series {meta['series_uid']} of job {p['mask_job']} is no longer in the study")
        return image, seg, [meta["segment_label"]]
    masks = [s for s in series if s.modality in ("RTSTRUCT", "SEG")]
    if p.get("mask_series_uid"):
        masks = [s for s in masks if s.series_uid == p["mask_series_uid"]]
        if not masks:
            raise InputError(f"study {ctx.study_uid} has no RTSTRUCT/SEG series {p['mask_series_uid']}")
    elif p.get("series_uid"):
        masks = [s for s in masks if s.referenced_series_uid == p["series_uid"]]
    else:
        # Prefer the mask of the PET series, the default image of the other kinds.
        masks.sort(
            key=lambda s: (
                by_uid.get(s.referenced_series_uid) is None or by_uid[s.referenced_series_uid].modality != "PT"
            )
        )
    if not masks:
        raise InputError(
            f"job {kind!r}: study {ctx.study_uid} has no RTSTRUCT or SEG series to measure; store one, or pass "
            "params.mask_job with the id of a finished segment job"
        )
    m = masks[0]
    image = by_uid.get(m.referenced_series_uid)
    if image is None:
        raise InputError(
            f"{m.modality} series {m.series_uid} refers to image series "
            f"{m.referenced_series_uid or '(none recorded)'}, which is not in study {ctx.study_uid}"
        )
    rois = [r for r in m.rois if r]
    if p.get("roi"):
        if p["roi"] not in rois:
            raise InputError(f"{m.modality} series {m.series_uid} has no ROI {p['roi']!r}; its ROIs: {', '.join(rois)}")
        rois = [str(p["roi"])]
    return image, Path(m.files[0]), rois


def _read_series(info: Any) -> Any:
    from medlens.io import read_image

    return read_image([Path(f) for f in info.files], series_uid=info.series_uid, on_irregular="resample")


def _segment(ctx: JobContext) -> None:
    import numpy as np

    from medlens.io import write_image
    from medlens.io.seg import write_seg
    from medlens.segment import segment

    p = ctx.params
    ctx.progress(0.05, "listing the study's series")
    series = _series_list(ctx.study_folder)
    info = _pick_image_series(series, p.get("series_uid"), ctx.study_uid)
    method = str(p.get("method") or ("unet" if info.modality == "PT" else "otsu"))
    options = dict(p.get("options") or {})
    if p.get("gradcam") and method != "unet":
        raise InputError(f"params.gradcam explains the U-Net: it needs method 'unet', not {method!r}")
    ctx.progress(0.15, f"reading {info.modality} series {info.series_uid} ({info.n_files} files)")
    image = _read_series(info)
    ctx.progress(0.35, f"segmenting with {method}")
    mask = segment(image, method=method, **options)
    if not mask.is_mask:
        mask = mask.with_array(mask.array > 0)
    n_voxels = int(np.count_nonzero(mask.array))
    if n_voxels == 0:
        raise MedlensError(f"segmentation {method!r} of series {info.series_uid} found nothing; no SEG was written")
    ctx.progress(0.8, "writing the DICOM SEG")
    label = str(p.get("label") or f"MedLens {method}")
    write_seg(
        mask,
        [Path(f) for f in info.files],
        ctx.out_dir / "seg.dcm",
        segment_label=label,
        algorithm_type="AUTOMATIC",
        algorithm_name=f"MedLens {method}",
        series_description=f"MedLens {method} segmentation",
        series_uid=info.series_uid,
    )
    write_image(mask.with_array(mask.array.astype(np.uint8)), ctx.out_dir / "mask.nii.gz")
    if p.get("gradcam"):
        from medlens.learn.explain import gradcam_unet

        ctx.progress(0.85, "Grad-CAM of the U-Net over its mask")
        write_image(gradcam_unet(image, mask=mask), ctx.out_dir / "gradcam.nii.gz")
    voxel_ml = float(np.prod(image.spacing)) / 1000.0
    summary = {
        "series_uid": info.series_uid,
        "modality": info.modality,
        "method": method,
        "options": options,
        "segment_label": label,
        "n_voxels": n_voxels,
        "volume_ml": n_voxels * voxel_ml,
    }
    atomic_write_text(ctx.out_dir / "segment.json", json.dumps(summary, indent=2))


def _features(ctx: JobContext) -> None:
    from medlens.io import read_mask
    from medlens.radiomics import extract

    p = ctx.params
    ctx.progress(0.05, "listing the study's series")
    series = _series_list(ctx.study_folder)
    info, mask_path, rois = _mask_sources(ctx, series, "features")
    ctx.progress(0.15, f"reading {info.modality} series {info.series_uid}")
    image = _read_series(info)
    preset = p.get("preset") or "default"
    if p.get("settings") is not None:
        if not isinstance(p["settings"], dict):
            raise InputError("params.settings must be a radiomics settings mapping (as in the preset YAML files)")
        preset = p["settings"]
    table: dict[str, dict[str, float]] = {}
    for i, roi in enumerate(rois):
        ctx.progress(0.2 + 0.7 * i / max(1, len(rois)), f"radiomics of ROI {roi!r} (preset {preset})")
        mask = read_mask(mask_path, reference=image, roi=roi)
        table[roi] = {k: float(v) for k, v in extract(image, mask, preset).items()}
    ctx.progress(0.95, "writing features.json and features.csv")
    doc = {
        "study_uid": ctx.study_uid,
        "series_uid": info.series_uid,
        "modality": info.modality,
        "mask_source": str(p.get("mask_job") or p.get("mask_series_uid") or mask_path.name),
        "preset": preset if isinstance(preset, str) else "custom",
        "settings": p.get("settings"),
        # NaN (undefined features) is not JSON: written as null.
        "features": {r: {k: (None if math.isnan(v) else v) for k, v in f.items()} for r, f in table.items()},
    }
    atomic_write_text(ctx.out_dir / "features.json", json.dumps(doc, indent=2))
    tags = sorted({k for f in table.values() for k in f})
    tmp = ctx.out_dir / "features.csv"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["roi", *tags])
        for roi, f in table.items():
            w.writerow([roi, *(repr(f.get(t, float("nan"))) for t in tags)])


def _report(ctx: JobContext) -> None:
    from medlens.clinical.report import study_report

    p = ctx.params
    ctx.progress(0.05, "listing the study's series")
    series = _series_list(ctx.study_folder)
    info, mask_path, rois = _mask_sources(ctx, series, "report")
    ctx.progress(0.2, f"measuring {', '.join(rois)} on {info.modality} series {info.series_uid}; writing SR and report")
    study_report(
        image_files=[Path(f) for f in info.files],
        mask_path=mask_path,
        rois=rois,
        out_dir=ctx.out_dir,
        pdf=bool(p.get("pdf", False)),
        lungrads_status=p.get("lungrads_status"),
        prior_category=p.get("prior_category"),
    )


#: Job kinds: name -> (function, allowed parameter names).
JOB_KINDS: dict[str, tuple[Callable[[JobContext], None], set[str]]] = {
    "segment": (_segment, {"series_uid", "method", "options", "label", "gradcam"}),
    "features": (_features, {"series_uid", "mask_series_uid", "mask_job", "roi", "preset", "settings"}),
    "report": (
        _report,
        {"series_uid", "mask_series_uid", "mask_job", "roi", "pdf", "lungrads_status", "prior_category"},
    ),
}


class JobManager:
    """Runs jobs on a study store in at most ``max_workers`` threads.

    Parameters
    ----------
    store
        The :class:`~medlens.serve.store.StudyStore` (``study_folder(uid)`` locates a study).
    settings
        The :class:`~medlens.serve.settings.ServiceSettings`; jobs live in ``data_dir/jobs`` and
        their outputs in ``data_dir/results``.
    max_workers
        Jobs running at once (the rest wait in the queue). Each job is single-threaded.
    audit
        An :class:`~medlens.core.audit.AuditLog` that receives one entry per submit, cancel and end
        (default: ``settings.audit_log``).
    on_done
        Called with the :class:`JobRecord` after a job ends ``done`` (e.g. to C-STORE its SEG).
    """

    def __init__(
        self,
        store: Any,
        settings: Any,
        *,
        max_workers: int = 1,
        audit: Any = None,
        on_done: Callable[[JobRecord], None] | None = None,
    ) -> None:
        from medlens.core.audit import AuditLog

        if max_workers < 1:
            raise InputError(f"max_workers must be >= 1, got {max_workers}")
        self.store = store
        self.settings = settings
        self.jobs_dir = Path(settings.data_dir) / "jobs"
        self.results_dir = Path(settings.data_dir) / "results"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        log_path = getattr(settings, "audit_log", None) or Path(settings.data_dir) / "audit.jsonl"
        self.audit = audit if audit is not None else AuditLog(log_path, actor="medlens-serve")
        self.on_done = on_done
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="medlens-job")
        self._load()

    # -- persistence -----------------------------------------------------------------------
    def _load(self) -> None:
        """Read the records of earlier runs; jobs that were queued or running then failed with the service."""
        for f in sorted(self.jobs_dir.glob("*.json")):
            try:
                d = json.loads(f.read_text(encoding="utf-8"))
                rec = JobRecord(**{**d, "state": JobState(d["state"])})
            except (OSError, ValueError, TypeError, KeyError):
                continue  # never written by us in full (atomic writes): ignore rather than crash the service
            if rec.state not in _FINAL:
                rec.state, rec.message, rec.finished = JobState.failed, "the service stopped while the job ran", _now()
                self._save(rec)
            self._jobs[rec.id] = rec
        for stale in self.results_dir.glob(".*.partial"):
            shutil.rmtree(stale, ignore_errors=True)

    def _save(self, rec: JobRecord) -> None:
        atomic_write_text(self.jobs_dir / f"{rec.id}.json", json.dumps(rec.to_dict(), indent=2))

    def _update(self, job_id: str, **changes: Any) -> JobRecord:
        with self._lock:
            rec = self._jobs[job_id]
            for k, v in changes.items():
                setattr(rec, k, v)
            self._save(rec)
            return rec

    # -- public API ------------------------------------------------------------------------
    def study_folder(self, study_uid: str) -> Path:
        """Folder of ``study_uid`` in the store; :class:`InputError` when the store has no such study."""
        try:
            folder = Path(self.store.study_folder(study_uid))
        except (KeyError, LookupError, InputError) as exc:
            raise InputError(f"no study {study_uid} in the store") from exc
        if not folder.is_dir():
            raise InputError(f"no study {study_uid} in the store")
        return folder

    def submit(self, kind: str, study_uid: str, params: dict[str, Any] | None = None, *, actor: str = "") -> str:
        """Queue a job and return its id.

        Raises
        ------
        InputError
            Unknown kind, unknown parameter, or a study the store does not hold.
        """
        if kind not in JOB_KINDS:
            raise InputError(f"unknown job kind {kind!r}; the kinds are: {', '.join(JOB_KINDS)}")
        params = dict(params or {})
        if not isinstance(params, dict):
            raise InputError(f"job params must be a mapping, got {type(params).__name__}")
        fn, allowed = JOB_KINDS[kind]
        _check_params(kind, params, allowed)
        if params.get("mask_job"):
            prior = self.status(str(params["mask_job"]))
            if prior.kind != "segment" or prior.state is not JobState.done:
                raise InputError(
                    f"params.mask_job {prior.id} must be a finished segment job; it is a {prior.state} {prior.kind} job"
                )
        self.study_folder(study_uid)
        job_id = uuid.uuid4().hex[:16]
        rec = JobRecord(id=job_id, kind=kind, study_uid=study_uid, params=params, created=_now(), actor=actor)
        cancel = threading.Event()
        with self._lock:
            self._jobs[job_id] = rec
            self._cancel[job_id] = cancel
            self._save(rec)
        self.audit.append(
            action="job.submit",
            actor=actor or None,
            details={"job": job_id, "kind": kind, "study": study_uid, "params": params},
        )
        self._pool.submit(self._run, job_id, fn, cancel)
        return job_id

    def status(self, job_id: str) -> JobRecord:
        """A copy of the job's record; :class:`InputError` for an unknown id."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                raise InputError(f"no job {job_id!r}")
            return JobRecord(**{**asdict(rec), "state": rec.state})

    def list_jobs(self, *, study_uid: str | None = None) -> list[JobRecord]:
        """All jobs (optionally of one study), newest first."""
        with self._lock:
            ids = [j.id for j in self._jobs.values() if study_uid is None or j.study_uid == study_uid]
        return sorted((self.status(i) for i in ids), key=lambda r: r.created, reverse=True)

    def cancel(self, job_id: str, *, actor: str = "") -> JobRecord:
        """Cancel a job: at once when queued, at its next checkpoint when running; no-op when finished."""
        with self._lock:
            rec = self._jobs.get(job_id)
            if rec is None:
                raise InputError(f"no job {job_id!r}")
            if rec.state in _FINAL:
                return self.status_unlocked(rec)
            ev = self._cancel.get(job_id)
            if ev is not None:
                ev.set()
            if rec.state is JobState.queued:
                rec.state, rec.message, rec.finished = JobState.cancelled, "cancelled before it started", _now()
            else:
                rec.message = "cancelling at the next checkpoint"
            self._save(rec)
            out = self.status_unlocked(rec)
        self.audit.append(action="job.cancel", actor=actor or None, details={"job": job_id, "state": out.state.value})
        return out

    @staticmethod
    def status_unlocked(rec: JobRecord) -> JobRecord:
        return JobRecord(**{**asdict(rec), "state": rec.state})

    def results(self, job_id: str) -> list[Path]:
        """The result files of a finished job (empty unless ``done``)."""
        rec = self.status(job_id)
        if rec.state is not JobState.done:
            return []
        return [self.results_dir / job_id / n for n in rec.results]

    def result_path(self, job_id: str, name: str) -> Path:
        """One result file of a ``done`` job; :class:`InputError` when the job or the file is not there."""
        rec = self.status(job_id)
        if rec.state is not JobState.done:
            raise InputError(f"job {job_id} is {rec.state.value}, not done; it has no results yet")
        if name not in rec.results:
            raise InputError(f"job {job_id} has no result {name!r}; it has: {', '.join(rec.results)}")
        return self.results_dir / job_id / name

    def wait(self, job_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.05) -> JobRecord:
        """Block until the job is finished (or ``timeout_s`` passed) and return its record."""
        import time

        end = time.monotonic() + timeout_s
        while True:
            rec = self.status(job_id)
            if rec.state in _FINAL or time.monotonic() > end:
                return rec
            time.sleep(poll_s)

    def shutdown(self, *, wait: bool = True) -> None:
        """Cancel queued jobs, ask running ones to stop, and (optionally) wait for the threads."""
        with self._lock:
            live = [j.id for j in self._jobs.values() if j.state not in _FINAL]
        for j in live:
            with contextlib.suppress(InputError):
                self.cancel(j, actor="medlens-serve")
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # -- the worker ------------------------------------------------------------------------
    def _run(self, job_id: str, fn: Callable[[JobContext], None], cancel: threading.Event) -> None:
        with self._lock:
            rec = self._jobs[job_id]
            if rec.state is not JobState.queued:  # cancelled while waiting
                return
            rec.state, rec.started, rec.message = JobState.running, _now(), "started"
            self._save(rec)
        partial = self.results_dir / f".{job_id}.partial"
        final = self.results_dir / job_id
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        ctx = JobContext(self, rec, partial, cancel)
        state, message = JobState.done, "done"
        try:
            fn(ctx)
            ctx.check_cancelled()
            names = sorted(p.name for p in partial.iterdir() if p.is_file() and not p.name.startswith("."))
            os.replace(partial, final)  # all or nothing: the folder appears complete
        except JobCancelled:
            state, message = JobState.cancelled, "cancelled"
        except MedlensError as exc:
            state, message = JobState.failed, f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug or an unexpected library error: recorded, never fatal to the service
            state, message = JobState.failed, f"unexpected {type(exc).__name__}: {exc}"
            message += " | " + traceback.format_exc(limit=3).replace("\n", " ")[-600:]
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        changes: dict[str, Any] = {"state": state, "message": message, "finished": _now()}
        if state is JobState.done:
            changes.update(progress=1.0, results=names)
        done = self._update(job_id, **changes)
        self.audit.append(
            action=f"job.{state.value}",
            actor=done.actor or None,
            outputs=[str(p) for p in self.results(job_id)],
            details={"job": job_id, "kind": done.kind, "study": done.study_uid, "message": message[:500]},
        )
        if state is JobState.done and self.on_done is not None:
            try:
                self.on_done(done)
            except Exception as exc:  # delivery problems must not turn a finished job into a failed one
                self._update(job_id, message=f"done; on_done hook failed: {type(exc).__name__}: {exc}")
