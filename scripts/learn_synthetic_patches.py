"""Do synthetic PET lesion patches with masks (two-stage diffusion) help lesion segmentation? (STS FDG-PET)

Patient-level split (fold ``--fold`` of ``--k`` folds over the 51 STS patients, fixed seed): the
training patients are the only source of the generator's data and of the segmenter's real labels;
the held-out patients give the Dice. For every labelled fraction (default 100 % and 25 % of the
training patients, nested subsets):

1. a :mod:`medlens.learn.diffusion_synth` generator (mask DDPM, then the image DDPM conditioned on the
   post-processed mask) is trained on the GTV-centred crops of the *labelled* patients only;
2. ``--ratio`` x (number of real lesion crops) pairs are sampled (seeded) through the quality gate;
3. the segmenter (:func:`medlens.segment.unet.train`, the shipped 2D recipe) is trained on real
   only and on real + synthetic, with the same seed; the real-only arm gets proportionally more
   epochs so both arms take the same number of gradient steps (``steps-matched``);
4. Dice of every held-out patient (3D, largest component), mean [95 % bootstrap CI] and the paired
   difference (real + synthetic) - real.

Feature-distribution distances: Frechet distance between synthetic and held-out real crops in the
shipped SimCLR encoder's mask-pooled feature space (64 values; crops zero-padded to 64 x 64) and on
9 first-order/shape features of the masked region (z-scored with the training crops' mean and SD),
with the real-vs-real baseline (training patients' crops vs held-out patients' crops) for scale;
every distance on equal-sized random subsets, mean +- SD over 5 draws.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_synthetic_patches.py --out /tmp/synth
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.image import Image, Units
from medlens.learn import diffusion_synth as ds
from medlens.learn.transfer import bootstrap_mean_ci
from medlens.segment import metrics
from medlens.segment.unet import UNetConfig, load_case, make_case, read_cohort
from medlens.segment.unet.infer import postprocess, predict_probability
from medlens.segment.unet.train import patient_folds, train


def _samples_per_epoch(cases: list[Any]) -> int:
    """Slices one epoch of segment.unet.train draws: every lesion slice plus as many lesion-free ones."""
    n = 0
    for c in cases:
        m = np.asarray(c.mask.array, bool)
        pos = int(m.any(axis=(1, 2)).sum())
        n += pos + min(m.shape[0] - pos, max(1, pos))
    return n


def _synthetic_case(images: np.ndarray, masks: np.ndarray, spacing: tuple[float, ...]) -> Any:
    """The accepted pairs as one 'patient' (a stack of 2D slices) for segment.unet.train."""
    suv = images[:, 0] * 5.0  # network units back to SUVbw (clip(SUV, 0, 25) / 5)
    img = Image.from_array(suv, spacing=spacing, modality="PT", units=Units.SUVBW, source="synthetic pairs")
    return make_case(img, img.with_array(masks[:, 0], units=Units.MASK), patient_id="synthetic")


def _pad64(x: np.ndarray) -> np.ndarray:
    p = (64 - x.shape[-1]) // 2
    return np.pad(x, ((0, 0), (0, 0), (p, 64 - x.shape[-2] - p), (p, 64 - x.shape[-1] - p)))


def _fd_draws(a: np.ndarray, b: np.ndarray, n: int, rng: np.random.Generator, draws: int = 5) -> list[float]:
    out = []
    for _ in range(draws):
        ia = rng.choice(len(a), size=n, replace=False)
        ib = rng.choice(len(b), size=n, replace=False)
        out.append(ds.frechet_distance(a[ia], b[ib]))
    return out


def _dice(cases: list[Any], net: Any, cfg: UNetConfig) -> dict[str, float]:
    out = {}
    for c in cases:
        d = metrics.dice(postprocess(c.image, predict_probability(c.image, net, cfg), cfg), c.mask)
        out[c.patient_id] = float(0.0 if math.isnan(d) else d)
    return out


def _figure(real: tuple[np.ndarray, np.ndarray], synth: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(8, len(real[0]), len(synth[0]))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6))
    for row, (x, m, title) in enumerate(((*real, "real"), (*synth, "synthetic"))):
        for i in range(n):
            ax = axes[row, i]
            ax.imshow(x[i, 0] * 5.0, cmap="gray_r", vmin=0, vmax=10)
            ax.contour(m[i, 0], levels=[0.5], colors="r", linewidths=0.8)
            ax.set_axis_off()
        axes[row, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    ap.add_argument("--out", type=Path, default=Path("/tmp/learn_synthetic"))
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--fractions", default="1.0,0.25")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--mask-size", type=int, default=8)
    ap.add_argument("--mask-steps", type=int, default=500)
    ap.add_argument("--image-steps", type=int, default=1000)
    ap.add_argument("--ddim-steps", type=int, default=15)
    ap.add_argument("--ratio", type=float, default=0.4, help="synthetic pairs per real lesion crop")
    ap.add_argument("--epochs-full", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gate-intensity", action="store_true", help="also gate on the mean SUV in the mask")
    ap.add_argument("--generators", type=Path, help="load generator_<pct>.pt from here instead of training")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(s: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {s}", flush=True)

    cfg = UNetConfig()
    cases = {
        r["patient_id"]: load_case(r["pet_image"], r["pet_rtstruct"], patient_id=r["patient_id"])
        for r in read_cohort(a.sts / "cohort.csv")
    }
    train_ids, test_ids = patient_folds(list(cases), k=a.k, seed=a.seed)[a.fold]
    test_cases = [cases[p] for p in test_ids]
    spacing = test_cases[0].image.spacing
    hx, hm, _ = ds.gtv_patches(test_cases, size=a.size)
    log(f"{len(cases)} patients: {len(train_ids)} training, {len(test_ids)} held out ({len(hx)} lesion crops)")
    order = list(np.random.default_rng(a.seed + 100 * a.fold).permutation(train_ids))
    enc_held = ds.encoder_features(_pad64(hx), _pad64(hm))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(a).items()}, "test_ids": test_ids, "arms": []}

    for frac in [float(f) for f in a.fractions.split(",")]:
        n_lab = max(2, round(frac * len(train_ids)))
        labelled = [cases[p] for p in order[:n_lab]]
        tx, tm, _ = ds.gtv_patches(labelled, size=a.size)
        log(f"fraction {frac:g}: {n_lab} labelled patients, {len(tx)} lesion crops; training the generator")
        saved = a.generators / f"generator_{int(100 * frac)}.pt" if a.generators else None
        if saved is not None:
            gen = ds.load_generator(saved)
            if gen.architecture["size"] != a.size:
                raise SystemExit(f"{saved}: made for {gen.architecture['size']} px crops, not {a.size}")
            gen.reference.update(ds.reference_stats(tx, tm))  # the same training crops: adds newer gate bounds
            log(f"  loaded {saved}")
        else:
            gen = ds.train_generator(
                tx,
                tm,
                mask_size=a.mask_size,
                mask_steps=a.mask_steps,
                image_steps=a.image_steps,
                seed=a.seed,
                log=lambda s: log("  " + s),
            )
            ds.save_generator(gen, a.out / f"generator_{int(100 * frac)}.pt", info={"labelled": order[:n_lab]})
        n_syn = max(1, round(a.ratio * len(tx)))
        syn = ds.sample_pairs(
            gen,
            n_syn,
            seed=a.seed,
            n_steps=a.ddim_steps,
            batch_size=64,
            max_batches=60,
            gate_intensity=a.gate_intensity,
        )
        log(f"  sampled: {json.dumps({k: v for k, v in syn.report.items() if k != 'reference'})}")
        ungated = ds.sample_pairs(
            gen, 64, seed=a.seed + 1, n_steps=a.ddim_steps, batch_size=64, max_batches=1, gate=False
        )
        _figure((tx, tm), (syn.images, syn.masks), a.out / f"pairs_{int(100 * frac)}.png")

        # feature-distribution distances (equal n, 5 draws)
        rng = np.random.default_rng(a.seed)
        enc_train = ds.encoder_features(_pad64(tx), _pad64(tm))
        enc_syn = ds.encoder_features(_pad64(syn.images), _pad64(syn.masks))
        fo_train = ds.first_order_features(tx, tm)
        mu, sd = fo_train.mean(0), fo_train.std(0) + 1e-9
        fo = {
            "train": (fo_train - mu) / sd,
            "held": (ds.first_order_features(hx, hm) - mu) / sd,
            "syn": (ds.first_order_features(syn.images, syn.masks) - mu) / sd,
        }
        enc = {"train": enc_train, "held": enc_held, "syn": enc_syn}
        n_eq = min(len(tx), len(hx), len(syn.images))
        fd: dict[str, Any] = {"n_per_set": n_eq}
        for space, feats in (("simclr", enc), ("first_order", fo)):
            for name, (p, q) in {
                "train_vs_held": ("train", "held"),
                "syn_vs_held": ("syn", "held"),
                "syn_vs_train": ("syn", "train"),
            }.items():
                v = _fd_draws(feats[p], feats[q], n_eq, rng)
                fd[f"{space}/{name}"] = [float(np.mean(v)), float(np.std(v))]
        fd["first_order_means"] = {
            k: dict(zip(ds.FIRST_ORDER_NAMES, (v.mean(0) * sd + mu).round(3).tolist(), strict=True))
            for k, v in fo.items()
        }
        log(f"  Frechet: {json.dumps({k: v for k, v in fd.items() if k != 'first_order_means'})}")

        # segmenters: real only (steps-matched) vs real + synthetic
        epochs = min(a.max_epochs, math.ceil(a.epochs_full / frac))
        s_real = _samples_per_epoch(labelled)
        epochs_real = round(epochs * (s_real + len(syn.images)) / s_real)
        res_real = train(labelled, cfg, epochs=epochs_real, seed=a.seed)
        d_real = _dice(test_cases, res_real.net, cfg)
        log(f"  real only: {epochs_real} epochs x {s_real} slices, Dice {np.mean(list(d_real.values())):.3f}")
        synth_case = _synthetic_case(syn.images, syn.masks, spacing)
        res_syn = train([*labelled, synth_case], cfg, epochs=epochs, seed=a.seed)
        d_syn = _dice(test_cases, res_syn.net, cfg)
        log(
            f"  real + synthetic: {epochs} epochs x {s_real + len(syn.images)} slices, "
            f"Dice {np.mean(list(d_syn.values())):.3f}"
        )
        diff = [d_syn[p] - d_real[p] for p in test_ids]
        results["arms"].append(
            {
                "fraction": frac,
                "n_labelled": n_lab,
                "n_real_crops": len(tx),
                "n_synthetic": len(syn.images),
                "epochs_real": epochs_real,
                "epochs_real_plus_synthetic": epochs,
                "generator_losses": gen.losses,
                "sampling": syn.report,
                "ungated": {
                    k: ungated.report[k] for k in ("raw_components_mean", "largest_fraction_mean", "area_median")
                },
                "frechet": fd,
                "dice_real": d_real,
                "dice_real_plus_synthetic": d_syn,
                "summary": {
                    "real": bootstrap_mean_ci(list(d_real.values()), seed=a.seed),
                    "real_plus_synthetic": bootstrap_mean_ci(list(d_syn.values()), seed=a.seed),
                    "difference": bootstrap_mean_ci(diff, seed=a.seed),
                },
            }
        )
        (a.out / "results.json").write_text(json.dumps(results, indent=2))

    print(
        f"\nfold {a.fold} of {a.k}: {len(train_ids)} training / {len(test_ids)} held-out patients; Dice of held-out\n"
    )
    head = "| labelled | patients | real crops | synthetic (accepted / drawn) | real only | real + synthetic | diff |"
    print(head)
    print("|---|---|---|---|---|---|---|")
    for r in results["arms"]:
        s, sm = r["sampling"], r["summary"]
        cell = [f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for v in (sm["real"], sm["real_plus_synthetic"])]
        d = sm["difference"]
        print(
            f"| {100 * r['fraction']:.0f} % | {r['n_labelled']} | {r['n_real_crops']} | "
            f"{s['accepted']} / {s['drawn']} | {cell[0]} | {cell[1]} | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] |"
        )
    print("\n| labelled | space | train vs held-out (real-real) | synthetic vs held-out | synthetic vs train |")
    print("|---|---|---|---|---|")
    for r in results["arms"]:
        f = r["frechet"]
        for space in ("simclr", "first_order"):
            cells = [
                f"{f[f'{space}/{k}'][0]:.2f} +- {f[f'{space}/{k}'][1]:.2f}"
                for k in ("train_vs_held", "syn_vs_held", "syn_vs_train")
            ]
            print(f"| {100 * r['fraction']:.0f} % (n={f['n_per_set']}) | {space} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; results in {a.out / 'results.json'}")


if __name__ == "__main__":
    main()
