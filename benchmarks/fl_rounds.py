"""Time and bytes per federated round: 3 real site processes (SuperLink + SuperNodes) vs Flower's simulation.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/fl_rounds.py --sts ../shared/data/sts --patients 12 --rounds 4 \
        --port 19160

The cohort's first ``--patients`` patients are split into 3 sites by SUVmax; the federated radiomics
model (2 folds + the final model, ``--rounds`` rounds each) runs once on 127.0.0.1 with one
``flower-supernode`` process per site and once under ``flwr.simulation`` (Ray, 1 CPU per site). The
figures come from the run's audit log (``fl.round`` entries): wall time per round at the server and
bytes sent/received per round. Features are cached in the sites' work folders before both runs.

``--secagg on`` runs the same with SecAgg+ (``secure_aggregation.enabled``; four protocol exchanges per
round), ``--secagg both`` each engine without and with it; ``--engines`` picks the engines.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rounds(path: Path) -> list[dict]:
    from medlens.core.audit import AuditLog

    return [e["details"] for e in AuditLog(path).entries() if e["action"] == "fl.round"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sts", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "sts"))
    ap.add_argument("--patients", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--port", type=int, default=19160)
    ap.add_argument("--secagg", choices=("off", "on", "both"), default="off", help="SecAgg+ off, on, or both")
    ap.add_argument("--engines", default="deploy,sim", help="comma-separated: deploy (processes), sim (Ray)")
    a = ap.parse_args(argv)

    import yaml

    from medlens.learn.federated.site import TabularSite
    from medlens.learn.federated.sites import split_cohort

    root = Path(tempfile.mkdtemp(prefix="mlfl"))
    repo = Path(__file__).resolve().parents[1]
    settings_path = repo / "examples" / "sts-pet-radiomics.yaml"
    ids = [f"STS_{i:03d}" for i in range(1, a.patients + 1)]
    split_cohort(Path(a.sts) / "cohort.csv", root / "sites", n_sites=3, patients=ids)
    settings = yaml.safe_load(settings_path.read_text())
    work = root / "work"
    for i in (1, 2, 3):
        TabularSite(root / "sites" / f"site{i}", work / f"site{i}", settings=settings, folds=2)
    base = {
        "task": "radiomics",
        "rounds": a.rounds,
        "min_sites": 3,
        "round_timeout_s": 120,
        "radiomics": {"settings": str(settings_path), "folds": 2, "n_features": 3},
        "sites": [{"id": f"site{i}", "data": str(root / "sites" / f"site{i}")} for i in (1, 2, 3)],
    }
    results = {}
    engines = a.engines.split(",")
    for sa in {"off": [False], "on": [True], "both": [False, True]}[a.secagg]:
        tag = " + SecAgg+" if sa else ""
        cfg_base = dict(base, secure_aggregation={"enabled": sa})
        if "deploy" in engines:
            name = f"deploy{'-secagg' if sa else ''}"
            results["3 site processes" + tag] = _deploy(root, cfg_base, name, a.port, work)
        if "sim" in engines:
            name = f"sim{'-secagg' if sa else ''}"
            results["simulation (Ray)" + tag] = _simulate(root, cfg_base, name, work)

    print(f"{a.patients} patients in 3 sites, radiomics model, {a.rounds} rounds x 3 phases; cpus={os.cpu_count()}")
    print(
        f"{'engine':<30} {'rounds':>6} {'s/round (med.)':>15} {'B sent/round':>13} {'B recv/round':>13} {'total s':>8}"
    )
    med = {}
    for name, (rounds, total) in results.items():
        w = np.median([r["wall_s"] for r in rounds])
        med[name] = w
        print(
            f"{name:<30} {len(rounds):>6} {w:>15.2f} {np.median([r['bytes_sent'] for r in rounds]):>13.0f} "
            f"{np.median([r['bytes_received'] for r in rounds]):>13.0f} {total:>8.1f}"
        )
    if "3 site processes" in med and "simulation (Ray)" in med:
        print(f"ratio s/round, processes / simulation: {med['3 site processes'] / med['simulation (Ray)']:.2f}")
    return 0


def _deploy(root: Path, base: dict, name: str, port: int, work: Path) -> tuple[list[dict], float]:
    """The federation with a SuperLink and one SuperNode process per site on 127.0.0.1."""
    import yaml

    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import _env, serve, site_command

    dep = dict(base, output={"dir": str(root / name)}, server={"host": "127.0.0.1", "port": port})
    (root / f"{name}.yaml").write_text(yaml.safe_dump(dep))
    cfg = load_fl_config(root / f"{name}.yaml")
    home = root / f"flwr-{name}"
    os.environ["FLWR_HOME"] = str(home)
    t0 = time.perf_counter()
    th = threading.Thread(target=lambda: serve(cfg, log=lambda s: None, timeout_s=1800))
    th.start()
    time.sleep(3)
    procs = [
        subprocess.Popen(
            site_command(
                data_dir=root / "sites" / f"site{i}",
                site_id=f"site{i}",
                superlink=f"127.0.0.1:{port}",
                port=port + 10 + i,
                work_dir=work / f"site{i}",
            ),
            env=_env(home),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in (1, 2, 3)
    ]
    th.join()
    out = (_rounds(cfg.out_dir / "audit.jsonl"), time.perf_counter() - t0)
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(30)
    return out


def _simulate(root: Path, base: dict, name: str, work: Path) -> tuple[list[dict], float]:
    """The federation under flwr.simulation; the site work folders hold the same feature caches."""
    import yaml

    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import simulate

    sim = dict(base, output={"dir": str(root / name)})
    (root / f"{name}.yaml").write_text(yaml.safe_dump(sim))
    scfg = load_fl_config(root / f"{name}.yaml")
    (scfg.out_dir / "site-work").mkdir(parents=True, exist_ok=True)
    for i in (1, 2, 3):
        os.symlink(work / f"site{i}", scfg.out_dir / "site-work" / f"site{i}")
    t0 = time.perf_counter()
    simulate(scfg, log=lambda s: None, ray_tmp=tempfile.mkdtemp(prefix="mlray", dir="/tmp"))
    return _rounds(scfg.out_dir / "audit.jsonl"), time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
