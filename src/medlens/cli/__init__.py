"""The ``medlens`` command line.

Each area registers its commands from its own module (listed in ``_COMMAND_MODULES``);
commands import their science lazily so that ``medlens --help`` stays fast.

Exit codes: 0 success; 1 unexpected error (a bug: please report it with ``--debug`` output);
2 bad input or parameter; 3 unreadable/unsupported file format; 4 inconsistent geometry;
5 missing optional dependency; 6 a computation could not produce a trustworthy result.
"""

from __future__ import annotations

import importlib
import sys

import typer

from medlens.cli._common import STATE, run_cli

app = typer.Typer(
    name="medlens",
    help="MedLens: medical images to trustworthy numbers, models and reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define ``register(app)``; one line per area.
_COMMAND_MODULES = [
    "medlens.cli.preprocess_commands",
    "medlens.cli.pipeline_commands",
    "medlens.cli.io_commands",
    "medlens.cli.mask_commands",
    "medlens.cli.radiomics_commands",
    "medlens.cli.segment_commands",
    "medlens.cli.data_commands",
    "medlens.cli.clinical_commands",
    "medlens.cli.serve_commands",
    "medlens.cli.learn_commands",
    "medlens.cli.fl_commands",
]


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    STATE.debug = debug
    if version:
        from medlens import __version__

        typer.echo(__version__)
        raise typer.Exit(0)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medlens`` script; returns the exit code."""
    return run_cli(app, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
