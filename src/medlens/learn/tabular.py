"""Tabular models (radiomics + clinical features) with honest validation.

Every step that learns from data — optional harmonisation, imputation, scaling, univariate
feature selection and the classifier — is one scikit-learn :class:`~sklearn.pipeline.Pipeline`
refitted inside each fold of repeated stratified cross-validation, so nothing from a test fold
reaches the model that predicts it. Reported:

* ROC AUC of the out-of-fold probabilities (averaged over the repeats), with a percentile
  bootstrap 95 % CI over cases, and the mean/SD of the per-repeat AUCs;
* calibration (quantile bins) and the Brier score of the same out-of-fold probabilities;
* a permutation-test p-value (the whole pipeline refitted on shuffled outcomes,
  ``(1 + #{AUC_perm >= AUC}) / (1 + n_permutations)``);
* feature importance of the model refitted on all cases (|coefficient| on standardised
  features, or impurity importance) and how often each feature was selected across folds;
* with time and event columns: Harrell's C-index of out-of-fold risks of an L2-penalised Cox
  model (implemented here; no survival package needed).

Harmonisation (``model.harmonise``): ComBat with parametric empirical Bayes (or, with
``location-scale``, each batch's own mean and SD), fitted inside the folds.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin

from medlens.core.errors import InputError

__all__ = [
    "HARMONISE_METHODS",
    "BatchHarmoniser",
    "RidgeCox",
    "bootstrap_auc_ci",
    "cox_score_test",
    "cross_validate_auc",
    "fit_and_validate",
    "harrell_c_index",
    "kaplan_meier",
    "make_pipeline",
]

HARMONISE_METHODS = ("combat", "location-scale")


class BatchHarmoniser(TransformerMixin, BaseEstimator):
    """Per-batch harmonisation of features: ComBat (default) or plain location/scale.

    The batch label is the *last column* of ``X`` (so it travels through scikit-learn CV); it is
    dropped on output. ``fit`` learns, per feature, the grand mean and pooled SD and, per batch, its
    location ``gamma`` and scale ``delta`` on the standardised features; ``transform`` maps
    ``x -> (z - gamma_b) / delta_b * sd + mean`` with ``z = (x - mean) / sd``.

    * ``method="combat"``: ComBat (Johnson, Li and Rabinovic, Biostatistics 2007; Fortin et al. 2018), the
      parametric empirical-Bayes version without covariates: each batch's ``gamma`` and ``delta^2`` are
      shrunk towards priors fitted across features (normal for ``gamma``, inverse gamma for ``delta^2``),
      which stabilises small batches. Same estimates as neuroCombat ``eb=True, parametric=True`` (tested).
    * ``method="location-scale"``: ``gamma`` and ``delta`` are the batch's own mean and SD of the standardised
      features (no shrinkage), i.e. each batch is mapped onto the grand mean and pooled within-batch SD.

    Biological covariates are not protected (the outcome must not enter: the transform is fitted inside
    CV folds). A batch unseen during fitting, or with fewer than 2 cases there, is left unchanged; features
    whose pooled SD is 0 are left unchanged; NaN is ignored in the estimates and kept in the output.
    """

    def __init__(self, method: str = "combat") -> None:
        self.method = method

    def fit(self, X: np.ndarray, y: Any = None) -> BatchHarmoniser:
        if self.method not in HARMONISE_METHODS:
            raise InputError(f"harmonisation method must be one of {', '.join(HARMONISE_METHODS)}, got {self.method!r}")
        X = np.asarray(X, dtype=np.float64)
        feats, batch = X[:, :-1], X[:, -1]
        labels = [float(b) for b in np.unique(batch) if np.count_nonzero(batch == b) >= 2]
        used = np.isin(batch, labels)
        data = feats[used]
        groups = [batch[used] == b for b in labels]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            valid = np.isfinite(data)
            # grand mean = the batch means weighted by batch size; pooled variance of the residuals around
            # each batch's mean (divided by n, as ComBat does)
            means = np.array([np.nanmean(data[g], axis=0) for g in groups])
            counts = np.array([valid[g].sum(axis=0) for g in groups], dtype=np.float64)
            n = counts.sum(axis=0)
            self.mean_ = np.nansum(means * counts, axis=0) / n
            resid2 = np.zeros(data.shape[1])
            for g, m in zip(groups, means):
                resid2 += np.nansum((data[g] - m) ** 2, axis=0)
            self.sd_ = np.sqrt(resid2 / n)
            ok = np.isfinite(self.sd_) & (self.sd_ > 0)
            z = (data - self.mean_) / np.where(ok, self.sd_, 1.0)
            gamma_hat = np.array([np.nanmean(z[g], axis=0) for g in groups])
            delta2_hat = np.array([np.nanvar(z[g], axis=0, ddof=1) for g in groups])
            if self.method == "combat":
                gamma, delta2 = _combat_posteriors(z, groups, counts, gamma_hat, delta2_hat, ok)
            else:
                gamma, delta2 = gamma_hat, delta2_hat
        self.ok_ = ok
        self.batches_: dict[float, tuple[np.ndarray, np.ndarray]] = {
            b: (gamma[i], np.sqrt(delta2[i])) for i, b in enumerate(labels)
        }
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        feats, batch = X[:, :-1].copy(), X[:, -1]
        for b, (g, d) in self.batches_.items():
            rows = batch == b
            ok = self.ok_ & np.isfinite(g) & np.isfinite(d) & (d > 0)
            z = (feats[np.ix_(rows, ok)] - self.mean_[ok]) / self.sd_[ok]
            feats[np.ix_(rows, ok)] = (z - g[ok]) / d[ok] * self.sd_[ok] + self.mean_[ok]
        return feats


def _combat_posteriors(
    z: np.ndarray,
    groups: list[np.ndarray],
    counts: np.ndarray,
    gamma_hat: np.ndarray,
    delta2_hat: np.ndarray,
    ok: np.ndarray,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Parametric empirical-Bayes estimates of each batch's location and scale (ComBat).

    Priors per batch, over the usable features: ``gamma ~ N(gamma_bar, tau^2)`` and ``delta^2 ~ InvGamma(a, b)``
    by the method of moments. The posterior mean of ``gamma`` and the posterior ``delta^2`` depend on each
    other and are iterated until both change by less than ``tol`` (relative).
    """
    gamma = np.full_like(gamma_hat, np.nan)
    delta2 = np.full_like(delta2_hat, np.nan)
    for i, g in enumerate(groups):
        use = ok & np.isfinite(gamma_hat[i]) & np.isfinite(delta2_hat[i])
        if np.count_nonzero(use) < 2:  # no prior can be fitted: keep the batch's own estimates
            gamma[i], delta2[i] = gamma_hat[i], delta2_hat[i]
            continue
        g_hat, d_hat, n_i = gamma_hat[i, use], delta2_hat[i, use], counts[i, use]
        g_bar, tau2 = float(g_hat.mean()), float(g_hat.var(ddof=1))
        m, v = float(d_hat.mean()), float(d_hat.var(ddof=1))
        if not (tau2 > 0 and v > 0 and np.isfinite(tau2) and np.isfinite(v)):
            # the priors are degenerate (identical estimates across features): nothing to shrink towards
            gamma[i], delta2[i] = gamma_hat[i], delta2_hat[i]
            continue
        a = (2.0 * v + m**2) / v
        b = (m * v + m**3) / v
        zi = z[g][:, use]
        g_old, d_old = g_hat, d_hat
        for _ in range(max_iter):
            g_new = (n_i * tau2 * g_hat + d_old * g_bar) / (n_i * tau2 + d_old)
            sum2 = np.nansum((zi - g_new) ** 2, axis=0)
            d_new = (0.5 * sum2 + b) / (n_i / 2.0 + a - 1.0)
            change = max(
                float(np.max(np.abs(g_new - g_old) / np.abs(g_old))), float(np.max(np.abs(d_new - d_old) / d_old))
            )
            g_old, d_old = g_new, d_new
            if change < tol:
                break
        gamma[i, use], delta2[i, use] = g_old, d_old
    return gamma, delta2


