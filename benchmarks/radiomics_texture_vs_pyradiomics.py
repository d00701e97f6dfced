"""Texture families only: MedLens vs PyRadiomics 3.0.1 (time per case and agreement on shared features).

PyRadiomics is a benchmark-only dependency (see ``benchmarks/radiomics_vs_pyradiomics.py`` for installing it)::

    .venv/bin/python benchmarks/radiomics_texture_vs_pyradiomics.py [--sts 3] [--repeat 3]

Both tools run in this process, one after the other, single-threaded, on the same image and mask, 3D, no
resampling, fixed bin width 25 with PyRadiomics' bin edges (so that both see the same grey levels). PyRadiomics
time: its five texture classes (GLCM, GLRLM, GLSZM, GLDM, NGTDM), construction (crop + discretisation) and
``execute()``. Times are CPU seconds of this process (both single-threaded; robust on a shared
machine). MedLens time: discretisation + :func:`medlens.radiomics.texture.compute_texture_features` for the same
five families (3D), and separately with GLDZM added (PyRadiomics has no GLDZM). Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN_WIDTH = 25.0

# PyRadiomics class, feature -> MedLens tag (same definition; GLCM/GLRLM averaged over the 13 directions)
SHARED = {
    ("glcm", "JointEntropy"): "cm_joint_entr_3D_avg",
    ("glcm", "Contrast"): "cm_contrast_3D_avg",
    ("glcm", "JointEnergy"): "cm_energy_3D_avg",
    ("glcm", "Correlation"): "cm_corr_3D_avg",
    ("glcm", "Idm"): "cm_inv_diff_mom_3D_avg",
    ("glcm", "Autocorrelation"): "cm_auto_corr_3D_avg",
    ("glcm", "ClusterProminence"): "cm_clust_prom_3D_avg",
    ("glcm", "MaximumProbability"): "cm_joint_max_3D_avg",
    ("glcm", "DifferenceEntropy"): "cm_diff_entr_3D_avg",
    ("glcm", "Imc1"): "cm_info_corr1_3D_avg",
    ("glrlm", "ShortRunEmphasis"): "rlm_sre_3D_avg",
    ("glrlm", "LongRunEmphasis"): "rlm_lre_3D_avg",
    ("glrlm", "GrayLevelNonUniformity"): "rlm_glnu_3D_avg",
    ("glrlm", "RunLengthNonUniformity"): "rlm_rlnu_3D_avg",
    ("glrlm", "RunPercentage"): "rlm_r_perc_3D_avg",
    ("glszm", "SmallAreaEmphasis"): "szm_sze_3D",
    ("glszm", "LargeAreaEmphasis"): "szm_lze_3D",
    ("glszm", "GrayLevelNonUniformity"): "szm_glnu_3D",
    ("glszm", "SizeZoneNonUniformity"): "szm_zsnu_3D",
    ("glszm", "ZonePercentage"): "szm_z_perc_3D",
    ("gldm", "SmallDependenceEmphasis"): "ngl_lde_3D",
    ("gldm", "LargeDependenceEmphasis"): "ngl_hde_3D",
    ("gldm", "DependenceNonUniformity"): "ngl_dcnu_3D",
    ("gldm", "GrayLevelNonUniformity"): "ngl_glnu_3D",
    ("ngtdm", "Coarseness"): "ngt_coarseness_3D",
    ("ngtdm", "Contrast"): "ngt_contrast_3D",
    ("ngtdm", "Busyness"): "ngt_busyness_3D",
    ("ngtdm", "Complexity"): "ngt_complexity_3D",
    ("ngtdm", "Strength"): "ngt_strength_3D",
}


def _pyradiomics(image, mask) -> tuple[float, dict]:
    import radiomics
    from radiomics import glcm, gldm, glrlm, glszm, ngtdm

    radiomics.logger.setLevel(logging.ERROR)
    classes = {"glcm": glcm.RadiomicsGLCM, "glrlm": glrlm.RadiomicsGLRLM, "glszm": glszm.RadiomicsGLSZM,
               "gldm": gldm.RadiomicsGLDM, "ngtdm": ngtdm.RadiomicsNGTDM}  # fmt: skip
    out = {}
    t0 = time.process_time()
    for name, cls in classes.items():
        fc = cls(image, mask, binWidth=BIN_WIDTH, label=1)
        fc.enableAllFeatures()
        for k, v in fc.execute().items():
            out[(name, k)] = float(v)
    return time.process_time() - t0, out


def _medlens(arr: np.ndarray, roi: np.ndarray, families: tuple[str, ...]) -> tuple[float, dict]:
    from medlens.radiomics.texture import compute_texture_features

    t0 = time.process_time()
    vals = arr[roi]
    lo = vals.min() - vals.min() % BIN_WIDTH  # PyRadiomics' lower bin edge
    levels = np.floor((vals - lo) / BIN_WIDTH).astype(np.int64) + 1
    grey = np.zeros(arr.shape, dtype=np.int64)
    grey[roi] = levels
    feats = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=int(levels.max()),
                                     settings={"dims": ("3D",), "families": families})  # fmt: skip
    return time.process_time() - t0, feats


def _cases(n_sts: int, tmp: Path) -> list[tuple[str, Path, Path]]:
    ct = DATA / "ibsi1" / "ct_phantom" / "nifti"
    cases = [("IBSI CT phantom GTV", ct / "image" / "phantom.nii.gz", ct / "mask" / "mask.nii.gz")]
    if n_sts > 0:
        sys.path.insert(0, str(REPO / "benchmarks"))
        try:
            import radiomics_vs_pyradiomics as base  # the whole-extraction benchmark prepares the STS cases

            cases += base._sts_cases(n_sts, tmp)
        except Exception as exc:
            print(f"STS cases skipped: {exc}")
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sts", type=int, default=3, help="number of (largest) STS CT tumours")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    five = ("glcm", "glrlm", "glszm", "ngtdm", "ngldm")
    with tempfile.TemporaryDirectory() as td:
        cases = _cases(args.sts, Path(td))
        print(f"{'case':<24} {'ROI vox':>9} {'PyRad s':>8} {'MedLens s':>9} {'ratio':>6} {'+GLDZM s':>8}")
        worst: dict[str, float] = {}
        for name, img_path, msk_path in cases:
            image, mask = sitk.ReadImage(str(img_path)), sitk.ReadImage(str(msk_path))
            mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
            arr = np.asarray(from_sitk(image).array, dtype=np.float64)
            roi = np.asarray(from_sitk(mask).array) > 0
            t_py, ref = min((_pyradiomics(image, mask) for _ in range(args.repeat)), key=lambda r: r[0])
            t_ml, ours = min((_medlens(arr, roi, five) for _ in range(args.repeat)), key=lambda r: r[0])
            t_all = min(_medlens(arr, roi, (*five, "gldzm"))[0] for _ in range(args.repeat))
            print(f"{name[:24]:<24} {int(roi.sum()):>9} {t_py:>8.3f} {t_ml:>9.3f} {t_py / t_ml:>5.1f}x {t_all:>8.3f}")
            for key, tag in SHARED.items():
                a, b = ref.get(key, math.nan), ours.get(tag, math.nan)
                rel = abs(a - b) / max(abs(a), 1e-12)
                worst[f"{key[0]}.{key[1]} ~ {tag}"] = max(worst.get(f"{key[0]}.{key[1]} ~ {tag}", 0.0), rel)
        print("\nagreement on shared features (largest relative difference over the cases):")
        for k, v in worst.items():
            print(f"  {k:<60} {v:.2e}")


if __name__ == "__main__":
    main()
