"""Model validation: no leakage, hand-checked C-index, harmonisation, Cox."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.learn.tabular import (
    BatchHarmoniser,
    RidgeCox,
    bootstrap_auc_ci,
    cross_validate_auc,
    harrell_c_index,
    make_pipeline,
)

MODEL = {
    "classifier": "logistic",
    "folds": 5,
    "repeats": 3,
    "n_features": 5,
    "harmonise": False,
    "seed": 0,
    "clinical_from_dicom": [],
}


def test_pure_noise_gives_chance_auc_with_ci_covering_half() -> None:
    rng = np.random.default_rng(11)
    n, p = 60, 300
    X = rng.normal(size=(n, p))
    y = np.array([0, 1] * (n // 2))
    rng.shuffle(y)
    res = cross_validate_auc(X, y, MODEL, [f"f{i}" for i in range(p)])
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y, res["oof"])
    lo, hi = bootstrap_auc_ci(y, res["oof"], n_boot=500, seed=0)
    assert lo < 0.5 < hi
    assert 0.25 < auc < 0.72


def test_selection_outside_cv_would_leak_on_the_same_noise() -> None:
    """Control: selecting features on all cases before CV inflates the AUC on the same noise data."""
    from sklearn.feature_selection import SelectKBest, f_classif

    rng = np.random.default_rng(11)
    n, p = 60, 300
    X = rng.normal(size=(n, p))
    y = np.array([0, 1] * (n // 2))
    rng.shuffle(y)
    leaky = SelectKBest(f_classif, k=5).fit(X, y).transform(X)
    res = cross_validate_auc(leaky, y, MODEL, [f"f{i}" for i in range(5)])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, res["oof"]) > 0.75


def test_signal_is_found_and_selected() -> None:
    rng = np.random.default_rng(5)
    n = 80
    y = np.array([0, 1] * (n // 2))
    X = rng.normal(size=(n, 20))
    X[:, 3] += 2.0 * y  # a 2-SD shift: AUC of the feature alone is Phi(2/sqrt(2)) = 0.92
    res = cross_validate_auc(X, y, {**MODEL, "n_features": 1}, [f"f{i}" for i in range(20)])
    from sklearn.metrics import roc_auc_score

    # the informative feature is selected in every fold, and the out-of-fold AUC matches that
    # feature's own AUC (no optimism, no loss): the model found exactly the signal there is
    assert res["selection_frequency"]["f3"] == 1.0
    assert roc_auc_score(y, res["oof"]) == pytest.approx(roc_auc_score(y, X[:, 3]), abs=0.03)


def test_scaler_is_fitted_inside_the_pipeline() -> None:
    pipe = make_pipeline({**MODEL, "n_features": 2}, 2)
    names = [n for n, _ in pipe.steps]
    assert names == ["impute", "drop_constant", "scale", "select", "clf"]
    X = np.arange(40, dtype=float).reshape(20, 2) * [1, 100]
    y = np.array([0, 1] * 10)
    pipe.fit(X[:10], y[:10])
    np.testing.assert_allclose(pipe.named_steps["scale"].mean_, X[:10].mean(axis=0))


def test_harrell_c_index_by_hand() -> None:
    # comparable pairs (i has the event and the shorter time): (0,1) (0,2) (0,3) (2,3)
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1, 0, 1, 0])
    risk = np.array([0.9, 0.5, 0.1, 0.1])
    # (0,1): 0.9>0.5 yes; (0,2) yes; (0,3) yes; (2,3): tie -> 1/2  => 3.5 / 4
    assert harrell_c_index(time, event, risk) == pytest.approx(3.5 / 4)
    assert harrell_c_index(time, event, -risk) == pytest.approx(0.5 / 4)


def test_ridge_cox_ranks_risk() -> None:
    rng = np.random.default_rng(2)
    n = 120
    x = rng.normal(size=(n, 3))
    t = rng.exponential(1.0 / np.exp(1.2 * x[:, 0]))
    e = (rng.uniform(size=n) < 0.8).astype(float)
    model = RidgeCox(alpha=0.1).fit(x, np.column_stack([t, e]))
    assert model.coef_[0] > 0.6
    assert abs(model.coef_[1]) < 0.4
    assert harrell_c_index(t, e, model.predict(x)) > 0.7


def test_batch_harmoniser_removes_location_and_scale_shift() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, size=(50, 2))
    b = rng.normal(5, 3, size=(50, 2))
    X = np.vstack([np.column_stack([a, np.zeros(50)]), np.column_stack([b, np.ones(50)])])
    out = BatchHarmoniser(method="location-scale").fit(X).transform(X)
    assert out.shape == (100, 2)
    np.testing.assert_allclose(out[:50].mean(axis=0), out[50:].mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(out[:50].std(axis=0), out[50:].std(axis=0), rtol=1e-9)
    # an unseen batch is left unchanged
    new = np.array([[1.0, 2.0, 7.0]])
    np.testing.assert_allclose(BatchHarmoniser().fit(X).transform(new), [[1.0, 2.0]])
    with pytest.raises(InputError, match="harmonisation method must be one of combat, location-scale"):
        BatchHarmoniser(method="quantile").fit(X)


def _batches(seed: int, n_feat: int = 40, sizes: tuple[int, ...] = (12, 30, 7)) -> tuple[np.ndarray, np.ndarray]:
    """Features with a per-batch additive and multiplicative effect; returns (X with batch column, batch)."""
    rng = np.random.default_rng(seed)
    rows, batch = [], []
    for b, n in enumerate(sizes):
        shift = rng.normal(0.0, 1.0, n_feat)
        scale = rng.gamma(4.0, 0.3, n_feat)
        rows.append(rng.normal(10.0, 2.0, (n, n_feat)) * scale + shift * 3.0)
        batch += [b] * n
    return np.column_stack([np.vstack(rows), batch]), np.array(batch)


def test_combat_matches_neurocombat() -> None:
    """Same estimates as the reference implementation (neuroCombat, parametric EB, no covariates)."""
    neurocombat = pytest.importorskip("neuroCombat", reason="neuroCombat (test extra) is the reference")
    import contextlib
    import io

    import pandas as pd

    X, batch = _batches(2)
    ours = BatchHarmoniser(method="combat").fit(X).transform(X)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = neurocombat.neuroCombat(
            dat=X[:, :-1].T, covars=pd.DataFrame({"batch": batch}), batch_col="batch", eb=True, parametric=True
        )["data"].T
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)
    # and the empirical-Bayes shrinkage is not a no-op: it differs from the plain location/scale mapping
    plain = BatchHarmoniser(method="location-scale").fit(X).transform(X)
    assert np.max(np.abs(plain - ours)) > 1e-3


def test_combat_removes_batch_effects_and_handles_nan() -> None:
    X, batch = _batches(5)
    X[3, 4] = np.nan
    out = BatchHarmoniser().fit(X).transform(X)
    assert np.isnan(out[3, 4]) and np.isfinite(np.delete(out.ravel(), 3 * out.shape[1] + 4)).all()

    def spread(a: np.ndarray) -> float:  # SD across batches of the batch means, per feature, averaged
        return float(np.nanmean(np.nanstd([np.nanmean(a[batch == b], axis=0) for b in range(3)], axis=0)))

    assert spread(out) < 0.1 * spread(X[:, :-1])


def test_kaplan_meier_by_hand() -> None:
    from medlens.learn.tabular import kaplan_meier

    # times 1(event) 2(censored) 3(event) 4(event): S = 1, 3/4, then 3/4 * 1/2, then 0
    x, s = kaplan_meier(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1]))
    np.testing.assert_allclose(x, [0, 1, 3, 4])
    np.testing.assert_allclose(s, [1.0, 0.75, 0.375, 0.0])


def test_combat_edge_cases_leave_data_usable() -> None:
    rng = np.random.default_rng(9)
    # a single batch: ComBat still standardises within it and returns finite values of the same shape
    one = np.column_stack([rng.normal(size=(8, 5)), np.zeros(8)])
    assert np.isfinite(BatchHarmoniser().fit(one).transform(one)).all()
    # every batch has fewer than 2 cases: nothing is fitted, the data come back unchanged
    tiny = np.column_stack([rng.normal(size=(3, 4)), [0.0, 1.0, 2.0]])
    np.testing.assert_array_equal(BatchHarmoniser().fit(tiny).transform(tiny), tiny[:, :-1])
    # one feature only: no prior across features can be fitted, the batch's own estimates are used
    X = np.column_stack([np.r_[rng.normal(0, 1, 10), rng.normal(5, 2, 10)], np.r_[np.zeros(10), np.ones(10)]])
    out = BatchHarmoniser().fit(X).transform(X)
    plain = BatchHarmoniser(method="location-scale").fit(X).transform(X)
    np.testing.assert_allclose(out, plain, rtol=1e-12)


def _cox_score_loop(x: np.ndarray, t: np.ndarray, e: np.ndarray) -> float:
    """The univariate Cox score statistic at beta = 0 by its definition (risk set: time >= the event time)."""
    u = info = 0.0
    for i in np.flatnonzero(e):
        risk = x[t >= t[i]]
        u += x[i] - risk.mean()
        info += risk.var()
    return u**2 / info if info > 0 else 0.0


def test_cox_score_test_matches_the_definition_with_ties() -> None:
    from medlens.learn.tabular import cox_score_test

    rng = np.random.default_rng(12)
    x = rng.normal(size=(40, 3))
    t = rng.integers(1, 12, 40).astype(float)  # many tied times
    e = (rng.random(40) > 0.3).astype(float)
    x[:, 2] = 5.0  # constant: scores 0
    stat, p = cox_score_test(x, np.column_stack([t, e]))
    for j in range(3):
        assert stat[j] == pytest.approx(_cox_score_loop(x[:, j], t, e), rel=1e-10, abs=1e-12)
    from scipy.stats import chi2

    assert stat[2] == 0.0 and p[2] == 1.0
    np.testing.assert_allclose(p, chi2.sf(stat, 1), rtol=1e-12)  # the score statistic is chi-square, 1 dof


def test_survival_pipeline_selects_the_prognostic_feature() -> None:
    rng = np.random.default_rng(3)
    n = 120
    x = rng.normal(size=(n, 30))
    t = rng.exponential(1.0 / np.exp(1.5 * x[:, 7]))  # only feature 7 changes the hazard
    e = (rng.random(n) > 0.2).astype(float)
    pipe = make_pipeline({**MODEL, "n_features": 3}, 30, survival=True).fit(x, np.column_stack([t, e]))
    kept = np.flatnonzero(pipe.named_steps["drop_constant"].get_support())[pipe.named_steps["select"].get_support()]
    assert 7 in kept and len(kept) == 3
    assert harrell_c_index(t, e, pipe.predict(x)) > 0.7
