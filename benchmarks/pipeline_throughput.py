"""Cohort throughput: cases per minute with 1 and 2 workers, time per stage, peak memory per worker.

    .venv/bin/python benchmarks/pipeline_throughput.py --data ../shared/data/sts [--cases 51]
    .venv/bin/python benchmarks/pipeline_throughput.py --demo 24      # synthetic cohort instead

Features only (no model): each run starts from an empty run folder, so every case is computed.
``workers=1`` is the synchronous path (no Dask); ``workers=2`` is a Dask LocalCluster of two
single-threaded processes, its start-up time included in the wall time.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

STAGES = ("read", "preprocess", "mask", "features")


def _config(tmp: Path, data: Path, *, sts: bool, cases: int | None, workers: int, out: Path):  # type: ignore[no-untyped-def]
    from medlens.pipeline.config import load_config
    from medlens.pipeline.demo import DEMO_CONFIG

    if sts:
        examples = Path(__file__).resolve().parents[1] / "examples"
        cfg = yaml.safe_load((examples / "sts-lung-metastasis.yaml").read_text())
        cfg.pop("output", None)
        cfg["radiomics"]["settings"] = str(examples / cfg["radiomics"]["settings"])
    else:
        cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["cohort"]["outcome"] = None
    if cases is not None:
        import pandas as pd

        df = pd.read_csv(data / cfg["cohort"]["csv"]).head(cases)
        df.to_csv(tmp / "subset.csv", index=False)
        cfg["cohort"]["csv"] = str(tmp / "subset.csv")
    p = tmp / f"cfg{workers}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load_config(p, data_dir=data, out_dir=out, workers=workers)


def measure(data: Path, *, sts: bool, cases: int | None, workers: int) -> dict:
    from medlens.pipeline.cases import load_cases
    from medlens.pipeline.run import execute_cases

    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        cfg = _config(tmp, data, sts=sts, cases=cases, workers=workers, out=tmp / "run")
        summary = execute_cases(load_cases(cfg), cfg, progress=False)
    ok = [r for r in summary.results if r["status"] == "ok"]
    stage = {s: sum(r["timings_s"].get(s, 0.0) for r in ok) for s in STAGES}
    peak: dict[int, float] = defaultdict(float)
    for r in summary.results:
        peak[r["worker_pid"]] = max(peak[r["worker_pid"]], r["peak_rss_mb"])
    return {
        "workers": workers,
        "cases": len(summary.results),
        "failed": summary.n_failed,
        "wall_s": summary.wall_s,
        "cases_per_min": 60.0 * len(summary.results) / summary.wall_s,
        "stage_s": stage,
        "peak_rss_mb_per_worker": sorted(peak.values()),
        "first_error": next((r["error"] for r in summary.results if r["status"] != "ok"), None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="the STS folder (holding cohort.csv)")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases")
    ap.add_argument("--demo", type=int, default=None, help="generate a synthetic cohort of N cases instead")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.demo:
        from medlens.pipeline.demo import generate_cohort

        data, sts = generate_cohort(Path(tempfile.mkdtemp()) / "demo", n_cases=args.demo), False
    elif args.data:
        data, sts = args.data.resolve(), True
    else:
        ap.error("give --data STS_FOLDER or --demo N")
    rows = [measure(data, sts=sts, cases=args.cases, workers=w) for w in (1, 2)]
    total = {r["workers"]: sum(r["stage_s"].values()) for r in rows}
    print(f"cohort: {'STS PET' if sts else 'synthetic CT'}, {rows[0]['cases']} cases")
    print(f"{'':28s}{'1 worker':>14s}{'2 workers':>14s}{'ratio 2/1':>12s}")
    print(
        f"{'wall time (s)':28s}{rows[0]['wall_s']:14.1f}{rows[1]['wall_s']:14.1f}"
        f"{rows[0]['wall_s'] / rows[1]['wall_s']:11.2f}x"
    )
    print(
        f"{'cases per minute':28s}{rows[0]['cases_per_min']:14.1f}{rows[1]['cases_per_min']:14.1f}"
        f"{rows[1]['cases_per_min'] / rows[0]['cases_per_min']:11.2f}x"
    )
    for s in STAGES:
        print(
            f"{'  ' + s + ' (s, % of CPU time)':28s}"
            + "".join(
                f"{r['stage_s'][s]:8.1f} ({100 * r['stage_s'][s] / max(total[r['workers']], 1e-9):3.0f}%)" for r in rows
            )
        )
    print(
        f"{'peak RSS per worker (MB)':28s}{', '.join(f'{v:.0f}' for v in rows[0]['peak_rss_mb_per_worker']):>14s}"
        f"{', '.join(f'{v:.0f}' for v in rows[1]['peak_rss_mb_per_worker']):>14s}"
    )
    if any(r["failed"] for r in rows):
        print(f"failed cases: {[r['failed'] for r in rows]}; first error: {rows[0]['first_error']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
