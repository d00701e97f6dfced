"""``medlens info`` and ``medlens convert`` (foundation I/O commands).

The ``mask`` command lives in its own module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _fmt(values: Any, digits: int = 4) -> str:
    if values is None:
        return "-"
    return "(" + ", ".join(f"{float(v) + 0.0:.{digits}g}" for v in values) + ")"  # + 0.0: no "-0"


def _volume_info(path: Path) -> dict[str, Any]:
    from medlens.io.api import read_image

    img = read_image(path)
    return {
        "path": str(path),
        "series": [
            {
                "series_uid": img.meta.series_uid,
                "modality": img.meta.modality,
                "description": "",
                "n_files": 1,
                "is_image": True,
                "shape": list(img.shape),
                "spacing_mm": list(img.spacing),
                "origin_mm": list(img.origin),
                "direction": img.direction.tolist(),
                "units": img.meta.units,
                "qa": [],
                "rois": [],
                "referenced_series_uid": "",
            }
        ],
    }


def _dicom_info(path: Path) -> dict[str, Any]:
    from medlens.io.dicom_series import list_series

    series = []
    for s in list_series(path):
        d = s.to_dict()
        d.pop("files", None)
        series.append(d)
    return {"path": str(path), "series": series}


def _print_rich(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{info['path']}: {len(info['series'])} series")
    for col in ("#", "modality", "description", "files", "shape", "spacing mm", "units", "QA"):
        table.add_column(col, overflow="fold")
    for n, s in enumerate(info["series"], start=1):
        qa = s.get("qa", [])
        table.add_row(
            str(n),
            s["modality"] or "-",
            s["description"] or "",
            str(s["n_files"]),
            "x".join(str(v) for v in s["shape"]) if s.get("shape") else "-",
            _fmt(s.get("spacing_mm")),
            s.get("units") or "-",
            f"{len(qa)} finding(s)" if qa else ("ok" if s.get("is_image", True) else "-"),
        )
    console.print(table)
    for n, s in enumerate(info["series"], start=1):
        console.print(f"#{n} series UID {s['series_uid'] or '-'}", highlight=False)
        if s.get("origin_mm") is not None:
            console.print(f"   origin {_fmt(s['origin_mm'], 6)} mm (LPS)", highlight=False)
        if s.get("direction") is not None:
            rows = "; ".join(_fmt(r, 4) for r in s["direction"])
            console.print(f"   direction (columns = array axes z, y, x): {rows}", highlight=False)
        for f in s.get("qa", []):
            console.print(f"   [{f['severity']}] {f['code']}: {f['message']}", highlight=False, markup=False)
        if not s.get("is_image", True):
            ref = s.get("referenced_series_uid") or "not recorded"
            rois = ", ".join(s.get("rois", [])) or "none"
            console.print(f"   ROIs: {rois}; refers to series {ref}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``info`` and ``convert`` commands to ``app``."""

    @app.command("info")
    def info(
        path: Annotated[Path, typer.Argument(help="DICOM folder/file or a NIfTI/NRRD/MHA file.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """Describe the series in PATH: geometry, intensity units, geometry QA findings, ROIs of RTSTRUCT/SEG."""
        from medlens.core.errors import InputError
        from medlens.io.api import volume_suffix

        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        data = _volume_info(path) if path.is_file() and volume_suffix(path) else _dicom_info(path)
        if as_json:
            typer.echo(json.dumps(data, indent=2))
        else:
            _print_rich(data)

    @app.command("convert")
    def convert(
        inp: Annotated[Path, typer.Argument(metavar="IN", help="DICOM folder/file or a volume file.")],
        out: Annotated[Path, typer.Argument(metavar="OUT", help="Output file: .nii, .nii.gz, .nrrd or .mha.")],
        series: Annotated[str | None, typer.Option("--series", help="SeriesInstanceUID to read.")] = None,
        resample_irregular: Annotated[
            bool, typer.Option("--resample-irregular", help="Resample irregular slices (warns).")
        ] = False,
    ) -> None:
        """Convert an image (e.g. a DICOM series) to NIfTI/NRRD/MHA."""
        from medlens.cli._common import check_inputs, check_output, volume_suffixes

        check_inputs(IN=inp)  # fail before reading a whole series
        check_output(out, name="OUT", suffixes=volume_suffixes())
        from medlens.io.api import read_image, write_image

        img = read_image(inp, series_uid=series, on_irregular="resample" if resample_irregular else "error")
        written = write_image(img, out)
        typer.echo(
            f"wrote {written}: shape {img.shape}, spacing {_fmt(img.spacing)} mm, units {img.meta.units}",
        )
