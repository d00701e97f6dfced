"""Label efficiency of the lesion U-Net: SSL-pretrained encoder vs training from scratch (STS FDG-PET).

Patient-level K-fold cross-validation over the 51 STS patients; in each fold 10/25/50/100 % of the
training patients are labelled (nested subsets, fixed seed); both arms train the same
:func:`medlens.segment.unet.train` recipe with the same seed, the pretrained arm starting its down
path from a shipped self-supervised checkpoint. The Dice of every held-out patient is recorded and
summarised as mean [95 % bootstrap CI over patients], with the paired difference.

The SSL checkpoints were pretrained on the unlabelled PET slices of all 51 patients (images only,
no masks), so held-out patients' images (not their labels) were seen during pretraining.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_label_efficiency.py --k 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medlens.learn.encoders import WEIGHTS_DIR
from medlens.learn.ssl import load_pretrained_encoder
from medlens.learn.transfer import label_efficiency, summarise_label_efficiency
from medlens.segment.unet import UNetConfig, load_case, read_cohort


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    ap.add_argument("--checkpoint", type=Path, default=WEIGHTS_DIR / "sts_pet_simclr.pt")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--epochs-full", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--out", type=Path, default=Path("/tmp/learn_label_efficiency.json"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    cfg = UNetConfig()
    cases = [
        load_case(r["pet_image"], r["pet_rtstruct"], patient_id=r["patient_id"])
        for r in read_cohort(a.sts / "cohort.csv")
    ]
    enc = load_pretrained_encoder(a.checkpoint, config=cfg, modality="PT")
    print(f"{len(cases)} patients read ({time.perf_counter() - t0:.0f} s); encoder {a.checkpoint.name}", flush=True)
    rows = label_efficiency(
        cases,
        encoder_state=enc,
        config=cfg,
        fractions=[float(f) for f in a.fractions.split(",")],
        k=a.k,
        epochs_full=a.epochs_full,
        max_epochs=a.max_epochs,
        seed=0,
        log=lambda s: print(s, flush=True),
    )
    summary = summarise_label_efficiency(rows)
    a.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    print(f"\nencoder: {a.checkpoint.name}; {a.k}-fold patient-level CV; Dice of held-out patients, mean [95 % CI]\n")
    print("| labelled | patients per fold | scratch | pretrained | pretrained - scratch |")
    print("|---|---|---|---|---|")
    for s in summary:
        sc, pr, d = s["scratch"], s["pretrained"], s["difference"]
        print(
            f"| {100 * s['fraction']:.0f} % | {','.join(map(str, s['n_labelled']))} "
            f"| {sc[0]:.3f} [{sc[1]:.3f}, {sc[2]:.3f}] "
            f"| {pr[0]:.3f} [{pr[1]:.3f}, {pr[2]:.3f}] | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] |"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