def _neg_partial_loglik(beta: np.ndarray, X: np.ndarray, time: np.ndarray, event: np.ndarray, alpha: float):  # type: ignore[no-untyped-def]
    """Breslow negative log partial likelihood + (alpha/2)|beta|^2, and its gradient."""
    order = np.argsort(-time, kind="stable")  # descending time: risk sets are prefixes
    Xo, eo = X[order], event[order]
    eta = Xo @ beta
    m = eta.max() if eta.size else 0.0
    w = np.exp(eta - m)
    cw = np.cumsum(w)
    cwx = np.cumsum(w[:, None] * Xo, axis=0)
    log_risk = np.log(cw) + m
    ll = float(np.sum(eo * (eta - log_risk)))
    grad = -(eo[:, None] * (Xo - cwx / cw[:, None])).sum(axis=0)
    return -ll + 0.5 * alpha * float(beta @ beta), grad + alpha * beta


class RidgeCox(RegressorMixin, BaseEstimator):
    """L2-penalised Cox proportional-hazards model (Breslow ties); ``y`` is ``(n, 2)``: time, event."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeCox:
        from scipy.optimize import minimize

        y = np.asarray(y, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        res = minimize(
            _neg_partial_loglik,
            np.zeros(X.shape[1]),
            args=(X, y[:, 0], y[:, 1], self.alpha),
            jac=True,
            method="L-BFGS-B",
        )
        self.coef_ = res.x
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Risk score (linear predictor): higher means earlier events."""
        return np.asarray(X, dtype=np.float64) @ self.coef_


