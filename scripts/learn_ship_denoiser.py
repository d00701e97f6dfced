"""Train, ship and evaluate the low-dose CT denoiser ``src/medlens/learn/weights/sts_ct_denoise_cnn.pt``.

Data: the 20 STS patients with a CT. They are split by patient with the first fold of
``scripts/learn_lowdose.py`` (10 training, 10 held-out patients; the patient ids are recorded in the
checkpoint's JSON). Training slices of a training patient: the three axial slices through the largest
GTV cross-section and ``--extra-slices`` more, evenly spaced over the whole volume; each is simulated at
10 % and 25 % dose (:mod:`medlens.learn.lowdose`, I0 = 1e5 photons per ray, 360 views) and paired with
the real CT (the full-dose reference). The residual CNN (:func:`medlens.learn.lowdose.train_denoise_cnn`)
learns both doses at once.

Evaluation on the 10 held-out patients only, on the same three GTV slices and noise seeds as the table
of ``scripts/learn_lowdose.py`` (so its FBP and wavelet rows for these patients are reproduced):
PSNR and SSIM (HU clipped to [-1000, 1000]), HU bias in the GTV and in soft tissue, and the ICC(2,1)
between full-dose and processed radiomics features of the GTV over the held-out patients, for plain
FBP, wavelet BayesShrink and the shipped CNN (applied through :func:`medlens.learn.lowdose.denoise_ct`),
and the CNN applied to the real (full-dose) CT itself (how much it changes an image with no added noise).

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_ship_denoiser.py --out /tmp/ship_denoiser
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_ship_denoiser.py --eval-only
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import pickle
import time
from pathlib import Path

import numpy as np

import medlens
from medlens.core.image import Image, ImageMeta, Units
from medlens.learn import encoders
from medlens.learn import lowdose as ld

HERE = Path(__file__).resolve().parent
DOSES = (0.10, 0.25)
WINDOW = (-1000.0, 1000.0)
TARGET = encoders.WEIGHTS_DIR / "sts_ct_denoise_cnn.pt"


def _table_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("learn_lowdose", HERE / "learn_lowdose.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_cases(sts: Path, n_slices: int) -> list[dict]:
    """Every CT patient: the full volume, the GTV mask and the ``n_slices`` slab through the largest GTV section."""
    rows = [r for r in csv.DictReader((sts / "cohort.csv").open()) if r.get("ct_image")]
    cases = []
    for r in rows:
        im = medlens.read_image(sts / r["ct_image"])
        m = medlens.read_mask(sts / r["ct_rtstruct"], reference=im, roi="GTV_Mass_CT")
        zc = int(np.argmax(np.asarray(m.array).sum(axis=(1, 2))))
        z0 = int(np.clip(zc - n_slices // 2, 0, im.shape[0] - n_slices))
        aff = np.array(im.affine)
        aff[:3, 3] = aff[:3, :3] @ np.array([z0, 0, 0]) + aff[:3, 3]
        slab = Image(np.asarray(im.array, np.float32)[z0 : z0 + n_slices], aff, im.meta)
        mslab = Image(np.asarray(m.array)[z0 : z0 + n_slices], aff, m.meta)
        cases.append(
            {"pid": r["patient_id"], "vol": np.asarray(im.array, np.float32), "z0": z0, "ct": slab, "mask": mslab}
        )
    return cases


def simulate(cases: list[dict], train: list[int], extra: int, model: ld.LowDoseModel) -> None:
    """Low-dose slabs of every case (seeds as in learn_lowdose.py) and extra training slices of the training cases."""
    for i, c in enumerate(cases):
        for d in DOSES:
            seed = 1000 + 10 * i + int(d * 100)
            c[d] = np.asarray(ld.simulate_low_dose(c["ct"], dose_fraction=d, model=model, seed=seed).array, np.float64)
        c["extra"] = []
        if i in train and extra > 0:
            vol = c["vol"]
            slab = set(range(c["z0"], c["z0"] + c["ct"].shape[0]))
            zs = [int(z) for z in np.linspace(0, vol.shape[0] - 1, extra + len(slab)).round() if int(z) not in slab]
            for z in zs[:extra]:
                for d in DOSES:
                    low = ld.simulate_low_dose_slice(
                        vol[z].astype(np.float64),
                        pixel_mm=c["ct"].spacing[-1],
                        dose_fraction=d,
                        model=model,
                        rng=np.random.default_rng(5000 + 100 * i + z + int(d * 100)),
                    )
                    c["extra"].append((z, d, low, vol[z].astype(np.float64)))


def training_pairs(cases: list[dict], train: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for i in train:
        c = cases[i]
        ref = np.asarray(c["ct"].array, np.float64)
        pairs += [(c[d][z], ref[z]) for d in DOSES for z in range(ref.shape[0])]
        pairs += [(low, full) for _z, _d, low, full in c["extra"]]
    return pairs


def train_and_ship(cases: list[dict], train: list[int], test: list[int], a: argparse.Namespace) -> Path:
    pairs = training_pairs(cases, train)
    t0 = time.perf_counter()
    net, losses = ld.train_denoise_cnn(
        pairs,
        width=a.width,
        depth=a.depth,
        patch=a.patch,
        steps=a.steps,
        batch_size=a.batch_size,
        learning_rate=a.lr,
        seed=a.seed,
        cosine=True,
    )
    secs = time.perf_counter() - t0
    print(f"trained on {len(pairs)} pairs: loss {losses[0]:.5f} -> {losses[-1]:.5f} in {secs:.0f} s", flush=True)
    spacing = sorted({round(float(cases[i]["ct"].spacing[-1]), 4) for i in train})
    info = {
        "data": (
            f"{len(pairs)} (simulated low-dose, real CT) axial slice pairs of {len(train)} STS CT patients, "
            f"doses {list(DOSES)}; per patient the 3 slices through the largest GTV section and "
            f"{a.extra_slices} evenly spaced over the volume"
        ),
        "train_patients": [cases[i]["pid"] for i in train],
        "held_out_patients": [cases[i]["pid"] for i in test],
        "pixel_mm": spacing,
        "lowdose_model": {"i0_full": 1e5, "n_views": 360, "doses": list(DOSES)},
        "recipe": {
            "loss": "L2 on the predicted noise (low - full) in HU/1000",
            "patch": a.patch,
            "batch_size": a.batch_size,
            "steps": a.steps,
            "learning_rate": a.lr,
            "optimizer": "Adam, cosine decay to 0",
            "augmentation": "random crops, horizontal and vertical flips",
        },
        "seed": a.seed,
        "losses": losses,
        "seconds": round(secs, 1),
        "command": "python scripts/learn_ship_denoiser.py",
    }
    arch = {"kind": "denoise-cnn", "spatial_dims": 2, "width": a.width, "depth": a.depth}
    spec = {"modality": "CT", "units": Units.HU, "scaling": "HU / 1000; output = x - net(x), times 1000"}
    return encoders.save_checkpoint(net.state_dict(), a.target, architecture=arch, input_spec=spec, info=info)


def evaluate(cases: list[dict], test: list[int], checkpoint: Path, table: object) -> list[dict]:
    from scipy import ndimage

    features, denoise_classic = table.features, table.denoise_classic  # type: ignore[attr-defined]
    ref_feats = [features(cases[i], np.asarray(cases[i]["ct"].array, np.float64)) for i in test]
    rows = []
    # last row: the CNN applied to the real (full-dose) CT itself: how much it changes an image without added noise
    plan = [(m, d) for m in ("fbp", "wavelet", "cnn") for d in DOSES] + [("cnn", 1.0)]
    for meth, d in plan:
        psnr, ssim, b_gtv, b_soft, feats = [], [], [], [], []
        for i in test:
            c = cases[i]
            ref = np.asarray(c["ct"].array, np.float64)
            if d == 1.0:
                img = np.asarray(ld.denoise_ct(c["ct"], checkpoint=checkpoint).array, np.float64)
            elif meth == "fbp":
                img = c[d]
            elif meth == "wavelet":
                img = denoise_classic(c, d, "wavelet")
            else:
                low = c["ct"].with_array(c[d].astype(np.float32))
                img = np.asarray(ld.denoise_ct(low, checkpoint=checkpoint).array, np.float64)
            psnr.append(np.mean([ld.psnr_hu(img[z], ref[z], window_hu=WINDOW) for z in range(len(ref))]))
            ssim.append(np.mean([ld.ssim_hu(img[z], ref[z], window_hu=WINDOW) for z in range(len(ref))]))
            soft = ndimage.binary_erosion((ref > -100) & (ref < 100), iterations=2, structure=np.ones((1, 3, 3)))
            b_gtv.append(ld.hu_bias(img, ref, np.asarray(c["mask"].array, bool)))
            b_soft.append(ld.hu_bias(img, ref, soft))
            feats.append(features(c, img))
        iccs = np.array(list(ld.feature_iccs(ref_feats, feats).values()))
        row = table.table_row(meth, d, psnr, ssim, b_gtv, b_soft, iccs)  # type: ignore[attr-defined]
        row["psnr_per_patient"] = [float(v) for v in psnr]
        rows.append(row)
        print(f"{meth} {d:.2f}: PSNR {rows[-1]['psnr']:.2f} dB, SSIM {rows[-1]['ssim']:.3f}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=HERE.parents[1] / "shared" / "data" / "sts")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ship_denoiser"))
    ap.add_argument("--target", type=Path, default=TARGET, help="checkpoint to write (.pt; .json beside it)")
    ap.add_argument("--extra-slices", type=int, default=9)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=7)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true", help="evaluate the existing --target, do not train")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    table = _table_script()
    model = ld.LowDoseModel()
    cache = a.out / f"ship_simulated_{a.extra_slices}.pkl"
    if cache.is_file():  # deterministic (fixed seeds): reuse between --eval-only runs
        cases, train, test = pickle.loads(cache.read_bytes())
        for c in cases:
            arr, aff = c["ct"]
            c["ct"] = Image(arr, aff, ImageMeta(modality="CT", units=Units.HU))
            c["mask"] = Image(c["mask"], aff, ImageMeta(units=Units.MASK))
    else:
        cases = load_cases(a.sts, 3)
        train, test = table.folds(cases)[0]
        simulate(cases, train, a.extra_slices, model)
        a.out.mkdir(parents=True, exist_ok=True)
        packed = [
            {
                **{k: v for k, v in c.items() if k not in ("ct", "mask", "vol")},
                "ct": (np.asarray(c["ct"].array), np.asarray(c["ct"].affine)),
                "mask": np.asarray(c["mask"].array),
            }
            for c in cases
        ]
        cache.write_bytes(pickle.dumps((packed, train, test)))
    print(
        f"{len(cases)} CT patients: train {[cases[i]['pid'] for i in train]}, "
        f"held out {[cases[i]['pid'] for i in test]} ({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    if not a.eval_only:
        path = train_and_ship(cases, train, test, a)
        print(f"-> {path} ({path.stat().st_size} bytes, sha256 {encoders.sha256_file(path)[:12]})", flush=True)
    rows = evaluate(cases, test, a.target, table)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "heldout.json").write_text(json.dumps(rows, indent=2))
    print(f"\nheld-out patients: {', '.join(cases[i]['pid'] for i in test)}\n")
    print(
        "| method | dose | PSNR dB [95 % CI] | SSIM [95 % CI] | HU bias GTV [95 % CI] | HU bias soft tissue [95 % CI] "
        "| median ICC | ICC >= 0.90 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = r["method"] + (" applied to the real CT" if r["dose"] == 1.0 else "")
        print(table.markdown_row(r, label))  # type: ignore[attr-defined]
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
