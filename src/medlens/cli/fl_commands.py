"""``medlens fl server|site|simulate|split``: federated learning across sites (Flower)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

_RESUME_HELP = (
    "Continue from the last per-round checkpoint in output.dir (refused when it belongs to another "
    "configuration) or start afresh; default: the config's resume key (true)."
)
_SECAGG_HELP = (
    "Turn SecAgg+ secure aggregation on or off (the server learns only the sum of the sites' updates); "
    "default: the config's secure_aggregation.enabled."
)


def _overrides(resume: bool | None, secagg: bool | None) -> dict[str, object] | None:
    over: dict[str, object] = {}
    if resume is not None:
        over["resume"] = resume
    if secagg is not None:
        over["secure_aggregation.enabled"] = secagg
    return over or None


def register(app: typer.Typer) -> None:
    fl = typer.Typer(
        help="Federated learning across hospitals (Flower): images never leave a site.", no_args_is_help=True
    )
    app.add_typer(fl, name="fl")

    @fl.command("server")
    def server(
        config: Annotated[Path, typer.Argument(help="Federation YAML (task, rounds, strategy, privacy, output).")],
        timeout_s: Annotated[float | None, typer.Option("--timeout-s", help="Give up after this many seconds.")] = None,
        resume: Annotated[bool | None, typer.Option("--resume/--no-resume", help=_RESUME_HELP)] = None,
        secagg: Annotated[
            bool | None, typer.Option("--secure-aggregation/--no-secure-aggregation", help=_SECAGG_HELP)
        ] = None,
    ) -> None:
        """Start a SuperLink on server.host:server.port and run the federation once min_sites sites joined."""
        from medlens.core.errors import require
        from medlens.learn.federated.config import load_fl_config
        from medlens.learn.federated.runner import serve

        require("flwr", extra="fl", purpose="federated learning")
        over = _overrides(resume, secagg)
        cfg = load_fl_config(config)
        if over is not None:
            cfg = cfg.with_overrides(**over)
        # the ServerApp re-reads the YAML: it gets the overrides as a top-level mapping
        sent = None if over is None else {"resume": cfg["resume"], "secure_aggregation": cfg["secure_aggregation"]}
        res = serve(cfg, log=typer.echo, timeout_s=timeout_s, overrides=sent)
        typer.echo(json.dumps({k: v for k, v in res.items() if k != "evaluations"}, default=float))

    @fl.command("site")
    def site(
        data: Annotated[Path, typer.Option("--data", help="This site's folder (DICOM + clinical.csv), read only.")],
        site_id: Annotated[str, typer.Option("--site-id", help="The site's name in logs and results.")],
        superlink: Annotated[str, typer.Option("--superlink", help="SuperLink address host:port.")] = "127.0.0.1:19191",
        port: Annotated[int, typer.Option("--port", help="Local ClientApp API port (one per site).")] = 19194,
        work: Annotated[Path | None, typer.Option("--work", help="Catalog and cache folder of the site.")] = None,
        settings: Annotated[
            Path | None, typer.Option("--radiomics-settings", help="Pin this site's radiomics settings (YAML).")
        ] = None,
    ) -> None:
        """Start this site's SuperNode (its ClientApp reads only --data, through the site's catalog)."""
        import tempfile

        from medlens.core.errors import require
        from medlens.learn.federated.runner import run_site, site_command

        require("flwr", extra="fl", purpose="federated learning")
        work_dir = work or Path(tempfile.gettempdir()) / "medlens-fl" / site_id
        cmd = site_command(
            data_dir=data,
            site_id=site_id,
            superlink=superlink,
            port=port,
            work_dir=work_dir,
            radiomics_settings=str(settings) if settings else None,
        )
        raise typer.Exit(run_site(cmd, flwr_home=Path(work_dir) / "flwr-home"))

    @fl.command("simulate")
    def simulate(
        config: Annotated[Path, typer.Argument(help="Federation YAML with a sites list.")],
        sites: Annotated[int | None, typer.Option("--sites", help="Use the first N sites of the config.")] = None,
        resume: Annotated[bool | None, typer.Option("--resume/--no-resume", help=_RESUME_HELP)] = None,
        secagg: Annotated[
            bool | None, typer.Option("--secure-aggregation/--no-secure-aggregation", help=_SECAGG_HELP)
        ] = None,
    ) -> None:
        """Run the same ServerApp and ClientApps with Flower's Simulation Engine (Ray, 1 CPU per site)."""
        from medlens.core.errors import require
        from medlens.learn.federated.config import load_fl_config
        from medlens.learn.federated.runner import simulate as run

        require("flwr", extra="fl", purpose="federated learning")
        cfg = load_fl_config(config)
        over = _overrides(resume, secagg)
        res = run(cfg if over is None else cfg.with_overrides(**over), n_sites=sites, log=typer.echo)
        typer.echo(json.dumps({k: v for k, v in res.items() if k != "evaluations"}, default=float))

    @fl.command("split")
    def split(
        cohort: Annotated[Path, typer.Argument(help="Cohort CSV (patient_id, outcome, pet_image, pet_rtstruct).")],
        out: Annotated[Path, typer.Option("--out", help="Folder for the site folders (symbolic links).")],
        n_sites: Annotated[int, typer.Option("--sites", help="Number of sites.")] = 3,
    ) -> None:
        """Split a cohort into site folders by patient, non-IID by SUVmax in the GTV (quantile groups)."""
        from medlens.learn.federated.sites import split_cohort

        doc = split_cohort(cohort, out, n_sites=n_sites)
        for s, ids in doc["sites"].items():
            typer.echo(f"{s}: {len(ids)} patients")
