"""``medlens serve``: the service (DICOM node + REST API); ``serve init`` writes a sample settings file.

``medlens serve CONFIG.yaml`` is short for ``medlens serve run CONFIG.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup


class _ServeGroup(TyperGroup):
    """A group whose first argument may be the settings file instead of a subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    """Add ``serve`` (``run``, ``init``, ``echo``, ``keys``) to the ``medlens`` app."""
    serve_app = typer.Typer(
        cls=_ServeGroup,
        help="Run the MedLens service: DICOM node (C-ECHO/C-STORE/C-FIND) and REST API. "
        "`medlens serve CONFIG.yaml` starts it; `medlens serve init CONFIG.yaml` writes a sample settings file.",
        no_args_is_help=True,
    )
    app.add_typer(serve_app, name="serve")

    @serve_app.command("run")
    def serve_run(
        config: Annotated[Path, typer.Argument(help="Settings YAML (see `medlens serve init`).")],
        job_workers: Annotated[int, typer.Option("--job-workers", help="Jobs run at once.")] = 1,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every association and job.")] = False,
    ) -> None:
        """Serve until Ctrl-C or SIGTERM (then stop gracefully)."""
        import logging

        from medlens.serve.service import Service
        from medlens.serve.settings import load_settings

        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        logging.getLogger("medlens").setLevel(logging.INFO if verbose else logging.WARNING)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        settings = load_settings(config)
        service = Service(settings, job_workers=job_workers)
        typer.echo(
            f"medlens serve: REST http://{settings.host}:{settings.http_port}  "
            f"DICOM {settings.ae_title}@{settings.host}:{settings.dicom_port}  data {settings.data_dir}",
            err=True,
        )
        service.run()

    @serve_app.command("init")
    def serve_init(
        config: Annotated[Path, typer.Argument(help="Settings YAML to write.")],
        data_dir: Annotated[str, typer.Option("--data-dir", help="data_dir written into it.")] = "./medlens-data",
        http_port: Annotated[int, typer.Option("--http-port")] = 11101,
        dicom_port: Annotated[int, typer.Option("--dicom-port")] = 11100,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    ) -> None:
        """Write a commented sample settings file (checked by loading it back)."""
        from medlens.core.atomic import atomic_write_text
        from medlens.core.errors import InputError
        from medlens.serve.settings import load_settings, sample_config

        if config.exists() and not force:
            raise InputError(f"{config} exists already; give another name or --force to overwrite it")
        atomic_write_text(config, sample_config(data_dir=data_dir, http_port=http_port, dicom_port=dicom_port))
        load_settings(config)
        typer.echo(f"wrote {config}; edit peers/send_results_to, then run `medlens serve {config}`")

    @serve_app.command("echo")
    def serve_echo(
        config: Annotated[Path, typer.Argument(help="Settings YAML.")],
        peer: Annotated[str, typer.Argument(help="A peer name from the settings.")],
    ) -> None:
        """C-ECHO a configured peer (checks that the PACS knows this node)."""
        from medlens.core.errors import InputError
        from medlens.serve.dicom.scu import echo_peer
        from medlens.serve.settings import load_settings

        settings = load_settings(config)
        if peer not in settings.peers:
            raise InputError(f"{config}: no peer {peer!r}; peers: {', '.join(sorted(settings.peers)) or 'none'}")
        p = settings.peers[peer]
        ok = echo_peer(p, calling_ae=settings.ae_title)
        typer.echo(f"C-ECHO {p.ae_title}@{p.host}:{p.port}: {'ok' if ok else 'FAILED'}")
        if not ok:
            raise typer.Exit(6)

    try:
        from medlens.serve.auth import register_keys
    except ImportError:  # the REST layer's key commands are optional here
        return
    register_keys(serve_app)
