"""Texture step per family (compiled kernels): time of :func:`compute_texture_features` on real ROIs.

    .venv/bin/python benchmarks/radiomics_texture_kernels.py [--repeat 5] [--compile]

Cases: the STS_005 and STS_001 CT GTVs (read from the shared STS cohort as DICOM + RTSTRUCT ``GTV_Mass_CT``;
fixed bin size 25 HU, no resampling) with texture dims ``3D`` and ``2D, 2_5D, 3D``, and the IBSI CT phantom
through the IBSI presets ``ibsi-a`` (2D) to ``ibsi-e`` (3D). The image processing (interpolation,
re-segmentation, discretisation) is done once per case and not timed; each row is the fastest of ``--repeat``
warm calls (``time.perf_counter``), single-threaded (BLAS threads pinned to 1), one family at a time and all six
together ("total", which shares one cropped copy and the zone labelling of GLSZM and GLDZM).

``--compile`` also measures, in a child process with an empty ``NUMBA_CACHE_DIR``, the first call (numba
compiles every texture kernel) against the second, and then a second child with that cache filled (kernels
loaded from the cache).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
FAMILIES = ("glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm")

_COMPILE_CHILD = """
import time, warnings
import numpy as np
t0 = time.perf_counter()
from medlens.radiomics.texture import compute_texture_features
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
grey = rng.integers(1, 9, size=(6, 20, 20))
roi = np.zeros(grey.shape, dtype=bool)
roi[1:5, 3:17, 4:16] = True
s = {"dims": ("2D", "2_5D", "3D")}
warnings.simplefilter("ignore")
times = []
for _ in range(2):
    t0 = time.perf_counter()
    compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=8, settings=s)
    times.append(time.perf_counter() - t0)
print(f"{t_import:.3f} {times[0]:.3f} {times[1]:.4f}")
"""


def _sts(pid: str):
    import medlens

    root = DATA / "sts"
    row = next(r for r in csv.DictReader((root / "cohort.csv").open()) if r["patient_id"] == pid)
    img = medlens.read_image(root / row["ct_image"])
    msk = medlens.read_mask(root / row["ct_rtstruct"], reference=img, roi="GTV_Mass_CT")
    return img, msk


def _ct_phantom():
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    d = DATA / "ibsi1" / "ct_phantom" / "nifti"
    img = from_sitk(sitk.ReadImage(str(d / "image" / "phantom.nii.gz")))
    msk = from_sitk(sitk.ReadImage(str(d / "mask" / "mask.nii.gz")))
    return img, msk.with_array(np.asarray(msk.array) > 0)


def _time(fn, repeat: int) -> float:
    fn()  # warm: kernels compiled or loaded from the cache, lazy imports done
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _row(name: str, roi, texture, repeat: int) -> None:
    from dataclasses import replace

    from medlens.radiomics.texture import compute_texture_features

    def run(families):
        settings = replace(texture, families=families)
        return lambda: compute_texture_features(
            roi.grey, roi=roi.int_mask, morph_roi=roi.morph_mask, n_levels=roi.n_levels, settings=settings
        )

    per = [_time(run((f,)), repeat) for f in FAMILIES]
    total = _time(run(FAMILIES), repeat)
    dims = ",".join(texture.dims)
    cells = " ".join(f"{1e3 * t:>6.1f}" for t in per)
    print(f"{name:<16} {dims:<12} {int(roi.int_mask.sum()):>7} {roi.n_levels:>4} {cells} {1e3 * total:>7.1f}")


def _compile_times() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty cache", "filled cache"):
            out = subprocess.run(
                [sys.executable, "-c", _COMPILE_CHILD], env=env, capture_output=True, text=True, check=True
            ).stdout.split()
            t_import, first, second = (float(v) for v in out)
            print(
                f"numba {label:<12}: import texture {t_import:.3f} s, first call {first:.3f} s "
                f"(all kernels, 2D+2.5D+3D), second call {second:.4f} s"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also measure numba compile time in a fresh cache")
    args = ap.parse_args()
    from medlens.radiomics.pipeline import process
    from medlens.radiomics.settings import (
        DiscretisationSettings,
        IVHSettings,
        RadiomicsSettings,
        TextureSettings,
        load_preset,
    )

    warnings.simplefilter("ignore")
    if args.compile:
        _compile_times()
    head = " ".join(f"{f:>6}" for f in FAMILIES)
    print(f"\nwarm time per call (ms), best of {args.repeat}")
    print(f"{'case':<16} {'dims':<12} {'voxels':>7} {'Ng':>4} {head} {'total':>7}")
    for pid in ("STS_005", "STS_001"):
        try:
            img, msk = _sts(pid)
        except Exception as exc:  # data or DICOM reader unavailable
            print(f"{pid}: skipped ({exc})")
            continue
        for dims in (("3D",), ("2D", "2_5D", "3D")):
            s = RadiomicsSettings(
                discretisation=DiscretisationSettings(method="FBS", bin_width=25.0),
                ivh=IVHSettings(method="FBS", bin_width=25.0),
                texture=TextureSettings(dims=dims),
            )
            _row(f"{pid} CT GTV", process(img, msk, s), s.texture, args.repeat)
    try:
        img, msk = _ct_phantom()
    except Exception as exc:
        print(f"IBSI CT phantom: skipped ({exc})")
        return
    for cfg in "abcde":
        s = load_preset(f"ibsi-{cfg}")
        _row(f"CT phantom {cfg.upper()}", process(img, msk, s), s.texture, args.repeat)


if __name__ == "__main__":
    main()
