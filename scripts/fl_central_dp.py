"""Central DP (site level) noise multiplier -> ε -> pooled AUC, and SecAgg+ on vs off, on the STS radiomics task.

Usage (from the repository root; the sites come from ``medlens fl split``)::

    medlens fl split ../shared/data/sts/cohort.csv --out /tmp/fl-sts/sites --sites 3
    nice -n 10 python scripts/fl_central_dp.py --sites /tmp/fl-sts/sites --out /tmp/fl-sts/central-dp \
        --noise none,0,0.5,1,2,4 [--clipping client|server] [--clipping-norm 1.0] [--secagg]

Every setting is one ``medlens fl simulate`` (the real Flower apps under the Simulation Engine) of the
radiomics + clinical logistic model of docs/federated.md (5 site-local folds, 30 rounds x 5 local
steps, 5 features, pooled out-of-fold AUC). ``none``: no DP; a number: ``privacy.mode: central``
with that noise multiplier (0: clipping only), the sites' updates clipped to ``--clipping-norm``
(``--clipping client``: at the site, Flower's ``fixedclipping_mod``; ``server``: by
``DifferentialPrivacyServerSideFixedClipping``), Gaussian noise ``sigma * clip / n_sites`` added to the
uniform average each round. ε at δ = 1e-5 by RDP with sampling rate 1 per round (every site takes part
in every round), 30 rounds per fold model; the protected unit is a whole site. ``--secagg`` turns on
SecAgg+ (defaults of ``secure_aggregation``). The sites' feature caches are shared by all settings
(``<out>/site-work``). Prints a Markdown table and writes ``<out>/table.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _config(sites: Path, out: Path, *, noise: str, clipping: str, clip: float, secagg: bool, rounds: int) -> dict:
    names = sorted(p.name for p in sites.iterdir() if p.is_dir())
    privacy: dict = {"mode": "none"}
    if noise != "none":
        privacy = {
            "mode": "central",
            "central_clipping": clipping,
            "noise_multiplier": float(noise),
            "clipping_norm": clip,
            "delta": 1e-5,
        }
    repo = Path(__file__).resolve().parents[1]
    return {
        "name": f"central-dp-{noise}-{clipping}{'-secagg' if secagg else ''}",
        "task": "radiomics",
        "rounds": rounds,
        "resume": False,
        "seed": 0,
        "min_sites": len(names),
        "round_timeout_s": 600,
        "sites": [{"id": n, "data": str(sites / n)} for n in names],
        "privacy": privacy,
        "secure_aggregation": {"enabled": secagg},
        "radiomics": {
            "settings": str(repo / "examples" / "sts-pet-radiomics.yaml"),
            "n_features": 5,
            "folds": 5,
            "local_steps": 5,
            "learning_rate": 0.5,
        },
        "output": {"dir": str(out)},
    }


def main(argv: list[str] | None = None) -> int:
    import yaml

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--noise", default="none,0,0.5,1,2,4", help="comma-separated; none: no DP, 0: clipping only")
    ap.add_argument("--clipping", choices=("client", "server"), default="client")
    ap.add_argument("--clipping-norm", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--secagg", action="store_true", help="SecAgg+ on (secure_aggregation.enabled)")
    a = ap.parse_args(argv)

    medlens = str(Path(sys.executable).parent / "medlens")
    a.out.mkdir(parents=True, exist_ok=True)
    cache = a.out / "site-work"
    cache.mkdir(exist_ok=True)
    table_path = a.out / "table.json"
    rows = json.loads(table_path.read_text()) if table_path.is_file() else []
    for noise in a.noise.split(","):
        clipping = a.clipping if noise != "none" else "-"
        tag = f"noise-{noise}" + (f"-{clipping}-clip{a.clipping_norm:g}" if noise != "none" else "")
        tag += "-secagg" if a.secagg else ""
        run_dir = a.out / tag
        run_dir.mkdir(exist_ok=True)
        if not (run_dir / "site-work").exists():
            (run_dir / "site-work").symlink_to(cache.resolve(), target_is_directory=True)
        for stale in ("audit.jsonl", "folds.json", "result.json"):
            (run_dir / stale).unlink(missing_ok=True)
        cfg = _config(
            a.sites, run_dir, noise=noise, clipping=a.clipping, clip=a.clipping_norm, secagg=a.secagg, rounds=a.rounds
        )
        cfg_path = a.out / f"{tag}.yaml"
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
        rounds = [
            json.loads(line)["details"]
            for line in (run_dir / "audit.jsonl").read_text().splitlines()
            if json.loads(line)["action"] == "fl.round"
        ]
        row = {
            "setting": tag,
            "noise_multiplier": None if noise == "none" else float(noise),
            "clipping": clipping,
            "clipping_norm": a.clipping_norm if noise != "none" else None,
            "secagg": a.secagg,
            "rounds": a.rounds,
            "epsilon": res["epsilon"].get("epsilon"),
            "auc_pooled": res["auc_pooled"],
            "auc_per_site": res["auc_per_site"],
            "bytes_per_round": statistics.median(r["bytes_sent"] + r["bytes_received"] for r in rounds),
            "s_per_round": statistics.median(r["wall_s"] for r in rounds),
            "n_rounds_logged": len(rounds),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows = [r for r in rows if r["setting"] != tag] + [row]
        table_path.write_text(json.dumps(rows, indent=1))
        print(json.dumps(row), flush=True)
    print("| setting | σ | ε (δ=1e-5, site level) | pooled AUC | site1 / site2 / site3 | bytes/round | s/round |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        eps = "—" if r["noise_multiplier"] is None else ("∞" if r["noise_multiplier"] == 0 else f"{r['epsilon']:.1f}")
        sigma = "—" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        sites = " / ".join(f"{v:.3f}" for _, v in sorted(r["auc_per_site"].items()))
        print(
            f"| {r['setting']} | {sigma} | {eps} | {r['auc_pooled']:.3f} | {sites} | {r['bytes_per_round']:,.0f} "
            f"| {r['s_per_round']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
