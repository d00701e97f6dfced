"""Multimodal fusion models with nested cross-validation, calibration and decision curves.

A *variant* is a set of feature groups (``pet``, ``mr``, ``clinical``, ...: early fusion, the columns of the
groups side by side). Each variant is validated by **nested** repeated stratified cross-validation: in every
outer training fold an inner stratified CV chooses the number of univariately selected features ``k`` and
the L2 strength ``C`` of the logistic regression (or ``k`` alone for a random forest); the chosen pipeline is
refitted on the whole outer training fold and predicts the outer test fold. So the hyper-parameters are never
chosen on the cases that score them, and the reported AUC is not optimistic by the choice.

Reported per variant: ROC AUC of the out-of-fold probabilities (averaged over repeats) with a percentile
bootstrap 95 % CI, the per-repeat AUCs, calibration (Brier score; calibration intercept and slope of the
logistic recalibration ``logit P(y=1) = a + b logit(p)``: perfect is a = 0, b = 1; a slope below 1 means
predictions too extreme), a quantile calibration curve, and a decision curve (net benefit against the
threshold probability, Vickers and Elkin, Med Decis Making 2006). Variants are compared with a paired
bootstrap of the AUC difference over the same cases.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medlens.core.errors import InputError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "calibration_intercept_slope",
    "compare_variants",
    "decision_curve",
    "nested_cv",
    "net_benefit",
    "paired_auc_difference",
]

#: Threshold probabilities of the decision curve (5 % to 60 %).
DEFAULT_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 13))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties count one half); the bootstraps call it thousands of times."""
    from scipy.stats import rankdata

    pos = y == 1
    n1 = int(pos.sum())
    n0 = y.size - n1
    ranks = rankdata(p)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _bootstrap_ci(y: np.ndarray, p: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95 % CI of the AUC over case resamples (as :func:`medlens.learn.tabular.bootstrap_auc_ci`)."""
    if n_boot == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(_auc(y[idx], p[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def net_benefit(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    """Net benefit of treating the cases with ``p >= threshold`` (Vickers and Elkin 2006).

    ``NB = TP / n - FP / n * pt / (1 - pt)``: true positives gained, minus false positives weighted by the
    odds of the threshold probability ``pt`` (the harm of a needless treatment relative to a missed one).
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=np.float64)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    if y.shape != p.shape or y.ndim != 1 or not y.size:
        raise InputError(f"y and p must be 1-D of the same non-zero length, got {y.shape} and {p.shape}")
    treat = p >= threshold
    n = float(y.size)
    tp = float(np.sum(treat & (y == 1)))
    fp = float(np.sum(treat & (y == 0)))
    return tp / n - fp / n * threshold / (1.0 - threshold)


