"""The REST API of ``medlens serve`` (FastAPI): studies, series, jobs, results, DICOMweb, the viewer.

:func:`create_app` builds the application from the service's settings, study store and job
manager. OpenAPI documentation is served at ``/docs`` (Swagger UI) and ``/openapi.json``.

Routes (every one but the viewer's files, the docs and ``/health`` needs a key or token, see
:mod:`medlens.serve.auth`):

==========================================  =====  ===========================================================
``GET /studies``                            read   stored studies (patient, date, modalities, counts)
``GET /studies/{uid}/series``               read   a study's series; RTSTRUCT/SEG ones with their ROIs and the
                                                   image series they refer to
``GET /series/{uid}``                       read   one series (and its instances)
``GET /series/{uid}/volume.nii.gz``         read   the series as a NIfTI volume (converted once, then cached)
``GET /series/{uid}/mask.nii.gz``           read   an RTSTRUCT/SEG ROI rasterised on its image series' grid
``POST /jobs``                              write  submit ``{kind, study_uid, params}``; 202 with the job
``GET /jobs``, ``GET /jobs/{id}``           read   jobs (state, progress 0-1, message)
``DELETE /jobs/{id}``                       write  cancel
``GET /jobs/{id}/results[/{name}]``         read   result files (SEG, NIfTI mask, features JSON/CSV, SR, report)
``GET /results/{id}/{name}``                read   the same files, for links in reports
``GET /audit``                              admin  the last audit entries
``/dicomweb/...``                           r / w  QIDO-RS, WADO-RS, STOW-RS (:mod:`medlens.serve.api.dicomweb`)
``GET /viewer/``                            -      the web viewer (static files; it asks for a key)
==========================================  =====  ===========================================================
"""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime, and
# the FastAPI/pydantic names are imported inside create_app (the [serve] extra is optional).
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medlens.core.errors import InputError, MedlensError

__all__ = ["create_app"]

_MEDIA = {
    ".dcm": "application/dicom",
    ".json": "application/json",
    ".csv": "text/csv",
    ".html": "text/html",
    ".gz": "application/gzip",
    ".nii": "application/octet-stream",
    ".png": "image/png",
}


