"""Cold start: ``medlens features`` on one STS CT tumour, whole fresh process, vs PyRadiomics 3.0.1.

PyRadiomics is a benchmark-only dependency (never imported by MedLens)::

    .venv/bin/pip install numpy setuptools wheel
    .venv/bin/pip install --no-build-isolation pyradiomics==3.0.1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cold_start_features.py [--patient STS_001] [--repeat 5]

What is timed: the wall time of each whole child process (interpreter start, imports, reading the
files, the extraction, writing a one-row CSV), one thread, started fresh every time; the two tools
alternate and each runs ``--repeat`` times; medians are reported. Settings are PyRadiomics' defaults
on both sides: no resampling, fixed bin width 25 HU, 3D texture, every feature class.

Scenarios (same patient, same files):

``dicom``
    MedLens: ``medlens features CT_DIR RTSTRUCT --roi GTV_Mass_CT`` (reads the JPEG-LS DICOM series
    and rasterises the RTSTRUCT). PyRadiomics has no RTSTRUCT reader, so its CLI-equivalent
    ``python -c`` reads the same DICOM series with SimpleITK's series reader and a label NRRD that
    MedLens rasterised beforehand (not timed: PyRadiomics is spared that step).
``volume``
    Both read the same NRRD image + label files: ``medlens features ct.nrrd mask.nrrd`` vs the
    ``pyradiomics ct.nrrd mask.nrrd`` command line.

Before timing, ``medlens warm-up`` is run once (as after installation; ``.ci/run`` does the same): it
compiles the kernels with numba and builds the ahead-of-time kernel module in the user cache, so the
timed MedLens processes load machine code without importing numba (see ``medlens.radiomics._jit``).
Each command then runs once untimed (file cache, bytecode), and the timed runs follow.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent

MEDLENS_SETTINGS = """\
name: pyradiomics-defaults
interpolation: {enabled: false}
resegmentation: {}
discretisation: {method: FBS, bin_width: 25}
ivh: {method: FBS, bin_width: 25}
texture:
  dims: ["3D"]
"""

PYRADIOMICS_PARAMS = """\
setting:
  binWidth: 25
  label: 1
imageType:
  Original: {}
featureClass:
  shape:
  firstorder:
  glcm:
  glrlm:
  glszm:
  gldm:
  ngtdm:
"""

# The CLI-equivalent of `pyradiomics` for a DICOM series: read it as the CLI would read a file, run the
# same extractor, write the same one-row CSV.
PYRADIOMICS_DICOM = """\
import csv, logging, sys
import SimpleITK as sitk
from radiomics import featureextractor
logging.getLogger("radiomics").setLevel(logging.ERROR)
series_dir, mask_path, params, out = sys.argv[1:5]
reader = sitk.ImageSeriesReader()
reader.SetFileNames(reader.GetGDCMSeriesFileNames(series_dir))
image = reader.Execute()
mask = sitk.ReadImage(mask_path)
ex = featureextractor.RadiomicsFeatureExtractor(params)
res = ex.execute(image, mask)
with open(out, "w", newline="") as fh:
    w = csv.DictWriter(fh, fieldnames=list(res))
    w.writeheader()
    w.writerow(res)
