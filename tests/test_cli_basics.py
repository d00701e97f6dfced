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


def test_command_index_matches_what_the_modules_register():
    """``main`` registers only the module of the command it runs: the index must name every command's module."""
    import importlib

    from medlens.cli import _COMMAND_INDEX, _COMMAND_MODULES

    registered = {}
    for module in _COMMAND_MODULES:
        t = typer.Typer()
        importlib.import_module(module).register(t)
        names = [c.name or c.callback.__name__.replace("_", "-") for c in t.registered_commands]
        names += [g.name or g.typer_instance.info.name for g in t.registered_groups]
        for name in names:
            assert name not in registered, f"{name} registered by {registered.get(name)} and {module}"
            registered[name] = module
    assert registered == _COMMAND_INDEX


def test_one_module_apps_keep_the_command_names(capsys):
    """A module with one command (or one group) still runs as ``medlens NAME ...`` (not collapsed into the root)."""
    assert main(["mask", "--help"]) == 0
    assert "Usage: medlens mask" in capsys.readouterr().out
    assert main(["features", "--help"]) == 0
    assert "Usage: medlens features" in capsys.readouterr().out
    assert main(["--debug", "fl", "--help"]) == 0
    assert "Usage: medlens fl" in capsys.readouterr().out
