"""Multimodal cohort runs on real STS patients: one row per patient, features and lineage per modality."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from medlens.core.errors import InputError
from medlens.pipeline import run as run_mod
from medlens.pipeline.config import load_config
from medlens.pipeline.store import feature_columns, feature_groups, read_features

REPO = Path(__file__).resolve().parents[1]
PATIENTS = ["STS_001", "STS_002", "STS_021"]  # STS_021 has no CT


def _config(tmp_path: Path, sts_dir: Path, patients: list[str], *, modalities: bool = True) -> Path:
    cfg = yaml.safe_load((REPO / "examples" / "sts-multimodal.yaml").read_text())
    cohort = pd.read_csv(sts_dir / "cohort.csv")
    cohort[cohort.patient_id.isin(patients)].to_csv(tmp_path / "sub.csv", index=False)
    cfg["cohort"].update(csv=str(tmp_path / "sub.csv"), outcome=None)
    cfg["modalities"]["pet"]["radiomics"] = str(REPO / "examples" / "sts-pet-radiomics.yaml")
    cfg["model"]["variants"] = {}
    cfg.pop("output")
    if not modalities:  # the same PET as a single-image run (the old layout)
        pet = cfg.pop("modalities")["pet"]
        cfg["cohort"].update(image_column=pet["image_column"], mask_column=pet["mask_column"])
        cfg["mask"] = {"roi": pet["roi"]}
        cfg["radiomics"] = {"settings": pet["radiomics"]}
    p = tmp_path / ("mm.yaml" if modalities else "pet.yaml")
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


@pytest.mark.slow
@pytest.mark.needs_data
def test_multimodal_run_gives_one_row_per_patient_with_prefixed_features_and_lineage(
    tmp_path: Path, sts_dir: Path
) -> None:
    import medlens
    from medlens.pipeline.model import build_matrix, column_groups
    from medlens.preprocess.normalise import fat_normalise

    cfg = load_config(_config(tmp_path, sts_dir, PATIENTS), data_dir=sts_dir, out_dir=tmp_path / "run", workers=1)
    res = run_mod.run_pipeline(cfg, progress=False)
    assert (res.n_ok, res.n_failed) == (3, 0)
    df = read_features(tmp_path / "run").set_index("case_id").loc[PATIENTS]
    assert len(df) == 3  # one row per patient, not per series
    assert df.loc["STS_001", "roi"] == "pet:GTV_Mass_PET;mr:GTV_Mass_MR_T1;ct:GTV_Mass_CT"
    assert df.loc["STS_021", "roi"] == "pet:GTV_Mass_PET;mr:GTV_Mass_MR_T1"
    assert (df["modalities"] == "pet,mr,ct").all()
    assert df["modality"].tolist() == ["PT+MR+CT", "PT+MR+CT", "PT+MR"]
    # lineage per modality: DICOM modality, units as stored in the feature table, own series and SOP hashes
    assert (df["pet_modality"] == "PT").all() and (df["pet_units"] == "SUVbw").all()
    assert (df["mr_modality"] == "MR").all() and (df["mr_units"] == "normalised").all()
    assert df.loc[["STS_001", "STS_002"], "ct_units"].eq("HU").all()
    assert df["ct_status"].tolist() == ["ok", "ok", "absent"]
    assert pd.isna(df.loc["STS_021", "ct_series_uid"]) and np.isnan(df.loc["STS_021", "ct_stat_mean"])
    for a, b in (("pet", "mr"), ("pet", "ct"), ("mr", "ct")):
        assert (
            df.loc[["STS_001", "STS_002"], f"{a}_series_uid"] != df.loc[["STS_001", "STS_002"], f"{b}_series_uid"]
        ).all()
    assert df["mr_sop_uids_hash"].str.len().eq(16).all() and (df["mr_n_sop_instances"] > 10).all()
    # the MR recipe as applied, with its fitted reference: recomputed here from the MR itself
    mr = medlens.read_image(sts_dir / "STS_002" / "MR_T1" / "image")
    ref = fat_normalise(mr, fat_percentiles=(90.0, 99.0)).meta.extra["fat_reference"]
    hist = str(df.loc["STS_002", "mr_history"])
    assert hist.startswith(f"fat_normalise(reference={ref:.6g},P90-P99,n="), (hist, ref)
    assert df["pet_history"].eq("").all()  # no PET preprocessing
    # features: the same IBSI tags under each prefix; fat-normalised MR means are fractions of fat (~0.2-0.6)
    groups = feature_groups(df.reset_index())
    assert len(groups["pet"]) == len(groups["mr"]) == len(groups["ct"]) > 200
    assert not {"pet_series_uid", "mr_history", "ct_status"} & set(feature_columns(df.reset_index()))
    assert df["mr_stat_mean"].between(0.1, 1.0).all() and df["pet_stat_max"].gt(2.0).all()

    # the PET part equals a single-image PET run of the same patients and settings, value for value
    single = load_config(
        _config(tmp_path, sts_dir, PATIENTS, modalities=False), data_dir=sts_dir, out_dir=tmp_path / "pet", workers=1
    )
    run_mod.run_pipeline(single, progress=False)
    pet = read_features(tmp_path / "pet").set_index("case_id").loc[PATIENTS]
    for tag in ("stat_max", "morph_volume", "cm_joint_entr_3D_avg"):
        np.testing.assert_allclose(df[f"pet_{tag}"], pet[tag], rtol=1e-12)
    assert "modalities" not in pet.columns or pet["modalities"].isna().all()

    # the model matrix: no diagnostic tags under any prefix; CT (absent for STS_021) cannot enter a model
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "cases").glob("*__*.json"))]
    _, names, clinical = build_matrix(results, cfg)
    assert not [n for n in names if n.split("_", 1)[1].startswith(("diag_", "img_dim_", "int_mask_"))]
    assert not [n for n in names if n.startswith("ct_")]
    g = column_groups(names, clinical, cfg)
    assert set(g) == {"pet", "mr", "clinical"} and g.count("pet") == g.count("mr")
    report = res.report_path.read_text()
    assert "<h2>Modalities</h2>" in report and "fat_normalise(reference=" in report


def test_multimodal_config_errors(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("patient_id,img\nA,a\n")
    base = {"cohort": {"csv": "c.csv"}, "modalities": {"pet": {"image_column": "img", "mask": "{patient_id}/m"}}}

    def load(changes: dict) -> None:
        raw = json.loads(json.dumps(base))
        for k, v in changes.items():
            raw[k] = v if not isinstance(v, dict) else {**raw.get(k, {}), **v}
        p = tmp_path / "cfg.yaml"
        p.write_text(yaml.safe_dump(raw))
        load_config(p)

    load({})  # valid
    with pytest.raises(InputError, match=r"modality name 'PET' must be lower-case"):
        load({"modalities": {"PET": {"image_column": "img", "mask_column": "img"}}})
    with pytest.raises(InputError, match=r"modalities.mr needs exactly one of image_column"):
        load({"modalities": {"mr": {"image_column": "img", "image": "x", "mask_column": "img"}}})
    with pytest.raises(InputError, match=r"unknown key 'modalities.pet.rois'"):
        load({"modalities": {"pet": {"image_column": "img", "mask_column": "img", "rois": "x"}}})
    with pytest.raises(InputError, match=r"model.variants.both has 'mr'; the feature groups are: clinical, pet"):
        load({"cohort": {"csv": "c.csv", "outcome": "img"}, "model": {"variants": {"both": ["pet", "mr"]}}})
    with pytest.raises(InputError, match=r"mask.method cannot be combined with modalities"):
        load({"mask": {"method": "otsu"}})


def test_multimodal_missing_required_series_are_listed(tmp_path: Path) -> None:
    (tmp_path / "A").mkdir()
    (tmp_path / "c.csv").write_text("patient_id,img\nA,A\n")
    raw = {
        "cohort": {"csv": "c.csv"},
        "modalities": {
            "pet": {"image_column": "img", "mask_column": "img"},
            "mr": {"image": "{patient_id}/MR_T1/image", "mask": "{patient_id}/MR_T1/rtstruct"},
            "ct": {"image": "{patient_id}/CT/image", "mask": "{patient_id}/CT/rtstruct", "required": False},
        },
    }
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    from medlens.pipeline.cases import load_cases

    with pytest.raises(InputError, match=r"2 cohort file\(s\) not found: A: mr image .*MR_T1/image; A: mr mask"):
        load_cases(load_config(p))
    raw["modalities"]["mr"]["required"] = False
    p.write_text(yaml.safe_dump(raw))
    (case,) = load_cases(load_config(p))
    assert case.modalities["ct"] == {"image": None, "mask": None} and case.modalities["pet"]["image"] == str(
        tmp_path / "A"
    )


def test_bids_suffix_of_mr_series() -> None:
    from medlens.catalog.bids import mr_suffix

    assert mr_suffix(SimpleNamespace(SeriesDescription="IBSI_1_STS_001_MR_T1_image")) == "T1w"
    assert mr_suffix(SimpleNamespace(SeriesDescription="t2_tse_tra")) == "T2w"
    assert mr_suffix(SimpleNamespace(SeriesDescription="AX T2 FLAIR")) == "FLAIR"
    assert mr_suffix(SimpleNamespace(ProtocolName="MPRAGE sag")) == "T1w"
    assert mr_suffix(SimpleNamespace(SeriesDescription="T10 map")) == "MRI"
    assert mr_suffix(SimpleNamespace(SeriesDescription="scan", RepetitionTime="520", EchoTime="14")) == "T1w"
    assert mr_suffix(SimpleNamespace(SeriesDescription="scan", RepetitionTime="4000", EchoTime="100")) == "T2w"
    assert mr_suffix(SimpleNamespace(SeriesDescription="dwi")) == "MRI"


@pytest.mark.needs_data
def test_bids_export_names_the_sts_mr_t1w(tmp_path: Path, sts_dir: Path) -> None:
    from medlens.catalog import scan
    from medlens.catalog.bids import export_bids

    db = tmp_path / "cat.duckdb"
    scan(sts_dir / "STS_002" / "MR_T1", db)
    export_bids(db, tmp_path / "bids")
    niftis = sorted(p.name for p in (tmp_path / "bids").rglob("*.nii.gz") if "derivatives" not in p.parts)
    assert len(niftis) == 1 and niftis[0].endswith("_T1w.nii.gz"), niftis


@pytest.mark.slow
def test_model_variants_from_run_results_reach_the_report(tmp_path: Path) -> None:
    """The pipeline glue: prefixed features -> feature groups -> nested CV per variant -> the report's table."""
    from medlens.pipeline.model import compare_variants
    from medlens.pipeline.report import _fusion_section

    (tmp_path / "c.csv").write_text("patient_id,img,y\nA,a,0\n")
    raw = {
        "cohort": {"csv": "c.csv", "outcome": "y"},
        "modalities": {"pet": {"image_column": "img", "mask_column": "img"}, "mr": {"image": "x", "mask": "x"}},
        "model": {"folds": 3, "repeats": 1, "bootstrap": 200, "clinical_from_dicom": ["age"]},
    }
    raw["model"]["variants"] = {"mr": ["mr"], "pet": ["pet"], "pet+mr+clinical": ["pet", "mr", "clinical"]}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    cfg = load_config(p)
    rng = np.random.default_rng(4)
    y = np.array([0, 1] * 20)
    results = []
    for i, yi in enumerate(y):
        # the outcome is in the PET SUV (shifted by 2.5 SD), not in the MR nor in the age
        feats = {"pet_stat_max": 2.5 * yi + rng.normal(), "pet_stat_mean": rng.normal(), "pet_diag_n_voxels": 100.0}
        feats |= {f"mr_f{j}": rng.normal() for j in range(4)}
        results.append(
            {
                "case_id": f"C{i}",
                "features": feats,
                "case": {"outcome": float(yi), "clinical": {}},
                "clinical_dicom": {"age": 50 + rng.normal()},
            }
        )
    fusion = compare_variants(results, cfg)
    v = {e["name"]: e for e in fusion["variants"]}
    assert [e["name"] for e in fusion["variants"]] == ["mr", "pet", "pet+mr+clinical"]
    # groups: 2 PET (the diagnostic tag left out), 4 MR, 1 clinical column
    assert (v["mr"]["n_features"], v["pet"]["n_features"], v["pet+mr+clinical"]["n_features"]) == (4, 2, 7)
    from sklearn.metrics import roc_auc_score

    oracle = roc_auc_score(y, [r["features"]["pet_stat_max"] for r in results])  # the planted feature by itself
    assert oracle - 0.15 < v["pet"]["auc"] <= oracle + 0.02, (v["pet"]["auc"], oracle)
    assert v["mr"]["auc"] < 0.7
    assert v["pet"]["vs_first"]["baseline"] == "mr" and v["pet"]["vs_first"]["difference"] > 0.1
    html = _fusion_section(fusion)
    assert "<td>pet+mr+clinical</td>" in html and f"<td>{v['pet']['auc']:.4g}</td>" in html
    assert "ΔAUC vs mr" in html and "data:image/png;base64" in html
