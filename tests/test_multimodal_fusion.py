"""Fusion models: nested CV on a planted signal, decision-curve net benefit and calibration by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.learn.fusion import (
    calibration_intercept_slope,
    compare_variants,
    decision_curve,
    nested_cv,
    net_benefit,
    paired_auc_difference,
)


def test_net_benefit_matches_the_formula_by_hand() -> None:
    # 10 cases, 4 positive. At pt = 0.25 the treated are p >= 0.25: cases 0-5 -> TP = 3 (cases 0, 1, 3), FP = 3
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.25, 0.2, 0.1, 0.05, 0.01])
    # NB = TP/n - FP/n * pt/(1-pt) = 3/10 - 3/10 * (0.25/0.75) = 0.3 - 0.1 = 0.2
    assert net_benefit(y, p, 0.25) == pytest.approx(0.2, abs=1e-12)
    # pt = 0.5: treated 0-3 -> TP 3, FP 1: 0.3 - 0.1 * 1 = 0.2
    assert net_benefit(y, p, 0.5) == pytest.approx(0.2, abs=1e-12)
    # pt = 0.75: treated 0, 1 -> TP 2, FP 0: 0.2
    assert net_benefit(y, p, 0.75) == pytest.approx(0.2, abs=1e-12)
    # pt = 0.1: treated 0-7 -> TP 4, FP 4: 0.4 - 0.4 * (0.1/0.9)
    assert net_benefit(y, p, 0.1) == pytest.approx(0.4 - 0.4 / 9.0, abs=1e-12)
    dc = decision_curve(y, p, thresholds=[0.1, 0.25])
    # treat all: prevalence 0.4 - 0.6 * pt/(1-pt)
    assert dc["treat_all"] == pytest.approx([0.4 - 0.6 / 9.0, 0.4 - 0.6 / 3.0])
    assert dc["treat_none"] == [0.0, 0.0]
    assert dc["model"][1] == pytest.approx(0.2)
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        net_benefit(y, p, 1.0)


def test_calibration_intercept_and_slope_recover_a_known_miscalibration() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(0.0, 1.5, 20000)
    y = (rng.random(z.size) < 1.0 / (1.0 + np.exp(-z))).astype(int)
    true_p = 1.0 / (1.0 + np.exp(-z))
    a, b = calibration_intercept_slope(y, true_p)
    assert abs(a) < 0.05 and abs(b - 1.0) < 0.05  # calibrated by construction
    # predictions twice as extreme on the logit scale: the slope must come out ~0.5, shifted by +1 logit: a ~ -0.5
    over = 1.0 / (1.0 + np.exp(-(2.0 * z + 1.0)))
    a2, b2 = calibration_intercept_slope(y, over)
    assert b2 == pytest.approx(0.5, abs=0.03)
    assert a2 == pytest.approx(-0.5, abs=0.06)


def _planted(n: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    lin = 1.5 * X[:, 0] - 1.5 * X[:, 1]
    y = (lin + rng.normal(size=n) > 0).astype(int)
    return X, y, lin


@pytest.mark.slow
def test_nested_cv_finds_a_planted_signal_and_not_noise() -> None:
    from sklearn.metrics import roc_auc_score

    X, y, lin = _planted(60, 20, seed=0)
    oracle = roc_auc_score(y, lin)  # the AUC of the true linear predictor on these very cases
    assert oracle > 0.9
    opts = dict(folds=3, repeats=1, inner_folds=3, k_grid=(1, 2, 5), c_grid=(1.0,), n_bootstrap=200)
    res = nested_cv(X, y, **opts)
    # learned from 40 cases per fold, the model cannot beat the oracle but must come close to it
    assert oracle - 0.12 < res["auc"] <= oracle + 0.02, (res["auc"], oracle)
    assert res["auc_ci95"][0] > 0.7
    # the inner CV prefers the two planted features: k = 2 is the most chosen setting
    assert next(iter(res["chosen"])) == "C=1, k=2"
    assert len(res["oof"]) == 60 and res["n_features"] == 20
    # the same features with the outcome shuffled: no signal, the CI covers 0.5
    y0 = np.random.default_rng(1).permutation(y)
    null = nested_cv(X, y0, **opts)
    assert null["auc_ci95"][0] < 0.5 < null["auc_ci95"][1]
    assert null["auc"] < 0.7


@pytest.mark.slow
def test_compare_variants_uses_the_groups_and_pairs_the_folds() -> None:
    X, y, _ = _planted(60, 20, seed=0)
    groups = ["a", "b"] + ["noise"] * 18  # the signal lies in groups a and b only
    res = compare_variants(
        X,
        y,
        names=[f"f{j}" for j in range(20)],
        groups=groups,
        variants={"noise": ["noise"], "a+b": ["a", "b"]},
        folds=3,
        repeats=1,
        inner_folds=3,
        k_grid=(1, 2),
        c_grid=(1.0,),
        n_bootstrap=200,
    )
    v_noise, v_ab = res["variants"]
    assert (v_noise["n_features"], v_ab["n_features"]) == (18, 2)
    assert v_ab["auc"] > 0.85 and v_noise["auc"] < 0.7
    d = v_ab["vs_first"]
    assert d["baseline"] == "noise" and d["difference"] == pytest.approx(v_ab["auc"] - v_noise["auc"])
    assert d["ci95_low"] > 0.0  # a clear improvement on the same cases
    with pytest.raises(InputError, match="feature group"):
        compare_variants(X, y, names=[f"f{j}" for j in range(20)], groups=groups, variants={"x": ["mr"]})


def test_paired_auc_difference_of_identical_predictions_is_zero() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 20)
    p = rng.random(40)
    d = paired_auc_difference(y, p, p, n_bootstrap=100)
    assert d["difference"] == 0.0 and d["ci95_low"] == 0.0 and d["ci95_high"] == 0.0


def test_nested_cv_refuses_bad_input() -> None:
    X = np.zeros((12, 3))
    with pytest.raises(InputError, match="binary 0/1"):
        nested_cv(X, np.arange(12))
    with pytest.raises(InputError, match="too few"):
        nested_cv(X, np.array([0] * 10 + [1] * 2), folds=3)
    with pytest.raises(InputError, match="no feature column"):
        nested_cv(np.zeros((12, 0)), np.array([0, 1] * 6))
