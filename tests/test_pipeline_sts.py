"""The STS example on real data (a subset of the 51 PET cases), and a survival run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from medlens.pipeline import run as run_mod
from medlens.pipeline.config import load_config
from medlens.pipeline.store import read_features

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.needs_data
def test_sts_example_config_on_six_patients(tmp_path: Path, sts_dir: Path) -> None:
    cfg = yaml.safe_load((REPO / "examples" / "sts-lung-metastasis.yaml").read_text())
    cohort = pd.read_csv(sts_dir / "cohort.csv")
    subset = pd.concat([cohort[cohort.lung_metastasis == 0].head(3), cohort[cohort.lung_metastasis == 1].head(3)])
    subset.to_csv(tmp_path / "six.csv", index=False)
    cfg["cohort"]["csv"] = str(tmp_path / "six.csv")
    cfg["model"].update(folds=2, repeats=1, permutations=0, bootstrap=0)
    cfg["radiomics"]["settings"] = str(REPO / "examples" / "sts-pet-radiomics.yaml")
    cfg.pop("output")
    p = tmp_path / "sts.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = run_mod.run_pipeline(load_config(p, data_dir=sts_dir, out_dir=tmp_path / "run", workers=1), progress=False)
    assert (res.n_ok, res.n_failed) == (6, 0)
    df = read_features(tmp_path / "run").set_index("case_id")
    assert set(df.index) == set(subset.patient_id)
    assert (df["roi"] == "GTV_Mass_PET").all()
    assert (df["modality"] == "PT").all() and (df["units"] == "SUVbw").all()
    assert df["clin_dicom_age"].notna().all() and df["clin_dicom_sex"].isin(["M", "F"]).all()
    assert df["study_uid"].str.startswith("1.").all()
    # SUV is not rounded by the PET settings: SUVmax has a fractional part somewhere
    assert (np.abs(df["stat_max"] - np.round(df["stat_max"])) > 1e-6).any()
    assert df["outcome"].tolist() == subset.set_index("patient_id").loc[df.index, "lung_metastasis"].tolist()


@pytest.mark.slow
def test_survival_columns_give_a_c_index(tmp_path: Path) -> None:
    from medlens.pipeline.demo import DEMO_CONFIG, generate_cohort

    data = generate_cohort(tmp_path / "data", n_cases=12, seed=9)
    truth = pd.read_csv(data / "truth.csv")
    df = pd.read_csv(data / "cohort.csv")
    rng = np.random.default_rng(0)
    # larger nodules fail earlier: the Cox model on volume features must rank them
    df["months"] = np.round(rng.exponential(60.0 / np.exp(0.3 * truth["radius_mm"])), 2) + 0.1
    df["event"] = 1
    df.loc[::4, "event"] = 0
    df.to_csv(data / "surv.csv", index=False)
    cfg = {
        **DEMO_CONFIG,
        "cohort": {
            **DEMO_CONFIG["cohort"],
            "csv": "surv.csv",
            "outcome": None,
            "time_column": "months",
            "event_column": "event",
        },
    }
    cfg["model"] = {**DEMO_CONFIG["model"], "folds": 3, "repeats": 1}  # one repeat: its C-index is checked below
    p = tmp_path / "surv.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = run_mod.run_pipeline(load_config(p, data_dir=data, out_dir=tmp_path / "run", workers=1), progress=False)
    assert res.metrics["n_events"] == 9
    # Harrell's C worked out pair by pair from the out-of-fold risks: comparable when i has the event
    # and the shorter time; a tie in risk counts one half
    so = res.metrics["survival_oof"]
    t, e, r = (np.asarray(so[k], dtype=float) for k in ("time", "event", "risk"))
    pairs = [
        1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
        for i in range(len(t))
        for j in range(len(t))
        if e[i] == 1 and t[i] < t[j]
    ]
    assert res.metrics["c_index"] == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    report = res.report_path.read_text()
    assert "C-index" in report and "Kaplan-Meier" in report


@pytest.mark.slow
@pytest.mark.needs_data
def test_sts_run_with_deep_features_equals_the_library_call(tmp_path: Path, sts_dir: Path) -> None:
    """radiomics.deep_features adds the 64 deep_* columns of the shipped encoder, equal to a direct call."""
    pytest.importorskip("torch", reason="deep features need the [dl] extra")
    from medlens.io import read_image, read_mask
    from medlens.learn.deep_features import deep_features

    cfg = yaml.safe_load((REPO / "examples" / "sts-lung-metastasis.yaml").read_text())
    cohort = pd.read_csv(sts_dir / "cohort.csv")
    subset = pd.concat([cohort[cohort.lung_metastasis == 0].head(2), cohort[cohort.lung_metastasis == 1].head(2)])
    subset.to_csv(tmp_path / "four.csv", index=False)
    cfg["cohort"]["csv"] = str(tmp_path / "four.csv")
    cfg["model"].update(folds=2, repeats=1, permutations=0, bootstrap=0)
    cfg["radiomics"] = {"settings": str(REPO / "examples" / "sts-pet-radiomics.yaml"), "deep_features": True}
    cfg.pop("output")
    p = tmp_path / "deep.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = run_mod.run_pipeline(load_config(p, data_dir=sts_dir, out_dir=tmp_path / "run", workers=1), progress=False)
    assert (res.n_ok, res.n_failed) == (4, 0)
    df = read_features(tmp_path / "run").set_index("case_id")
    deep_cols = sorted(c for c in df.columns if c.startswith("deep_"))
    assert len(deep_cols) == 64 and deep_cols[0] == "deep_sts_pet_simclr_000"
    assert "stat_max" in df.columns  # the IBSI family is still there
    row = subset.iloc[0]
    pet = read_image(sts_dir / row["pet_image"])
    gtv = read_mask(sts_dir / row["pet_rtstruct"], reference=pet, roi="GTV_Mass_PET")
    direct = deep_features(pet, gtv)
    got = df.loc[row["patient_id"], deep_cols].to_numpy(dtype=float)
    np.testing.assert_allclose(got, [direct[c] for c in deep_cols], rtol=1e-5, atol=1e-6)
    assert np.std(df[deep_cols].to_numpy(dtype=float), axis=0).max() > 0  # patients differ
