"""REST load: 50 requests/s for 30 s against ``medlens serve``'s API (real uvicorn on 127.0.0.1),
side by side with Orthanc's DICOMweb plugin at the same rate on the same study.

Nothing may be lost: every request sent must be answered with 200, and the audit log must hold
exactly one ``http.request`` entry per request with an intact hash chain. The MedLens server runs
in its own process (so the load generator's threads do not share its interpreter lock).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/serve_rest_load.py [--rate 50] [--seconds 30] [--no-orthanc]

Loopback only; bounded (rate x seconds requests per server); stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data")) / "sts" / "STS_001" / "PET"
MEDLENS_PORT = 11280
ORTHANC_HTTP, ORTHANC_DICOM = 11290, 11291

SERVER = r"""
import sys, uvicorn
from pathlib import Path
from medlens.serve.settings import ServiceSettings
from medlens.serve.store import StudyStore
from medlens.serve.jobs import JobManager
from medlens.serve.api import create_app
root, port = Path(sys.argv[1]), int(sys.argv[2])
settings = ServiceSettings(data_dir=root, http_port=port, dicom_port=port + 1)
store = StudyStore(root, quiet_period_s=60)
jobs = JobManager(store, settings)
uvicorn.run(create_app(settings, store, jobs), host="127.0.0.1", port=port, log_level="warning")
"""


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # answering (401 and the like): up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s")


def _report(name: str, res: object) -> None:
    from medlens.serve.api.client import LoadResult

    assert isinstance(res, LoadResult)
    print(
        f"{name:<28} sent {res.sent:5d}  answered {res.answered:5d}  "
        f"statuses {dict(sorted(res.status_counts.items()))}  errors {len(res.errors)}  "
        f"achieved {res.sent / res.wall_s:5.1f} req/s  p50 {res.percentile_ms(50):6.1f} ms  "
        f"p95 {res.percentile_ms(95):6.1f} ms  max {max(res.latencies_ms or [0]):7.1f} ms"
    )


def run_medlens(rate: float, seconds: float, work: Path) -> tuple[object, bool]:
    from medlens.core.audit import verify
    from medlens.serve.api.client import paced_load
    from medlens.serve.auth import add_key
    from medlens.serve.store import StudyStore

    root = work / "medlens"
    with StudyStore(root, quiet_period_s=60) as store:
        for f in sorted(DATA.rglob("*.dcm")):
            store.add_file(f)
        study = store.studies()[0]["study_uid"]
        series = [s["series_uid"] for s in store.series(study)]
    key = add_key(root / "api_keys.yaml", "load", role="read")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(root), str(MEDLENS_PORT)], env=env)
    try:
        base = f"http://127.0.0.1:{MEDLENS_PORT}"
        _wait_http(base + "/health")
        audit_before = sum(1 for _ in open(root / "audit.jsonl")) if (root / "audit.jsonl").exists() else 0
        paths = [
            "/studies",
            f"/studies/{study}/series",
            f"/series/{series[-1]}",
            "/jobs",
            "/dicomweb/studies",
            f"/dicomweb/studies/{study}/series",
        ]
        res = paced_load(base, paths, rate_per_s=rate, duration_s=seconds, headers={"Authorization": f"Bearer {key}"})
        time.sleep(1.0)  # the last audit appends run after the responses
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    entries = [json.loads(line) for line in open(root / "audit.jsonl")][audit_before:]
    http = [e for e in entries if e["action"] == "http.request" and e["details"]["path"] != "/health"]
    ok_audit = len(http) == res.sent and all(e["details"]["status"] == 200 for e in http)
    chain = verify(root / "audit.jsonl")
    print(
        f"audit log: {len(http)} http.request entries for {res.sent} requests sent, all 200: {ok_audit}; "
        f"hash chain intact: {chain.ok}"
    )
    return res, ok_audit and chain.ok


def run_orthanc(rate: float, seconds: float, work: Path) -> object | None:
    from medlens.serve.api.client import paced_load

    exe, plugin = "/usr/sbin/Orthanc", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
    if not (Path(exe).exists() and Path(plugin).exists()):
        print("Orthanc or its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb): skipped")
        return None
    root = work / "orthanc"
    root.mkdir()
    cfg = {
        "Name": "bench",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": ORTHANC_HTTP,
        "DicomPort": ORTHANC_DICOM,
        # Orthanc 1.10 cannot bind to loopback only; refuse every remote HTTP client and DICOM peer instead.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomCheckModalityHost": True,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(cfg))
    proc = subprocess.Popen([exe, str(root / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{ORTHANC_HTTP}"
        _wait_http(base + "/system")
        for f in sorted(DATA.rglob("*.dcm")):
            req = urllib.request.Request(base + "/instances", data=f.read_bytes(), method="POST")
            urllib.request.urlopen(req, timeout=30).read()
        study = json.loads(urllib.request.urlopen(base + "/dicom-web/studies").read())[0]["0020000D"]["Value"][0]
        paths = ["/dicom-web/studies", f"/dicom-web/studies/{study}/series"]
        return paced_load(base, paths, rate_per_s=rate, duration_s=seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration (default 30)")
    ap.add_argument("--no-orthanc", action="store_true", help="MedLens only")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"needs the STS data at {DATA}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="medlens-load-"))
    try:
        print(f"{args.rate:g} req/s for {args.seconds:g} s = {round(args.rate * args.seconds)} requests per server")
        med, ok = run_medlens(args.rate, args.seconds, work)
        _report("medlens serve (REST+QIDO)", med)
        orth = None if args.no_orthanc else run_orthanc(args.rate, args.seconds, work)
        if orth is not None:
            _report("Orthanc DICOMweb (QIDO)", orth)
            from medlens.serve.api.client import LoadResult

            assert isinstance(med, LoadResult) and isinstance(orth, LoadResult)
            print(
                f"p95 latency ratio medlens/orthanc: {med.percentile_ms(95) / orth.percentile_ms(95):.2f}x  "
                f"(p50 {med.percentile_ms(50) / orth.percentile_ms(50):.2f}x)"
            )
        from medlens.serve.api.client import LoadResult

        assert isinstance(med, LoadResult)
        lost = med.sent - med.status_counts.get(200, 0)
        print(f"lost or failed MedLens requests: {lost}")
        return 0 if lost == 0 and ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