"""


def _medlens_cmd() -> list[str]:
    # exactly what the `medlens` console script runs (its entry point is medlens.cli:console_main); spelled
    # out so that this checkout's code is timed even when the installed script belongs to another one
    return [sys.executable, "-c", "import sys; from medlens.cli import console_main; sys.exit(console_main())"]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    # bytecode as after a normal installation (pip compiles it; PyRadiomics' is in site-packages): the
    # untimed warm-up run writes MedLens's .pyc files when the calling shell disabled that
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh child process."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _row(path: Path) -> dict[str, str]:
    with path.open(newline="") as fh:
        return next(csv.DictReader(fh))


def _prepare(patient: str, tmp: Path) -> dict[str, Path]:
    sys.path.insert(0, str(REPO / "src"))  # this checkout's medlens, as in the timed children
    import numpy as np

    import medlens

    ct = DATA / "sts" / patient / "CT"
    img = medlens.read_image(ct / "image")
    msk = medlens.read_mask(ct / "rtstruct", reference=img, roi="GTV_Mass_CT")
    files = {
        "ct_dir": ct / "image",
        "rtstruct": ct / "rtstruct",
        "ct_nrrd": tmp / "ct.nrrd",
        "mask_nrrd": tmp / "mask.nrrd",
        "settings": tmp / "medlens_settings.yaml",
        "params": tmp / "pyradiomics_params.yaml",
        "pyrad_dicom": tmp / "pyradiomics_dicom.py",
    }
    t0 = time.perf_counter()
    medlens.write_image(img, files["ct_nrrd"])
    t_img = time.perf_counter() - t0
    medlens.write_image(msk.with_array(msk.array.astype(np.uint8)), files["mask_nrrd"])
    files["settings"].write_text(MEDLENS_SETTINGS)
    files["params"].write_text(PYRADIOMICS_PARAMS)
    files["pyrad_dicom"].write_text(PYRADIOMICS_DICOM)
    print(
        f"{patient} CT: shape {img.shape}, ROI {int(msk.array.sum())} voxels; "
        f"NRRD write of the CT {t_img:.2f} s ({files['ct_nrrd'].stat().st_size / 1e6:.1f} MB)"
    )
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patient", default="STS_001")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--scenario", choices=["dicom", "volume", "both"], default="both")
    args = ap.parse_args()
    try:
        import radiomics  # noqa: F401
    except ImportError:
        sys.exit("PyRadiomics is not installed; see the module docstring")
    if not (DATA / "sts" / args.patient / "CT").is_dir():
        sys.exit(f"no CT for {args.patient} under {DATA / 'sts'}")

    warm = subprocess.run([*_medlens_cmd(), "warm-up"], env=_env(), capture_output=True, text=True, check=True)
    print(warm.stdout.strip())
    with tempfile.TemporaryDirectory(prefix="medlens_cold_") as td:
        tmp = Path(td)
        f = _prepare(args.patient, tmp)
        m_out, p_out = tmp / "medlens.csv", tmp / "pyradiomics.csv"
        ml = _medlens_cmd()
        opts = ["--preset", str(f["settings"]), "--out", str(m_out)]
        cmds = {
            "dicom": (
                [*ml, "features", str(f["ct_dir"]), str(f["rtstruct"]), "--roi", "GTV_Mass_CT", *opts],
                [
                    sys.executable,
                    str(f["pyrad_dicom"]),
                    str(f["ct_dir"]),
                    str(f["mask_nrrd"]),
                    str(f["params"]),
                    str(p_out),
                ],
            ),
            "volume": (
                [*ml, "features", str(f["ct_nrrd"]), str(f["mask_nrrd"]), *opts],
                [
                    str(BIN / "pyradiomics"),
                    str(f["ct_nrrd"]),
                    str(f["mask_nrrd"]),
                    "--param",
                    str(f["params"]),
                    "-o",
                    str(p_out),
                    "-f",
                    "csv",
                ],
            ),
        }
        scenarios = ["dicom", "volume"] if args.scenario == "both" else [args.scenario]
        print(f"load average before: {os.getloadavg()[0]:.2f} (1 min); {args.repeat} fresh processes per tool")
        print(
            f"{'scenario':8s} {'MedLens wall':>12s} {'PyRadiomics wall':>16s} {'ratio':>6s} "
            f"{'MedLens CPU':>11s} {'PyRadiomics CPU':>15s} {'ratio':>6s}  (medians, seconds)"
        )
        for sc in scenarios:
            m_cmd, p_cmd = cmds[sc]
            mt, pt = [], []
            _timed(m_cmd)  # untimed: the OS file cache and the bytecode of both tools, as in daily use
            _timed(p_cmd)
            for _ in range(args.repeat):  # alternate, so a load spike hits both tools alike
                mt.append(_timed(m_cmd))
                pt.append(_timed(p_cmd))
            mw, pw = statistics.median(t[0] for t in mt), statistics.median(t[0] for t in pt)
            mc, pc = statistics.median(t[1] for t in mt), statistics.median(t[1] for t in pt)
            print(f"{sc:8s} {mw:12.2f} {pw:16.2f} {pw / mw:5.2f}x {mc:11.2f} {pc:15.2f} {pc / mc:5.2f}x")
            for name, ts in (("MedLens", mt), ("PyRadiomics", pt)):
                print(f"         {name} runs (wall/CPU s): {', '.join(f'{w:.2f}/{c:.2f}' for w, c in ts)}")
            mr, pr = _row(m_out), _row(p_out)
            n_m = len(mr) - 7  # minus case_id, image, mask, roi, preset, settings_hash, warnings
            n_p = sum(1 for k in pr if k.startswith("original_"))
            checks = []
            for pk, mk in (
                ("original_shape_VoxelVolume", "morph_vol_approx"),
                ("original_firstorder_Mean", "stat_mean"),
                ("original_firstorder_Maximum", "stat_max"),
            ):
                checks.append(f"{mk} {float(mr[mk]):.6g} vs {float(pr[pk]):.6g}")
            print(f"         features: MedLens {n_m}, PyRadiomics {n_p}; same ROI: {'; '.join(checks)}")
        print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
