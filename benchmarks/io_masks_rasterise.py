"""RTSTRUCT rasterisation: MedLens's vectorised even-odd fill vs scikit-image polygon fills (same contours).

The peer is what a hand-written script does: ``skimage.draw.polygon`` for each contour, XOR-accumulated
per slice (XOR of fills = even-odd rule). Both work on the same contour index coordinates; the
script checks that the masks are identical and prints the best wall time of each and the ratio.

Usage: ``.venv/bin/python benchmarks/io_masks_rasterise.py [--repeat 3] [--patients 10]`` (needs ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STS = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data")) / "sts"


def _skimage_fill(contours: list[np.ndarray], ref: object) -> np.ndarray:
    from skimage.draw import polygon

    inv = np.linalg.inv(ref.affine)  # type: ignore[attr-defined]
    out = np.zeros(ref.shape, dtype=bool)  # type: ignore[attr-defined]
    for pts in contours:
        idx = pts @ inv[:3, :3].T + inv[:3, 3]
        k = int(np.floor(idx[:, 0].mean() + 0.5))
        if not 0 <= k < out.shape[0]:
            continue
        rr, cc = polygon(idx[:, 1], idx[:, 2], shape=out.shape[1:])
        sl = np.zeros(out.shape[1:], dtype=bool)
        sl[rr, cc] = True
        out[k] ^= sl
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--patients", type=int, default=10)
    args = ap.parse_args()

    import pydicom

    import medlens
    from medlens.io.rtstruct import _contour_data, rasterize_contours

    print(f"{'case':<16}{'voxels':>9}{'medlens ms':>12}{'skimage ms':>12}{'ratio':>8}  same")
    ratios = []
    for pdir in sorted(STS.glob("STS_*"))[: args.patients]:
        for mod in ("PET", "CT"):
            if not (pdir / mod).is_dir():
                continue
            ref = medlens.read_image(pdir / mod / "image")
            ds = pydicom.dcmread(next((pdir / mod / "rtstruct").iterdir()))
            contours = [_contour_data(c).reshape(-1, 3) for rc in ds.ROIContourSequence for c in rc.ContourSequence]
            t_ml, t_sk = [], []
            for _ in range(args.repeat):
                t = time.perf_counter()
                ours = rasterize_contours(contours, ref).array
                t_ml.append(time.perf_counter() - t)
                t = time.perf_counter()
                theirs = _skimage_fill(contours, ref)
                t_sk.append(time.perf_counter() - t)
            r = min(t_ml) / min(t_sk)
            ratios.append(r)
            print(
                f"{pdir.name + ' ' + mod:<16}{int(ours.sum()):>9}{min(t_ml) * 1e3:>12.1f}{min(t_sk) * 1e3:>12.1f}"
                f"{r:>8.2f}  {bool(np.array_equal(ours, theirs))}"
            )
    print(f"median ratio medlens / skimage: {float(np.median(ratios)):.2f} (< 1: MedLens faster)")


if __name__ == "__main__":
    main()
