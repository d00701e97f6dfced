"""Shared CLI plumbing: error to exit-code mapping, console output and the IN/OUT checks of every command."""

from __future__ import annotations

import sys
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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


# --- one validator for every command's IN and OUT (run before any reading or computing) -----------------

#: Exit codes of the checks below (the same in every command): a missing IN or an OUT that cannot be
#: written is bad input (2, InputError); an OUT whose name names no format MedLens writes is an
#: unsupported file format (3, FormatError).
MISSING_INPUT_EXIT = 2
UNWRITABLE_OUTPUT_EXIT = 2
BAD_OUTPUT_SUFFIX_EXIT = 3

#: Output kinds: the file-name endings each accepts.
CSV_SUFFIXES = (".csv",)
DICOM_SUFFIXES = (".dcm",)


def volume_suffixes() -> tuple[str, ...]:
    """NIfTI / NRRD / MetaImage suffixes (from :mod:`medlens.io._formats`, imported only when a command runs)."""
    from medlens.io._formats import VOLUME_SUFFIXES

    return tuple(VOLUME_SUFFIXES)


def check_inputs(**inputs: Path | None) -> None:
    """Every named input exists (file or folder); ``None`` values (options not given) are skipped.

    Raises
    ------
    InputError
        Naming the parameter and the path (exit code 2).
    """
    from medlens.core.errors import InputError

    for name, path in inputs.items():
        if path is not None and not Path(path).exists():
            raise InputError(f"{name.upper()} {path}: no such file or folder")


def check_output(
    path: Path | None,
    *,
    name: str = "OUT",
    suffixes: Sequence[str] | None = None,
    folder: bool = False,
) -> None:
    """Check before computing that ``path`` can be written and names a format the command writes.

    Parameters
    ----------
    path
        The output path (``None``: option not given, nothing to check).
    name
        How the user passed it (``"OUT"``, ``"--out"``, ...), for the message.
    suffixes
        Accepted file-name endings (case-insensitive), e.g. :func:`volume_suffixes`; ``None``: any.
    folder
        The output is a folder (created if missing) rather than a file.

    Raises
    ------
    FormatError
        The name ends in none of ``suffixes`` (exit code 3).
    InputError
        An existing part of the path is a file where a folder is needed, the output folder is a
        file, or the nearest existing folder is not writable (exit code 2).
    """
    import os

    from medlens.core.errors import FormatError, InputError

    if path is None:
        return
    p = Path(path)
    if suffixes is not None and not folder:
        low = p.name.lower()
        if not any(low.endswith(s) for s in suffixes):
            raise FormatError(
                f"{name} {p}: cannot tell the output format from the name; use a name ending in one of "
                f"{', '.join(suffixes)}"
            )
    if folder and p.exists() and not p.is_dir():
        raise InputError(f"{name} {p}: is a file; an output folder is needed")
    if not folder and p.is_dir():
        raise InputError(f"{name} {p}: is a folder; an output file name is needed")
    # the nearest existing ancestor must be a writable folder (missing folders below it are created)
    parent = p if folder else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{name} {p}: cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{name} {p}: cannot be written: the folder {parent} is not writable")
