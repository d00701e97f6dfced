"""C-STORE throughput of the MedLens DICOM node vs Orthanc receiving the same files.

The same dcmtk ``storescu`` client sends the same N uncompressed PET instances of the STS cohort
(../shared/data/sts) over 1 association and over 4 parallel associations (4 storescu processes, a
quarter of the files each) to:

* ``medlens``: :class:`medlens.serve.dicom.node.DicomNode` on a fresh
  :class:`medlens.serve.store.StudyStore` (atomic writes, fsync per instance, hash-chained audit
  entry per instance, catalog updated in the background); the time runs until the catalog holds
  all N instances;
* ``orthanc``: Debian's Orthanc, fresh storage, default durability (SQLite index).

Each receiver starts empty for each run. Wall time per run, instances per second, and the ratio
MedLens / Orthanc are printed side by side; every run also checks that all N SOP Instance UIDs
arrived (nothing lost). Loopback ports only (MedLens 11140-11149, Orthanc 11390-11399).

Usage::

    .venv/bin/python benchmarks/serve_dicom_load.py [--n 500] [--no-fsync]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STS = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data")) / "sts"
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc launcher of the tests (tests/_orthanc.py)


def pet_files(n: int) -> list[Path]:
    files: list[Path] = []
    for d in sorted(STS.glob("STS_*")):
        files += sorted((d / "PET" / "image").glob("*.dcm"))
        if len(files) >= n:
            return files[:n]
    raise SystemExit(f"only {len(files)} PET instances under {STS}; ask for fewer with --n")


def storescu(port: int, aet: str, files: list[Path], n_assoc: int) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, files[i::n_assoc])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(n_assoc)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"storescu failed ({p.returncode}): {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - t0


def run_medlens(files: list[Path], n_assoc: int, expected: set[str], *, fsync: bool) -> float:
    from medlens.core.audit import AuditLog
    from medlens.serve.dicom.node import DicomNode
    from medlens.serve.store import StudyStore

    root = Path(tempfile.mkdtemp(prefix="medlens_bench_node_"))
    try:
        store = StudyStore(root, audit_log=AuditLog(root / "audit.jsonl"), fsync=fsync)
        node = DicomNode(store, ae_title="MEDLENS", port=11140)
        node.start()
        try:
            t0 = time.perf_counter()
            storescu(11140, "MEDLENS", files, n_assoc)
            store.flush()  # until the catalog holds them all
            seconds = time.perf_counter() - t0
            got = {r["sop_instance_uid"] for r in store.query("SELECT sop_instance_uid FROM instances")}
            if got != expected:
                raise SystemExit(f"medlens lost instances: {len(expected - got)} missing")
        finally:
            node.stop()
            store.close()
        return seconds
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_orthanc(files: list[Path], n_assoc: int, expected: set[str]) -> float:
    from _orthanc import Orthanc

    root = Path(tempfile.mkdtemp(prefix="medlens_bench_orthanc_"))
    o = Orthanc(root, dicom_port=11390, http_port=11391)
    o.add_modality("storescu", "STORESCU", 11399)  # storescu's default calling AE, from loopback
    try:
        o.start()
        t0 = time.perf_counter()
        storescu(o.dicom_port, o.aet, files, n_assoc)
        seconds = time.perf_counter() - t0
        stats = o.get("/statistics")
        if int(stats["CountInstances"]) != len(expected):
            raise SystemExit(f"orthanc holds {stats['CountInstances']} of {len(expected)} instances")
        return seconds
    finally:
        o.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="instances sent per run")
    ap.add_argument("--no-fsync", action="store_true", help="MedLens without fsync per instance")
    args = ap.parse_args()
    if shutil.which("storescu") is None or not Path("/usr/sbin/Orthanc").is_file():
        print("needs dcmtk (storescu) and orthanc: apt-get install dcmtk orthanc", file=sys.stderr)
        return 1
    import pydicom

    files = pet_files(args.n)
    expected = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"{len(files)} PET instances ({mb:.1f} MB), storescu client, loopback, cpu count {os.cpu_count()}")
    head = ("associations", "medlens s", "inst/s", "orthanc s", "inst/s", "medlens/orthanc")
    print(f"{head[0]:>12} {head[1]:>10} {head[2]:>8} {head[3]:>10} {head[4]:>8} {head[5]:>16}")
    for n_assoc in (1, 4):
        t_m = run_medlens(files, n_assoc, expected, fsync=not args.no_fsync)
        t_o = run_orthanc(files, n_assoc, expected)
        print(
            f"{n_assoc:>12} {t_m:>10.2f} {len(files) / t_m:>8.1f} {t_o:>10.2f} {len(files) / t_o:>8.1f} "
            f"{(len(files) / t_m) / (len(files) / t_o):>15.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
