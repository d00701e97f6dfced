"""The training recipe of the shipped STS PET U-Net, with its patient-level cross-validation.

Usage (from the repository root; ~10 min on one CPU thread)::

    .venv/bin/python scripts/train_unet.py --cohort ../shared/data/sts/cohort.csv \
        --out src/medlens/segment/models/sts_pet_unet2d --epochs 40 --folds 5 --holdout 5 --cv-json cv_results.json

1. 5-fold patient-level cross-validation (folds split patients, seed 0): U-Net vs the 40 % SUVmax
   baseline, SUV >= 2.5 region growing and confidence-connected region growing; the per-fold table
   is printed and the per-case rows are written to ``--cv-json``.
2. A final model trained on all patients but the last ``--holdout`` (5) of the cohort (kept for tests)
   with the same recipe, saved with ``model.json`` (architecture,
   recipe, cross-validated figures) and exported to ONNX (``model.onnx``), checked against PyTorch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cv-json", default=None)
    ap.add_argument("--skip-cv", action="store_true")
    ap.add_argument(
        "--dims", type=int, choices=(2, 3), default=2, help="2: axial slices 64x64 (shipped); 3: 32^3 patches"
    )
    ap.add_argument("--cv-only", action="store_true", help="cross-validate only; do not train or save a model")
    ap.add_argument(
        "--holdout", type=int, default=5, help="leave the last N cohort patients out of the final model (for tests)"
    )
    a = ap.parse_args(argv)

    from medlens.segment import metrics
    from medlens.segment.unet import UNetConfig, export_onnx, load_case, read_cohort, save_model, train
    from medlens.segment.unet.evaluate import cross_validate, fold_table
    from medlens.segment.unet.infer import _OnnxPredictor, postprocess, predict_probability

    t0 = time.perf_counter()
    rows = read_cohort(a.cohort)
    cases = [load_case(r["pet_image"], r["pet_rtstruct"], patient_id=r["patient_id"]) for r in rows]
    print(f"read {len(cases)} cases in {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = (
        UNetConfig()
        if a.dims == 2
        else UNetConfig(spatial_dims=3, channels=(8, 16, 32), strides=(2, 2), roi_size=(32, 32, 32))
    )
    recipe = {
        "data": "STS FDG-PET (SUVbw), ROI GTV_Mass_PET, the patients in trained_on (" + Path(a.cohort).name + ")",
        "epochs": a.epochs,
        "batch_size": 32,
        "learning_rate": 2e-3,
        "loss": "DiceCELoss(sigmoid)",
        "augmentation": "flips (both in-plane axes), intensity x U(0.9, 1.1), random crop shift",
        "seed": a.seed,
        "threads": a.threads,
        "script": "scripts/train_unet.py",
    }
    summary = {}
    if not a.skip_cv:
        cv = cross_validate(cases, cfg, k=a.folds, epochs=a.epochs, seed=a.seed, threads=a.threads, log=print)
        print(fold_table(cv), flush=True)
        for m in sorted({r["method"] for r in cv}):
            summary[m] = metrics.summarise([r for r in cv if r["method"] == m])
        if a.cv_json:
            Path(a.cv_json).write_text(json.dumps({"rows": cv, "summary": summary}, indent=1, default=float))
        print(f"cross-validation done in {time.perf_counter() - t0:.0f} s", flush=True)
    if a.cv_only:
        return 0
    fit = cases[: len(cases) - a.holdout] if a.holdout else cases
    held = cases[len(cases) - a.holdout :] if a.holdout else []
    recipe["trained_on"] = [c.patient_id for c in fit]
    recipe["held_out"] = [c.patient_id for c in held]
    res = train(fit, cfg, epochs=a.epochs, seed=a.seed, threads=a.threads, log=print)
    info = {"recipe": recipe, "train_seconds": round(res.seconds, 1), "final_loss": res.losses[-1]}
    if held:
        hd = {}
        for c in held:
            r = metrics.evaluate_case(postprocess(c.image, predict_probability(c.image, res.net, cfg), cfg), c.mask)
            hd[c.patient_id] = {"dice": round(r["dice"], 4), "hd95_mm": round(r["hd95_mm"], 2)}
        info["held_out_metrics"] = hd
        print(f"held-out cases: {hd}")
    if summary:
        info["cross_validation"] = {
            m: {k: summary[m][k] for k in ("dice", "hd95_mm") if k in summary[m]} for m in summary
        }
        info["cross_validation"]["folds"] = a.folds
    out = Path(a.out)
    save_model(res.net, cfg, out, info=info)
    export_onnx(res.net, cfg, out / "model.onnx")
    onnx = _OnnxPredictor(out / "model.onnx")
    agree = []
    for c in cases[:5]:
        mt = postprocess(c.image, predict_probability(c.image, res.net, cfg), cfg)
        mo = postprocess(c.image, predict_probability(c.image, onnx, cfg), cfg)
        agree.append(metrics.dice(mo, mt))
    print(f"ONNX vs PyTorch Dice on 5 cases: min {min(agree):.4f}; total {time.perf_counter() - t0:.0f} s")
    print(f"model files: {sorted(p.name for p in out.iterdir())}, sizes {[p.stat().st_size for p in out.iterdir()]}")
    return 0 if min(agree) >= 0.99 and np.isfinite(res.losses[-1]) else 1


if __name__ == "__main__":
    sys.exit(main())
