"""``medlens serve keys add|list|revoke`` (see :func:`medlens.serve.auth.register_keys`).

No ``from __future__ import annotations`` here: Typer reads the parameter annotations at runtime.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from medlens.core.errors import InputError
from medlens.serve.auth import Role, add_key, default_keys_file, list_keys, revoke_key

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Settings YAML of `medlens serve`.")]
FileOpt = Annotated[Path | None, typer.Option("--file", help="The keys file itself (instead of --config).")]


def _file(config: Path | None, file: Path | None) -> Path:
    if file is not None:
        return file
    if config is None:
        raise InputError("name the keys file: --config SETTINGS.yaml (its api_keys_file) or --file KEYS.yaml")
    from medlens.serve.settings import load_settings

    return default_keys_file(load_settings(config))


def register(app: Any) -> None:
    """Add the ``keys`` group to ``app``."""
    keys = typer.Typer(help="API keys of the REST API (stored as SHA-256 digests).", no_args_is_help=True)

    @keys.command("add")
    def _add(
        name: Annotated[str, typer.Argument(help="Who the key is for (a word).")],
        role: Annotated[Role, typer.Option("--role", help="read, write or admin.")] = Role.read,
        config: ConfigOpt = None,
        file: FileOpt = None,
    ) -> None:
        """Create a key and print it once (only its SHA-256 digest is stored)."""
        path = _file(config, file)
        key = add_key(path, name, role=role)
        typer.echo(key)
        typer.echo(f"key {name!r} ({role.value}) added to {path}; copy it now, it is not shown again", err=True)

    @keys.command("list")
    def _list(config: ConfigOpt = None, file: FileOpt = None) -> None:
        """List key names and roles (never the keys)."""
        for k in list_keys(_file(config, file)):
            typer.echo(f"{k.name}\t{k.role.value}\t{k.created}\tsha256:{k.sha256[:12]}")

    @keys.command("revoke")
    def _revoke(
        name: Annotated[str, typer.Argument(help="The key's name.")],
        config: ConfigOpt = None,
        file: FileOpt = None,
    ) -> None:
        """Remove a key; the running service refuses it from its next request on."""
        path = _file(config, file)
        revoke_key(path, name)
        typer.echo(f"key {name!r} revoked in {path}")

    app.add_typer(keys, name="keys")
