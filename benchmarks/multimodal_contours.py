"""Are the STS GTVs drawn independently on each modality? Compare the contour point sets, not only centroids.

Usage: .venv/bin/python benchmarks/multimodal_contours.py [--cases 51]

For every patient, the RTSTRUCT contour points (LPS mm, ContourData) of ``GTV_Mass_MR_T1`` and ``GTV_Mass_CT``
are compared with those of ``GTV_Mass_PET``: number of contours, number of distinct slice planes, and the
distance from every point to the nearest point of the other set (median, 95th percentile, maximum both ways =
the Hausdorff distance of the point sets), plus the centroid distance. Two experts drawing on two modalities
give contours a few mm apart with different point counts; a contour copied through a shared frame of reference
(and re-sampled onto the target's slices) gives the same planes and sub-millimetre distances.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def contour_points(folder: Path, roi: str) -> tuple[np.ndarray, int]:
    import pydicom

    (f,) = [p for p in folder.iterdir() if p.is_file()]
    ds = pydicom.dcmread(str(f))
    number = next(int(r.ROINumber) for r in ds.StructureSetROISequence if str(r.ROIName) == roi)
    pts, n = [], 0
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) != number:
            continue
        for c in rc.ContourSequence:
            pts.append(np.asarray(c.ContourData, dtype=np.float64).reshape(-1, 3))
            n += 1
    return np.concatenate(pts), n


def main() -> None:
    from scipy.spatial import cKDTree

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=51)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    sts = args.data / "sts"
    print("| case | vs PET | contours (PET / other) | planes | median d (mm) | p95 d | Hausdorff | centroid d |")
    print("|" + "---|" * 8)
    summary: dict[str, list[float]] = {"MR_T1": [], "CT": []}
    for case in sorted(p for p in sts.iterdir() if p.name.startswith("STS_"))[: args.cases]:
        pet, n_pet = contour_points(case / "PET" / "rtstruct", "GTV_Mass_PET")
        for mod, roi in (("MR_T1", "GTV_Mass_MR_T1"), ("CT", "GTV_Mass_CT")):
            if not (case / mod / "rtstruct").is_dir():
                continue
            other, n_other = contour_points(case / mod / "rtstruct", roi)
            d1 = cKDTree(other).query(pet)[0]
            d2 = cKDTree(pet).query(other)[0]
            planes = (len(np.unique(np.round(pet[:, 2], 2))), len(np.unique(np.round(other[:, 2], 2))))
            haus = float(max(d1.max(), d2.max()))
            summary[mod].append(haus)
            print(
                f"| {case.name} | {mod} | {n_pet} / {n_other} | {planes[0]} / {planes[1]} | {np.median(d1):.2f} | "
                f"{np.percentile(d1, 95):.2f} | {haus:.2f} | {np.linalg.norm(pet.mean(0) - other.mean(0)):.2f} |"
            )
    for mod, h in summary.items():
        a = np.array(h)
        if a.size:
            print(
                f"{mod} vs PET: {a.size} patients; Hausdorff of the contour points <= 0.25 mm in "
                f"{int((a <= 0.25).sum())}, median {np.median(a):.2f} mm, max {a.max():.2f} mm"
            )


if __name__ == "__main__":
    main()
