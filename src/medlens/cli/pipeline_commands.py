"""``medlens demo``, ``medlens run CONFIG.yaml`` and ``medlens query "SQL" --run DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from medlens.pipeline.run import RunResult


def _print_result(res: RunResult) -> None:
    typer.echo(
        f"run {res.run_id}: {res.n_ok}/{res.n_cases} cases with features, {res.n_failed} failed, "
        f"{res.n_skipped} already finished (skipped)"
    )
    m = res.metrics
    if "auc" in m:
        lo, hi = m["auc_ci95"]
        p = m.get("permutation_p")
        typer.echo(
            f"cross-validated AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f})"
            + (f", permutation p = {p:.3g}" if p is not None else "")
        )
    if "c_index" in m:
        typer.echo(f"cross-validated C-index {m['c_index']:.3f}")
    if "error" in m:
        typer.echo(f"no model: {m['error']}")
    typer.echo(f"features: {res.features_path}")
    typer.echo(f"report: {res.report_path}")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic data and the run.")] = Path(
            "medlens-demo"
        ),
        cases: Annotated[int, typer.Option("--cases", help="Number of synthetic cases (at least 8).")] = 40,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Dask workers (default: one per core; 1: no Dask).")
        ] = None,
    ) -> None:
        """Generate a synthetic chest-CT cohort (real DICOM + RTSTRUCT) and run the whole pipeline on it."""
        from medlens.core.errors import InputError
        from medlens.pipeline.demo import run_demo

        if workers is not None and workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        _print_result(run_demo(out, n_cases=cases, workers=workers))

    @app.command("run")
    def run(
        config: Annotated[Path, typer.Argument(help="Run configuration (YAML).")],
        data: Annotated[Path | None, typer.Option("--data", help="Base folder of the cohort's paths.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: output.dir).")] = None,
        scheduler: Annotated[
            str | None, typer.Option("--scheduler", help="Address of an existing Dask scheduler, tcp://HOST:PORT.")
        ] = None,
        workers: Annotated[
            int | None, typer.Option("--workers", help="Dask workers (default: one per core; 1: no Dask).")
        ] = None,
        no_progress: Annotated[bool, typer.Option("--no-progress", help="Hide the progress bar.")] = False,
    ) -> None:
        """Run a cohort: features for every case (Dask, resumable), a cross-validated model and a report."""
        from medlens.pipeline.config import load_config
        from medlens.pipeline.run import run_pipeline

        cfg = load_config(config, data_dir=data, out_dir=out, workers=workers, scheduler=scheduler)
        _print_result(run_pipeline(cfg, progress=not no_progress))

    @app.command("query")
    def query(
        sql: Annotated[str, typer.Argument(help="SQL over the view 'features' (DuckDB).")],
        run_dir: Annotated[Path, typer.Option("--run", help="A run folder (or its features/ folder).")],
        csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    ) -> None:
        """Query a run's feature store with DuckDB SQL, e.g. "SELECT case_id, stat_mean FROM features"."""
        from medlens.pipeline.store import query as run_query

        df = run_query(sql, run_dir)
        if csv:
            typer.echo(df.to_csv(index=False), nl=False)
        else:
            import pandas as pd

            with pd.option_context("display.max_rows", 200, "display.max_columns", 30, "display.width", 200):
                typer.echo(df.to_string(index=False))
