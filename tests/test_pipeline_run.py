"""Execution: resumability, failing cases, 1 vs 2 Dask workers, lineage in the feature store."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from medlens.core.errors import InputError
from medlens.pipeline import run as run_mod
from medlens.pipeline.config import load_config
from medlens.pipeline.demo import DEMO_CONFIG, generate_cohort
from medlens.pipeline.store import LINEAGE_COLUMNS, feature_columns, query, read_features


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("rundata"), n_cases=8, seed=5)


def _config(tmp_path: Path, data: Path, *, workers: int = 1, out: str = "run", outcome: bool = False):  # type: ignore[no-untyped-def]
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["model"].update(folds=2, repeats=1, permutations=0, bootstrap=50)
    if not outcome:
        cfg["cohort"]["outcome"] = None
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load_config(p, data_dir=data, out_dir=tmp_path / out, workers=workers)


@pytest.mark.slow
def test_interrupted_run_resumes_with_one_row_per_case(tmp_path: Path, data: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = run_mod.process_case
    calls = {"n": 0}

    def dies_after_three(*args, **kwargs):  # type: ignore[no-untyped-def]
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C (or the machine went away) during case 4
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "process_case", dies_after_three)
    cfg = _config(tmp_path, data)
    with pytest.raises(KeyboardInterrupt):
        run_mod.run_pipeline(cfg, progress=False)
    finished = sorted(p.name for p in (tmp_path / "run" / "cases").glob("*.json"))
    assert len(finished) == 3
    monkeypatch.setattr(run_mod, "process_case", real)
    res = run_mod.run_pipeline(cfg, progress=False)
    assert (res.n_skipped, res.n_ok, res.n_failed) == (3, 8, 0)
    df = read_features(tmp_path / "run")
    assert len(df) == 8 and df["case_id"].nunique() == 8
    # a third run computes nothing and still has exactly one row per case
    res3 = run_mod.run_pipeline(cfg, progress=False)
    assert res3.n_skipped == 8
    counts = query("SELECT count(*) AS n, count(DISTINCT case_id) AS u FROM features", tmp_path / "run")
    assert counts.iloc[0].tolist() == [8, 8]


@pytest.mark.slow
def test_changed_settings_recompute_in_a_new_partition(tmp_path: Path, data: Path) -> None:
    cfg = _config(tmp_path, data)
    run_mod.run_pipeline(cfg, progress=False)
    cfg.raw["radiomics"]["settings"] = "ibsi-b"
    res = run_mod.run_pipeline(cfg, progress=False)
    assert res.n_skipped == 0
    df = read_features(tmp_path / "run")
    assert len(df) == 16 and df["run_id"].nunique() == 2


def test_failing_case_is_recorded_and_the_run_goes_on(tmp_path: Path, data: Path) -> None:
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    rs = next((bad / "DEMO_004" / "RTSTRUCT").iterdir())
    rs.write_bytes(b"not a DICOM file at all")
    res = run_mod.run_pipeline(_config(tmp_path, bad), progress=False)
    assert (res.n_ok, res.n_failed) == (7, 1)
    df = read_features(tmp_path / "run").set_index("case_id")
    assert df.loc["DEMO_004", "status"] == "error"
    assert df.loc["DEMO_004", "error"] != ""
    assert (df.drop(index="DEMO_004")["status"] == "ok").all()
    report = res.report_path.read_text()
    assert "Failed cases" in report and "DEMO_004" in report


def test_lineage_columns_are_filled(tmp_path: Path, data: Path) -> None:
    run_mod.run_pipeline(_config(tmp_path, data), progress=False)
    df = read_features(tmp_path / "run")
    for col in LINEAGE_COLUMNS:
        assert df[col].notna().all(), col
        assert (df[col].astype(str) != "").all(), col
    assert (df["modality"] == "CT").all()
    assert (df["n_sop_instances"] == 64).all()
    assert df["study_uid"].nunique() == 8


@pytest.mark.slow
def test_one_and_two_dask_workers_give_identical_features(tmp_path: Path, data: Path) -> None:
    r1 = run_mod.run_pipeline(_config(tmp_path, data, workers=1, out="w1"), progress=False)
    r2 = run_mod.run_pipeline(_config(tmp_path, data, workers=2, out="w2"), progress=False)
    assert r1.n_ok == r2.n_ok == 8
    info = json.loads((tmp_path / "w2" / "run.json").read_text())
    assert info["mode"] == "local"
    a = read_features(tmp_path / "w1").sort_values("case_id").reset_index(drop=True)
    b = read_features(tmp_path / "w2").sort_values("case_id").reset_index(drop=True)
    cols = feature_columns(a)
    assert len(cols) > 20
    differ = [c for c in cols if not a[c].equals(b[c])]
    assert differ == [], {c: (a[c] - b[c]).abs().max() for c in differ}
    pids = {json.loads(p.read_text())["worker_pid"] for p in (tmp_path / "w2" / "cases").glob("*.json")}
    assert os.getpid() not in pids  # the features really were computed in the Dask worker processes


@pytest.mark.slow
def test_existing_scheduler_is_used(tmp_path: Path, data: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        cfg = _config(tmp_path, data, workers=2)
        cfg.raw["execution"]["scheduler"] = cluster.scheduler_address
        res = run_mod.run_pipeline(cfg, progress=False)
    assert res.n_ok == 8
    assert json.loads((tmp_path / "run" / "run.json").read_text())["mode"] == "scheduler"


@pytest.mark.slow
def test_unreachable_scheduler_fails_clearly(tmp_path: Path, data: Path) -> None:
    cfg = _config(tmp_path, data, workers=2)
    cfg.raw["execution"]["scheduler"] = "tcp://127.0.0.1:9"
    with pytest.raises(InputError, match=r"cannot connect to the Dask scheduler tcp://127.0.0.1:9"):
        run_mod.run_pipeline(cfg, progress=False)


def _finished_files(cases: Path) -> list[Path]:
    # a write cut by the kill can leave a hidden temporary file; it is never read as a result
    return [f for f in cases.glob("*.json") if not f.name.startswith(".")] if cases.is_dir() else []


@pytest.mark.slow
def test_killed_process_loses_nothing_finished(tmp_path: Path, data: Path) -> None:
    """SIGKILL a real `medlens run` once some cases are done; the re-run completes with one row per case."""
    import signal
    import subprocess
    import sys
    import time

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["cohort"]["outcome"] = None
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    args = ["run", str(p), "--data", str(data), "--out", str(tmp_path / "run"), "--workers", "1", "--no-progress"]
    cmd = [sys.executable, "-c", f"import sys; from medlens.cli import main; sys.exit(main({args!r}))"]
    log = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    cases = tmp_path / "run" / "cases"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(_finished_files(cases)) >= 2:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
    done_before = len(_finished_files(cases))
    assert 2 <= done_before < 8, f"the run was not killed half way: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
    run_mod.code_fingerprint.cache_clear()  # fingerprint the source as the killed process saw it
    res = run_mod.run_pipeline(load_config(p, data_dir=data, out_dir=tmp_path / "run", workers=1), progress=False)
    assert res.n_skipped == done_before and res.n_ok == 8
    df = read_features(tmp_path / "run")
    assert len(df) == 8 and df["case_id"].nunique() == 8


@pytest.mark.slow
def test_preprocess_recipe_is_applied_and_recorded(tmp_path: Path, data: Path) -> None:
    plain = run_mod.run_pipeline(_config(tmp_path, data, out="plain"), progress=False)
    cfg = _config(tmp_path, data, out="smooth")
    cfg.raw["preprocess"]["recipe"] = {"name": "smooth", "steps": [{"gaussian_filter": {"sigma_mm": 2.0}}]}
    smooth = run_mod.run_pipeline(cfg, progress=False)
    assert plain.n_ok == smooth.n_ok == 8
    a = read_features(tmp_path / "plain").set_index("case_id").sort_index()
    b = read_features(tmp_path / "smooth").set_index("case_id").sort_index()
    # smoothing mixes lung (-850 HU) into the nodule border: every nodule's mean intensity drops
    assert (b["stat_mean"] < a["stat_mean"]).all()
    assert (b["morph_volume"] == a["morph_volume"]).all()  # the mask does not depend on the pixels
    res = json.loads(next((tmp_path / "smooth" / "cases").glob("DEMO_001__*.json")).read_text())
    assert any("gaussian" in h for h in res["qa"]["history"])


def test_bad_recipe_fails_before_the_run(tmp_path: Path, data: Path) -> None:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["preprocess"] = {"recipe": {"steps": [{"blur_everything": {}}]}}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match="blur_everything"):
        load_config(p, data_dir=data)


@pytest.mark.slow
def test_cohort_from_a_catalog_query(tmp_path: Path, data: Path) -> None:
    from medlens.catalog import scan

    scan(data, tmp_path / "cat.duckdb", workers=1)
    cfg = copy.deepcopy(DEMO_CONFIG)
    outcomes = str(data / "cohort.csv").replace("'", "''")
    cfg["cohort"] = {
        "catalog": str(tmp_path / "cat.duckdb"),
        "query": (
            "SELECT s.patient_id, s.series_uid AS image, r.series_uid AS mask, o.outcome "
            "FROM series s JOIN series r ON r.patient_id = s.patient_id AND r.modality = 'RTSTRUCT' "
            f"JOIN read_csv('{outcomes}') o ON o.patient_id = s.patient_id WHERE s.modality = 'CT'"
        ),
        "outcome": "outcome",
    }
    cfg["model"].update(folds=2, repeats=1, permutations=0, bootstrap=50)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = run_mod.run_pipeline(load_config(p, data_dir=data, out_dir=tmp_path / "run", workers=1), progress=False)
    assert (res.n_ok, res.n_failed) == (8, 0)
    df = read_features(tmp_path / "run").set_index("case_id").sort_index()
    csv = __import__("pandas").read_csv(data / "cohort.csv").set_index("patient_id").sort_index()
    assert df["outcome"].tolist() == csv["outcome"].tolist()


def test_catalog_query_errors(tmp_path: Path, data: Path) -> None:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["cohort"]["catalog"] = "x.duckdb"
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match=r"give the cohort as cohort\.csv or as cohort\.catalog"):
        load_config(p, data_dir=data)


@pytest.mark.slow
def test_random_forest_with_harmonisation_end_to_end(tmp_path: Path, data: Path) -> None:
    import pandas as pd

    df = pd.read_csv(data / "cohort.csv")
    df["site"] = ["A", "B"] * (len(df) // 2)
    df.to_csv(tmp_path / "sites.csv", index=False)
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["cohort"].update(csv=str(tmp_path / "sites.csv"), batch_column="site")
    cfg["model"].update(classifier="random_forest", harmonise=True, folds=2, repeats=2, permutations=5, bootstrap=50)
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    res = run_mod.run_pipeline(load_config(p, data_dir=data, out_dir=tmp_path / "run", workers=1), progress=False)
    m = res.metrics
    assert m["harmonised"] == "combat" and m["classifier"] == "random_forest"  # true means ComBat
    assert m["importance_kind"] == "impurity importance"
    assert 0 < len(m["importance"]) <= 8 and all(d["importance"] >= 0 for d in m["importance"])
    y, p = np.array(m["oof"]["y"]), np.array(m["oof"]["p"])
    pairs = [(a > b) + 0.5 * (a == b) for a in p[y == 1] for b in p[y == 0]]
    assert m["auc"] == pytest.approx(sum(pairs) / ((y == 1).sum() * (y == 0).sum()), abs=1e-12)  # Mann-Whitney
    # permutation p = (1 + #null scores >= observed) / (1 + 5 permutations): a multiple of 1/6
    assert round(m["permutation_p"] * 6, 9) in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0}
    import joblib

    saved = joblib.load(tmp_path / "run" / "model" / "model.joblib")
    assert saved["pipeline"].steps[0][0] == "harmonise" and saved["pipeline"].steps[0][1].method == "combat"
    assert read_features(tmp_path / "run")["batch"].tolist().count("A") == 4


def test_mask_from_a_segmentation_method_gives_one_row_per_case(tmp_path: Path, data: Path) -> None:
    """mask.method: the ROI comes from medlens.segment.segment (here Otsu: the soft tissue, not the lungs)."""
    cfg = _config(tmp_path, data)
    cfg.raw["cohort"]["mask_column"] = None
    cfg.raw["mask"] = {"roi": None, "method": "otsu", "options": {}}
    cfg.raw["radiomics"]["settings"] = {"families": ["morph", "stat"], "texture": {"families": []}}
    res = run_mod.run_pipeline(cfg, progress=False)
    assert (res.n_cases, res.n_ok, res.n_failed) == (8, 8, 0)
    df = read_features(tmp_path / "run")
    assert sorted(df["case_id"]) == [f"DEMO_{i:03d}" for i in range(1, 9)]
    # Otsu splits lung (-850 HU) from soft tissue (40 HU and the nodules): no lung voxel in the ROI
    assert (df["stat_min"] > -850.0).all()
    one = json.loads(next((tmp_path / "run" / "cases").glob("DEMO_001__*.json")).read_text())
    assert one["roi"] == "otsu" and one["status"] == "ok"
