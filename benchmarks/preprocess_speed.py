"""Speed of MedLens preprocessing next to the library each step competes with.

Usage: .venv/bin/python benchmarks/preprocess_speed.py [--repeat 3]

* CLAHE on a 512x512 slice: medlens.clahe_2d vs OpenCV createCLAHE directly (uint8) and
  scikit-image equalize_adapthist (2D).
* CLAHE on a 3D volume (128x256x256): medlens.clahe_3d vs scikit-image equalize_adapthist (3D) and
  slice-wise medlens.clahe_2d.
* Wavelet denoising of 512x512x100: medlens.wavelet_denoise vs scikit-image denoise_wavelet (same settings).
* Registration PET->CT (STS_001..004, rigid, Mattes MI): medlens.register vs a bare SimpleITK
  ImageRegistrationMethod with the same settings.
Times are the best of ``--repeat`` runs, single process (the machine is shared).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def best(f: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def row(name: str, ours: float, peer: float, peer_name: str) -> None:
    print(
        f"{name:44s} medlens {ours * 1000:9.1f} ms   {peer_name:28s} {peer * 1000:9.1f} ms   ratio {ours / peer:5.2f}"
    )


def synthetic_ct(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.indices(shape)
    c = [s / 2 for s in shape]
    r2 = sum((i - ci) ** 2 for i, ci in zip(idx[-2:], c[-2:], strict=True))
    body = np.where(r2 < (0.4 * shape[-1]) ** 2, 40.0, -1000.0)
    lung = np.where(r2 < (0.2 * shape[-1]) ** 2, -800.0, 0.0)
    return (body + lung + rng.normal(0, 30, shape)).astype(np.float32)


def main() -> None:
    import cv2
    from skimage.exposure import equalize_adapthist
    from skimage.restoration import denoise_wavelet

    from medlens.core.image import Image, Units
    from medlens.preprocess import clahe_2d, clahe_3d, wavelet_denoise

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cases", type=int, default=4, help="number of STS cases for the registration timing")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    r = args.repeat

    sl = Image.from_array(synthetic_ct((512, 512)), spacing=(0.7, 0.7), units=Units.HU)
    a = sl.array.astype(np.float64)
    u8 = np.round((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8)
    unit = (a - a.min()) / (a.max() - a.min())
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    ours = best(lambda: clahe_2d(sl), r)
    row("CLAHE 2D 512x512", ours, best(lambda: clahe.apply(u8), r), "OpenCV (uint8 only)")
    row(
        "CLAHE 2D 512x512",
        ours,
        best(lambda: equalize_adapthist(unit, kernel_size=64), r),
        "skimage equalize_adapthist",
    )

    vol = Image.from_array(synthetic_ct((128, 256, 256)), spacing=(1.0, 1.0, 1.0), units=Units.HU)
    v = vol.array.astype(np.float64)
    vunit = (v - v.min()) / (v.max() - v.min())
    ours3 = best(lambda: clahe_3d(vol, kernel_size_voxels=32), 1)
    row("CLAHE 3D 128x256x256", ours3, best(lambda: equalize_adapthist(vunit, kernel_size=32), 1), "skimage 3D")
    row("CLAHE slice-wise 128x256x256", best(lambda: clahe_2d(vol), 1), ours3, "medlens clahe_3d")

    big = Image.from_array(synthetic_ct((100, 512, 512)), spacing=(2.0, 0.7, 0.7), units=Units.HU)
    b = big.array.astype(np.float64)
    ours_w = best(lambda: wavelet_denoise(big, method="BayesShrink", wavelet="db2", levels=2), 1)
    peer_w = best(
        lambda: denoise_wavelet(b, method="BayesShrink", wavelet="db2", wavelet_levels=2, rescale_sigma=False), 1
    )
    row("wavelet BayesShrink 512x512x100", ours_w, peer_w, "skimage denoise_wavelet")

    sts = args.data / "sts"
    if sts.is_dir():
        registration(sts, r, args.cases)


def registration(sts: Path, repeat: int, n_cases: int) -> None:
    import SimpleITK as sitk

    import medlens
    from medlens.core.sitk_bridge import to_sitk
    from medlens.preprocess import register, resample

    opts = dict(
        init="none",
        shrink_factors=(2, 1),
        smoothing_sigmas_mm=(2.0, 0.0),
        iterations=200,
        sampling_fraction=1.0,
        learning_rate_mm=1.0,
        histogram_bins=32,
    )
    import warnings

    warnings.simplefilter("ignore")  # non-convergence is reported by the TRE script, not here
    for case in sorted(p for p in sts.iterdir() if (p / "PET" / "image").is_dir())[:n_cases]:
        pet = medlens.read_image(case / "PET" / "image")
        ct = resample(medlens.read_image(case / "CT" / "image"), 3.0)
        ours = best(lambda pet=pet, ct=ct: register(ct, pet, **opts), repeat)  # type: ignore[arg-type]
        f = to_sitk(ct.with_array(ct.array.astype(np.float32)))
        m = to_sitk(pet.with_array(pet.array.astype(np.float32)))

        def bare(f=f, m=m, ct=ct):  # type: ignore[no-untyped-def]
            t = sitk.Euler3DTransform()
            t.SetCenter(tuple(float(v) for v in ct.index_to_world((np.asarray(ct.shape) - 1) / 2.0)))
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(32)
            reg.SetMetricSamplingStrategy(reg.NONE)
            reg.SetInterpolator(sitk.sitkLinear)
            reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-3, 200, 0.5, 1e-8)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel([2, 1])
            reg.SetSmoothingSigmasPerLevel([2.0, 0.0])
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
            reg.SetInitialTransform(t, inPlace=True)
            reg.Execute(f, m)

        row(f"register PET->CT {case.name} (CT at 3 mm)", ours, best(bare, repeat), "SimpleITK bare")


if __name__ == "__main__":
    main()