def create_app(settings: Any, store: Any, jobs: Any, *, authenticator: Any = None) -> Any:
    """Build the FastAPI application.

    Parameters
    ----------
    settings
        :class:`~medlens.serve.settings.ServiceSettings` (``data_dir``, ``max_upload_mb``,
        ``api_keys_file``, ``audit_log``).
    store
        The :class:`~medlens.serve.store.StudyStore`.
    jobs
        The :class:`~medlens.serve.jobs.JobManager`.
    authenticator
        An :class:`~medlens.serve.auth.Authenticator` (default: one on ``settings.api_keys_file``,
        or ``data_dir/api_keys.yaml``).

    Returns
    -------
    fastapi.FastAPI
        Serve it with uvicorn on ``settings.host`` (127.0.0.1 by default).
    """
    from medlens.core.errors import require

    require("fastapi", extra="serve", purpose="the REST API")
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field

    from medlens import __version__
    from medlens.core.audit import AuditLog
    from medlens.serve.api import dicomweb
    from medlens.serve.api._security import AccessMiddleware
    from medlens.serve.auth import Authenticator, default_keys_file
    from medlens.serve.jobs import JOB_KINDS
    from medlens.serve.store import NotInStoreError

    data_dir = Path(settings.data_dir)
    audit = getattr(jobs, "audit", None) or AuditLog(settings.audit_log or data_dir / "audit.jsonl")
    auth = authenticator or Authenticator(default_keys_file(settings))
    state = SimpleNamespace(
        settings=settings,
        store=store,
        jobs=jobs,
        tmp_dir=data_dir / ".upload",
        cache_dir=data_dir / "cache",
        locks={},
        locks_guard=threading.Lock(),
    )
    state.cached = _QueryCache(store)

    app = FastAPI(
        title="MedLens service",
        version=__version__,
        description=(
            "Studies, series, jobs (segmentation, radiomics, reports), results and DICOMweb of a MedLens node. "
            "Send `Authorization: Bearer <API key or token>` with every request except the viewer's files."
        ),
    )
    app.add_middleware(
        AccessMiddleware,
        authenticator=auth,
        audit=audit,
        max_upload_bytes=int(float(settings.max_upload_mb) * (1 << 20)),
    )

    @app.exception_handler(MedlensError)
    async def _medlens_error(_request: Request, exc: MedlensError) -> JSONResponse:
        status = 404 if isinstance(exc, NotInStoreError) else 400 if isinstance(exc, InputError) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    # ------------------------------------------------------------------ basics
    @app.get("/health", tags=["service"], summary="Liveness (public)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/viewer/")

    @app.get("/audit", tags=["service"], summary="The last audit-log entries (admin)")
    def audit_tail(n: int = 100) -> list[dict[str, Any]]:
        entries = audit.entries()
        return entries[-max(1, min(n, 10000)) :]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ studies and series
    @app.get("/studies", tags=["studies"], summary="Stored studies")
    def studies() -> list[dict[str, Any]]:
        return state.cached(("studies",), lambda: [_jsonable(r) for r in store.studies()])  # type: ignore[no-any-return]

    @app.get("/studies/{study_uid}/series", tags=["studies"], summary="The series of a study")
    def study_series(study_uid: str) -> list[dict[str, Any]]:
        def fetch() -> list[dict[str, Any]]:
            rows = [_jsonable(r) for r in store.series(study_uid)]
            for r in rows:
                if r.get("modality") in ("RTSTRUCT", "SEG"):
                    r.update(_mask_header(store, r["series_uid"]))
            return rows

        return state.cached(("series", study_uid), fetch)  # type: ignore[no-any-return]

    @app.get("/series/{series_uid}", tags=["studies"], summary="One series and its instances")
    def series(series_uid: str) -> dict[str, Any]:
        def fetch() -> dict[str, Any]:
            inst = [_jsonable(r) for r in store.instances(series_uid)]
            info = next(r for r in store.series(inst[0]["study_uid"]) if r["series_uid"] == series_uid)
            out = _jsonable(info)
            if out.get("modality") in ("RTSTRUCT", "SEG"):
                out.update(_mask_header(store, series_uid))
            for r in inst:
                r.pop("path", None)  # server file paths are nobody's business
            out["instances"] = inst
            return out

        return state.cached(("one-series", series_uid), fetch)  # type: ignore[no-any-return]

    @app.get("/series/{series_uid}/volume.nii.gz", tags=["viewer"], summary="The series as NIfTI (cached)")
    def volume(series_uid: str) -> FileResponse:
        path = _volume(state, series_uid)
        return FileResponse(path, media_type="application/gzip", filename=f"{series_uid}.nii.gz")

    @app.get("/series/{series_uid}/mask.nii.gz", tags=["viewer"], summary="An RTSTRUCT/SEG ROI as a NIfTI mask")
    def mask(series_uid: str, roi: str | None = None, reference: str | None = None) -> FileResponse:
        path = _mask(state, series_uid, roi=roi, reference=reference)
        return FileResponse(path, media_type="application/gzip", filename=f"{series_uid}-mask.nii.gz")

    # ------------------------------------------------------------------ jobs
    class JobRequest(BaseModel):
        kind: str = Field(description=f"one of: {', '.join(JOB_KINDS)}")
        study_uid: str
        params: dict[str, Any] = Field(default_factory=dict)

    @app.post("/jobs", tags=["jobs"], status_code=202, summary="Submit a job (segment, features, report)")
    def submit(req: JobRequest, request: Request) -> dict[str, Any]:
        actor = _actor(request)
        try:
            job_id = jobs.submit(req.kind, req.study_uid, req.params, actor=actor)
        except NotInStoreError as exc:
            raise HTTPException(404, str(exc)) from None
        except InputError as exc:
            raise HTTPException(404 if "no study" in str(exc) else 400, str(exc)) from None
        return jobs.status(job_id).to_dict()  # type: ignore[no-any-return]

    @app.get("/jobs", tags=["jobs"], summary="Jobs, newest first")
    def list_jobs(study_uid: str | None = None) -> list[dict[str, Any]]:
        return [r.to_dict() for r in jobs.list_jobs(study_uid=study_uid)]

    @app.get("/jobs/{job_id}", tags=["jobs"], summary="A job's state, progress and message")
    def job_status(job_id: str) -> dict[str, Any]:
        return _job(jobs, job_id).to_dict()  # type: ignore[no-any-return]

    @app.delete("/jobs/{job_id}", tags=["jobs"], summary="Cancel a job")
    def job_cancel(job_id: str, request: Request) -> dict[str, Any]:
        _job(jobs, job_id)
        return jobs.cancel(job_id, actor=_actor(request)).to_dict()  # type: ignore[no-any-return]

    @app.get("/jobs/{job_id}/results", tags=["results"], summary="A job's result files")
    def job_results(job_id: str) -> dict[str, Any]:
        rec = _job(jobs, job_id)
        files = [
            {"name": p.name, "bytes": p.stat().st_size, "url": f"/jobs/{job_id}/results/{p.name}"}
            for p in jobs.results(job_id)
        ]
        return {"job": rec.to_dict(), "files": files}

    def _result_file(job_id: str, name: str) -> FileResponse:
        _job(jobs, job_id)
        try:
            path = jobs.result_path(job_id, name)
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None
        suffix = Path(name).suffix.lower()
        return FileResponse(path, media_type=_MEDIA.get(suffix, "application/octet-stream"), filename=name)

    @app.get("/jobs/{job_id}/results/{name}", tags=["results"], summary="One result file")
    def job_result(job_id: str, name: str) -> FileResponse:
        return _result_file(job_id, name)

    @app.get("/jobs/{job_id}/results/{name}/content", tags=["results"], summary="An SR result's content tree")
    def sr_content(job_id: str, name: str) -> dict[str, Any]:
        _job(jobs, job_id)
        try:
            path = jobs.result_path(job_id, name)
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None
        return _sr_tree(path)

    @app.get("/results/{job_id}/{name}", tags=["results"], summary="One result file (alias)")
    def result(job_id: str, name: str) -> FileResponse:
        return _result_file(job_id, name)

    # ------------------------------------------------------------------ DICOMweb and viewer
    app.include_router(dicomweb.build_router(state))
    static = Path(__file__).resolve().parents[1] / "viewer" / "static"
    if static.is_dir():
        app.mount("/viewer", StaticFiles(directory=static, html=True), name="viewer")
    return app


