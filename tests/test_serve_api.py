"""The REST API: auth (401/403), audit of every request, STOW-RS (413, bad parts, all or nothing),
WADO-RS/QIDO-RS, jobs over HTTP and their results, on a real STS study stored through the API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the REST API needs the [serve] extra")
pytest.importorskip("jwt", reason="PyJWT comes with the [serve] extra")

from fastapi.testclient import TestClient

from medlens.core.audit import verify
from medlens.serve.api import create_app
from medlens.serve.api.client import split_multipart_related, stow_body
from medlens.serve.auth import add_key
from medlens.serve.jobs import JobManager
from medlens.serve.settings import ServiceSettings
from medlens.serve.store import StudyStore

FAST_RADIOMICS = {"name": "fast", "families": ["morph", "stat"], "texture": {"families": []}}


class Api:
    """A TestClient on a fresh service, with one key per role."""

    def __init__(self, root: Path, *, max_upload_mb: float = 64) -> None:
        self.settings = ServiceSettings(data_dir=root, http_port=11260, dicom_port=11261, max_upload_mb=max_upload_mb)
        self.store = StudyStore(root, quiet_period_s=60, fsync=False)
        self.jobs = JobManager(self.store, self.settings)
        keys = root / "api_keys.yaml"
        names = {"read": "reader", "write": "writer", "admin": "boss"}
        self.key = {role: add_key(keys, name, role=role) for role, name in names.items()}
        self.client = TestClient(create_app(self.settings, self.store, self.jobs))

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key[role]}"}

    def stow(self, parts: list[Any], *, role: str = "write", url: str = "/dicomweb/studies", **kw: Any) -> Any:
        body, ctype = stow_body(parts, **kw)
        return self.client.post(url, content=body, headers={**self.h(role), "Content-Type": ctype})

    def close(self) -> None:
        self.jobs.shutdown()
        self.store.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, sts_dir: Path) -> Iterator[Api]:
    a = Api(tmp_path_factory.mktemp("serve-api"))
    pet = sorted((sts_dir / "STS_001" / "PET").rglob("*.dcm"))
    r = a.stow(pet)
    assert r.status_code == 200, r.text
    assert len(r.json()["00081199"]["Value"]) == len(pet) == 60
    a.study = a.client.get("/studies", headers=a.h("read")).json()[0]["study_uid"]  # type: ignore[attr-defined]
    yield a
    a.close()


def test_missing_wrong_and_insufficient_credentials(api: Api) -> None:
    c = api.client
    r = c.get("/studies")
    assert r.status_code == 401 and "no credentials" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = c.get("/studies", headers={"Authorization": "Bearer mlk_wrongwrongwrongwrongwrongwrongwrongwrong123"})
    assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked API key"
    assert c.get("/studies", headers=api.h("read")).status_code == 200
    r = c.post("/jobs", json={"kind": "segment", "study_uid": api.study}, headers=api.h("read"))  # type: ignore[attr-defined]
    assert r.status_code == 403 and "needs 'write'" in r.json()["detail"]
    assert api.stow([b"x"], role="read").status_code == 403
    assert c.get("/audit", headers=api.h("write")).status_code == 403
    assert c.get("/audit", headers=api.h("admin")).status_code == 200
    # Public: the docs, the schema, the viewer's files and the health check.
    assert c.get("/openapi.json").json()["info"]["title"] == "MedLens service"
    assert c.get("/docs").status_code == 200
    assert c.get("/health").json()["status"] == "ok"
    assert "<canvas" in c.get("/viewer/").text


def test_every_request_is_audited(api: Api) -> None:
    c = api.client
    c.get("/studies")  # 401
    c.get("/studies", headers=api.h("read"))  # 200
    c.get("/series/1.2.3", headers=api.h("read"))  # 404
    entries = [e for e in api.jobs.audit.entries() if e["action"] == "http.request"]
    last = [(e["actor"], e["details"]["method"], e["details"]["path"], e["details"]["status"]) for e in entries[-3:]]
    assert last == [
        ("anonymous", "GET", "/studies", 401),
        ("api-key:reader", "GET", "/studies", 200),
        ("api-key:reader", "GET", "/series/1.2.3", 404),
    ]
    assert entries[-3]["details"]["error"].startswith("no credentials")
    assert verify(api.jobs.audit.path).ok


def test_studies_series_and_dicomweb_retrieve(api: Api, sts_dir: Path) -> None:
    c, h = api.client, api.h("read")
    study = api.study  # type: ignore[attr-defined]
    [row] = c.get("/studies", headers=h).json()
    assert (row["patient_id"], row["n_series"], row["n_instances"], row["modalities"]) == (
        "STS_001",
        2,
        60,
        ["PT", "RTSTRUCT"],
    )
    series = c.get(f"/studies/{study}/series", headers=h).json()
    by_mod = {s["modality"]: s for s in series}
    assert by_mod["PT"]["n_instances"] == 59
    assert by_mod["RTSTRUCT"]["rois"] == ["GTV_Mass_PET"]
    assert by_mod["RTSTRUCT"]["referenced_series_uid"] == by_mod["PT"]["series_uid"]
    one = c.get(f"/series/{by_mod['PT']['series_uid']}", headers=h).json()
    assert len(one["instances"]) == 59 and "path" not in one["instances"][0]
    # QIDO-RS
    q = c.get("/dicomweb/studies", params={"PatientID": "STS_001"}, headers=h)
    assert q.headers["content-type"].startswith("application/dicom+json")
    assert q.json()[0]["0020000D"]["Value"] == [study]
    assert c.get("/dicomweb/studies", params={"PatientID": "STS_999"}, headers=h).json() == []
    qs = c.get(f"/dicomweb/studies/{study}/series", params={"Modality": "PT"}, headers=h).json()
    assert [s["0020000E"]["Value"][0] for s in qs] == [by_mod["PT"]["series_uid"]]
    # WADO-RS: the series as multipart/related, byte-identical to the files sent.
    pet_uid = by_mod["PT"]["series_uid"]
    r = c.get(f"/dicomweb/studies/{study}/series/{pet_uid}", headers=h)
    assert r.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    parts = split_multipart_related(r.content, r.headers["content-type"])
    sent = {hashlib.sha256(f.read_bytes()).hexdigest() for f in (sts_dir / "STS_001" / "PET" / "image").glob("*.dcm")}
    assert {hashlib.sha256(p).hexdigest() for p in parts} == sent
    meta = c.get(f"/dicomweb/studies/{study}/series/{pet_uid}/metadata", headers=h).json()
    assert len(meta) == 59 and meta[0]["00100020"]["Value"] == ["STS_001"] and "7FE00010" not in meta[0]
    assert c.get(f"/dicomweb/studies/{study}/series/1.2.3", headers=h).status_code == 404


def test_stow_bad_parts_store_nothing(api: Api, sts_dir: Path) -> None:
    ct = sorted((sts_dir / "STS_001" / "CT" / "image").glob("*.dcm"))[:2]
    before = len(api.store)
    # One good CT slice + one text part: 409, the failed part named, the good one NOT stored.
    r = api.stow([ct[0], b"hello, not DICOM"], content_types=["application/dicom", "text/plain"])
    assert r.status_code == 409
    failed = r.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000]]
    assert "only application/dicom parts" in r.json()["messages"][0]
    # A part that claims to be DICOM but is not: cannot understand.
    r = api.stow([ct[1], b"\0" * 200])
    assert r.status_code == 409 and "not a DICOM Part 10 file" in r.json()["messages"][0]
    # A study UID other than the URL's: data set does not match.
    r = api.stow([ct[0]], url="/dicomweb/studies/1.2.826.0.1.3680043.8.498.1")
    assert r.status_code == 409 and r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]
    # Not multipart at all, and a truncated multipart body.
    r = api.client.post(
        "/dicomweb/studies", content=b"x", headers={**api.h("write"), "Content-Type": "application/dicom"}
    )
    assert r.status_code == 415 and "multipart/related" in r.json()["detail"]
    body, ctype = stow_body([ct[0]])
    r = api.client.post("/dicomweb/studies", content=body[:-40], headers={**api.h("write"), "Content-Type": ctype})
    assert r.status_code == 400 and "closing boundary is missing" in r.json()["detail"]
    assert len(api.store) == before
    assert not any(Path(api.settings.data_dir, ".upload").iterdir())  # no temp body left behind


def test_oversize_upload_is_413_and_stores_nothing(tmp_path: Path, sts_dir: Path) -> None:
    small = Api(tmp_path, max_upload_mb=0.5)
    try:
        files = sorted((sts_dir / "STS_001" / "CT" / "image").glob("*.dcm"))[:30]
        assert sum(f.stat().st_size for f in files) > (1 << 20) // 2
        r = small.stow(files)
        assert r.status_code == 413
        assert "larger than the limit of 0.5 MiB" in r.json()["detail"] and "nothing was stored" in r.json()["detail"]
        # Without Content-Length (chunked): refused while streaming.
        body, ctype = stow_body(files)

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 65536):
                yield body[i : i + 65536]

        r = small.client.post(
            "/dicomweb/studies", content=chunks(), headers={**small.h("write"), "Content-Type": ctype}
        )
        assert r.status_code == 413 and "0.5 MiB" in r.json()["detail"]
        # JSON requests have their own 1 MiB limit.
        r = small.client.post(
            "/jobs",
            content=b"{" + b" " * (2 << 20) + b"}",
            headers={**small.h("write"), "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        assert len(small.store) == 0 and small.client.get("/studies", headers=small.h("read")).json() == []
        statuses = [e["details"]["status"] for e in small.jobs.audit.entries() if e["action"] == "http.request"]
        assert statuses[-4:] == [413, 413, 413, 200]
    finally:
        small.close()


def test_jobs_over_http(api: Api) -> None:
    c, w = api.client, api.h("write")
    study = api.study  # type: ignore[attr-defined]
    r = c.post("/jobs", json={"kind": "segment", "study_uid": "1.2.3"}, headers=w)
    assert r.status_code == 404 and "no study 1.2.3" in r.json()["detail"]
    r = c.post("/jobs", json={"kind": "dance", "study_uid": study}, headers=w)
    assert r.status_code == 400 and "unknown job kind 'dance'" in r.json()["detail"]
    r = c.post("/jobs", json={"study_uid": study}, headers=w)
    assert r.status_code == 422 and "kind" in r.json()["detail"]
    r = c.post(
        "/jobs", json={"kind": "features", "study_uid": study, "params": {"settings": FAST_RADIOMICS}}, headers=w
    )
    assert r.status_code == 202
    job = r.json()
    assert job["state"] in ("queued", "running") and job["actor"] == "api-key:writer"
    rec = api.jobs.wait(job["id"], timeout_s=120)
    assert rec.state == "done", rec.message
    got = c.get(f"/jobs/{job['id']}", headers=api.h("read")).json()
    assert (got["state"], got["progress"]) == ("done", 1.0)
    files = c.get(f"/jobs/{job['id']}/results", headers=api.h("read")).json()["files"]
    assert [f["name"] for f in files] == ["features.csv", "features.json"]
    doc = c.get(files[1]["url"], headers=api.h("read")).json()
    assert doc["features"]["GTV_Mass_PET"]["morph_volume"] == pytest.approx(364285.46, rel=1e-6)
    assert c.get(f"/results/{job['id']}/features.csv", headers=api.h("read")).text.startswith("roi,")
    assert c.get(f"/jobs/{job['id']}/results/nope.txt", headers=api.h("read")).status_code == 404
    # Cancelling a finished job changes nothing; an unknown job is 404.
    assert c.delete(f"/jobs/{job['id']}", headers=w).json()["state"] == "done"
    assert c.delete("/jobs/0000", headers=w).status_code == 404
    listed = c.get("/jobs", params={"study_uid": study}, headers=api.h("read")).json()
    assert job["id"] in [j["id"] for j in listed]


@pytest.mark.slow
def test_report_job_sr_and_html(api: Api) -> None:
    c, w, r_ = api.client, api.h("write"), api.h("read")
    r = c.post("/jobs", json={"kind": "report", "study_uid": api.study}, headers=w)  # type: ignore[attr-defined]
    assert r.status_code == 202, r.text
    rec = api.jobs.wait(r.json()["id"], timeout_s=180)
    assert rec.state == "done", rec.message
    assert rec.results == ["measurements.json", "measurements_sr.dcm", "report.html", "seg.dcm"]
    tree = c.get(f"/jobs/{rec.id}/results/measurements_sr.dcm/content", headers=r_).json()
    [group] = tree["children"]
    values = {i["concept"]: (i["value"], i["unit"]) for i in group["children"]}
    assert group["concept"] == "GTV_Mass_PET"
    assert values["suv_max"][0] == pytest.approx(7.9107, abs=1e-4) and values["suv_max"][1] == "{SUVbw}g/ml"
    assert values["volume_mm3"][1] == "mm3"
    page = c.get(f"/jobs/{rec.id}/results/report.html", headers=r_)
    assert page.headers["content-type"].startswith("text/html") and "GTV_Mass_PET" in page.text
    assert c.get(f"/jobs/{rec.id}/results/report.html/content", headers=r_).status_code == 422  # not an SR


def test_viewer_volumes_and_masks(api: Api, sts_dir: Path) -> None:
    import nibabel as nib
    import numpy as np

    from medlens.io import read_image, read_mask

    c, h = api.client, api.h("read")
    series = {s["modality"]: s for s in c.get(f"/studies/{api.study}/series", headers=h).json()}  # type: ignore[attr-defined]
    r = c.get(f"/series/{series['PT']['series_uid']}/volume.nii.gz", headers=h)
    assert r.status_code == 200
    out = Path(api.settings.data_dir) / "vol-check.nii.gz"
    out.write_bytes(r.content)
    vol = np.asarray(nib.load(out).dataobj)
    image = read_image(sts_dir / "STS_001" / "PET" / "image")
    # NIfTI stores (x, y, z); the values are the SUVbw of the series.
    assert vol.shape == image.shape[::-1]
    assert float(vol.max()) == pytest.approx(float(image.array.max()), rel=1e-5)
    r = c.get(f"/series/{series['RTSTRUCT']['series_uid']}/mask.nii.gz", headers=h)
    out.write_bytes(r.content)
    m = np.asarray(nib.load(out).dataobj)
    expected = read_mask(sts_dir / "STS_001" / "PET" / "rtstruct", reference=image, roi="GTV_Mass_PET")
    assert int(m.sum()) == int(expected.array.sum()) > 0
    r = c.get(f"/series/{series['RTSTRUCT']['series_uid']}/mask.nii.gz", params={"roi": "Lung"}, headers=h)
    assert r.status_code == 400 and "GTV_Mass_PET" in r.json()["detail"]


def test_openapi_lists_the_routes(api: Api) -> None:
    paths = set(api.client.get("/openapi.json").json()["paths"])
    for p in (
        "/studies",
        "/studies/{study_uid}/series",
        "/series/{series_uid}",
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/results",
        "/results/{job_id}/{name}",
        "/dicomweb/studies",
        "/dicomweb/studies/{study}/series/{series}",
        "/dicomweb/studies/{study}/series/{series}/metadata",
    ):
        assert p in paths, p
    assert json.dumps(sorted(paths))  # schema is JSON-serialisable
