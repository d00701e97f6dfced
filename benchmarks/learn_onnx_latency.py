"""Latency of the shipped ``medlens.learn`` encoders: PyTorch vs ONNX Runtime (CPU, 1 thread).

Input: the axial slices of one real STS PET volume (STS_001, windows of 64 x 64, as deep_features
uses them), and a single slice. Median of ``--repeats`` runs after one warm-up; outputs compared.

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sts", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "sts")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    pet = medlens.read_image(a.sts / "STS_001" / "PET" / "image")
    vol = slices_for_pretraining([pet], modality="PT", min_signal=-1.0)[:, None]
    print(f"volume: {len(vol)} slices of 64 x 64 (STS_001 PET)\n")
    print("| model | input | torch ms | ONNX Runtime ms | torch / ORT | max abs diff |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sts_pet_simclr", "sts_pet_mae"):
            pt = encoders.WEIGHTS_DIR / f"{name}.pt"
            ck = encoders.load_checkpoint(pt, encoder_only=True)
            ort = OnnxModel(export_checkpoint(pt, Path(tmp) / f"{name}.onnx"), threads=1)
            for label, x in (("1 slice", vol[:1]), (f"volume ({len(vol)} slices)", vol)):
                xt = torch.from_numpy(np.ascontiguousarray(x))

                def run_torch(xt=xt, net=ck.net):
                    with torch.inference_mode():
                        return encoders.encoder_forward(net, xt).numpy()

                t_ms = _median_ms(run_torch, a.repeats)
                o_ms = _median_ms(lambda x=x, ort=ort: ort(np.ascontiguousarray(x)), a.repeats)
                diff = float(np.max(np.abs(run_torch() - ort(np.ascontiguousarray(x)))))
                print(f"| {name} encoder | {label} | {t_ms:.2f} | {o_ms:.2f} | {t_ms / o_ms:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
