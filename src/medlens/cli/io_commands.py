"""``medlens info``, ``convert`` and ``mask`` (foundation I/O commands)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the I/O commands to ``app``."""
