"""Patient-level cross-validation of the U-Net against the classic PET baselines.

Baselines use a documented seed that needs the expert contour (as in a reader study where a
clinician points at the lesion): the *box* is the bounding box of the ground-truth mask dilated by
``margin_mm`` (10 mm) on every side.

* ``suv40`` — 40 % of the SUVmax inside the box, connected to the SUVmax voxel, limited to the box.
* ``rg_suv2.5`` — region growing from the SUVmax voxel of the box over the voxels with SUV >= 2.5
  (the classic absolute FDG threshold); a leak (> 50 % of the volume) counts as a failure (empty mask).
* ``confidence`` — confidence-connected region growing (multiplier 2.5, 4 iterations, 3x3x3 initial
  neighbourhood: ITK's defaults) from the same seed, confined to the box (unconfined it leaked into the
  background on every case tried); a leak past 50 % of the volume counts as a failure (empty mask).
* ``unet`` — the 2D U-Net trained on the other folds' patients only; no ground truth is used at
  inference (largest predicted component kept).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image
from medlens.segment import classic, metrics
from medlens.segment.unet.data import Case
from medlens.segment.unet.model import UNetConfig

__all__ = ["baseline_masks", "box_region", "cross_validate", "fold_table"]


def box_region(mask: Image, *, margin_mm: float = 10.0) -> Image:
    """The bounding box of ``mask`` grown by ``margin_mm`` on each side, as a boolean mask."""
    idx = np.argwhere(mask.array)
    out = np.zeros(mask.shape, bool)
    if idx.size == 0:
        return mask.with_array(out, op="box")
    sl = []
    for ax, sp in enumerate(mask.spacing):
        m = math.ceil(margin_mm / sp)
        sl.append(slice(max(0, idx[:, ax].min() - m), idx[:, ax].max() + m + 1))
    out[tuple(sl)] = True
    return mask.with_array(out, op=f"box(margin_mm={margin_mm})")


def baseline_masks(case: Case, *, margin_mm: float = 10.0) -> dict[str, Image]:
    """The ``suv40``, ``rg_suv2.5`` and ``confidence`` masks of one case (seeded from the dilated ground-truth box)."""
    box = box_region(case.mask, margin_mm=margin_mm)
    out: dict[str, Image] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", classic.EmptyResultWarning)
        s40 = classic.suv_threshold(case.image, fraction=0.4, region=box, min_suvmax=0.0)
        out["suv40"] = s40
        peak = tuple(s40.meta.extra["suvmax_index"])
        empty = case.image.with_array(np.zeros(case.image.shape, bool), op="leaked")
        try:
            out["rg_suv2.5"] = classic.region_grow(case.image, seed_index=peak, lower=2.5)
        except (ProcessingError, InputError):
            out["rg_suv2.5"] = empty
        try:
            out["confidence"] = classic.confidence_connected(case.image, seed_index=peak, within=box)
        except ProcessingError:
            out["confidence"] = empty
    return out


def cross_validate(
    cases: Sequence[Case],
    config: UNetConfig,
    *,
    k: int = 5,
    epochs: int = 40,
    seed: int = 0,
    threads: int = 1,
    with_unet: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Per-case metrics (one row per case and method) over ``k`` patient-level folds."""
    from medlens.segment.unet.infer import postprocess, predict_probability
    from medlens.segment.unet.train import patient_folds, train

    by_id = {c.patient_id: c for c in cases}
    rows: list[dict[str, Any]] = []
    for f, (train_ids, test_ids) in enumerate(patient_folds(list(by_id), k=k, seed=seed)):
        net = None
        if with_unet:
            res = train([by_id[p] for p in train_ids], config, epochs=epochs, seed=seed + f, threads=threads)
            net = res.net
            if log:
                log(f"fold {f}: trained on {len(train_ids)} patients in {res.seconds:.0f} s, loss {res.losses[-1]:.3f}")
        for p in test_ids:
            case = by_id[p]
            masks = baseline_masks(case)
            if net is not None:
                masks["unet"] = postprocess(case.image, predict_probability(case.image, net, config), config)
            for method, m in masks.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", metrics.EmptyMaskWarning)
                    r = metrics.evaluate_case(m, case.mask)
                rows.append({"patient_id": p, "fold": f, "method": method, **r})
        if log:
            sub = [r for r in rows if r["fold"] == f]
            log(fold_table(sub))
    return rows


def fold_table(rows: Sequence[dict[str, Any]]) -> str:
    """A text table: per fold and method, mean Dice and median HD95 (mm), then all folds."""
    methods = sorted({r["method"] for r in rows})
    folds = sorted({r["fold"] for r in rows})
    head = f"{'fold':>5} {'n':>3} " + " ".join(f"{m + ' Dice':>17} {m + ' HD95':>17}" for m in methods)
    lines = [head]

    def cell(sub, m):
        d = [r["dice"] for r in sub if r["method"] == m]
        h = [r["hd95_mm"] for r in sub if r["method"] == m and np.isfinite(r["hd95_mm"])]
        dm = f"{np.mean(d):.3f}±{np.std(d, ddof=1) if len(d) > 1 else 0:.3f}" if d else "-"
        hm = f"{np.median(h):.1f} mm" if h else "-"
        return f"{dm:>17} {hm:>17}"

    for f in [*folds, "all"]:
        sub = [r for r in rows if f == "all" or r["fold"] == f]
        n = len({r["patient_id"] for r in sub})
        lines.append(f"{f!s:>5} {n:>3} " + " ".join(cell(sub, m) for m in methods))
    lines.append("Dice: mean±sd over cases; HD95: median over cases")
    return "\n".join(lines)
