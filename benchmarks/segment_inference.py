"""Sliding-window U-Net inference: MedLens vs plain MONAI, PyTorch vs ONNX Runtime.

    .venv/bin/python benchmarks/segment_inference.py [--shape 120,256,256] [--threads 1]

Uses the shipped 2D model (``medlens/segment/models/sts_pet_unet2d``) on a synthetic full volume
(PET-like SUV values). Each variant runs in a fresh subprocess so its peak resident memory
(``ru_maxrss``) is its own. Prints time, peak memory and ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
variant, shape, threads = sys.argv[1], tuple(int(v) for v in sys.argv[2].split(",")), int(sys.argv[3])
torch.set_num_threads(threads)
from medlens.core.image import Image
from medlens.segment.unet import DEFAULT_MODEL_DIR, load_model, predict_probability
from medlens.segment.unet.infer import _OnnxPredictor
rng = np.random.default_rng(0)
arr = rng.gamma(2.0, 0.5, shape).astype(np.float32)
arr[shape[0]//3: shape[0]//2, shape[1]//3: shape[1]//2, shape[2]//3: shape[2]//2] += 8.0
img = Image.from_array(arr, spacing=(3.0, 4.0, 4.0), modality="PT", units="SUVbw")
net, cfg = load_model(DEFAULT_MODEL_DIR)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if variant == "medlens-torch":
    p = predict_probability(img, net, cfg)
elif variant == "medlens-onnx":
    p = predict_probability(img, _OnnxPredictor(DEFAULT_MODEL_DIR / "model.onnx", threads), cfg)
else:
    from monai.inferers import sliding_window_inference
    x = torch.from_numpy(np.clip(arr, 0, cfg.suv_clip)[:, None] / cfg.suv_scale)
    with torch.no_grad():
        p = torch.sigmoid(sliding_window_inference(x, cfg.roi_size, 16, net, overlap=0.25)).numpy()[:, 0]
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"variant": variant, "seconds": dt, "peak_mb": peak / 1024, "delta_mb": (peak - base) / 1024,
                  "mask_voxels": int((p >= 0.5).sum())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="120,256,256")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    res = {}
    for v in ("monai-plain", "medlens-torch", "medlens-onnx"):
        out = subprocess.run([sys.executable, "-c", CHILD, v, a.shape, str(a.threads)], capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(1)
        res[v] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"volume {a.shape} (z,y,x), 2D U-Net on every slice, window 64x64, overlap 0.25, {a.threads} thread(s)")
    for v, r in res.items():
        print(
            f"{v:>14}: {r['seconds']:7.2f} s  peak RSS {r['peak_mb']:7.0f} MB (+{r['delta_mb']:.0f} MB)  "
            f"mask voxels {r['mask_voxels']}"
        )
    m, t, o = res["monai-plain"], res["medlens-torch"], res["medlens-onnx"]
    print(
        f"time ratio MedLens/MONAI: {t['seconds'] / m['seconds']:.2f}; ONNX Runtime/PyTorch: "
        f"{o['seconds'] / t['seconds']:.2f}"
    )
    print(
        f"peak-memory increase ratio MedLens/MONAI: {t['delta_mb'] / max(m['delta_mb'], 1e-6):.2f}; "
        f"ONNX/PyTorch: {o['delta_mb'] / max(t['delta_mb'], 1e-6):.2f}"
    )


if __name__ == "__main__":
    main()
