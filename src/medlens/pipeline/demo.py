"""``medlens demo``: a synthetic chest-CT cohort written as real DICOM, then the whole pipeline.

Each case is a 64 x 128 x 128 CT volume (2.5 mm slices, 2.5 mm pixels): air around a body
ellipse (soft tissue, ~40 HU), two lungs (~ -850 HU) and one nodule in a lung with a known
radius (4-14 mm), lobulation and internal heterogeneity (smoothed noise of a known SD, 5-60 HU).
The binary outcome depends on nodule size and heterogeneity through a logistic model with
noise, so a good model reaches an AUC well above 0.5 but not 1. The truth is written to
``truth.csv`` (never given to the model). Images are written as CT Image Storage series
(:mod:`medlens.io.dicom_write`), masks as an RTSTRUCT (ROI ``nodule``).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, ImageMeta, Units

__all__ = ["DEMO_CONFIG", "generate_cohort", "make_case_volume", "run_demo"]

SHAPE = (64, 128, 128)
SPACING_MM = (2.5, 2.5, 2.5)

#: The demo's run configuration (``examples/demo.yaml`` holds the same).
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "cohort": {
        "csv": "cohort.csv",
        "id_column": "patient_id",
        "image_column": "image",
        "mask_column": "mask",
        "outcome": "outcome",
        "clinical": [],
    },
    "mask": {"roi": "nodule"},
    "radiomics": {"settings": None},
    "model": {
        "classifier": "logistic",
        "folds": 4,
        "repeats": 5,
        "n_features": 8,
        "clinical_from_dicom": ["age", "sex", "bmi"],
        "bootstrap": 1000,
        "permutations": 100,
        "seed": 0,
    },
}


def make_case_volume(
    rng: np.random.Generator, *, radius_mm: float, heterogeneity_hu: float, lobulation: float
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic chest CT (HU, int16, ``SHAPE``) and its nodule mask (bool)."""
    from scipy.ndimage import gaussian_filter

    nz, ny, nx = SHAPE
    dz, dy, dx = SPACING_MM
    z, y, x = np.meshgrid(
        (np.arange(nz) - nz / 2 + 0.5) * dz,
        (np.arange(ny) - ny / 2 + 0.5) * dy,
        (np.arange(nx) - nx / 2 + 0.5) * dx,
        indexing="ij",
    )
    vol = np.full(SHAPE, -1000.0)
    body = (x / 150.0) ** 2 + (y / 105.0) ** 2 <= 1.0
    vol[body] = 40.0
    lungs = np.zeros(SHAPE, dtype=bool)
    for side in (-1, 1):
        lungs |= ((x - side * 62.0) / 48.0) ** 2 + (y / 72.0) ** 2 + (z / 75.0) ** 2 <= 1.0
    vol[lungs] = -850.0
    # nodule centre well inside one lung
    side = rng.choice([-1, 1])
    cz = rng.uniform(-35, 35)
    cy = rng.uniform(-30, 30)
    cx = side * 62.0 + rng.uniform(-15, 15)
    rel = np.stack([z - cz, y - cy, x - cx])
    r = np.sqrt((rel**2).sum(axis=0))
    theta = np.arctan2(rel[1], rel[2])
    phi = np.arccos(np.clip(rel[0] / np.maximum(r, 1e-6), -1, 1))
    bumps = 1.0 + lobulation * np.sin(5 * theta + rng.uniform(0, 6.28)) * np.sin(3 * phi)
    nodule = (r <= radius_mm * bumps) & lungs
    box = tuple(slice(max(0, int(np.min(ix)) - 3), int(np.max(ix)) + 4) for ix in np.nonzero(nodule))
    texture = np.zeros(SHAPE)
    noise = gaussian_filter(rng.normal(size=tuple(s.stop - s.start for s in box)), sigma=1.0)
    texture[box] = noise / max(noise.std(), 1e-6) * heterogeneity_hu
    vol[nodule] = 30.0 + texture[nodule]
    vol += rng.normal(scale=12.0, size=SHAPE)  # acquisition noise
    vol = np.clip(np.rint(vol), -1024, 3000).astype(np.int16)
    return vol, nodule


