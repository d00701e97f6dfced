"""Wall time of ``medlens.learn.lowdose.denoise_ct`` on one real STS CT volume, torch vs ONNX Runtime (1 thread).

One call each after a warm-up on one slice (checkpoint load, ONNX export).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learn_denoise_ct_engines.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import medlens
from medlens.learn.lowdose import denoise_ct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    a = ap.parse_args()
    ct = medlens.read_image(a.sts / "STS_001" / "CT" / "image")
    denoise_ct(ct.slice2d(0))
    denoise_ct(ct.slice2d(0), engine="onnx")
    out = {}
    for eng in ("torch", "onnx"):
        t = time.perf_counter()
        out[eng] = np.asarray(denoise_ct(ct, engine=eng).array)
        print(f"{eng}: {ct.shape} in {time.perf_counter() - t:.1f} s")
    print(f"max |torch - onnx| = {np.abs(out['torch'] - out['onnx']).max():.2e} HU")


if __name__ == "__main__":
    main()