def cox_score_test(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Univariate Cox score test of every column of ``X``: ``(chi-square statistics, p-values)``; ``y`` = (time, event).

    For each feature the score statistic at beta = 0 of the one-feature Cox model (Breslow ties): with
    ``U = sum over events of (x_i - mean of x over the risk set)`` and ``I = sum over events of the variance of x
    over the risk set``, the statistic is ``U^2 / I`` (chi-square, 1 degree of freedom). Used as the scoring
    function of the survival pipeline's feature selection (``SelectKBest``), refitted inside every fold.
    A feature constant over every risk set scores 0.
    """
    from scipy.stats import chi2

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    time, event = y[:, 0], y[:, 1] > 0
    order = np.argsort(-time, kind="stable")  # descending: the risk set of a case is a prefix
    xs, ts, es = X[order], time[order], event[order]
    n_at = np.arange(1, len(ts) + 1, dtype=np.float64)
    s1, s2 = np.cumsum(xs, axis=0), np.cumsum(xs**2, axis=0)
    # tied times share the risk set of the last member of their tie group (everyone with time >= t)
    last = np.searchsorted(-ts, -ts, side="right") - 1
    n_r, m1, m2 = n_at[last], s1[last], s2[last]
    mean = m1 / n_r[:, None]
    var = np.maximum(m2 / n_r[:, None] - mean**2, 0.0)
    u = np.sum((xs - mean)[es], axis=0)
    info = np.sum(var[es], axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(info > 0, u**2 / np.where(info > 0, info, 1.0), 0.0)
    return stat, chi2.sf(stat, 1)


def harrell_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index: P(higher risk for the earlier event) over comparable pairs.

    A pair (i, j) is comparable when ``time[i] < time[j]`` and ``event[i] == 1``; ties in risk
    count one half. Returns NaN without comparable pairs.
    """
    t, e, r = (np.asarray(a, dtype=np.float64) for a in (time, event, risk))
    num = 0.0
    den = 0
    for i in range(len(t)):
        if e[i] != 1:
            continue
        later = t > t[i]
        den += int(later.sum())
        num += float((r[i] > r[later]).sum()) + 0.5 * float((r[i] == r[later]).sum())
    return num / den if den else float("nan")


def make_pipeline(model_cfg: dict[str, Any], n_features: int, *, survival: bool = False) -> Any:
    """The scikit-learn Pipeline refitted inside every fold (harmonise, impute, scale, select, classify)."""
    from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps: list[tuple[str, Any]] = []
    if model_cfg["harmonise"]:
        method = "combat" if model_cfg["harmonise"] is True else str(model_cfg["harmonise"])
        steps.append(("harmonise", BatchHarmoniser(method=method)))
    steps += [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("drop_constant", VarianceThreshold(0.0)),
        ("scale", StandardScaler()),
    ]
    if survival:
        k = min(model_cfg["n_features"], n_features)
        steps.append(("select", SelectKBest(cox_score_test, k=k)))
        steps.append(("cox", RidgeCox(alpha=1.0)))
        return Pipeline(steps)
    steps.append(("select", SelectKBest(f_classif, k=min(model_cfg["n_features"], n_features))))
    if model_cfg["classifier"] == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1.0, max_iter=2000)
    else:
        from sklearn.ensemble import RandomForestClassifier

        clf = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=model_cfg["seed"], n_jobs=1)
    steps.append(("clf", clf))
    return Pipeline(steps)