class _QueryCache:
    """Answers of catalog queries, kept while the store holds the same number of instances.

    The store only ever adds instances (a duplicate changes nothing), so an unchanged count means
    unchanged studies and series; each catalog query costs a DuckDB connection (tens of ms), which
    would cap the API far below the tens of requests per second a viewer and a PACS client make.
    A ``NotInStoreError`` is not cached.
    """

    def __init__(self, store: Any, *, max_entries: int = 4096) -> None:
        self.store = store
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[int, Any]] = {}

    def __call__(self, key: tuple[Any, ...], fetch: Any) -> Any:
        import copy

        n = len(self.store)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] == n:
            return copy.deepcopy(hit[1])  # callers may edit what they get
        value = fetch()
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (n, value)
        return copy.deepcopy(value)


def _sr_tree(path: Path) -> dict[str, Any]:
    """The measurement groups of a TID 1500 SR (:func:`medlens.clinical.sr.read_measurement_sr`) as a tree."""
    from medlens.clinical.sr import read_measurement_sr

    groups = read_measurement_sr(path)
    children = []
    for g in groups:
        items = [
            {"concept": k, "value": v, "unit": g.get("units", {}).get(k, ""), "value_type": "NUM"}
            for k, v in g.get("measurements", {}).items()
        ]
        if g.get("lungrads_category"):
            items.append({"concept": "Lung-RADS category", "value": g["lungrads_category"], "value_type": "CODE"})
        children.append({"concept": g.get("label") or "finding", "value_type": "CONTAINER", "children": items})
    return {"concept": "Imaging Measurement Report", "value_type": "CONTAINER", "children": children, "groups": groups}