def decision_curve(
    y: np.ndarray, p: np.ndarray, *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, list[float]]:
    """Net benefit of the model, of treating everyone and of treating no one, at each threshold probability."""
    y = np.asarray(y, dtype=int)
    prev = float(np.mean(y))
    ts = [float(t) for t in thresholds]
    return {
        "threshold": ts,
        "model": [net_benefit(y, p, t) for t in ts],
        "treat_all": [prev - (1.0 - prev) * t / (1.0 - t) for t in ts],
        "treat_none": [0.0 for _ in ts],
    }


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration intercept ``a`` and slope ``b`` of ``logit P(y = 1) = a + b * logit(p)`` (maximum likelihood).

    Probabilities are clipped to [1e-6, 1 - 1e-6] before the logit.
    """
    from scipy.optimize import minimize

    y = np.asarray(y, dtype=np.float64)
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    z = np.log(q / (1.0 - q))

    def nll(ab: np.ndarray) -> tuple[float, np.ndarray]:
        eta = ab[0] + ab[1] * z
        # log(1 + e^eta) - y * eta, stably
        ll = np.logaddexp(0.0, eta) - y * eta
        r = 1.0 / (1.0 + np.exp(-eta)) - y
        return float(ll.sum()), np.array([r.sum(), (r * z).sum()])

    res = minimize(nll, np.array([0.0, 1.0]), jac=True, method="BFGS")
    return float(res.x[0]), float(res.x[1])


def _pipeline(classifier: str, seed: int) -> Any:
    from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf: Any = LogisticRegression(C=1.0, max_iter=2000)
    elif classifier == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        clf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)
    else:
        raise InputError(f"classifier must be 'logistic' or 'random_forest', got {classifier!r}")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("drop_constant", VarianceThreshold(0.0)),
            ("scale", StandardScaler()),
            ("select", SelectKBest(f_classif, k=1)),
            ("clf", clf),
        ]
    )


def nested_cv(
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    repeats: int = 5,
    inner_folds: int = 4,
    k_grid: Sequence[int] = (1, 2, 3, 5, 10),
    c_grid: Sequence[float] = (0.01, 0.1, 1.0),
    classifier: str = "logistic",
    seed: int = 0,
    n_bootstrap: int = 1000,
    calibration_bins: int = 5,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, Any]:
    """Nested repeated stratified CV of impute -> scale -> SelectKBest(k) -> classifier(C).

    Parameters
    ----------
    X, y
        Predictors (cases x features; NaN is imputed inside the folds) and the binary outcome (0/1).
    folds, repeats
        Outer repeated stratified k-fold (out-of-fold probabilities averaged over the repeats).
    inner_folds
        Stratified folds of the inner CV that picks ``k`` (from ``k_grid``, capped at the number of
        features) and ``C`` (``c_grid``; logistic only) by ROC AUC, inside each outer training fold.
    n_bootstrap
        Resamples of the percentile CI of the AUC (0: none).

    Returns
    -------
    dict
        ``auc``, ``auc_ci95``, ``auc_repeats`` (list), ``auc_repeats_mean``, ``auc_repeats_sd``, ``brier``,
        ``calibration_intercept``, ``calibration_slope``, ``calibration`` (curve), ``decision_curve``,
        ``chosen`` (counts of the chosen ``k``/``C``), ``oof`` (probabilities), ``n_cases``, ``n_positive``,
        ``n_features``.
    """
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score
    from sklearn.model_selection import GridSearchCV, RepeatedStratifiedKFold, StratifiedKFold

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise InputError(f"X must be (cases, features) and y (cases,), got {X.shape} and {y.shape}")
    if X.shape[1] == 0:
        raise InputError("X has no feature column: the variant's feature groups are empty")
    if not set(np.unique(y).tolist()) <= {0, 1} or len(np.unique(y)) != 2:
        raise InputError(f"y must be binary 0/1 with both classes, found values {sorted(set(y.tolist()))[:6]}")
    y = y.astype(int)
    n_min = int(min(np.bincount(y)))
    if n_min < folds or n_min - n_min // folds < inner_folds:
        raise InputError(
            f"the smaller class has {n_min} cases: too few for {folds} outer x {inner_folds} inner stratified folds; "
            "lower folds or inner_folds"
        )
    X[np.isinf(X)] = np.nan
    ks = sorted({min(int(k), X.shape[1]) for k in k_grid if int(k) >= 1})
    if not ks:
        raise InputError(f"k_grid must hold positive integers, got {list(k_grid)}")
    grid: dict[str, list[Any]] = {"select__k": ks}
    if classifier == "logistic":
        grid["clf__C"] = [float(c) for c in c_grid]
    outer = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    oof = np.full((repeats, len(y)), np.nan)
    chosen: dict[str, int] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant features in small folds, lbfgs on separable folds
        for i, (tr, te) in enumerate(outer.split(X, y)):
            inner = StratifiedKFold(n_splits=inner_folds, shuffle=True, random_state=seed + i)
            search = GridSearchCV(_pipeline(classifier, seed), grid, scoring="roc_auc", cv=inner, refit=True, n_jobs=1)
            search.fit(X[tr], y[tr])
            oof[i // folds, te] = search.predict_proba(X[te])[:, 1]
            key = ", ".join(f"{k.split('__')[1]}={v:g}" for k, v in sorted(search.best_params_.items()))
            chosen[key] = chosen.get(key, 0) + 1
    p = oof.mean(axis=0)
    per_repeat = [float(roc_auc_score(y, oof[r])) for r in range(repeats)]
    lo, hi = _bootstrap_ci(y, p, n_boot=n_bootstrap, seed=seed)
    a, b = calibration_intercept_slope(y, p)
    frac, mean_pred = calibration_curve(y, p, n_bins=calibration_bins, strategy="quantile")
    return {
        "n_cases": len(y),
        "n_positive": int(y.sum()),
        "n_features": int(X.shape[1]),
        "auc": float(roc_auc_score(y, p)),
        "auc_ci95": [lo, hi],
        "auc_repeats": per_repeat,
        "auc_repeats_mean": float(np.mean(per_repeat)),
        "auc_repeats_sd": float(np.std(per_repeat)),
        "brier": float(brier_score_loss(y, p)),
        "calibration_intercept": a,
        "calibration_slope": b,
        "calibration": {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac.tolist()},
        "decision_curve": decision_curve(y, p, thresholds=thresholds),
        "chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1])),
        "oof": p.tolist(),
        "folds": folds,
        "repeats": repeats,
        "inner_folds": inner_folds,
    }


def paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, n_bootstrap: int = 2000, seed: int = 0
) -> dict[str, float]:
    """AUC(b) - AUC(a) on the same cases, with a paired percentile bootstrap 95 % CI and the share of resamples <= 0."""
    y = np.asarray(y, dtype=int)
    p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    diff = _auc(y, p_b) - _auc(y, p_a)
    rng = np.random.default_rng(seed)
    ds = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        ds.append(_auc(y[idx], p_b[idx]) - _auc(y[idx], p_a[idx]))
    if not ds:
        return {"difference": diff, "ci95_low": float("nan"), "ci95_high": float("nan"), "p_not_better": float("nan")}
    lo, hi = np.percentile(ds, [2.5, 97.5])
    return {
        "difference": diff,
        "ci95_low": float(lo),
        "ci95_high": float(hi),
        "p_not_better": float(np.mean(np.asarray(ds) <= 0.0)),
    }


def compare_variants(
    X: np.ndarray,
    y: np.ndarray,
    *,
    names: Sequence[str],
    groups: Sequence[str],
    variants: Mapping[str, Sequence[str]],
    folds: int = 5,
    repeats: int = 5,
    inner_folds: int = 4,
    seed: int = 0,
    n_bootstrap: int = 1000,
    classifier: str = "logistic",
    k_grid: Sequence[int] = (1, 2, 3, 5, 10),
    c_grid: Sequence[float] = (0.01, 0.1, 1.0),
) -> dict[str, Any]:
    """Nested-CV :func:`nested_cv` of each variant (the columns whose group is in the variant's list).

    ``groups[j]`` names the feature group of column ``j`` (``"pet"``, ``"mr"``, ``"clinical"``, ...). Every
    variant uses the same outer splits (same ``seed``), so the paired AUC difference against the first
    variant (:func:`paired_auc_difference`) compares the models on the same cases and folds.

    Returns
    -------
    dict
        ``variants``: one dict per variant (``name``, ``groups`` and the :func:`nested_cv` metrics without
        ``oof``, plus ``vs_first``: the paired difference against the first variant), and ``oof``: the
        out-of-fold probabilities per variant.
    """
    X = np.asarray(X, dtype=np.float64)
    if len(names) != X.shape[1] or len(groups) != X.shape[1]:
        raise InputError(
            f"names and groups need one entry per column of X ({X.shape[1]}), got {len(names)} and {len(groups)}"
        )
    if not variants:
        raise InputError("variants is empty: give at least one name -> list of feature groups")
    available = sorted(set(groups))
    out: list[dict[str, Any]] = []
    oofs: dict[str, list[float]] = {}
    first: str | None = None
    for vname, members in variants.items():
        unknown = sorted(set(members) - set(available))
        if unknown:
            raise InputError(
                f"variant {vname!r}: feature group(s) {', '.join(unknown)} not in the data; "
                f"groups: {', '.join(available)}"
            )
        cols = [j for j, g in enumerate(groups) if g in set(members)]
        res = nested_cv(
            X[:, cols],
            y,
            folds=folds,
            repeats=repeats,
            inner_folds=inner_folds,
            k_grid=k_grid,
            c_grid=c_grid,
            classifier=classifier,
            seed=seed,
            n_bootstrap=n_bootstrap,
        )
        oofs[vname] = res.pop("oof")
        entry = {"name": vname, "groups": list(members), **res}
        if first is None:
            first = vname
        else:
            entry["vs_first"] = {
                "baseline": first,
                **paired_auc_difference(y, np.asarray(oofs[first]), np.asarray(oofs[vname]), seed=seed),
            }
        out.append(entry)
    return {"variants": out, "oof": oofs}
