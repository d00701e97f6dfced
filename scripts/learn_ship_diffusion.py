"""Train, ship and evaluate the low-dose CT diffusion prior ``src/medlens/learn/weights/sts_ct_diffusion_prior.pt``.

The recipe is the DDPM prior of the table of ``scripts/learn_lowdose.py`` (its first fold): 100 random
32 x 32 full-dose patches (HU / 1000 clipped to [-1, 3]) from the three axial slices through the largest
GTV section of each of the 10 training patients of ``scripts/learn_ship_denoiser.py`` (the same patient
split as the shipped CNN), a MONAI ``DiffusionModelUNet`` with channels 16/32/32 and one residual block,
1000 linear-beta DDPM steps, 600 Adam steps at lr 1e-3, batch 16, seed 0. No low-dose image is used in
training: the prior only learns what full-dose CT looks like. The weights are stored as float16 (about
0.56 MB instead of 1.1 MB) and evaluated from the stored file.

Evaluation on the 10 held-out patients only, same slices and noise seeds as the CNN's held-out table
(10 % and 25 % dose): plain FBP and the prior applied through ``denoise_ct(method="diffusion")`` (noise
level from the wavelet estimate of each slice, 8 DDIM steps on the whole slice), rows built by
``table_row`` of ``scripts/learn_lowdose.py``.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_ship_diffusion.py --out /tmp/ship_diffusion
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python scripts/learn_ship_diffusion.py --eval-only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

from medlens.core.image import Units
from medlens.learn import encoders
from medlens.learn import lowdose as ld

HERE = Path(__file__).resolve().parent
DOSES = (0.10, 0.25)
WINDOW = (-1000.0, 1000.0)
TARGET = encoders.WEIGHTS_DIR / "sts_ct_diffusion_prior.pt"


def _script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def patches(cases: list[dict], train: list[int], n_per_patient: int, size: int) -> np.ndarray:
    """Random full-dose patches (HU / 1000, clipped to [-1, 3]) of the training slabs, drawn as in learn_lowdose.py."""
    rng = np.random.default_rng(0)
    out = []
    for i in train:
        vol = np.asarray(cases[i]["ct"].array, np.float32) / ld.HU_SCALE
        for _ in range(n_per_patient):
            z = int(rng.integers(vol.shape[0]))
            y0, x0 = (int(rng.integers(vol.shape[k] - size + 1)) for k in (1, 2))
            out.append(vol[z, y0 : y0 + size, x0 : x0 + size])
    return np.clip(np.stack(out)[:, None], -1.0, 3.0)


def train_and_ship(cases: list[dict], train: list[int], test: list[int], a: argparse.Namespace) -> Path:
    from medlens.learn.diffusion import train_ddpm

    x = patches(cases, train, a.patches_per_patient, a.patch)
    t0 = time.perf_counter()
    setup = train_ddpm(
        x,
        channels=(16, 32, 32),
        num_res_blocks=1,
        num_train_timesteps=1000,
        steps=a.steps,
        batch_size=16,
        learning_rate=a.lr,
        seed=a.seed,
    )
    secs = time.perf_counter() - t0
    print(f"trained on {len(x)} patches: loss {setup.losses[0]:.4f} -> {setup.losses[-1]:.4f} in {secs:.0f} s")
    info = {
        "data": (
            f"{len(x)} random {a.patch}x{a.patch} full-dose patches ({a.patches_per_patient} per patient) of the 3 "
            f"axial slices through the largest GTV section of {len(train)} STS CT patients; no low-dose data"
        ),
        "train_patients": [cases[i]["pid"] for i in train],
        "held_out_patients": [cases[i]["pid"] for i in test],
        "pixel_mm": sorted({round(float(cases[i]["ct"].spacing[-1]), 4) for i in train}),
        "recipe": {
            "loss": "DDPM epsilon-prediction L2 (Ho et al. 2020)",
            "patch": a.patch,
            "batch_size": 16,
            "steps": a.steps,
            "learning_rate": a.lr,
            "optimizer": "Adam",
            "augmentation": "horizontal flips",
        },
        "apply": {
            "sigma": "wavelet MAD estimate of each slice (finest diagonal band), HU / 1000",
            "ddim_steps": 8,
            "start": "t* with (1 - abar) / abar = sigma^2 (SDEdit-style), eta = 0",
        },
        "seed": a.seed,
        "losses": setup.losses,
        "seconds": round(secs, 1),
        "command": "python scripts/learn_ship_diffusion.py",
    }
    info["storage"] = "float16 tensors (loaded into the float32 network; keeps the file under 1 MB)"
    spec = {"modality": "CT", "units": Units.HU, "scaling": "HU / 1000, training patches clipped to [-1, 3]"}
    state = {k: v.half() if v.is_floating_point() else v for k, v in setup.net.state_dict().items()}
    return encoders.save_checkpoint(state, a.target, architecture=setup.architecture, input_spec=spec, info=info)


def main() -> None:
    from scipy import ndimage

    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=HERE.parents[1] / "shared" / "data" / "sts")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ship_diffusion"))
    ap.add_argument("--target", type=Path, default=TARGET)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--patches-per-patient", type=int, default=100)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    table, ship = _script("learn_lowdose"), _script("learn_ship_denoiser")
    cases = ship.load_cases(a.sts, 3)
    for c in cases:
        c.pop("vol")
    train, test = table.folds(cases)[0]
    print(f"train {[cases[i]['pid'] for i in train]}, held out {[cases[i]['pid'] for i in test]}", flush=True)
    if not a.eval_only:
        path = train_and_ship(cases, train, test, a)
        print(f"-> {path} ({path.stat().st_size} bytes, sha256 {encoders.sha256_file(path)[:12]})", flush=True)
    model = ld.LowDoseModel()
    for i in test:  # seeds as in learn_lowdose.py / learn_ship_denoiser.py
        for d in DOSES:
            low = ld.simulate_low_dose(cases[i]["ct"], dose_fraction=d, model=model, seed=1000 + 10 * i + int(d * 100))
            cases[i][d] = np.asarray(low.array, np.float64)
    print(f"simulated ({time.perf_counter() - t0:.0f} s)", flush=True)
    ref_feats = [table.features(cases[i], np.asarray(cases[i]["ct"].array, np.float64)) for i in test]
    rows = []
    for meth, d in [(m, d) for m in ("fbp", "diffusion") for d in DOSES]:
        psnr, ssim, b_gtv, b_soft, feats = [], [], [], [], []
        for i in test:
            c = cases[i]
            ref = np.asarray(c["ct"].array, np.float64)
            if meth == "fbp":
                img = c[d]
            else:
                low = c["ct"].with_array(c[d].astype(np.float32))
                img = np.asarray(ld.denoise_ct(low, method="diffusion", checkpoint=a.target).array, np.float64)
            psnr.append(np.mean([ld.psnr_hu(img[z], ref[z], window_hu=WINDOW) for z in range(len(ref))]))
            ssim.append(np.mean([ld.ssim_hu(img[z], ref[z], window_hu=WINDOW) for z in range(len(ref))]))
            soft = ndimage.binary_erosion((ref > -100) & (ref < 100), iterations=2, structure=np.ones((1, 3, 3)))
            b_gtv.append(ld.hu_bias(img, ref, np.asarray(c["mask"].array, bool)))
            b_soft.append(ld.hu_bias(img, ref, soft))
            feats.append(table.features(c, img))
        iccs = np.array(list(ld.feature_iccs(ref_feats, feats).values()))
        row = table.table_row(meth, d, psnr, ssim, b_gtv, b_soft, iccs)
        row["psnr_per_patient"] = [float(v) for v in psnr]
        rows.append(row)
        print(f"{meth} {d:.2f}: PSNR {row['psnr']:.2f} dB ({time.perf_counter() - t0:.0f} s)", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "heldout.json").write_text(json.dumps(rows, indent=2))
    print(
        "\n| method | dose | PSNR dB [95 % CI] | SSIM [95 % CI] | HU bias GTV [95 % CI] "
        "| HU bias soft tissue [95 % CI] | median ICC | ICC >= 0.90 |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(table.markdown_row(r))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
