"""``medlens demo`` end to end, the DICOM it writes (dciodvfy), and ``medlens query``."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import need_tool
from medlens.cli import main
from medlens.pipeline.demo import generate_cohort


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    code = main(["demo", "--out", str(out), "--cases", "8", "--workers", "1"])
    assert code == 0
    return out


@pytest.mark.slow
def test_demo_produces_report_parquet_audit_and_model(demo_run: Path, capsys: pytest.CaptureFixture) -> None:
    run = demo_run / "run"
    report = (run / "report.html").read_text()
    for section in (
        "Cohort and QA",
        "Example slices",
        "Model (repeated stratified",
        "Settings",
        "Audit log of this run",
    ):
        assert section in report
    assert len(re.findall(r"data:image/png;base64,", report)) >= 3  # cohort, examples, ROC/calibration/importance
    assert 'src="http' not in report  # self-contained
    df = pd.read_parquet(next((run / "features").rglob("*.parquet")))
    assert len(df) == 8 and (df["status"] == "ok").all()
    audit = [json.loads(line) for line in (run / "audit.jsonl").read_text().splitlines()]
    assert [e["action"] for e in audit][:3] == ["run.start", "run.cases", "features.write"]
    metrics = json.loads((run / "metrics.json").read_text())
    # the AUC is the Mann-Whitney statistic of the out-of-fold predictions: P(p_pos > p_neg) + ties / 2
    y, p = np.array(metrics["oof"]["y"]), np.array(metrics["oof"]["p"])
    pos, neg = p[y == 1], p[y == 0]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    assert metrics["auc"] == pytest.approx(sum(pairs) / (len(pos) * len(neg)), abs=1e-12)
    assert metrics["auc_ci95"][0] <= metrics["auc"] <= metrics["auc_ci95"][1]
    import joblib

    saved = joblib.load(run / "model" / "model.joblib")
    assert saved["model_settings"]["classifier"] == "logistic"
    assert saved["pipeline"].predict_proba(np.zeros((1, len(saved["feature_names"])))).shape == (1, 2)


@pytest.mark.slow
def test_demo_nodule_volume_matches_truth(demo_run: Path) -> None:
    """The features measure the nodules the generator made (mask written as RTSTRUCT and read back)."""
    truth = pd.read_csv(demo_run / "data" / "truth.csv").set_index("patient_id")
    df = pd.read_parquet(next((demo_run / "run" / "features").rglob("*.parquet"))).set_index("case_id")
    vol_ml = df["morph_vol_approx"] / 1000.0
    np.testing.assert_allclose(vol_ml.loc[truth.index], truth["nodule_volume_ml"], rtol=0.15)


@pytest.mark.slow
def test_query_command(demo_run: Path, capsys: pytest.CaptureFixture) -> None:
    capsys.readouterr()
    code = main(
        ["query", "SELECT count(*) AS n FROM features WHERE status = 'ok'", "--run", str(demo_run / "run"), "--csv"]
    )
    assert code == 0
    assert capsys.readouterr().out.strip().splitlines() == ["n", "8"]
    assert main(["query", "SELECT nope FROM features", "--run", str(demo_run / "run")]) == 2
    assert "the table is called 'features'" in capsys.readouterr().err
    assert main(["query", "SELECT 1", "--run", str(demo_run / "data")]) == 2


def test_written_ct_and_rtstruct_pass_dciodvfy(tmp_path: Path) -> None:
    dciodvfy = need_tool("dciodvfy")
    data = generate_cohort(tmp_path, n_cases=8, seed=1)
    for f in (data / "DEMO_001" / "CT" / "CT_0010.dcm", next((data / "DEMO_001" / "RTSTRUCT").iterdir())):
        proc = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, check=False)
        out = proc.stdout + proc.stderr
        errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
        assert errors == [], f"{f.name}: {errors}"
        assert "CTImage" in out or "RTStructureSet" in out


def test_ct_writer_round_trip(tmp_path: Path) -> None:
    import medlens
    from medlens.io.dicom_write import write_ct_series

    arr = np.random.default_rng(0).integers(-1024, 2000, size=(5, 16, 20)).astype(np.int16)
    img = medlens.Image.from_array(arr, spacing=(3.0, 0.8, 0.7), origin=(10.0, -20.0, 5.0), modality="CT")
    write_ct_series(img, tmp_path / "ct", patient_id="RT1", patient_age_years=61, patient_sex="F")
    from medlens.pipeline.steps import header_facts

    back = medlens.read_image(tmp_path / "ct")
    np.testing.assert_array_equal(np.asarray(back.array), arr)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-4)
    facts = header_facts(back)
    assert facts["age"] == 61 and facts["sex"] == "F"


def test_ct_writer_rejects_values_it_cannot_store(tmp_path: Path) -> None:
    import medlens
    from medlens.core.errors import InputError
    from medlens.io.dicom_write import write_ct_series

    img = medlens.Image.from_array(np.full((2, 4, 4), -2000.0), modality="CT")
    with pytest.raises(InputError, match=r"CT values must lie in \[-1024, 64511\] HU"):
        write_ct_series(img, tmp_path, patient_id="x")


def test_demo_rejects_too_few_cases(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--out", str(tmp_path), "--cases", "4"]) == 2
    assert "--cases must be at least 8" in capsys.readouterr().err