def _actor(request: Any) -> str:
    p = request.scope.get("state", {}).get("principal")
    return p.actor if p is not None else ""


def _job(jobs: Any, job_id: str) -> Any:
    from fastapi import HTTPException

    try:
        return jobs.status(job_id)
    except InputError as exc:
        raise HTTPException(404, str(exc)) from None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt
    import math

    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, (dt.date, dt.datetime)):
            v = v.isoformat()
        elif isinstance(v, float) and math.isnan(v):
            v = None
        elif hasattr(v, "item") and not isinstance(v, (list, dict, str)):
            v = v.item()
        out[k] = v
    return out


def _mask_header(store: Any, series_uid: str) -> dict[str, Any]:
    """ROI names and referenced image series of an RTSTRUCT/SEG series, from its first instance's header."""
    from medlens.io import list_series

    rows = store.instances(series_uid)
    info = list_series([rows[0]["path"]])[0]
    return {"rois": [r for r in info.rois if r], "referenced_series_uid": info.referenced_series_uid}


def _lock(state: Any, key: str) -> threading.Lock:
    with state.locks_guard:
        return state.locks.setdefault(key, threading.Lock())  # type: ignore[no-any-return]


def _series_paths(state: Any, series_uid: str) -> list[Path]:
    return [Path(r["path"]) for r in state.store.instances(series_uid)]


def _volume(state: Any, series_uid: str) -> Path:
    """NIfTI of an image series, converted by :func:`medlens.io.read_image` once per content."""
    from medlens.io import read_image, write_image

    paths = _series_paths(state, series_uid)
    target = state.cache_dir / "volumes" / f"{series_uid}-{len(paths)}.nii.gz"
    with _lock(state, str(target)):
        if not target.is_file():
            image = read_image(paths, series_uid=series_uid, on_irregular="resample")
            if image.ndim != 3:
                raise InputError(f"series {series_uid} is not a 3D volume (shape {image.shape})")
            write_image(image, target)  # atomic (medlens.core.atomic)
    return target  # type: ignore[no-any-return]


def _mask(state: Any, series_uid: str, *, roi: str | None, reference: str | None) -> Path:
    """An RTSTRUCT/SEG ROI of ``series_uid`` on the grid of its image series (``reference``)."""
    import hashlib

    import numpy as np

    from medlens.io import read_image, read_mask, write_image

    header = _mask_header(state.store, series_uid)
    ref = reference or header["referenced_series_uid"]
    if not ref:
        raise InputError(f"series {series_uid} names no referenced image series; pass ?reference=SERIES_UID")
    if roi is None:
        if not header["rois"]:
            raise InputError(f"series {series_uid} has no ROI")
        roi = header["rois"][0]
    key = hashlib.sha256(f"{series_uid}|{ref}|{roi}".encode()).hexdigest()[:24]
    target = state.cache_dir / "masks" / f"{key}.nii.gz"
    with _lock(state, str(target)):
        if not target.is_file():
            ref_paths = _series_paths(state, ref)
            image = read_image(ref_paths, series_uid=ref, on_irregular="resample")
            mask_path = _series_paths(state, series_uid)[0]
            m = read_mask(mask_path, reference=image, roi=roi)
            write_image(m.with_array(m.array.astype(np.uint8)), target)
    return target  # type: ignore[no-any-return]