def generate_cohort(out_dir: str | os.PathLike[str], *, n_cases: int = 32, seed: int = 7) -> Path:
    """Write ``n_cases`` synthetic DICOM cases and ``cohort.csv`` / ``truth.csv`` under ``out_dir``.

    Returns the data folder (holding ``cohort.csv``).
    """
    import pandas as pd

    from medlens.io.dicom_write import write_ct_series

    if n_cases < 8:
        raise InputError(f"--cases must be at least 8 (two classes, 4-fold cross-validation), got {n_cases}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    radius = rng.uniform(4.0, 14.0, n_cases)
    hetero = rng.uniform(5.0, 60.0, n_cases)
    lob = rng.uniform(0.0, 0.3, n_cases)
    zr = (radius - radius.mean()) / radius.std()
    zh = (hetero - hetero.mean()) / hetero.std()
    logit = 1.6 * zr + 1.2 * zh + rng.normal(scale=1.0, size=n_cases)
    outcome = (logit > np.median(logit)).astype(int)  # balanced classes
    rows, truth = [], []
    origin = tuple(-(s / 2 - 0.5) * sp for s, sp in zip(SHAPE, SPACING_MM))
    for i in range(n_cases):
        cid = f"DEMO_{i + 1:03d}"
        crng = np.random.default_rng([seed, i])
        vol, nod = make_case_volume(crng, radius_mm=radius[i], heterogeneity_hu=hetero[i], lobulation=lob[i])
        # axis 0 along +S (z), origin placed so the volume is centred on the isocentre
        img = Image.from_array(
            vol,
            spacing=SPACING_MM,
            origin=(origin[2], origin[1], origin[0]),
            meta=ImageMeta(modality="CT", units=Units.HU),
        )
        sex = str(crng.choice(["M", "F"]))
        height = float(crng.normal(1.76 if sex == "M" else 1.63, 0.07))
        files = write_ct_series(
            img,
            out / cid / "CT",
            patient_id=cid,
            patient_sex=sex,
            patient_age_years=int(crng.integers(45, 85)),
            patient_weight_kg=round(float(crng.normal(26.0, 4.0) * height**2), 1),
            patient_size_m=round(height, 2),
            uid_seed=f"medlens-demo-{seed}-{cid}",
        )
        _write_rtstruct(
            {"nodule": img.with_array(nod, units=Units.MASK)},
            files,
            out / cid / "RTSTRUCT" / "rs.dcm",
        )
        rows.append({"patient_id": cid, "image": f"{cid}/CT", "mask": f"{cid}/RTSTRUCT", "outcome": int(outcome[i])})
        truth.append(
            {
                "patient_id": cid,
                "radius_mm": radius[i],
                "heterogeneity_hu": hetero[i],
                "lobulation": lob[i],
                "nodule_volume_ml": float(nod.sum() * np.prod(SPACING_MM) / 1000),
                "logit": logit[i],
                "outcome": int(outcome[i]),
            }
        )
    pd.DataFrame(rows).to_csv(out / "cohort.csv", index=False)
    pd.DataFrame(truth).to_csv(out / "truth.csv", index=False)
    return out


def _write_rtstruct(masks: dict[str, Image], files: list[Path], target: Path) -> Path:
    from medlens.io.rtstruct import write_rtstruct

    target.parent.mkdir(parents=True, exist_ok=True)
    write_rtstruct(masks, [str(f) for f in files], target)
    return target


def run_demo(
    out_dir: str | os.PathLike[str] = "medlens-demo",
    *,
    n_cases: int = 40,
    workers: int | None = None,
    progress: bool = True,
    permutations: int | None = None,
    repeats: int | None = None,
) -> Any:
    """Generate the synthetic cohort (once) and run the pipeline on it; returns the RunResult."""
    import yaml

    from medlens.pipeline.config import load_config
    from medlens.pipeline.run import run_pipeline

    out = Path(out_dir).resolve()
    data = out / "data"
    if not (data / "cohort.csv").exists() or len((data / "cohort.csv").read_text().splitlines()) - 1 != n_cases:
        generate_cohort(data, n_cases=n_cases)
    cfg = copy.deepcopy(DEMO_CONFIG)
    if permutations is not None:
        cfg["model"]["permutations"] = permutations
    if repeats is not None:
        cfg["model"]["repeats"] = repeats
    if n_cases < 16:
        cfg["model"]["folds"] = 2
    cfg_path = out / "demo.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    config = load_config(cfg_path, data_dir=data, out_dir=out / "run", workers=workers)
    return run_pipeline(config, progress=progress)
