"""The command line's contract: exit codes and one-line errors."""

from __future__ import annotations

import typer

from medlens.cli import main
from medlens.cli._common import run_cli
from medlens.core.errors import FormatError, GeometryError, InputError


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "0.1.0"


def test_unknown_command_is_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def _app_raising(exc: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def boom(debug: bool = False) -> None:
        raise exc

    @app.command()
    def other() -> None:  # a second command so that "boom" is a subcommand
        pass

    return app


def test_medlens_errors_map_to_documented_exit_codes(capsys):
    for exc, code in [(InputError("x: bad"), 2), (FormatError("y: bad"), 3), (GeometryError("z: bad"), 4)]:
        assert run_cli(_app_raising(exc), ["boom"]) == code
        err = capsys.readouterr().err
        assert err.strip() == f"error: {exc}"
        assert "Traceback" not in err


def test_unexpected_errors_hide_traceback_unless_debug(capsys):
    assert run_cli(_app_raising(RuntimeError("kaput")), ["boom"]) == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: kaput" in err and "Traceback" not in err
    assert run_cli(_app_raising(RuntimeError("kaput")), ["boom", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
