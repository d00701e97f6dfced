"""Pure aggregation arithmetic of the federation: site summaries in, pooled statistics out.

Nothing here imports Flower or torch: these are the functions the server applies to what sites send,
and the functions a site applies to its own rows to produce what it sends. Every summary is a sum over
patients (counts, sums, sums of squares, score histograms); no row of a site ever leaves it.

* :func:`weighted_average` — FedAvg: ``sum_k w_k x_k / sum_k w_k`` per array.
* :func:`site_moments` / :func:`pool_moments` — per-class, NaN-aware counts, sums and centred sums of
  squares of a feature matrix, and the pooled mean and variance (Chan et al.'s parallel update).
* :func:`f_statistic` — the one-way ANOVA F of each feature between the outcome classes from pooled
  per-class moments, equal to :func:`sklearn.feature_selection.f_classif` on the pooled rows.
* :func:`combat_site_parameters` — a site's ComBat location/scale (parametric empirical Bayes, as in
  :class:`medlens.learn.tabular.BatchHarmoniser`) from the federated grand mean and pooled SD.
* :func:`score_histograms` / :func:`auc_from_histograms` — the pooled ROC AUC from per-site
  histograms of out-of-fold scores per class (ties within a bin count one half).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medlens.core.errors import InputError

__all__ = [
    "AUC_BINS",
    "apply_combat",
    "auc_from_histograms",
    "combat_site_parameters",
    "f_statistic",
    "mean_var",
    "pool_moments",
    "score_histograms",
    "site_moments",
    "weighted_average",
]

#: Number of equal-width probability bins of the score histograms (ties inside a bin count 1/2).
AUC_BINS = 1000


def weighted_average(arrays: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
    """FedAvg of named arrays: ``sum_k w_k x_k / sum_k w_k`` for every name.

    Parameters
    ----------
    arrays
        One mapping name -> array per site; all must have the same names and shapes.
    weights
        One non-negative weight per site (usually its number of training examples).

    Raises
    ------
    InputError
        No sites, a non-positive total weight, or names/shapes that differ between sites.
    """
    if not arrays:
        raise InputError("weighted_average: no site arrays to average")
    if len(arrays) != len(weights):
        raise InputError(f"weighted_average: {len(arrays)} array sets but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"weighted_average: weights must be finite, >= 0 and not all 0; got {w.tolist()}")
    names = list(arrays[0])
    out: dict[str, np.ndarray] = {}
    for k in names:
        shapes = {tuple(np.shape(a.get(k, np.empty(0)))) for a in arrays}
        if any(k not in a for a in arrays) or len(shapes) != 1:
            raise InputError(f"weighted_average: array {k!r} is missing or has different shapes across sites {shapes}")
        acc = np.zeros(np.shape(arrays[0][k]), dtype=np.float64)
        for a, wk in zip(arrays, w):
            acc += wk * np.asarray(a[k], dtype=np.float64)
        out[k] = (acc / w.sum()).astype(np.asarray(arrays[0][k]).dtype, copy=False)
    return out


def site_moments(X: np.ndarray, y: np.ndarray | None = None, *, n_classes: int = 2) -> np.ndarray:
    """Per-class NaN-aware moments of a site's feature matrix.

    Parameters
    ----------
    X
        Features, shape (cases, features); NaN = missing.
    y
        Class labels 0..n_classes-1 per case, or None (all cases in class 0 of one class).

    Returns
    -------
    numpy.ndarray
        Shape (n_classes, 3, features): for each class, the count of observed values, their sum
        and their centred sum of squares ``sum (x - mean_class)^2``.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"site_moments: X must be 2-D (cases, features), got shape {X.shape}")
    labels = np.zeros(len(X), dtype=int) if y is None else np.asarray(y, dtype=int)
    k = 1 if y is None else n_classes
    out = np.zeros((k, 3, X.shape[1]))
    for c in range(k):
        rows = X[labels == c]
        ok = np.isfinite(rows)
        n = ok.sum(axis=0).astype(np.float64)
        s = np.where(ok, rows, 0.0).sum(axis=0)
        mean = np.divide(s, n, out=np.zeros_like(s), where=n > 0)
        m2 = np.where(ok, (rows - mean) ** 2, 0.0).sum(axis=0)
        out[c] = (n, s, m2)
    return out


def pool_moments(moments: Sequence[np.ndarray]) -> np.ndarray:
    """Sum per-class moments of several sites (same layout as :func:`site_moments`).

    Counts and sums add; centred sums of squares combine with the between-site term
    ``n_a n_b / n (mean_a - mean_b)^2`` (exact, no catastrophic cancellation).
    """
    if not moments:
        raise InputError("pool_moments: no site summaries")
    shapes = {np.shape(m) for m in moments}
    if len(shapes) != 1:
        raise InputError(f"pool_moments: site summaries have different shapes {sorted(shapes)}")
    acc = np.array(moments[0], dtype=np.float64)
    for m in moments[1:]:
        m = np.asarray(m, dtype=np.float64)
        na, sa, qa = acc[:, 0], acc[:, 1], acc[:, 2]
        nb, sb, qb = m[:, 0], m[:, 1], m[:, 2]
        n = na + nb
        with np.errstate(divide="ignore", invalid="ignore"):
            ma = np.where(na > 0, sa / np.where(na > 0, na, 1), 0.0)
            mb = np.where(nb > 0, sb / np.where(nb > 0, nb, 1), 0.0)
            between = np.where(n > 0, na * nb / np.where(n > 0, n, 1) * (ma - mb) ** 2, 0.0)
        acc = np.stack([n, sa + sb, qa + qb + between], axis=1)
    return acc


