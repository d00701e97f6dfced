"""Latency of the shipped ``medlens.learn`` models: PyTorch vs ONNX Runtime (CPU, 1 thread).

Inputs, from patient STS_001: for each encoder the axial slices of its modality's volume (PET, CT or
MR_T1; the centre 64 x 64 window of every slice, in the encoder's network units) and a single slice;
for the CT denoiser one full axial CT slice and the whole CT volume (HU / 1000). Median of
``--repeats`` runs after one warm-up; outputs compared.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/learn_onnx_latency.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import medlens
from medlens.learn import encoders
from medlens.learn.onnx_export import OnnxModel, export_checkpoint
from medlens.learn.ssl import slices_for_pretraining


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def _row(name: str, label: str, run_torch, run_ort, repeats: int) -> None:  # type: ignore[no-untyped-def]
    t_ms = _median_ms(run_torch, repeats)
    o_ms = _median_ms(run_ort, repeats)
    diff = float(np.max(np.abs(run_torch() - run_ort())))
    print(f"| {name} | {label} | {t_ms:.2f} | {o_ms:.2f} | {t_ms / o_ms:.2f} | {diff:.1e} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    series = {"PT": "PET", "CT": "CT", "MR": "MR_T1"}
    images = {m: medlens.read_image(a.sts / "STS_001" / f / "image") for m, f in series.items()}
    wins = {m: slices_for_pretraining([im], modality=m, min_signal=-1.0)[:, None] for m, im in images.items()}
    print(", ".join(f"{m}: {len(w)} slices" for m, w in wins.items()) + " (STS_001)\n")
    print("| model | input | torch ms | ONNX Runtime ms | torch / ORT | max abs diff |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sts_pet_simclr", "sts_pet_mae", "sts_ct_simclr", "sts_mr_simclr"):
            pt = encoders.WEIGHTS_DIR / f"{name}.pt"
            ck = encoders.load_checkpoint(pt, encoder_only=True)
            vol = wins[ck.input["modality"]]
            ort = OnnxModel(export_checkpoint(pt, Path(tmp) / f"{name}.onnx"), threads=1)
            for label, x in (("1 slice (64 x 64)", vol[:1]), (f"volume ({len(vol)} slices)", vol)):
                xt = torch.from_numpy(np.ascontiguousarray(x))

                def run_torch(xt=xt, net=ck.net):
                    with torch.inference_mode():
                        return encoders.encoder_forward(net, xt).numpy()

                _row(f"{name} encoder", label, run_torch, lambda x=x, ort=ort: ort(np.ascontiguousarray(x)), a.repeats)
        pt = encoders.WEIGHTS_DIR / "sts_ct_denoise_cnn.pt"
        ck = encoders.load_checkpoint(pt, expect_kind="denoise-cnn")
        ort = OnnxModel(export_checkpoint(pt, Path(tmp) / "denoise.onnx"), threads=1)
        ct = (np.asarray(images["CT"].array, np.float32) / 1000.0)[:, None]
        h, w = ct.shape[-2:]
        reps = {"1 slice": max(3, a.repeats // 2), "volume": 3}
        for label, x in ((f"1 slice ({h} x {w})", ct[:1]), (f"volume ({len(ct)} slices)", ct)):
            xt = torch.from_numpy(np.ascontiguousarray(x))

            def run_torch(xt=xt, net=ck.net):
                with torch.inference_mode():
                    return net(xt).numpy()

            n = reps["1 slice" if len(x) == 1 else "volume"]
            _row("sts_ct_denoise_cnn", label, run_torch, lambda x=x, ort=ort: ort(np.ascontiguousarray(x)), n)


if __name__ == "__main__":
    main()
