"""Catalog scan throughput vs a plain pydicom header loop, and de-identification throughput.

Builds a synthetic archive: the STS tree (../shared/data/sts, 4,784 DICOM files) copied N times with new
UIDs and patient IDs (byte-level, same-length substitution of the STS UID root ``...5168.1900.`` ->
``...5168.19NN.`` and ``STS_`` -> ``SNN_``, so every copy is a distinct set of patients, studies,
series and instances while the files stay valid DICOM). Then times, on the same files:

* ``pydicom loop``: ``pydicom.dcmread(f, stop_before_pixels=True)`` over every file, one process
  (the peer: what a hand-written catalog script does);
* ``medlens scan`` with 1 and 2 workers (fresh database each), and a rescan (nothing changed);
* ``medlens deid`` of one copy.

Usage::

    .venv/bin/python benchmarks/catalog_scan.py [--copies 20] [--workdir /tmp/medlens_bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STS = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data")) / "sts"


def build_archive(dest: Path, copies: int) -> list[Path]:
    root_uid = b"1.3.6.1.4.1.14519.5.2.1.5168.1900."
    files = sorted(STS.rglob("*.dcm"))
    out = []
    for k in range(copies):
        for f in files:
            t = dest / f"copy{k:02d}" / f.relative_to(STS)
            out.append(t)
            if t.exists():
                continue
            t.parent.mkdir(parents=True, exist_ok=True)
            data = f.read_bytes().replace(root_uid, root_uid[:-3] + f"{k:02d}.".encode())
            t.write_bytes(data.replace(b"STS_", f"S{k:02d}_".encode()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/medlens_bench"))
    ap.add_argument("--skip-loop", action="store_true")
    ap.add_argument("--deid-only", action="store_true")
    args = ap.parse_args()
    if not STS.is_dir():
        print(f"STS data not found at {STS}", file=sys.stderr)
        return 1
    import pydicom

    from medlens.catalog import scan
    from medlens.io.deid import deidentify

    arch = args.workdir / "archive"
    t = time.perf_counter()
    files = build_archive(arch, args.copies)
    print(f"archive: {len(files)} files ({args.copies} copies of STS) in {arch} [{time.perf_counter() - t:.1f} s]")
    n = len(files)
    rows = []
    if args.deid_only:
        args.skip_loop = True
    if not args.skip_loop:
        t = time.perf_counter()
        for f in files:
            pydicom.dcmread(f, stop_before_pixels=True)
        loop = time.perf_counter() - t
        rows.append(("pydicom loop (full header, 1 process)", loop))
    for w in () if args.deid_only else (1, 2):
        db = args.workdir / f"scan_w{w}.duckdb"
        db.unlink(missing_ok=True)
        t = time.perf_counter()
        rep = scan(arch, db, workers=w)
        rows.append((f"medlens scan, {w} worker(s)", time.perf_counter() - t))
        assert rep.n_read == n, rep.summary()
    if not args.deid_only:
        t = time.perf_counter()
        rep = scan(arch, args.workdir / "scan_w2.duckdb", workers=2)
        rows.append(("medlens rescan (nothing changed)", time.perf_counter() - t))
        assert rep.n_read == 0
        base = rows[0][1]
        print(f"{'method':42s} {'seconds':>9s} {'files/s':>9s} {'vs loop':>8s}")
        for name, sec in rows:
            print(f"{name:42s} {sec:9.2f} {n / sec:9.0f} {base / sec:8.2f}x")
        print(f"catalog totals: {rep.totals}")
    one = arch / "copy00"
    m = sum(1 for _ in one.rglob("*.dcm"))
    mb = sum(p.stat().st_size for p in one.rglob("*.dcm")) / 1e6
    for w in (1, 2):
        out = args.workdir / f"deid_out_w{w}"
        shutil.rmtree(out, ignore_errors=True)
        for p in args.workdir.glob(f"deid_out_w{w}.pseudonyms*"):
            p.unlink()
        t = time.perf_counter()
        drep = deidentify(one, out, retain=["patient-chars"], workers=w)
        sec = time.perf_counter() - t
        print(
            f"deid basic profile, {w} worker(s): {m} files, {mb:.0f} MB in {sec:.1f} s = {m / sec:.0f} files/s, "
            f"{mb / sec:.1f} MB/s ({drep.n_written} written)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
