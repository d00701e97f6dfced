"""Read DICOM CT series with MedLens and with SimpleITK's ImageSeriesReader (same files, one run).

Usage: ``python benchmarks/io_read_vs_sitk.py [--repeat 3]`` (needs ../shared/data). Prints, per
series, the best wall time of each reader over ``--repeat`` runs and the ratio MedLens / SimpleITK.
Both return float/int voxels with geometry; MedLens also applies the rescale to float32 (HU) and
runs the geometry QA.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sts", type=int, default=5, help="number of STS CT series")
    args = parser.parse_args()

    import SimpleITK as sitk

    from medlens.io.dicom_series import read_dicom_series

    series = [("IBSI CT phantom", DATA / "ibsi1" / "ct_phantom" / "dicom" / "image")]
    series += [
        (f"STS_{i:03d} CT (JPEG-LS)", DATA / "sts" / f"STS_{i:03d}" / "CT" / "image") for i in range(1, args.sts + 1)
    ]
    series = [(n, p) for n, p in series if p.is_dir()]
    if not series:
        raise SystemExit(f"no data under {DATA}")

    def sitk_read(files):
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        return reader.Execute()

    # warm up imports and codecs
    first = sorted(series[0][1].glob("*.dcm"))
    read_dicom_series(first)
    sitk_read(first)
    print(f"{'series':28s} {'files':>5s} {'MedLens s':>10s} {'SimpleITK s':>12s} {'ratio':>6s}")
    tot_m = tot_s = 0.0
    for name, folder in series:
        files = sorted(folder.glob("*.dcm"))
        tm = _best(lambda files=files: read_dicom_series(files), args.repeat)
        ts = _best(lambda files=files: sitk_read(files), args.repeat)
        tot_m += tm
        tot_s += ts
        print(f"{name:28s} {len(files):5d} {tm:10.3f} {ts:12.3f} {tm / ts:6.2f}")
    print(f"{'total':28s} {'':5s} {tot_m:10.3f} {tot_s:12.3f} {tot_m / tot_s:6.2f}")
    print(f"(best of {args.repeat} runs each; {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
