"""MedLens radiomics vs PyRadiomics 3.0.1: time, peak memory and agreement on shared features.

PyRadiomics is a benchmark-only dependency (never imported by MedLens)::

    .venv/bin/pip install numpy setuptools wheel
    .venv/bin/pip install --no-build-isolation pyradiomics==3.0.1
    .venv/bin/python benchmarks/radiomics_vs_pyradiomics.py [--sts 3]

Cases: the IBSI CT phantom GTV and the largest STS CT tumours (``--sts N``). Both tools run
on the same NIfTI image/mask files, 3D, no resampling, fixed bin width 25, one after another,
each in its own child process (one thread), so the peak RSS of each is measured separately
(``os.wait4``). Columns: ``extract`` = the first extraction call (reading excluded; for MedLens it
includes the lazy scipy/scikit-image/numba imports and loading the compiled kernels, which
PyRadiomics pays when its package is imported); ``cold`` = importing the tool's package plus that
first call (the one-time costs of both tools, counted the same way); ``warm`` (``--repeat 2`` or
more) = the fastest later call on the same inputs, i.e. the per-case cost in a batch or cohort;
``process`` = the whole child (interpreter start, imports, reading, every call).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))

# PyRadiomics name -> (IBSI tag, transform to IBSI convention)
SHARED = {
    "original_shape_MeshVolume": ("morph_volume", None),
    "original_shape_VoxelVolume": ("morph_vol_approx", None),
    "original_shape_SurfaceArea": ("morph_area_mesh", None),
    "original_shape_Sphericity": ("morph_sphericity", None),
    "original_shape_Maximum3DDiameter": ("morph_diam", None),
    "original_shape_MajorAxisLength": ("morph_pca_maj_axis", None),
    "original_shape_MinorAxisLength": ("morph_pca_min_axis", None),
    "original_shape_LeastAxisLength": ("morph_pca_least_axis", None),
    "original_shape_Elongation": ("morph_pca_elongation", None),
    "original_shape_Flatness": ("morph_pca_flatness", None),
    "original_firstorder_Mean": ("stat_mean", None),
    "original_firstorder_Variance": ("stat_var", None),
    "original_firstorder_Skewness": ("stat_skew", None),
    "original_firstorder_Kurtosis": ("stat_kurt", "minus3"),  # PyRadiomics reports plain kurtosis
    "original_firstorder_Median": ("stat_median", None),
    "original_firstorder_Minimum": ("stat_min", None),
    "original_firstorder_Maximum": ("stat_max", None),
    "original_firstorder_10Percentile": ("stat_p10", None),
    "original_firstorder_90Percentile": ("stat_p90", None),
    "original_firstorder_InterquartileRange": ("stat_iqr", None),
    "original_firstorder_Range": ("stat_range", None),
    "original_firstorder_MeanAbsoluteDeviation": ("stat_mad", None),
    "original_firstorder_RobustMeanAbsoluteDeviation": ("stat_rmad", None),
    "original_firstorder_Energy": ("stat_energy", None),
    "original_firstorder_RootMeanSquared": ("stat_rms", None),
}


def _worker(tool: str, image: str, mask: str, repeat: int = 1) -> None:
    """Child process: read, extract (``repeat`` times on the same inputs), print one JSON line."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t_start = time.perf_counter()
    if tool == "medlens":
        import warnings

        import medlens
        from medlens.radiomics import RadiomicsSettings
        from medlens.radiomics.settings import DiscretisationSettings, IVHSettings, TextureSettings

        import_s = time.perf_counter() - t_start

        img = medlens.read_image(image)
        lab = medlens.read_image(mask)
        msk = lab.with_array(lab.array != 0)
        settings = RadiomicsSettings(
            discretisation=DiscretisationSettings(method="FBS", bin_width=25.0),
            ivh=IVHSettings(method="FBS", bin_width=25.0),
            texture=TextureSettings(dims=("3D",)),
        )

        def run() -> dict:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return dict(medlens.radiomics.extract(img, msk, settings))

    else:
        import logging

        from radiomics import featureextractor

        import_s = time.perf_counter() - t_start
        logging.getLogger("radiomics").setLevel(logging.ERROR)
        ex = featureextractor.RadiomicsFeatureExtractor(binWidth=25, force2D=False)
        ex.enableAllFeatures()
        import SimpleITK as sitk

        im = sitk.ReadImage(image)
        mk = sitk.ReadImage(mask)

        def run() -> dict:
            res = ex.execute(im, mk, label=1)
            return {k: float(v) for k, v in res.items() if k.startswith("original_")}

    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        feats = run()
        times.append(time.perf_counter() - t0)
    out = {
        "extract_s": times[0],
        "cold_s": import_s + times[0],
        "warm_s": min(times[1:]) if len(times) > 1 else math.nan,
        "total_s": time.perf_counter() - t_start,
        "n": len(feats),
        "features": feats,
    }
    print(json.dumps(out, default=float))


