"""Shared CLI plumbing: error to exit-code mapping and console output."""

from __future__ import annotations

import sys
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import typer


@dataclass
class _State:
    debug: bool = False


STATE = _State()


def err(message: str) -> None:
    """Print one line on standard error."""
    typer.echo(message, err=True)


def _format_warning(message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    return f"warning: {message}\n"


def run_cli(app: typer.Typer, argv: list[str]) -> int:
    """Run the Typer app; MedLens errors become one line and their documented exit code."""
    debug = "--debug" in argv
    STATE.debug = debug
    before = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _format_warning  # type: ignore[assignment]
    try:
        return _run(app, argv, debug)
    finally:
        warnings.formatwarning = before  # main() is also called in-process (tests, notebooks): leave it as found


def _run(app: typer.Typer, argv: list[str], debug: bool) -> int:
    from medlens.core.errors import MedlensError

    try:
        app(args=argv, prog_name="medlens", standalone_mode=False)
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0)
    except MedlensError as exc:
        if debug:
            traceback.print_exc()
        err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except Exception as exc:
        code = _usage_exit_code(exc)
        if code is not None:
            return code
        if debug:
            traceback.print_exc()
        else:
            err(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return 1
    return 0


def _usage_exit_code(exc: Exception) -> int | None:
    """Handle the command-line parser's own exceptions (typer vendors click, so match by shape)."""
    import typer

    if isinstance(exc, typer.Exit):
        return int(getattr(exc, "exit_code", 0) or 0)
    if isinstance(exc, typer.Abort):
        err("aborted")
        return 1
    show = getattr(exc, "show", None)
    if callable(show) and hasattr(exc, "exit_code"):
        show(file=sys.stderr)  # usage errors: message plus usage line
        return 2
    return None
