"""The ``medlens`` command line.

Each area registers its commands from its own module (listed in ``_COMMAND_MODULES``);
commands import their science lazily so that ``medlens --help`` stays fast. ``main`` registers only the
module of the command being run (``_COMMAND_INDEX``; a test keeps it equal to what the modules register),
so ``medlens features ...`` does not build the other ~35 commands; ``medlens --help``, an unknown command
and ``medlens.cli.app`` get every module.

Exit codes: 0 success; 1 unexpected error (a bug: please report it with ``--debug`` output);
2 bad input or parameter; 3 unreadable/unsupported file format; 4 inconsistent geometry;
5 missing optional dependency; 6 a computation could not produce a trustworthy result.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from medlens.cli._common import STATE, run_cli

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
    "medlens.cli.learn_cls_commands",
    "medlens.cli.fl_commands",
]

# Top-level command and group names -> the module that registers them (tests/test_cli_basics.py checks it).
_COMMAND_INDEX = {
    "preprocess": "medlens.cli.preprocess_commands",
    "register": "medlens.cli.preprocess_commands",
    "demo": "medlens.cli.pipeline_commands",
    "run": "medlens.cli.pipeline_commands",
    "query": "medlens.cli.pipeline_commands",
    "info": "medlens.cli.io_commands",
    "convert": "medlens.cli.io_commands",
    "mask": "medlens.cli.mask_commands",
    "warm-up": "medlens.cli.radiomics_commands",
    "features": "medlens.cli.radiomics_commands",
    "features-batch": "medlens.cli.radiomics_commands",
    "segment": "medlens.cli.segment_commands",
    "evaluate-seg": "medlens.cli.segment_commands",
    "train-seg": "medlens.cli.segment_commands",
    "evaluate-seg-cohort": "medlens.cli.segment_commands",
    "deid": "medlens.cli.data_commands",
    "export-bids": "medlens.cli.data_commands",
    "catalog": "medlens.cli.data_commands",
    "audit": "medlens.cli.data_commands",
    "clinical": "medlens.cli.clinical_commands",
    "explain": "medlens.cli.clinical_commands",
    "serve": "medlens.cli.serve_commands",
    "pretrain": "medlens.cli.learn_commands",
    "lowdose": "medlens.cli.learn_commands",
    "denoise-ct": "medlens.cli.learn_commands",
    "transfer-cls": "medlens.cli.learn_cls_commands",
    "fl": "medlens.cli.fl_commands",
}

# root options that take no value (anything else before the command name: build the whole app)
_ROOT_FLAGS = ("--debug",)


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


def build_app(modules: list[str] | None = None) -> typer.Typer:
    """The ``medlens`` Typer app with the commands of ``modules`` (default: every module)."""
    app = typer.Typer(
        name="medlens",
        help="MedLens: medical images to trustworthy numbers, models and reports.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback(invoke_without_command=True)(_root)
    for name in _COMMAND_MODULES if modules is None else modules:
        importlib.import_module(name).register(app)
    return app


def _module_for(argv: list[str]) -> str | None:
    """The module of the command ``argv`` runs, or None when the whole app is needed (help, unknown, none)."""
    for tok in argv:
        if tok in _ROOT_FLAGS:
            continue
        return _COMMAND_INDEX.get(tok)
    return None


_FULL_APP: typer.Typer | None = None


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # the whole app, built on first access (``from medlens.cli import app``)
        global _FULL_APP
        if _FULL_APP is None:
            _FULL_APP = build_app()
        return _FULL_APP
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _tune_allocator() -> None:
    """Let glibc keep large freed blocks for reuse instead of unmapping them (Linux/glibc only; else a no-op).

    By default every array over 128 KiB gets fresh pages from the kernel, and each 4 KiB page costs a fault
    when first touched; a feature extraction allocates and frees tens of such voxel-sized temporaries (casts,
    crops, FFT buffers), so a third of a one-case run is page faults. Raising the mmap threshold to 32 MiB and
    the trim threshold to 128 MiB makes those temporaries reuse the heap. Only the ``medlens`` console script
    does this (the process is then ours); :func:`main` called in-process changes nothing.
    ``MEDLENS_MALLOC_TUNING=0`` turns it off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MEDLENS_MALLOC_TUNING", "1").strip() == "0":
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 128 * 1024 * 1024)


def console_main() -> int:
    """The ``medlens`` console script: :func:`main` on ``sys.argv`` in a process of its own."""
    _tune_allocator()
    return main()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medlens`` script; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    module = _module_for(args)
    return run_cli(build_app(None if module is None else [module]), args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