def _run_child(tool: str, image: Path, mask: Path, repeat: int = 1) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", tool, str(image), str(mask), str(repeat)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        text=True,
    )
    t0 = time.perf_counter()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    if status != 0:
        raise RuntimeError(f"{tool} failed on {image}: {err[-2000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = wall
    res["peak_rss_mb"] = usage.ru_maxrss / 1024.0
    return res


def _sts_cases(n: int, tmp: Path) -> list[tuple[str, Path, Path]]:
    """The ``n`` largest CT tumours among the first ``2 n`` STS CT cases, written as NIfTI image + mask."""
    import csv

    import medlens

    root = DATA / "sts"
    rows = [r for r in csv.DictReader((root / "cohort.csv").open()) if r["ct_image"]][: 2 * n]
    cases = []
    for r in rows:
        img = medlens.read_image(root / r["ct_image"])
        try:
            msk = medlens.read_mask(root / r["ct_rtstruct"], reference=img, roi="GTV_Mass_CT")
        except ImportError:
            try:
                from medlens.io.rtstruct import read_rtstruct
            except ImportError as exc:
                print(f"STS cases skipped: RTSTRUCT reading unavailable: {exc}")
                return []
            msk = read_rtstruct(root / r["ct_rtstruct"], reference=img, roi="GTV_Mass_CT")
        cases.append((int(msk.array.sum()), r["patient_id"], img, msk))
    cases.sort(key=lambda c: -c[0])
    out = []
    for _, pid, img, msk in cases[:n]:
        ip, mp = tmp / f"{pid}_img.nii.gz", tmp / f"{pid}_mask.nii.gz"
        medlens.write_image(img, ip)
        medlens.write_image(msk.with_array(msk.array.astype("uint8")), mp)
        out.append((f"{pid} CT GTV ({int(msk.array.sum())} vox)", ip, mp))
    return out


def _large_case(tmp: Path) -> tuple[str, Path, Path]:
    """A synthetic 512x512x300 CT (noise, 1.5 x 0.8 x 0.8 mm) with a 2.2-million-voxel ellipsoid ROI."""
    import numpy as np

    import medlens

    rng = np.random.default_rng(0)
    shape = (300, 512, 512)
    arr = np.empty(shape, np.float32)
    msk = np.empty(shape, bool)
    yy, xx = np.ogrid[:512, :512]
    for i in range(shape[0]):
        arr[i] = rng.normal(0.0, 50.0, shape[1:])
        msk[i] = ((i - 150) * 1.5) ** 2 + ((yy - 256) * 0.8) ** 2 + ((xx - 256) * 0.8) ** 2 <= 80.0**2
    sp = (1.5, 0.8, 0.8)
    ip, mp = tmp / "large_img.nii", tmp / "large_mask.nii"
    medlens.write_image(medlens.Image.from_array(arr, spacing=sp), ip)
    medlens.write_image(medlens.Image.from_array(msk.astype(np.uint8), spacing=sp), mp)
    return (f"synthetic 512x512x300 CT ({int(msk.sum())} vox)", ip, mp)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 1)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--prepare":
        # inputs are prepared in a child so the parent stays small: a forked child's peak RSS
        # starts at the parent's size, which would inflate every measurement
        tmp, n_sts, large = Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
        prepared = _sts_cases(n_sts, tmp) if n_sts > 0 else []
        if large:
            prepared.append(_large_case(tmp))
        print(json.dumps([[name, str(i), str(m)] for name, i, m in prepared]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sts", type=int, default=3, help="number of (largest) STS CT tumours")
    ap.add_argument("--large", action="store_true", help="add a synthetic 512x512x300 CT with a large ROI")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="extractions per child on the same inputs; with 2 or more, 'warm s' is the fastest after the first"
        " (the first call of MedLens also pays its lazy scipy/scikit-image imports, about 0.15-0.2 s)",
    )
    args = ap.parse_args()
    ct = DATA / "ibsi1" / "ct_phantom" / "nifti"
    with tempfile.TemporaryDirectory() as td:
        cases = [("IBSI CT phantom GTV", ct / "image" / "phantom.nii.gz", ct / "mask" / "mask.nii.gz")]
        if args.sts > 0 or args.large:
            prep = subprocess.run(
                [sys.executable, __file__, "--prepare", td, str(args.sts), "1" if args.large else "0"],
                capture_output=True,
                text=True,
                check=True,
            )
            for line in prep.stdout.splitlines()[:-1]:
                print(line)
            cases += [(n, Path(i), Path(m)) for n, i, m in json.loads(prep.stdout.splitlines()[-1])]
        print(
            f"{'case':36s} {'tool':10s} {'extract s':>9s} {'cold s':>7s} {'warm s':>7s} {'process s':>9s}"
            f" {'peak MB':>8s} {'#feat':>6s}"
            "   time ratio (pyrad/medlens)   shared features within 1% / compared"
        )
        for name, image, mask in cases:
            res = {tool: _run_child(tool, image, mask, args.repeat) for tool in ("medlens", "pyradiomics")}
            m, p = res["medlens"], res["pyradiomics"]
            agree = total = 0
            worst = []
            for pk, (tag, conv) in SHARED.items():
                if pk not in p["features"] or tag not in m["features"]:
                    continue
                pv = p["features"][pk] - (3.0 if conv == "minus3" else 0.0)
                mv = m["features"][tag]
                if not (math.isfinite(pv) and math.isfinite(mv)):
                    continue
                total += 1
                rel = abs(pv - mv) / max(abs(pv), 1e-12)
                if rel <= 0.01:
                    agree += 1
                else:
                    worst.append(f"{tag} {mv:.4g} vs {pv:.4g}")
            for tool in ("medlens", "pyradiomics"):
                r = res[tool]
                cols = f"{r['extract_s']:9.2f} {r['cold_s']:7.2f} {r['warm_s']:7.2f} {r['wall_s']:9.2f}"
                cols += f" {r['peak_rss_mb']:8.0f} {r['n']:6d}"
                print(f"{name:36s} {tool:10s} {cols}")
            ratio = (
                f"extract {p['extract_s'] / m['extract_s']:.2f}x, cold {p['cold_s'] / m['cold_s']:.2f}x,"
                f" process {p['wall_s'] / m['wall_s']:.2f}x"
            )
            if math.isfinite(m["warm_s"]):
                ratio += f", warm {p['warm_s'] / m['warm_s']:.2f}x"
            print(
                f"{'':36s} ratio: {ratio},"
                f" peak RSS {p['peak_rss_mb'] / m['peak_rss_mb']:.2f}x; agreement {agree}/{total}"
                + (f"; differ: {'; '.join(worst)}" if worst else "")
            )


if __name__ == "__main__":
    main()
