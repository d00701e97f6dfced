"""What the file names say: volume-file suffixes and the DICOM-or-volume decision.

One module without MedLens imports beyond the standard library, imported by :mod:`medlens.io.api`,
:mod:`medlens.io.masks` and :mod:`medlens.io.volume_files`, so that none of them needs another for
this knowledge (this removed the api <-> masks <-> volume_files import cycle; the ``acyclic_siblings``
contract in ``pyproject.toml`` keeps ``medlens.io`` free of cycles).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["VOLUME_SUFFIXES", "is_dicom_input", "is_volume_file", "volume_suffix"]

PathLike = str | os.PathLike[str]

#: Suffixes of the volume formats MedLens reads and writes (NIfTI, NRRD, MetaImage).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
_LONGEST_FIRST = tuple(sorted(VOLUME_SUFFIXES, key=len, reverse=True))


def volume_suffix(path: PathLike) -> str | None:
    """The recognised volume-file suffix of ``path`` (``".nii.gz"``, ``".nrrd"``, ...) or None."""
    name = Path(path).name.lower()
    for suf in _LONGEST_FIRST:
        if name.endswith(suf):
            return suf
    return None


def is_volume_file(path: PathLike) -> bool:
    """True when ``path`` is an existing file with a volume suffix (NIfTI, NRRD, MHA/MHD)."""
    p = Path(path)
    return p.is_file() and volume_suffix(p) is not None


def is_dicom_input(path: PathLike | Sequence[PathLike]) -> bool:
    """True when ``path`` is read as DICOM: a list of files, a folder, or a file without a volume suffix."""
    if isinstance(path, (list, tuple)):
        return True
    p = Path(path)  # type: ignore[arg-type]
    return p.is_dir() or volume_suffix(p) is None
