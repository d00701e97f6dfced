"""The one rule for configuration files (preprocessing recipes, radiomics settings and presets, run configs).

==========================================================  ==========================  ====
what is wrong                                               error                       exit
==========================================================  ==========================  ====
the file does not exist (or is a folder)                    :class:`InputError`         2
it cannot be read, is not UTF-8, is not valid YAML, or its  :class:`FormatError`        3
top level is not a mapping of keys
a key is unknown, a value has the wrong type or is out of   :class:`InputError`         2
range (the loader's validation)
==========================================================  ==========================  ====

An empty file is an empty mapping (the loader's validation then says what is missing).
Every message names the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medlens.core.errors import FormatError, InputError

__all__ = ["read_config_file"]


def read_config_file(path: str | os.PathLike[str], *, what: str) -> dict[str, Any]:
    """Read a YAML configuration file as a mapping, by the rule of the module docstring.

    Parameters
    ----------
    path
        The file.
    what
        What it is, for messages (``"recipe"``, ``"radiomics settings"``, ``"run configuration"``).

    Returns
    -------
    dict
        The top-level mapping (empty for an empty file); validation is the caller's.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(f"{p}: the {what} file cannot be read as UTF-8 text ({type(exc).__name__}: {exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormatError(f"{p}: the {what} file is not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FormatError(
            f"{p}: the {what} file must hold a mapping of keys at the top level, found a {type(data).__name__}"
        )
    return data
