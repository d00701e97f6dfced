"""One self-contained HTML report of a run (plots embedded as base64 PNG, no external files)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_write_text
from medlens.core.audit import AuditLog
from medlens.pipeline.config import RunConfig

__all__ = ["write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{border-bottom:2px solid #345}h2{margin-top:1.6em;color:#345}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#eef}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}
.err{color:#a00}
img{max-width:100%}.grid{display:flex;flex-wrap:wrap;gap:8px}
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def _table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>(none)</p>"
    cols = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.4g}"
            cells.append(f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _examples(out_dir: Path, results: list[dict[str, Any]], n: int = 6) -> str:
    import matplotlib.pyplot as plt

    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return "<p>(no finished case)</p>"
    picks = [ok[i] for i in np.linspace(0, len(ok) - 1, min(n, len(ok))).astype(int)]
    fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.9), squeeze=False)
    for ax, r in zip(axes[0], picks):
        p = out_dir / "cases" / f"{r['case_id']}__{r['key']}.npz"
        ax.axis("off")
        if not p.exists():
            continue
        with np.load(p) as z:
            im, m = z["image"], z["mask"]
        lo, hi = np.percentile(im, [1, 99])
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        if m.any():
            ax.contour(m.astype(float), levels=[0.5], colors="r", linewidths=1)
        y = r["case"].get("outcome")
        ax.set_title(f"{r['case_id']}" + (f" (y={y:g})" if y is not None else ""), fontsize=9)
    return _png(fig)


def _cohort_plots(results: list[dict[str, Any]]) -> str:
    import matplotlib.pyplot as plt

    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return ""
    vols = np.array([r["qa"]["mask_volume_ml"] for r in ok])
    ys = [r["case"].get("outcome") for r in ok]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    if all(y is not None for y in ys):
        ys_a = np.array(ys)
        axes[0].hist([vols[ys_a == 0], vols[ys_a == 1]], bins=12, label=["outcome 0", "outcome 1"], stacked=True)
        axes[0].legend(fontsize=8)
    else:
        axes[0].hist(vols, bins=12)
    axes[0].set_xlabel("mask volume (ml)")
    axes[0].set_ylabel("cases")
    axes[0].set_title("ROI volumes", fontsize=10)
    stages = ["read", "preprocess", "mask", "features"]
    t = np.array([[r.get("timings_s", {}).get(s, 0.0) for s in stages] for r in ok])
    axes[1].bar(stages, t.mean(axis=0), yerr=t.std(axis=0))
    axes[1].set_ylabel("seconds per case")
    axes[1].set_title("time per stage (mean, SD)", fontsize=10)
    return _png(fig)


def _model_plots(metrics: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    if "roc" not in metrics:
        return ""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    lo, hi = metrics["auc_ci95"]
    axes[0].plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], lw=2)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].set_title(f"ROC (out-of-fold): AUC {metrics['auc']:.3f} [{lo:.3f}, {hi:.3f}]", fontsize=10)
    axes[0].set_xlabel("1 - specificity")
    axes[0].set_ylabel("sensitivity")
    cal = metrics["calibration"]
    axes[1].plot(cal["mean_predicted"], cal["fraction_positive"], "o-")
    axes[1].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[1].set_title(f"calibration (Brier {metrics['brier']:.3f})", fontsize=10)
    axes[1].set_xlabel("mean predicted probability")
    axes[1].set_ylabel("observed fraction positive")
    imp = metrics.get("importance", [])[:15]
    if imp:
        axes[2].barh([d["feature"] for d in imp][::-1], [d["importance"] for d in imp][::-1])
        axes[2].tick_params(axis="y", labelsize=7)
    axes[2].set_title(f"feature importance ({metrics.get('importance_kind', '')})", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _km_plot(surv: dict[str, Any]) -> str:
    """Kaplan-Meier curves of the cases above / below the median out-of-fold risk."""
    import matplotlib.pyplot as plt

    from medlens.learn.tabular import kaplan_meier

    t, e, r = (np.asarray(surv[k], dtype=float) for k in ("time", "event", "risk"))
    high = r > np.median(r)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sel, label in ((~high, "low risk (out-of-fold)"), (high, "high risk (out-of-fold)")):
        if sel.any():
            x, y = kaplan_meier(t[sel], e[sel])
            ax.step(x, y, where="post", label=f"{label}, n={int(sel.sum())}")
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Kaplan-Meier by median out-of-fold risk", fontsize=10)
    return _png(fig)


def _modalities_section(results: list[dict[str, Any]]) -> str:
    """Per-modality status counts, units, ROI and preprocessing as applied (multimodal runs)."""
    ok = [r for r in results if r["status"] == "ok" and r.get("modalities")]
    if not ok:
        return ""
    names = list(ok[0]["modalities"])
    rows = []
    for n in names:
        present = [r["modalities"][n] for r in ok if r["modalities"].get(n, {}).get("status") == "ok"]
        first = present[0] if present else {}
        vols = [m["qa"]["mask_volume_ml"] for m in present]
        rows.append(
            {
                "modality": n,
                "cases with the series": f"{len(present)} / {len(ok)}",
                "DICOM modality": first.get("lineage", {}).get("modality", ""),
                "units": first.get("lineage", {}).get("units", ""),
                "ROI": first.get("roi", ""),
                "ROI volume ml (median)": float(np.median(vols)) if vols else "",
                "preprocessing (first case, as applied)": "; ".join(first.get("qa", {}).get("history", [])) or "none",
            }
        )
    return (
        "<h2>Modalities</h2><p>One row per case; features and lineage columns are prefixed with the modality "
        "name (<code>pet_stat_max</code>, <code>mr_series_uid</code>). A case without a series of an optional "
        "modality has empty columns for it, and a model uses only features present in every case.</p>" + _table(rows)
    )


def _fusion_section(fusion: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    if "error" in fusion:
        return f"<h2>Fusion variants</h2><p class='err'>Not compared: {html.escape(fusion['error'])}</p>"
    rows = []
    for v in fusion["variants"]:
        lo, hi = v["auc_ci95"]
        vs = v.get("vs_first")
        rows.append(
            {
                "variant": v["name"],
                "groups": "+".join(v["groups"]),
                "candidate features": v["n_features"],
                "AUC (nested CV)": v["auc"],
                "95% CI": f"{lo:.3f} - {hi:.3f}",
                "AUC per repeat": f"{v['auc_repeats_mean']:.3f} ± {v['auc_repeats_sd']:.3f}",
                "Brier": v["brier"],
                "calibration slope": v["calibration_slope"],
                "calibration intercept": v["calibration_intercept"],
                f"ΔAUC vs {vs['baseline']} [95% CI]" if vs else "ΔAUC": (
                    f"{vs['difference']:+.3f} [{vs['ci95_low']:+.3f}, {vs['ci95_high']:+.3f}]" if vs else ""
                ),
                "most chosen (k, C)": next(iter(v["chosen"]), ""),
            }
        )
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for v in fusion["variants"]:
        dc = v["decision_curve"]
        axes[0].plot(dc["threshold"], dc["model"], "o-", ms=3, label=v["name"])
        cal = v["calibration"]
        axes[1].plot(cal["mean_predicted"], cal["fraction_positive"], "o-", label=v["name"])
    dc = fusion["variants"][0]["decision_curve"]
    axes[0].plot(dc["threshold"], dc["treat_all"], "k--", lw=0.8, label="treat all")
    axes[0].axhline(0.0, color="k", lw=0.8, label="treat none")
    axes[0].set_ylim(-0.1, max(0.1, max(max(v["decision_curve"]["model"]) for v in fusion["variants"]) + 0.05))
    axes[0].set_xlabel("threshold probability")
    axes[0].set_ylabel("net benefit")
    axes[0].set_title("decision curves (out-of-fold, nested CV)", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[1].set_xlabel("mean predicted probability")
    axes[1].set_ylabel("observed fraction positive")
    axes[1].set_title("calibration (quantile bins)", fontsize=10)
    axes[1].legend(fontsize=7)
    v0 = fusion["variants"][0]
    return (
        "<h2>Fusion variants (nested cross-validation)</h2>"
        f"<p>{v0['folds']}-fold x {v0['repeats']} repeats outer CV; in each outer training fold a "
        f"{v0['inner_folds']}-fold inner CV picks the number of selected features k and the L2 strength C. "
        "Every variant uses the same outer folds; ΔAUC is a paired bootstrap over the same cases. "
        "Calibration slope &lt; 1: predictions too extreme; &gt; 1: too timid.</p>" + _table(rows, cols) + _png(fig)
    )


def write_report(
    out_dir: Path,
    *,
    config: RunConfig,
    results: list[dict[str, Any]],
    metrics: dict[str, Any],
    run_info: dict[str, Any],
) -> Path:
    """Write ``<out_dir>/report.html`` and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import yaml

    ok = [r for r in results if r["status"] == "ok"]
    failed = [r for r in results if r["status"] != "ok"]
    parts = [
        f"<html><head><meta charset='utf-8'><title>MedLens run {html.escape(run_info['run_id'])}</title>"
        f"<style>{_CSS}</style></head><body>"
    ]
    parts.append(f"<h1>MedLens run: {html.escape(config.name)}</h1>")
    parts.append(
        _table(
            [
                {
                    k: run_info[k]
                    for k in (
                        "run_id",
                        "medlens_version",
                        "settings_hash",
                        "n_cases",
                        "n_ok",
                        "n_failed",
                        "n_skipped",
                        "mode",
                        "finished_at",
                    )
                }
            ]
        )
    )
    parts.append("<h2>Cohort and QA</h2>")
    ys = [r["case"].get("outcome") for r in ok]
    if ys and all(y is not None for y in ys):
        parts.append(
            f"<p>{len(ok)} cases with features; outcome 1: {int(sum(ys))}, outcome 0: {len(ys) - int(sum(ys))}.</p>"
        )
    parts.append(_cohort_plots(results))
    qa_rows = [
        {
            "case": r["case_id"],
            "roi": r.get("roi", ""),
            "modality": r["lineage"].get("modality", ""),
            "shape": "x".join(map(str, r["qa"]["shape"])),
            "spacing_mm": ", ".join(f"{s:g}" for s in r["qa"]["spacing_mm"]),
            "mask_voxels": r["qa"]["mask_voxels"],
            "volume_ml": r["qa"]["mask_volume_ml"],
            "roi_min": r["qa"]["roi_min"],
            "roi_max": r["qa"]["roi_max"],
            "warnings": "; ".join(r.get("warnings", []))[:300],
        }
        for r in ok
    ]
    parts.append(f"<details><summary>QA per case ({len(qa_rows)})</summary>{_table(qa_rows)}</details>")
    if failed:
        parts.append("<h3 class='err'>Failed cases</h3>")
        parts.append(_table([{"case": r["case_id"], "error": r["error"]} for r in failed]))
    parts.append(_modalities_section(results))
    parts.append("<h2>Example slices with mask outlines</h2>")
    parts.append(_examples(out_dir, results))
    parts.append("<h2>Model (repeated stratified cross-validation)</h2>")
    if "auc" in metrics:
        lo, hi = metrics["auc_ci95"]
        rows = [
            {
                "classifier": metrics["classifier"],
                "folds x repeats": f"{metrics['folds']} x {metrics['repeats']}",
                "cases": metrics["n_cases"],
                "positives": metrics["n_positive"],
                "AUC (OOF)": metrics["auc"],
                "95% CI (bootstrap)": f"{lo:.3f} - {hi:.3f}",
                "AUC per repeat": f"{metrics['auc_repeats_mean']:.3f} ± {metrics['auc_repeats_sd']:.3f}",
                "permutation p": metrics.get("permutation_p", "not run"),
                "Brier": metrics["brier"],
                "features kept / candidates": f"{metrics['n_features_selected']} / {metrics['n_candidate_features']}",
            }
        ]
        parts.append(_table(rows))
        parts.append(
            "<p>Imputation, scaling, feature selection"
            + (f", harmonisation ({metrics['harmonised']})" if metrics.get("harmonised") else "")
            + " and the classifier are refitted inside every training fold; the AUC is computed on "
            "out-of-fold probabilities averaged over repeats.</p>"
        )
        parts.append(_model_plots(metrics))
        parts.append(
            f"<details><summary>Feature importance (final model on all cases)</summary>"
            f"{_table(metrics.get('importance', []))}</details>"
        )
    if "fusion" in metrics:
        parts.append(_fusion_section(metrics["fusion"]))
    if "survival_oof" in metrics:
        parts.append(
            "<h3>Survival</h3><p>Kaplan-Meier curves of the cases above and below the median "
            "out-of-fold risk of the ridge Cox model.</p>"
        )
        parts.append(_km_plot(metrics["survival_oof"]))
    if "c_index" in metrics:
        parts.append(
            f"<p>Survival: Harrell's C-index (out-of-fold, ridge Cox) {metrics['c_index']:.3f} "
            f"± {metrics['c_index_repeats_sd']:.3f} over repeats; {metrics['n_events']} events.</p>"
        )
    if "error" in metrics:
        parts.append(f"<p class='err'>No model: {html.escape(metrics['error'])}</p>")
    if not metrics:
        parts.append("<p>No outcome configured: no model.</p>")
    parts.append("<h2>Settings</h2>")
    parts.append(f"<pre>{html.escape(yaml.safe_dump(config.raw, sort_keys=False))}</pre>")
    parts.append("<h2>Audit log of this run</h2>")
    audit_path = out_dir / "audit.jsonl"
    entries = AuditLog(audit_path).entries() if audit_path.exists() else []
    parts.append(
        _table(
            [
                {
                    "time": e.get("time", e.get("timestamp", "")),
                    "action": e.get("action", ""),
                    "details": json.dumps(e.get("details"), default=str)[:300],
                    "hash": str(e.get("hash", ""))[:12],
                }
                for e in entries
            ]
        )
    )
    parts.append("</body></html>")
    target = out_dir / "report.html"
    atomic_write_text(target, "\n".join(parts))
    target.chmod(0o644)  # a report is meant to be shared (the atomic temporary file is created 0600)
    return target
