"""Configuration and cohort validation: every bad input gives a message naming the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from medlens.cli import main
from medlens.core.errors import InputError
from medlens.pipeline.config import load_config, validate_config
from medlens.pipeline.demo import DEMO_CONFIG, generate_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("cfgdata"), n_cases=8, seed=3)


def _cfg(**changes: object) -> dict:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["model"]["folds"] = 2
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            cfg.setdefault(section, {})[key] = value
        else:
            cfg[section] = value
    return cfg


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def test_unknown_top_level_key_is_named_with_allowed_keys(tmp_path: Path, demo_data: Path) -> None:
    cfg = _cfg(modle={"folds": 3})
    with pytest.raises(InputError, match=r"unknown key 'modle'; allowed keys: name, data_dir, cohort"):
        load_config(_write(tmp_path, cfg), data_dir=demo_data)


def test_unknown_nested_key_is_named_with_its_section(tmp_path: Path, demo_data: Path) -> None:
    cfg = _cfg(model__n_fold=3)
    with pytest.raises(InputError, match=r"unknown key 'model.n_fold'; allowed keys in model: classifier, folds"):
        load_config(_write(tmp_path, cfg), data_dir=demo_data)


def test_wrong_type_names_key_and_expected_type(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"key 'model.folds' must be integer, got str 'five'"):
        load_config(_write(tmp_path, _cfg(model__folds="five")), data_dir=demo_data)
    with pytest.raises(InputError, match=r"key 'model.harmonise' must be true/false"):
        load_config(_write(tmp_path, _cfg(model__harmonise=1)), data_dir=demo_data)
    with pytest.raises(InputError, match=r"key 'model.folds' must be integer, got bool"):
        load_config(_write(tmp_path, _cfg(model__folds=True)), data_dir=demo_data)


def test_bad_choice_lists_allowed_values(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"'model.classifier' is 'svm'; allowed values: logistic, random_forest"):
        load_config(_write(tmp_path, _cfg(model__classifier="svm")), data_dir=demo_data)
    with pytest.raises(InputError, match=r"'model.clinical_from_dicom' has 'height'; allowed values: age, sex"):
        load_config(_write(tmp_path, _cfg(model__clinical_from_dicom=["height"])), data_dir=demo_data)


def test_missing_required_and_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing required key 'cohort'"):
        load_config(_write(tmp_path, {"name": "x"}))
    with pytest.raises(InputError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml")


def test_harmonise_needs_batch_column(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"model\.harmonise is 'combat' but cohort\.batch_column is not set"):
        load_config(_write(tmp_path, _cfg(model__harmonise=True)), data_dir=demo_data)
    with pytest.raises(InputError, match=r"'model.harmonise' is 'comabt'; allowed values: combat, location-scale"):
        load_config(_write(tmp_path, _cfg(model__harmonise="comabt")), data_dir=demo_data)


def _run(tmp_path: Path, cfg: dict, data: Path) -> object:
    from medlens.pipeline.run import run_pipeline

    return run_pipeline(
        load_config(_write(tmp_path, cfg), data_dir=data, out_dir=tmp_path / "run", workers=1), progress=False
    )


def test_missing_file_in_cohort_is_listed(tmp_path: Path, demo_data: Path) -> None:
    csv = (demo_data / "cohort.csv").read_text().replace("DEMO_002/CT", "DEMO_002/CT_missing")
    (tmp_path / "cohort.csv").write_text(csv)
    cfg = _cfg(cohort={**DEMO_CONFIG["cohort"], "csv": str(tmp_path / "cohort.csv")})
    with pytest.raises(InputError, match=r"1 cohort file\(s\) not found: DEMO_002: image .*CT_missing"):
        _run(tmp_path, cfg, demo_data)


def test_missing_column_lists_csv_columns(tmp_path: Path, demo_data: Path) -> None:
    cfg = _cfg(cohort={**DEMO_CONFIG["cohort"], "outcome": "relapse"})
    with pytest.raises(InputError, match=r"no column 'relapse'; the CSV has: patient_id, image, mask, outcome"):
        _run(tmp_path, cfg, demo_data)


def test_roi_matching_nothing_lists_available(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"no ROI matches mask.roi 'GTV.\*'; available ROIs: nodule"):
        _run(tmp_path, _cfg(mask={"roi": "GTV.*"}), demo_data)


def test_roi_regular_expression_matches(tmp_path: Path, demo_data: Path) -> None:
    from medlens.pipeline.cases import resolve_roi

    assert resolve_roi("nod.*", ["nodule", "lung"], source="x") == "nodule"
    with pytest.raises(InputError, match="matches several ROIs"):
        resolve_roi(".*u.*", ["nodule", "lung"], source="x")


def test_one_class_outcome(tmp_path: Path, demo_data: Path) -> None:
    lines = (demo_data / "cohort.csv").read_text().splitlines()
    body = [",".join([*ln.split(",")[:-1], "1"]) for ln in lines[1:]]
    (tmp_path / "c.csv").write_text("\n".join([lines[0], *body]) + "\n")
    cfg = _cfg(cohort={**DEMO_CONFIG["cohort"], "csv": str(tmp_path / "c.csv")})
    with pytest.raises(InputError, match=r"outcome column 'outcome' has only the value 1 across 8 cases"):
        _run(tmp_path, cfg, demo_data)


def test_fewer_cases_than_folds(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"fewer than model.folds=5 per class"):
        _run(tmp_path, _cfg(model__folds=5), demo_data)


def test_cli_bad_config_exit_code_and_one_line(tmp_path: Path, demo_data: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", str(_write(tmp_path, _cfg(model__folds="x"))), "--data", str(demo_data)])
    assert code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "model.folds" in err


def test_examples_validate_and_demo_yaml_matches_demo(tmp_path: Path) -> None:
    demo_yaml = yaml.safe_load((REPO / "examples" / "demo.yaml").read_text())
    assert demo_yaml == DEMO_CONFIG
    sts = load_config(REPO / "examples" / "sts-lung-metastasis.yaml", data_dir=tmp_path)
    assert sts.section("mask")["roi"] == "GTV_Mass_PET"
    assert sts.section("cohort")["outcome"] == "lung_metastasis"


def test_missing_settings_file_is_named(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"radiomics.settings file .*nope.yaml not found"):
        load_config(_write(tmp_path, _cfg(radiomics={"settings": "nope.yaml"})), data_dir=demo_data)


def test_settings_file_is_hashed_by_content(tmp_path: Path, demo_data: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "rad.yaml").write_text("name: x\n")
    cfg = load_config(_write(tmp_path / "a", _cfg(radiomics={"settings": "rad.yaml"})), data_dir=demo_data)
    assert Path(cfg.feature_settings()["radiomics"]["settings"]).is_absolute()
    h1 = cfg.settings_for_hash()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "rad.yaml").write_text("name: x\n")
    h2 = load_config(_write(tmp_path / "b", _cfg(radiomics={"settings": "rad.yaml"})), data_dir=demo_data)
    assert h1 == h2.settings_for_hash()  # same content elsewhere: same key
    (tmp_path / "b" / "rad.yaml").write_text("name: y\n")
    assert h1 != h2.settings_for_hash()


def test_bad_memory_limit(tmp_path: Path, demo_data: Path) -> None:
    with pytest.raises(InputError, match=r"execution.memory_limit 'lots' is not a size"):
        load_config(_write(tmp_path, _cfg(execution={"memory_limit": "lots"})), data_dir=demo_data)


def test_mask_method_and_options_are_checked(tmp_path: Path) -> None:
    base = {"cohort": {"csv": "c.csv", "mask_column": None}}
    with pytest.raises(InputError, match=r"mask.method is 'watershed'; allowed values: otsu, multi-otsu, threshold"):
        validate_config(base | {"mask": {"method": "watershed"}})
    with pytest.raises(
        InputError, match=r"mask.options has 'low', not an option of 'threshold'; its options are: lower"
    ):
        validate_config(base | {"mask": {"method": "threshold", "options": {"low": 1}}})
    with pytest.raises(InputError, match=r"mask.options is set but mask.method is not"):
        validate_config({"cohort": {"csv": "c.csv"}, "mask": {"options": {"lower": 1}}})
    ok = validate_config(base | {"mask": {"method": "threshold", "options": {"lower": -500, "units": "HU"}}})
    assert ok["mask"]["options"] == {"lower": -500, "units": "HU"}
