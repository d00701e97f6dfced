"""Label efficiency of lung-metastasis classification from STS FDG-PET: SSL-pretrained encoder vs scratch.

Stratified patient-level K-fold CV over the 51 STS patients (19 with lung metastases); in each fold
10/25/50/100 % of each class of the training patients are labelled (nested subsets, fixed seeds). Arms:
``scratch`` (random encoder, fine-tuned), ``pretrained`` (SimCLR encoder, fine-tuned), ``probe`` (SimCLR
encoder frozen), ``clinical`` (age, sex, weight, height from the PET header) and the late fusions
``<arm>+clinical``. AUC of the pooled out-of-fold probabilities [95 % bootstrap CI over patients] and the
paired difference against scratch. See docs/learn-classification.md and :mod:`medlens.learn.transfer_cls`.

The SSL checkpoint was pretrained on the unlabelled PET slices of all 51 patients (images only, no
labels or masks), so held-out patients' images were seen during pretraining.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_label_efficiency_cls.py --out /tmp/tcls
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medlens.learn.encoders import WEIGHTS_DIR
from medlens.learn.transfer_cls import markdown_table, run_transfer_cls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    ap.add_argument("--checkpoint", type=Path, default=WEIGHTS_DIR / "sts_pet_simclr.pt")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--pooling", default="attention")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/learn_label_efficiency_cls"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/learn_label_efficiency_cls_cache"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    doc = run_transfer_cls(
        a.sts / "cohort.csv",
        a.out,
        checkpoint=a.checkpoint,
        fractions=[float(f) for f in a.fractions.split(",")],
        k=a.folds,
        seed=a.seed,
        repeats=a.repeats,
        pooling=a.pooling,
        steps=a.steps,
        cache_dir=a.cache,
        log=lambda s: print(s, flush=True),
    )
    print(
        f"\nencoder {a.checkpoint.name}; {a.folds}-fold stratified patient-level CV x {a.repeats} repeat(s); "
        f"{doc['n_patients']} patients ({doc['n_positive']} positive); AUC [95 % CI]\n"
    )
    print(markdown_table(doc["summary"]))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s -> {a.out}")


if __name__ == "__main__":
    main()
