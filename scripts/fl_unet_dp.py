"""ε -> Dice of the federated U-Net: `medlens fl simulate` (the real Flower apps) per privacy setting.

Usage (from the repository root; the sites come from ``medlens fl split``)::

    medlens fl split ../shared/data/sts/cohort.csv --out /tmp/fl-sts/sites --sites 3
    nice -n 10 python scripts/fl_unet_dp.py --sites /tmp/fl-sts/sites --out /tmp/fl-sts/unet-dp \
        --rounds 10 --noise none,0.5,1.0,2.0 [--fedprox 0.01]

Every setting is one ``medlens fl simulate`` of the shipped 2D U-Net over the site folders (3 held-out
patients per site, never trained on), FedAvg, 1 local epoch per round, Adam lr 2e-3, batch 32; with
DP, Opacus DP-SGD at every site (per-sample clipping 1.0, Poisson batches of expected size 32, the
given noise multiplier), ε at δ = 1e-5 (RDP) per site, the privacy unit being one 2D slice. Prints a
Markdown table and writes ``<out>/table.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _config(sites: Path, out: Path, *, rounds: int, noise: str, mu: float) -> dict:
    names = sorted(p.name for p in sites.iterdir() if p.is_dir())
    privacy: dict = {"mode": "none"}
    if noise != "none":
        privacy = {"mode": "local", "noise_multiplier": float(noise), "max_grad_norm": 1.0, "batch_size": 32}
        privacy["delta"] = 1e-5
    return {
        "name": f"unet-dp-{noise}-mu{mu:g}",
        "task": "unet",
        "rounds": rounds,
        "resume": False,
        "seed": 0,
        "strategy": "fedprox" if mu else "fedavg",
        "proximal_mu": mu,
        "min_sites": len(names),
        "round_timeout_s": 900,
        "sites": [{"id": n, "data": str(sites / n)} for n in names],
        "privacy": privacy,
        "unet": {"local_epochs": 1, "learning_rate": 2e-3, "batch_size": 32, "holdout": 3},
        "output": {"dir": str(out)},
    }


def threshold_free(run_dir: Path, sites: Path, *, holdout: int = 3, seed: int = 0) -> dict:
    """Voxel AUC (GTV vs the rest) and soft Dice of a run's final model on the sites' held-out patients.

    The same test patients as the federated evaluation (:class:`UNetSite`, same ``holdout`` and
    ``seed``); computed here from ``<run>/model`` because a Dice at the 0.5 threshold hides a model whose
    probabilities are ranked right but stay below the threshold.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from medlens.learn.federated.site import UNetSite
    from medlens.segment.unet import load_model, predict_probability

    net, cfg = load_model(run_dir / "model")
    probs, truth = [], []
    for n in sorted(p.name for p in sites.iterdir() if p.is_dir()):
        for c in UNetSite(sites / n, run_dir / "site-work" / n, holdout=holdout, seed=seed).test_cases:
            probs.append(predict_probability(c.image, net, cfg).ravel())
            truth.append(np.asarray(c.mask.array, bool).ravel())
    p, g = np.concatenate(probs), np.concatenate(truth)
    return {
        "voxel_auc": float(roc_auc_score(g, p)),
        "soft_dice": float(2 * (p * g).sum() / (p.sum() + g.sum())),
        "mean_p_in_gtv": float(p[g].mean()),
        "mean_p_outside": float(p[~g].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--noise", default="none,0.5,1.0,2.0", help="comma-separated noise multipliers; none: no DP, 0: clipping only"
    )
    ap.add_argument("--fedprox", type=float, default=0.0, help="proximal mu (0: FedAvg)")
    ap.add_argument(
        "--resume-to", type=int, default=0, help="continue the finished runs of --noise to this many rounds (--resume)"
    )
    ap.add_argument("--evaluate-only", action="store_true", help="only recompute the threshold-free metrics")
    a = ap.parse_args(argv)

    medlens = str(Path(sys.executable).parent / "medlens")
    a.out.mkdir(parents=True, exist_ok=True)
    table_path = a.out / "table.json"
    rows = json.loads(table_path.read_text()) if table_path.is_file() else []
    for noise in [] if a.evaluate_only else a.noise.split(","):
        base = f"noise-{noise}" + (f"-mu{a.fedprox:g}" if a.fedprox else "")
        run_dir = a.out / base
        rounds = a.resume_to or a.rounds
        tag = f"{base}-resumed-to-{rounds}" if a.resume_to else base
        cfg_path = a.out / f"{tag}.yaml"
        cfg = _config(a.sites, run_dir, rounds=rounds, noise=noise, mu=a.fedprox)
        cfg["resume"] = bool(a.resume_to)  # the training identity is unchanged: the checkpoints are accepted
        cfg_path.write_text(yaml.safe_dump(cfg))
        t0 = time.perf_counter()
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(a.out / f"{tag}.log", "w") as log:
            rc = subprocess.run(
                [medlens, "fl", "simulate", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        if rc.returncode != 0:
            print(f"{tag}: medlens fl simulate failed ({rc.returncode}); see {a.out / (tag + '.log')}", flush=True)
            return 1
        res = json.loads((run_dir / "result.json").read_text())
        eps = res["epsilon"].get("per_site", {})
        row = {
            "setting": tag,
            "noise_multiplier": None if noise == "none" else float(noise),
            "proximal_mu": a.fedprox,
            "rounds": rounds,
            "dir": base,
            "first_round": res["first_round"],
            "epsilon_per_site": eps,
            "epsilon_max": max(eps.values()) if eps else None,
            "dice_pooled": res["dice_pooled"],
            "dice_per_site": res["dice_per_site"],
            "n_test": res["evaluations"][-1]["n_test"],
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows = [r for r in rows if r["setting"] != tag] + [row]
        table_path.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    for r in rows:
        if "voxel_auc" not in r or a.evaluate_only:
            r.update(threshold_free(a.out / r.get("dir", r["setting"]), a.sites))
    table_path.write_text(json.dumps(rows, indent=1))
    print(
        "| setting | rounds | ε (δ=1e-5, max site) | test Dice | site1 | site2 | site3 "
        "| voxel AUC | soft Dice | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        eps = "—" if r["epsilon_max"] is None else f"{r['epsilon_max']:.1f}"
        if r["noise_multiplier"] == 0:
            eps = "∞ (clipping only)"
        sites = " | ".join(f"{v:.3f}" for _, v in sorted(r["dice_per_site"].items()))
        print(
            f"| {r['setting']} | {r['rounds']} | {eps} | {r['dice_pooled']:.3f} | {sites} | {r['voxel_auc']:.3f} "
            f"| {r['soft_dice']:.3f} | {r['wall_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
