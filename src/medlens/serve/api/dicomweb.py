"""DICOMweb for the viewer and for PACS clients: QIDO-RS, WADO-RS and STOW-RS (DICOM PS3.18).

Routes (under ``/dicomweb``):

* QIDO-RS: ``GET /studies``, ``GET /studies/{study}/series``, ``GET /studies/{study}/series/{series}/instances``
  (DICOM JSON; ``PatientID``, ``StudyInstanceUID``, ``Modality`` exact-match filters, ``limit``/``offset``);
* WADO-RS: ``GET /studies/{study}``, ``.../series/{series}``, ``.../instances/{sop}`` as
  ``multipart/related; type="application/dicom"``, and ``.../metadata`` as DICOM JSON (no bulk data);
* STOW-RS: ``POST /studies`` and ``POST /studies/{study}`` with a ``multipart/related;
  type="application/dicom"`` body.

STOW-RS stores a request **all or nothing**: every part is parsed and checked
(:func:`medlens.serve.store.parse_instance`) before the first is stored. A request with a part
that is not a DICOM instance, of an unsupported SOP class, of another study than the URL names, or
that clashes with a stored instance of the same UID is answered ``409 Conflict`` with a
``FailedSOPSequence`` naming each bad part and its ``FailureReason``, and nothing is stored. A body
that is not ``multipart/related`` is ``415``; a malformed multipart body is ``400``; a body over
``max_upload_mb`` is ``413``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from medlens.core.errors import FormatError, InputError

DICOM_JSON = "application/dicom+json"

# PS3.18 / PS3.4 status codes used as STOW-RS FailureReason (0008,1197).
FAILURE_CANNOT_UNDERSTAND = 0xC000  # not DICOM, unparsable, bad UIDs
FAILURE_SOP_CLASS_NOT_SUPPORTED = 0x0122
FAILURE_DUPLICATE_DIFFERENT = 0x0111  # duplicate SOP Instance with other content
FAILURE_STUDY_MISMATCH = 0xA900  # data set does not match the study named in the URL
FAILURE_PROCESSING = 0x0110


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    vals = [v for v in values if v not in (None, "")]
    return {"vr": vr, "Value": vals} if vals else {"vr": vr}


def _pn(value: Any) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": str(value)}]} if value else {"vr": "PN"}


def _boundary(content_type: str) -> str:
    m = re.search(r'boundary="?([^";]+)"?', content_type, flags=re.IGNORECASE)
    if not m:
        raise HTTPException(400, "multipart/related body without a boundary parameter in Content-Type")
    return m.group(1)


def _split_multipart(path: Path, boundary: str) -> Iterator[tuple[dict[str, str], int, int]]:
    """(part headers, start, end) byte ranges of the parts of the multipart body in ``path``."""
    delim = b"--" + boundary.encode("latin-1")
    size = path.stat().st_size
    if size == 0:
        raise HTTPException(400, "empty multipart body: no parts")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        pos = mm.find(delim)
        if pos < 0:
            raise HTTPException(400, f"multipart body does not contain its boundary {boundary!r}")
        while True:
            pos += len(delim)
            if mm[pos : pos + 2] == b"--":
                return  # closing delimiter
            nl = mm.find(b"\r\n\r\n", pos)
            if nl < 0:
                raise HTTPException(400, "malformed multipart body: a part has no blank line after its headers")
            headers: dict[str, str] = {}
            for line in bytes(mm[pos:nl]).decode("latin-1").split("\r\n"):
                if ":" in line:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
            start = nl + 4
            nxt = mm.find(b"\r\n" + delim, start)
            if nxt < 0:
                raise HTTPException(
                    400, "malformed multipart body: the closing boundary is missing (truncated upload?)"
                )
            yield headers, start, nxt
            pos = nxt + 2


def build_router(state: Any) -> APIRouter:
    """The DICOMweb routes; ``state`` holds ``store``, ``settings`` and ``tmp_dir``."""
    router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"])

    # ------------------------------------------------------------------ QIDO-RS
    @router.get("/studies", summary="QIDO-RS: search studies")
    def qido_studies(
        PatientID: str | None = None,
        StudyInstanceUID: str | None = None,
        limit: int = Query(100, ge=1, le=10000),
        offset: int = Query(0, ge=0),
    ) -> JSONResponse:
        rows = state.cached(("studies-raw",), state.store.studies)
        out = []
        for r in rows:
            if PatientID and r["patient_id"] != PatientID:
                continue
            if StudyInstanceUID and r["study_uid"] != StudyInstanceUID:
                continue
            out.append(
                {
                    "0020000D": _attr("UI", r["study_uid"]),
                    "00100020": _attr("LO", r.get("patient_id")),
                    "00100010": _pn(r.get("patient_name")),
                    "00080020": _attr("DA", str(r["study_date"]).replace("-", "") if r.get("study_date") else None),
                    "00081030": _attr("LO", r.get("study_description")),
                    "00080050": _attr("SH", r.get("accession_number")),
                    "00080061": _attr("CS", *(r.get("modalities") or [])),
                    "00201206": _attr("IS", r.get("n_series")),
                    "00201208": _attr("IS", r.get("n_instances")),
                }
            )
        return JSONResponse(out[offset : offset + limit], media_type=DICOM_JSON)

    @router.get("/studies/{study}/series", summary="QIDO-RS: search a study's series")
    def qido_series(study: str, Modality: str | None = None) -> JSONResponse:
        rows = _or_404(lambda: state.cached(("series-raw", study), lambda: state.store.series(study)))
        out = [
            {
                "0020000D": _attr("UI", study),
                "0020000E": _attr("UI", r["series_uid"]),
                "00080060": _attr("CS", r.get("modality")),
                "00200011": _attr("IS", r.get("series_number")),
                "0008103E": _attr("LO", r.get("series_description")),
                "00201209": _attr("IS", r.get("n_instances")),
            }
            for r in rows
            if not Modality or r.get("modality") == Modality
        ]
        return JSONResponse(out, media_type=DICOM_JSON)

    @router.get("/studies/{study}/series/{series}/instances", summary="QIDO-RS: search a series' instances")
    def qido_instances(study: str, series: str) -> JSONResponse:
        rows = _instances(state, study, series)
        out = [
            {
                "0020000D": _attr("UI", study),
                "0020000E": _attr("UI", series),
                "00080018": _attr("UI", r["sop_instance_uid"]),
                "00080016": _attr("UI", r.get("sop_class_uid")),
                "00200013": _attr("IS", r.get("instance_number")),
                "00280010": _attr("US", r.get("rows")),
                "00280011": _attr("US", r.get("columns")),
            }
            for r in rows
        ]
        return JSONResponse(out, media_type=DICOM_JSON)

    # ------------------------------------------------------------------ WADO-RS
    @router.get("/studies/{study}", summary="WADO-RS: retrieve a study (multipart/related application/dicom)")
    def wado_study(study: str) -> StreamingResponse:
        series = _or_404(lambda: state.store.series(study))
        paths = [Path(r["path"]) for s in series for r in state.store.instances(s["series_uid"])]
        return _multipart(paths)

    @router.get("/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
    def wado_series(study: str, series: str) -> StreamingResponse:
        return _multipart([Path(r["path"]) for r in _instances(state, study, series)])

    @router.get("/studies/{study}/series/{series}/instances/{sop}", summary="WADO-RS: retrieve an instance")
    def wado_instance(study: str, series: str, sop: str) -> StreamingResponse:
        rows = [r for r in _instances(state, study, series) if r["sop_instance_uid"] == sop]
        if not rows:
            raise HTTPException(404, f"instance {sop} is not in series {series} of study {study}")
        return _multipart([Path(rows[0]["path"])])

    @router.get("/studies/{study}/series/{series}/metadata", summary="WADO-RS: series metadata (DICOM JSON)")
    def wado_metadata(study: str, series: str, request: Request) -> JSONResponse:
        import pydicom

        base = str(request.url).split("/metadata")[0]
        out = []
        for r in _instances(state, study, series):
            ds = pydicom.dcmread(r["path"], stop_before_pixels=True)
            uri: str = f"{base}/instances/{r['sop_instance_uid']}"

            def bulk(_elem: Any, u: str = uri) -> str:  # large values: retrieve the instance instead
                return u

            out.append(ds.to_json_dict(bulk_data_threshold=4096, bulk_data_element_handler=bulk))
        return JSONResponse(out, media_type=DICOM_JSON)

    # ------------------------------------------------------------------ STOW-RS
    @router.post("/studies", summary="STOW-RS: store instances (all or nothing)", status_code=200)
    async def stow(request: Request) -> JSONResponse:
        return await _stow(state, request, None)

    @router.post("/studies/{study}", summary="STOW-RS: store instances of one study (all or nothing)")
    async def stow_study(study: str, request: Request) -> JSONResponse:
        return await _stow(state, request, study)

    return router


def _or_404(fn: Any) -> Any:
    from medlens.serve.store import NotInStoreError

    try:
        return fn()
    except NotInStoreError as exc:
        raise HTTPException(404, str(exc)) from None


def _instances(state: Any, study: str, series: str) -> list[dict[str, Any]]:
    rows = _or_404(lambda: state.cached(("instances-raw", series), lambda: state.store.instances(series)))
    if rows and rows[0]["study_uid"] != study:
        raise HTTPException(404, f"series {series} is not in study {study}")
    return rows  # type: ignore[no-any-return]


def _multipart(paths: list[Path]) -> StreamingResponse:
    boundary = uuid.uuid4().hex

    def body() -> Iterator[bytes]:
        for p in paths:
            head = f"--{boundary}\r\nContent-Type: application/dicom\r\nContent-Length: {p.stat().st_size}\r\n\r\n"
            yield head.encode()
            with open(p, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(body(), media_type=f'multipart/related; type="application/dicom"; boundary={boundary}')


async def _stow(state: Any, request: Request, study: str | None) -> JSONResponse:
    import anyio

    from medlens.serve.api._security import BodyTooLarge, too_large_message

    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/related"):
        raise HTTPException(
            415, f'STOW-RS needs Content-Type multipart/related; type="application/dicom", got {ctype or "none"!r}'
        )
    boundary = _boundary(ctype)
    state.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="stow-", suffix=".body", dir=state.tmp_dir)
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.stream():
                    fh.write(chunk)
        except BodyTooLarge as exc:
            raise HTTPException(413, too_large_message(exc.limit)) from None
        return await anyio.to_thread.run_sync(lambda: _stow_file(state, request, tmp, boundary, study))
    finally:
        tmp.unlink(missing_ok=True)


def _stow_file(state: Any, request: Request, body: Path, boundary: str, study: str | None) -> JSONResponse:
    from medlens.serve.store import DuplicateInstanceError, UnsupportedSOPClassError, parse_instance

    store = state.store
    parsed: list[tuple[int, int, dict[str, str]]] = []  # byte ranges: the body is not held in memory
    failed: list[dict[str, Any]] = []
    messages: list[str] = []
    for i, (headers, start, end) in enumerate(_split_multipart(body, boundary), start=1):
        ptype = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
        with open(body, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        source = f"STOW-RS part {i}"
        if ptype != "application/dicom":
            failed.append({"00081197": _attr("US", FAILURE_CANNOT_UNDERSTAND)})
            messages.append(f"{source}: Content-Type {ptype!r}; only application/dicom parts are accepted")
            continue
        try:
            _ds, ids = parse_instance(data, source=source)
        except UnsupportedSOPClassError as exc:
            failed.append({"00081197": _attr("US", FAILURE_SOP_CLASS_NOT_SUPPORTED)})
            messages.append(str(exc))
            continue
        except (FormatError, InputError) as exc:
            failed.append({"00081197": _attr("US", FAILURE_CANNOT_UNDERSTAND)})
            messages.append(str(exc))
            continue
        ref = {"00081150": _attr("UI", ids["sop_class_uid"]), "00081155": _attr("UI", ids["sop_instance_uid"])}
        if study is not None and ids["study_uid"] != study:
            failed.append({**ref, "00081197": _attr("US", FAILURE_STUDY_MISMATCH)})
            messages.append(f"{source}: StudyInstanceUID {ids['study_uid']} differs from the URL's study {study}")
            continue
        if ids["sop_instance_uid"] in store:
            stored = store.path(ids["sop_instance_uid"]).read_bytes()
            if hashlib.sha256(stored).digest() != hashlib.sha256(data).digest():
                failed.append({**ref, "00081197": _attr("US", FAILURE_DUPLICATE_DIFFERENT)})
                messages.append(
                    f"{source}: SOP Instance UID {ids['sop_instance_uid']} is stored already with other content"
                )
                continue
        parsed.append((start, end, ids))
    if not parsed and not failed:
        raise HTTPException(400, "the multipart body has no parts")
    base = str(request.base_url).rstrip("/") + "/dicomweb"
    if failed:
        body_json = {
            "00081198": {"vr": "SQ", "Value": failed},
            "00081196": _attr("US", FAILURE_PROCESSING),
            "messages": messages,  # not a DICOM attribute: human-readable reasons, one per failed part
        }
        return JSONResponse(body_json, status_code=409, media_type=DICOM_JSON)
    refs = []
    for i, (start, end, ids) in enumerate(parsed, start=1):
        with open(body, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        try:
            store.add_bytes(data, source=f"STOW-RS part {i} from {request.client.host if request.client else '?'}")
        except DuplicateInstanceError as exc:  # raced with another writer since the check above
            raise HTTPException(409, str(exc)) from None
        url = f"{base}/studies/{ids['study_uid']}/series/{ids['series_uid']}/instances/{ids['sop_instance_uid']}"
        refs.append(
            {
                "00081150": _attr("UI", ids["sop_class_uid"]),
                "00081155": _attr("UI", ids["sop_instance_uid"]),
                "00081190": _attr("UR", url),
            }
        )
    studies = sorted({ids["study_uid"] for _, _, ids in parsed})
    out: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": refs}}
    if len(studies) == 1:
        out["00081190"] = _attr("UR", f"{base}/studies/{studies[0]}")
    return JSONResponse(out, status_code=200, media_type=DICOM_JSON)
