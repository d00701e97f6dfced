"""The model-variant table of a multimodal run, next to single-feature sanity checks and the published figure.

Usage (after ``medlens run examples/sts-multimodal.yaml --data ../shared/data/sts --out RUN``)::

    .venv/bin/python benchmarks/multimodal_models.py --run RUN

Prints, as Markdown: the nested-CV table of ``model.variants`` from ``RUN/metrics.json`` (AUC with bootstrap
95 % CI, per-repeat AUC, Brier, calibration intercept/slope, paired ΔAUC against the first variant, net
benefit at 3 thresholds), the main model's repeated-CV AUC, and the AUC of single features without any fitting
(SUVmax, tumour volume on PET and MR, age), which bound what an honest model of these 51 patients can reach.
The published PET+MR texture model of this cohort (Vallières et al., Phys Med Biol 2015) reported AUC 0.984 from a
bootstrap (.632+) estimate with feature selection on the same data; it is quoted, not recomputed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

VARIANTS = {"pet": ["pet"], "mr": ["mr"], "pet+mr": ["pet", "mr"], "pet+mr+clinical": ["pet", "mr", "clinical"]}


def recompute(run: Path, *, repeats: int) -> dict:
    """The variants of examples/sts-multimodal.yaml by nested CV on the run's feature table (same as the run)."""
    from medlens.learn.fusion import compare_variants
    from medlens.pipeline.store import feature_groups, read_features

    df = read_features(run)
    df = df[df.status == "ok"].sort_values("case_id")
    groups = feature_groups(df)
    diag = ("img_dim_", "vox_dim_", "mean_int_", "min_int_", "max_int_", "int_mask_", "morph_mask_", "diag_")
    cols, gs = [], []
    for g in ("pet", "mr"):
        for c in groups[g]:
            x = df[c].to_numpy(dtype=float)
            if not c.split("_", 1)[1].startswith(diag) and np.isfinite(x).all():
                cols.append(c)
                gs.append(g)
    clin = {"clin_dicom_age": df["clin_dicom_age"], "clin_dicom_sex": (df["clin_dicom_sex"] == "M").astype(float)}
    clin["clin_dicom_bmi"] = df["clin_dicom_bmi"]
    X = np.column_stack([df[c].to_numpy(dtype=float) for c in cols] + [v.to_numpy(dtype=float) for v in clin.values()])
    names = cols + list(clin)
    gs += ["clinical"] * len(clin)
    y = df["outcome"].to_numpy(dtype=int)
    return compare_variants(X, y, names=names, groups=gs, variants=VARIANTS, folds=5, repeats=repeats, n_bootstrap=2000)


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from medlens.pipeline.store import read_features

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument(
        "--recompute",
        type=int,
        default=0,
        metavar="REPEATS",
        help="compare the variants again from the feature store with this many outer repeats (5 folds)",
    )
    args = ap.parse_args()
    metrics = json.loads((args.run / "metrics.json").read_text()) if (args.run / "metrics.json").exists() else {}
    if args.recompute:
        metrics["fusion"] = recompute(args.run, repeats=args.recompute)
    fusion = metrics.get("fusion")
    if not fusion or "variants" not in fusion:
        raise SystemExit(f"{args.run}: metrics.json has no fusion variants (set model.variants in the config)")
    v0 = fusion["variants"][0]
    print(
        f"nested CV: {v0['folds']}-fold x {v0['repeats']} repeats outer, {v0['inner_folds']}-fold inner "
        f"(k in 1,2,3,5,10; C in 0.01,0.1,1); {v0['n_cases']} patients, {v0['n_positive']} with lung metastasis\n"
    )
    print(
        "| variant | candidate features | AUC | 95 % CI | AUC per repeat | Brier | calibration intercept / slope "
        "| ΔAUC vs first [95 % CI] | net benefit at 0.2 / 0.3 / 0.4 (treat all) | most chosen |"
    )
    print("|" + "---|" * 10)
    for v in fusion["variants"]:
        dc = v["decision_curve"]
        nb = {round(t, 2): (m, a) for t, m, a in zip(dc["threshold"], dc["model"], dc["treat_all"])}
        vs = v.get("vs_first")
        delta = f"{vs['difference']:+.3f} [{vs['ci95_low']:+.3f}, {vs['ci95_high']:+.3f}]" if vs else "(baseline)"
        nbs = " / ".join(f"{nb[t][0]:.3f} ({nb[t][1]:.3f})" for t in (0.2, 0.3, 0.4))
        print(
            f"| {v['name']} | {v['n_features']} | {v['auc']:.3f} | {v['auc_ci95'][0]:.3f}-{v['auc_ci95'][1]:.3f} | "
            f"{v['auc_repeats_mean']:.3f} ± {v['auc_repeats_sd']:.3f} | {v['brier']:.3f} | "
            f"{v['calibration_intercept']:+.2f} / {v['calibration_slope']:.2f} | {delta} | {nbs} | "
            f"{next(iter(v['chosen']))} |"
        )
    if "auc" in metrics:
        lo, hi = metrics["auc_ci95"]
        print(
            f"\nmain model (all groups, SelectKBest k={metrics['n_features_selected']} of "
            f"{metrics['n_candidate_features']}, {metrics['folds']}x{metrics['repeats']} CV, not nested): "
            f"AUC {metrics['auc']:.3f} ({lo:.3f}-{hi:.3f}), "
            f"permutation p = {metrics.get('permutation_p', float('nan')):.3g}"
        )
    df = read_features(args.run)
    df = df[df.status == "ok"]
    y = df["outcome"].to_numpy(dtype=int)
    print("\n| single feature, no fitting | AUC |\n|---|---|")
    for col in ("pet_stat_max", "pet_morph_volume", "mr_morph_volume", "mr_stat_mean", "clin_dicom_age"):
        if col in df.columns:
            x = df[col].to_numpy(dtype=float)
            ok = np.isfinite(x)
            print(f"| {col} | {roc_auc_score(y[ok], x[ok]):.3f} |")


if __name__ == "__main__":
    main()
