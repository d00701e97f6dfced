"""Bounded REST load on a real uvicorn (127.0.0.1): 50 requests/s, every one answered and audited.

The full 30 s run, side by side with Orthanc's DICOMweb, is ``benchmarks/serve_rest_load.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the REST API needs the [serve] extra")

from medlens.core.audit import verify
from medlens.serve.api import create_app
from medlens.serve.api.client import paced_load
from medlens.serve.auth import add_key
from medlens.serve.jobs import JobManager
from medlens.serve.settings import ServiceSettings
from medlens.serve.store import StudyStore

PORT = 11275


@pytest.mark.slow
def test_50_requests_per_second_nothing_lost(tmp_path: Path, sts_dir: Path) -> None:
    import uvicorn

    settings = ServiceSettings(data_dir=tmp_path, http_port=PORT, dicom_port=PORT + 1)
    store = StudyStore(tmp_path, quiet_period_s=60, fsync=False)
    for f in sorted((sts_dir / "STS_001" / "PET").rglob("*.dcm")):
        store.add_file(f)
    study = store.studies()[0]["study_uid"]
    jobs = JobManager(store, settings)
    key = add_key(tmp_path / "api_keys.yaml", "load", role="read")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, store, jobs), host="127.0.0.1", port=PORT, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 20
        while not server.started and time.monotonic() < end:
            time.sleep(0.05)
        n_before = len(jobs.audit.entries()) if jobs.audit.path.exists() else 0
        paths = [
            "/studies",
            f"/studies/{study}/series",
            "/jobs",
            "/dicomweb/studies",
            f"/dicomweb/studies/{study}/series",
        ]
        res = paced_load(
            f"http://127.0.0.1:{PORT}", paths, rate_per_s=50, duration_s=5, headers={"Authorization": f"Bearer {key}"}
        )
        time.sleep(0.5)  # the audit entry is appended after the response is sent
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        jobs.shutdown()
        store.close()
    assert res.sent == 250 and res.errors == []
    assert res.status_counts == {200: 250}
    http = [e for e in jobs.audit.entries()[n_before:] if e["action"] == "http.request"]
    assert len(http) == 250 and {e["details"]["status"] for e in http} == {200}
    assert {e["actor"] for e in http} == {"api-key:load"}
    assert verify(jobs.audit.path).ok