def bootstrap_auc_ci(y: np.ndarray, p: np.ndarray, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95 % CI of the ROC AUC, resampling cases with replacement (resamples with one class skipped)."""
    from sklearn.metrics import roc_auc_score

    if n_boot == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    n = len(y)
    aucs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], p[idx]))
    lo, hi = np.percentile(aucs, [2.5, 97.5])
    return float(lo), float(hi)


def cross_validate_auc(X: np.ndarray, y: np.ndarray, model_cfg: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Repeated stratified CV of the whole pipeline: out-of-fold probabilities, AUCs, selection counts."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold

    folds, repeats, seed = model_cfg["folds"], model_cfg["repeats"], model_cfg["seed"]
    n_feat = X.shape[1] - (1 if model_cfg["harmonise"] else 0)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    oof = np.full((repeats, len(y)), np.nan)
    selected = np.zeros(n_feat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (tr, te) in enumerate(cv.split(X, y)):
            pipe = make_pipeline(model_cfg, n_feat).fit(X[tr], y[tr])
            oof[i // folds, te] = pipe.predict_proba(X[te])[:, 1]
            kept = pipe.named_steps["drop_constant"].get_support()
            sel = np.zeros(n_feat, dtype=bool)
            sel[np.flatnonzero(kept)[pipe.named_steps["select"].get_support()]] = True
            selected += sel
    per_repeat = [float(roc_auc_score(y, oof[r])) for r in range(repeats)]
    return {
        "oof": oof.mean(axis=0),
        "auc_repeats": per_repeat,
        "selection_frequency": dict(zip(names, (selected / (folds * repeats)).tolist())),
    }


def fit_and_validate(
    X: np.ndarray,
    names: list[str],
    clinical: list[str],
    *,
    ids: list[str],
    model_cfg: dict[str, Any],
    out_dir: Path,
    outcome: np.ndarray | None = None,
    time: np.ndarray | None = None,
    event: np.ndarray | None = None,
    saved_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Cross-validate, compute the metrics, refit on all cases and save the model (joblib) with its settings.

    Parameters
    ----------
    X
        Predictors, shape (cases, features) (with ``model_cfg["harmonise"]``: the batch code as last column).
    names, clinical
        Column names of ``X`` (without the batch column) and which of them are clinical.
    ids
        Case identifiers, in the row order of ``X``.
    model_cfg
        The ``model`` settings (classifier, folds, repeats, n_features, harmonise, seed, bootstrap,
        permutations, calibration_bins).
    outcome
        Binary outcome per case (0/1) for the classification model, or None.
    time, event
        Survival time and event indicator per case for the Cox model, or None.
    saved_extra
        More entries to store with the model (e.g. the run's configuration).
    """
    import joblib
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedKFold, permutation_test_score

    import medlens
    from medlens.core.atomic import atomic_path

    mcfg = model_cfg
    n_feat = len(names)
    metrics: dict[str, Any] = {
        "n_cases": len(ids),
        "classifier": mcfg["classifier"],
        "folds": mcfg["folds"],
        "repeats": mcfg["repeats"],
        "n_features_selected": min(mcfg["n_features"], n_feat),
        "n_candidate_features": n_feat,
        "clinical_predictors": clinical,
        "harmonised": mcfg["harmonise"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Any] = {
        "feature_names": names,
        "model_settings": mcfg,
        "medlens_version": medlens.__version__,
        **(saved_extra or {}),
    }
    if outcome is not None:
        y = np.asarray(outcome, dtype=int)
        cvres = cross_validate_auc(X, y, mcfg, names)
        p = cvres["oof"]
        auc = float(roc_auc_score(y, p))
        lo, hi = bootstrap_auc_ci(y, p, n_boot=mcfg["bootstrap"], seed=mcfg["seed"])
        fpr, tpr, _ = roc_curve(y, p)
        frac_pos, mean_pred = calibration_curve(y, p, n_bins=mcfg["calibration_bins"], strategy="quantile")
        metrics.update(
            n_positive=int(y.sum()),
            auc=auc,
            auc_ci95=[lo, hi],
            auc_repeats_mean=float(np.mean(cvres["auc_repeats"])),
            auc_repeats_sd=float(np.std(cvres["auc_repeats"])),
            brier=float(brier_score_loss(y, p)),
            roc={"fpr": fpr.tolist(), "tpr": tpr.tolist()},
            calibration={"mean_predicted": mean_pred.tolist(), "fraction_positive": frac_pos.tolist()},
            oof={"case_id": ids, "y": y.tolist(), "p": p.tolist()},
        )
        if mcfg["permutations"] > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score, perm, pval = permutation_test_score(
                    make_pipeline(mcfg, n_feat),
                    X,
                    y,
                    scoring="roc_auc",
                    n_permutations=mcfg["permutations"],
                    cv=StratifiedKFold(mcfg["folds"], shuffle=True, random_state=mcfg["seed"]),
                    random_state=mcfg["seed"],
                    n_jobs=1,
                )
            metrics.update(
                permutation_p=float(pval),
                permutation_auc=float(score),
                permutation_null_mean=float(np.mean(perm)),
                n_permutations=mcfg["permutations"],
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            final = make_pipeline(mcfg, n_feat).fit(X, y)
        kept = np.flatnonzero(final.named_steps["drop_constant"].get_support())
        sel = kept[final.named_steps["select"].get_support()]
        clf = final.named_steps["clf"]
        weights = np.abs(clf.coef_[0]) if hasattr(clf, "coef_") else clf.feature_importances_
        signs = np.sign(clf.coef_[0]) if hasattr(clf, "coef_") else np.zeros(len(sel))
        metrics["importance"] = sorted(
            (
                {
                    "feature": names[j],
                    "importance": float(w),
                    "sign": float(s),
                    "selection_frequency": cvres["selection_frequency"][names[j]],
                }
                for j, w, s in zip(sel, weights, signs)
            ),
            key=lambda d: -d["importance"],
        )
        metrics["importance_kind"] = "|coefficient| (standardised)" if hasattr(clf, "coef_") else "impurity importance"
        saved["pipeline"] = final
    if time is not None:
        if event is None:
            raise InputError("survival analysis needs an event indicator with the times")
        metrics.update(_survival(np.asarray(time), np.asarray(event), X, mcfg, n_feat, saved))
    with atomic_path(out_dir / "model.joblib") as tmp:
        joblib.dump(saved, tmp)
    return metrics


def _survival(
    time: np.ndarray, event: np.ndarray, X: np.ndarray, mcfg: dict[str, Any], n_feat: int, saved: dict[str, Any]
) -> dict[str, Any]:
    from sklearn.model_selection import RepeatedStratifiedKFold

    t = np.asarray(time, dtype=np.float64)
    e = np.asarray(event, dtype=np.float64)
    if not np.isfinite(t).all() or not np.isfinite(e).all():
        raise InputError("survival analysis needs a time and an event value for every finished case")
    if e.sum() < mcfg["folds"]:
        raise InputError(f"only {int(e.sum())} events: fewer than model.folds={mcfg['folds']}")
    yy = np.column_stack([t, e])
    cv = RepeatedStratifiedKFold(n_splits=mcfg["folds"], n_repeats=mcfg["repeats"], random_state=mcfg["seed"])
    risk = np.zeros((mcfg["repeats"], len(t)))
    for i, (tr, te) in enumerate(cv.split(X, e.astype(int))):
        pipe = make_pipeline(mcfg, n_feat, survival=True).fit(X[tr], yy[tr])
        risk[i // mcfg["folds"], te] = pipe.predict(X[te])
    cs = [harrell_c_index(t, e, risk[r]) for r in range(mcfg["repeats"])]
    saved["cox_pipeline"] = make_pipeline(mcfg, n_feat, survival=True).fit(X, yy)
    return {
        "c_index": float(np.mean(cs)),
        "c_index_repeats_sd": float(np.std(cs)),
        "n_events": int(e.sum()),
        "survival_oof": {"time": t.tolist(), "event": e.tolist(), "risk": risk.mean(axis=0).tolist()},
    }


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival curve: (event times with 0 prepended, survival probabilities with 1 prepended)."""
    t, e = np.asarray(time, dtype=np.float64), np.asarray(event, dtype=np.float64)
    times = np.unique(t[e == 1])
    surv, s_now = [1.0], 1.0
    for u in times:
        at_risk = float((t >= u).sum())
        deaths = float(((t == u) & (e == 1)).sum())
        s_now *= 1.0 - deaths / at_risk
        surv.append(s_now)
    return np.concatenate([[0.0], times]), np.array(surv)
