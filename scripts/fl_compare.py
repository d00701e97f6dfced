"""Federated vs centralised vs local-only on the STS cohort split into 3 sites (non-IID by SUVmax).

Usage (from the repository root, ~5-10 min on one CPU thread)::

    nice -n 10 .venv/bin/python scripts/fl_compare.py --sites /tmp/fl-sts/sites --work /tmp/fl-sts/work \
        --out fl_compare.json [--unet]

The rounds are run *in process* with the same site code (:class:`TabularSite`, :class:`UNetSite`), the
same federated statistics (:mod:`medlens.learn.federated.stats`), the same local training
(:mod:`medlens.learn.federated.training`) and the same FedAvg arithmetic as the Flower apps, but
without Flower's transport (that is measured by ``benchmarks/fl_rounds.py``).

Radiomics: 5 site-local stratified folds (fold f of the federation = union of the sites' folds f);
the centralised models use exactly these folds on the pooled rows:

* ``central_same_model`` — the same preprocessing (mean imputation, scaler, F-test top-k) computed on
  the pooled training rows, then scikit-learn ``LogisticRegression(C=1)`` (the optimum FedAvg approaches);
* ``central_medlens_run`` — the ``medlens run`` pipeline (:func:`medlens.learn.tabular.make_pipeline`).

DP: local DP-SGD at every site for a few noise multipliers: ε (δ = 1e-5, RDP) against pooled AUC.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np


def _prep(sites, fold, k):
    from medlens.learn.federated import stats

    raw = [stats.site_moments(s.rows(fold, train=True)[0]) for s in sites]
    _, mean, _ = stats.mean_var(stats.pool_moments(raw))
    prep = {"impute_mean": np.nan_to_num(mean).tolist(), "harmonise": False}
    cls = stats.pool_moments([stats.site_moments(*s.prepared(fold, prep, train=True)) for s in sites])
    n, m, var = stats.mean_var(cls)
    sd = np.sqrt(var)
    ok = np.isfinite(sd) & (sd > 0)
    f = np.where(ok, stats.f_statistic(cls), -np.inf)
    sel = sorted(np.argsort(-f, kind="stable")[: min(k, int(ok.sum()))].tolist())
    prep.update(scale_mean=m.tolist(), scale_sd=np.where(ok, sd, 1.0).tolist(), selected=sel, n_train=int(n.max()))
    return prep


def federated_radiomics(sites, *, folds, k, rounds, steps, lr, mu=0.0, dp=None, seed=0):
    from medlens.learn.federated import stats
    from medlens.learn.federated.privacy import epsilon
    from medlens.learn.federated.training import logistic_arrays, predict_logistic, train_logistic

    hist = np.zeros((2, stats.AUC_BINS))
    site_hist = [np.zeros((2, stats.AUC_BINS)) for _ in sites]
    eps = []
    for fold in range(folds):
        prep = _prep(sites, fold, k)
        w = logistic_arrays(len(prep["selected"]))
        hist_dp = [[] for _ in sites]
        for r in range(1, rounds + 1):
            outs = []
            for i, s in enumerate(sites):
                X, y = s.model_rows(fold, prep, train=True)
                res = train_logistic(
                    w,
                    X,
                    y,
                    l2=1.0 / prep["n_train"],
                    steps=steps,
                    learning_rate=lr,
                    mu=mu,
                    dp=dp,
                    seed=seed * 1000 + r * 7 + i,
                )
                outs.append(res)
                hist_dp[i] += res.dp_history
            w = stats.weighted_average([o.arrays for o in outs], [o.n_examples for o in outs])
        if dp is not None:
            eps.append(max(epsilon(h, delta=dp.delta) for h in hist_dp))
        for i, s in enumerate(sites):
            X, y = s.model_rows(fold, prep, train=False)
            h = stats.score_histograms(predict_logistic(w, X), y)
            hist += h
            site_hist[i] += h
    return {
        "auc_pooled": stats.auc_from_histograms(hist),
        "auc_per_site": [stats.auc_from_histograms(h) for h in site_hist],
        "epsilon_max_site": float(max(eps)) if eps else None,
    }


def central_radiomics(sites, *, folds, k):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from medlens.learn.tabular import make_pipeline

    X = np.vstack([s.X for s in sites])
    y = np.concatenate([s.y for s in sites])
    fold = np.concatenate([s.fold for s in sites])
    site_of = np.concatenate([[i] * len(s.y) for i, s in enumerate(sites)])
    p_same, p_run = np.zeros(len(y)), np.zeros(len(y))
    cfg = {"harmonise": False, "n_features": k, "classifier": "logistic", "seed": 0}
    for f in range(folds):
        tr, te = fold != f, fold == f
        mean = np.nanmean(X[tr], axis=0)
        Xi = np.where(np.isfinite(X), X, np.nan_to_num(mean))
        sd = Xi[tr].std(axis=0)
        ok = sd > 0
        from sklearn.feature_selection import f_classif

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            F = np.where(ok, np.nan_to_num(f_classif(Xi[tr], y[tr])[0]), -np.inf)
        sel = sorted(np.argsort(-F, kind="stable")[:k])
        Z = (Xi[:, sel] - Xi[tr][:, sel].mean(axis=0)) / sd[sel]
        p_same[te] = LogisticRegression(C=1.0, max_iter=5000).fit(Z[tr], y[tr]).predict_proba(Z[te])[:, 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_run[te] = make_pipeline(cfg, X.shape[1]).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]

    def per_site(p):
        out = []
        for i in range(len(sites)):
            m = site_of == i
            out.append(float(roc_auc_score(y[m], p[m])) if len(set(y[m])) == 2 else float("nan"))
        return out

    return {
        "central_same_model": {"auc_pooled": float(roc_auc_score(y, p_same)), "auc_per_site": per_site(p_same)},
        "central_medlens_run": {"auc_pooled": float(roc_auc_score(y, p_run)), "auc_per_site": per_site(p_run)},
    }


def unet_comparison(sites_dir, work, *, rounds, holdout, seed=0, local=True):
    from medlens.learn.federated import stats
    from medlens.learn.federated.site import UNetSite
    from medlens.learn.federated.training import train_unet, unet_arrays, unet_dice
    from medlens.segment.unet import UNetConfig

    cfg = UNetConfig()
    names = sorted(p.name for p in Path(sites_dir).iterdir() if p.is_dir())
    sites = [UNetSite(Path(sites_dir) / n, Path(work) / n, holdout=holdout, seed=seed) for n in names]
    test = [c for s in sites for c in s.test_cases]
    out = {"n_test": len(test), "n_train": [len(s.train_cases) for s in sites], "rounds_or_epochs": rounds}
    t = time.perf_counter()
    w = unet_arrays(cfg, seed=seed)
    for r in range(rounds):
        res = [train_unet(w, s.train_cases, cfg, epochs=1, seed=seed + 100 * r + i) for i, s in enumerate(sites)]
        w = stats.weighted_average([x.arrays for x in res], [x.n_examples for x in res])
    out["federated_fedavg"] = float(np.mean(unet_dice(w, test, cfg)))
    out["federated_s"] = time.perf_counter() - t
    print("federated", out["federated_fedavg"], flush=True)
    t = time.perf_counter()
    pooled = [c for s in sites for c in s.train_cases]
    wc = train_unet(unet_arrays(cfg, seed=seed), pooled, cfg, epochs=rounds, seed=seed).arrays
    out["central"] = float(np.mean(unet_dice(wc, test, cfg)))
    out["central_s"] = time.perf_counter() - t
    print("central", out["central"], flush=True)
    local = []
    for i, s in enumerate(sites if local else []):
        wl = train_unet(unet_arrays(cfg, seed=seed), s.train_cases, cfg, epochs=rounds, seed=seed + i).arrays
        local.append(float(np.mean(unet_dice(wl, test, cfg))))
    out["local_only"] = local
    out["local_only_mean"] = float(np.mean(local)) if local else None
    print("local", local, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument(
        "--settings", default=str(Path(__file__).resolve().parents[1] / "examples" / "sts-pet-radiomics.yaml")
    )
    ap.add_argument("--out", default="fl_compare.json")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--unet", action="store_true")
    ap.add_argument("--unet-rounds", type=int, default=10)
    ap.add_argument("--noise", default="0.8,1.5,3.0")
    ap.add_argument("--unet-only", action="store_true", help="skip the radiomics part")
    ap.add_argument("--skip-local", action="store_true", help="U-Net: skip the local-only models")
    a = ap.parse_args(argv)

    import yaml

    from medlens.learn.federated.site import TabularSite
    from medlens.learn.federated.training import DPSettings

    if a.unet_only:
        res_u = {"unet": unet_comparison(a.sites, a.work, rounds=a.unet_rounds, holdout=3, local=not a.skip_local)}
        Path(a.out).write_text(json.dumps(res_u, indent=1, default=float))
        print(json.dumps(res_u, indent=1, default=float))
        return 0
    settings = yaml.safe_load(Path(a.settings).read_text())
    names = sorted(p.name for p in Path(a.sites).iterdir() if p.is_dir())
    sites = [TabularSite(Path(a.sites) / n, Path(a.work) / n, settings=settings, folds=5, seed=0) for n in names]
    print({n: (len(s.y), int(s.y.sum())) for n, s in zip(names, sites)}, flush=True)
    res: dict = {"sites": names, "n_cases": [len(s.y) for s in sites], "n_positive": [int(s.y.sum()) for s in sites]}
    res.update(central_radiomics(sites, folds=5, k=5))
    t = time.perf_counter()
    res["federated_fedavg"] = federated_radiomics(sites, folds=5, k=5, rounds=a.rounds, steps=a.steps, lr=0.5)
    res["federated_fedavg"]["wall_s"] = time.perf_counter() - t
    res["federated_fedprox"] = federated_radiomics(sites, folds=5, k=5, rounds=a.rounds, steps=a.steps, lr=0.5, mu=0.1)
    print(json.dumps(res, indent=1, default=float), flush=True)
    table = []
    for nm in [float(x) for x in a.noise.split(",")]:
        dp = DPSettings(noise_multiplier=nm, max_grad_norm=1.0, batch_size=4, delta=1e-5)
        r = federated_radiomics(sites, folds=5, k=5, rounds=a.rounds, steps=1, lr=0.5, dp=dp)
        table.append({"noise_multiplier": nm, "epsilon": r["epsilon_max_site"], "auc_pooled": r["auc_pooled"]})
        print(table[-1], flush=True)
    res["dp_table_radiomics"] = table
    if a.unet:
        res["unet"] = unet_comparison(a.sites, a.work, rounds=a.unet_rounds, holdout=3)
    Path(a.out).write_text(json.dumps(res, indent=1, default=float))
    print(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