def mean_var(moments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overall count, mean and population variance (divided by n) over all classes of pooled moments."""
    m = np.asarray(moments, dtype=np.float64)
    n, s, q = pool_moments([m[c : c + 1] for c in range(m.shape[0])])[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, s / np.where(n > 0, n, 1), np.nan)
        var = np.where(n > 0, q / np.where(n > 0, n, 1), np.nan)
    return n, mean, var


def f_statistic(moments: np.ndarray) -> np.ndarray:
    """One-way ANOVA F per feature from pooled per-class moments (shape (classes, 3, features)).

    ``F = (SS_between / (k - 1)) / (SS_within / (n - k))``, as :func:`sklearn.feature_selection.f_classif`
    computes it on the pooled rows; 0 where undefined (constant feature, empty class).
    """
    m = np.asarray(moments, dtype=np.float64)
    n_c, s_c, q_c = m[:, 0], m[:, 1], m[:, 2]
    k = m.shape[0]
    n = n_c.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        grand = s_c.sum(axis=0) / n
        mean_c = s_c / n_c
        ss_between = np.nansum(n_c * (mean_c - grand) ** 2, axis=0)
        ss_within = q_c.sum(axis=0)
        f = (ss_between / (k - 1)) / (ss_within / (n - k))
    return np.where(np.isfinite(f), f, 0.0)


def combat_site_parameters(
    X: np.ndarray, mean: np.ndarray, sd: np.ndarray, *, method: str = "combat"
) -> tuple[np.ndarray, np.ndarray]:
    """One site's ComBat location ``gamma`` and scale ``delta`` from the federated grand mean and pooled SD.

    The site standardises its own rows with the federation's ``mean`` and ``sd`` (pooled within-site
    SD, as ComBat uses) and estimates its batch effect exactly as
    :class:`medlens.learn.tabular.BatchHarmoniser` does for one batch: with ``method="combat"`` the
    parametric empirical-Bayes posteriors (priors across features), with ``"location-scale"`` the raw
    mean and SD of the standardised features. Harmonised values are ``(z - gamma) / delta * sd + mean``.

    Returns
    -------
    tuple of numpy.ndarray
        ``gamma`` and ``delta`` (both shape (features,)); NaN where not estimable.
    """
    from medlens.learn.tabular import HARMONISE_METHODS, _combat_posteriors

    if method not in HARMONISE_METHODS:
        raise InputError(f"harmonisation method must be one of {', '.join(HARMONISE_METHODS)}, got {method!r}")
    X = np.asarray(X, dtype=np.float64)
    ok = np.isfinite(sd) & (sd > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (X - mean) / np.where(ok, sd, 1.0)
        g_hat = np.nanmean(z, axis=0)[None]
        d_hat = np.nanvar(z, axis=0, ddof=1)[None]
    counts = np.isfinite(X).sum(axis=0)[None].astype(np.float64)
    if method == "combat":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gamma, delta2 = _combat_posteriors(z, [np.ones(len(X), bool)], counts, g_hat, d_hat, ok)
    else:
        gamma, delta2 = g_hat, d_hat
    return gamma[0], np.sqrt(delta2[0])


def apply_combat(X: np.ndarray, mean: np.ndarray, sd: np.ndarray, gamma: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Harmonise a site's rows: ``(z - gamma) / delta * sd + mean`` where everything is defined, else unchanged."""
    X = np.array(X, dtype=np.float64)
    ok = np.isfinite(sd) & (sd > 0) & np.isfinite(gamma) & np.isfinite(delta) & (delta > 0)
    z = (X[:, ok] - mean[ok]) / sd[ok]
    X[:, ok] = (z - gamma[ok]) / delta[ok] * sd[ok] + mean[ok]
    return X


def score_histograms(scores: np.ndarray, y: np.ndarray, *, bins: int = AUC_BINS) -> np.ndarray:
    """Counts of scores in ``bins`` equal bins of [0, 1], per class: shape (2, bins) (row 0 negatives)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    idx = np.minimum((s * bins).astype(int), bins - 1)
    y = np.asarray(y, dtype=int)
    out = np.zeros((2, bins))
    for c in (0, 1):
        out[c] = np.bincount(idx[y == c], minlength=bins)
    return out


def auc_from_histograms(hist: np.ndarray) -> float:
    """ROC AUC from per-class score histograms (shape (2, bins)): P(score_pos > score_neg), bin ties = 1/2.

    Equal to the rank AUC of the pooled scores when no two cases of different classes share a bin.
    NaN without both classes.
    """
    h = np.asarray(hist, dtype=np.float64)
    neg, pos = h[0], h[1]
    if neg.sum() == 0 or pos.sum() == 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
