"""The one file lister of MedLens (DICOM reader, masks, SEG/RTSTRUCT, catalog scan, de-identification).

Rules, the same everywhere: folders are searched recursively; a symlinked folder is followed once
(its real path is remembered, so links cannot loop); unreadable folders are passed over; the
result of :func:`list_files` is sorted by path. Hidden files (names starting with ``.``) are left
out unless ``include_hidden=True`` (the catalog and de-identification keep them: an archive's
files are all inventoried).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from medlens.core.errors import InputError

__all__ = ["collect_files", "list_files", "walk_files"]

PathLike = str | os.PathLike[str]


def walk_files(root: PathLike, *, include_hidden: bool = True) -> Iterator[tuple[str, int, int]]:
    """Yield ``(path, size_bytes, mtime_ns)`` of every file under ``root`` (unsorted, lazily).

    Symlinked folders are followed once; folders that cannot be read are passed over.
    """
    stack = [str(root)]
    seen = {os.path.realpath(root)}
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir():
                            real = os.path.realpath(e.path)
                            if real not in seen:
                                seen.add(real)
                                stack.append(e.path)
                        elif e.is_file():
                            if not include_hidden and e.name.startswith("."):
                                continue
                            st = e.stat()
                            yield e.path, st.st_size, st.st_mtime_ns
                    except OSError:
                        continue
        except OSError:
            continue


def list_files(root: PathLike, *, include_hidden: bool = False) -> list[Path]:
    """Every file under ``root`` (a folder, searched recursively; or one file), sorted by path."""
    p = Path(root)
    if p.is_file():
        return [p]
    return sorted(Path(f) for f, _, _ in walk_files(p, include_hidden=include_hidden))


def collect_files(path: PathLike | Sequence[PathLike]) -> tuple[list[Path], str]:
    """The files of a DICOM input (a folder, one file, or a list of files/folders) and a name for messages.

    Raises
    ------
    InputError
        A path does not exist, a folder holds no files, or the list is empty.
    """
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            files = list_files(p)
            if not files:
                raise InputError(f"{p}: the folder holds no files; expected DICOM files of one image series")
            return files, str(p)
        return [p], str(p)
    items = [Path(x) for x in path]
    if not items:
        raise InputError("the list of DICOM files is empty; give at least one file or a folder")
    found: list[Path] = []
    for it in items:
        if it.is_dir():
            found.extend(list_files(it))
        elif it.exists():
            found.append(it)
        else:
            raise InputError(f"{it}: no such file (in the list of DICOM files)")
    common = os.path.commonpath([str(f) for f in items])
    return found, f"{len(items)} files under {common}" if len(items) > 1 else str(items[0])
