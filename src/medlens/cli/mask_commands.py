"""``medlens mask``: read a mask (RTSTRUCT, DICOM SEG or label image) onto an image and write it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _output_format(out: Path, fmt: str | None) -> str:
    from medlens.core.errors import InputError
    from medlens.io._formats import VOLUME_SUFFIXES, volume_suffix

    name = out.name.lower()
    is_volume = volume_suffix(out) is not None
    if fmt is None:
        if is_volume:
            return "nifti"
        if name.endswith(".dcm"):
            return "seg"
        raise InputError(
            f"--out {out}: cannot tell the output format from the name; use .nii.gz/.nii/.nrrd/.mha for a label "
            "image or .dcm for a DICOM SEG (or --format nifti|seg)"
        )
    fmt = fmt.lower()
    if fmt not in ("nifti", "seg"):
        raise InputError(f"--format must be 'nifti' or 'seg', got {fmt!r}")
    if fmt == "nifti" and not is_volume:
        raise InputError(f"--format nifti needs --out ending in one of {', '.join(VOLUME_SUFFIXES)}; got {out.name}")
    return fmt


def register(app: typer.Typer) -> None:
    @app.command("mask")
    def mask(
        image: Annotated[Path, typer.Argument(help="The image: DICOM folder/file or NIfTI/NRRD/MHA file.")],
        maskfile: Annotated[
            Path, typer.Argument(help="RTSTRUCT (file or folder), DICOM SEG, or a label image on the image's grid.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Output: .nii.gz/.nii/.nrrd/.mha mask, or .dcm DICOM SEG.")],
        roi: Annotated[
            str | None, typer.Option("--roi", help="ROI name (RTSTRUCT) / segment label (SEG) / label value.")
        ] = None,
        fmt: Annotated[
            str | None, typer.Option("--format", help="nifti or seg (default: from the --out suffix).")
        ] = None,
        series: Annotated[
            str | None, typer.Option("--series", help="SeriesInstanceUID when IMAGE holds several series.")
        ] = None,
    ) -> None:
        """Rasterise/read a mask onto IMAGE's grid and write it as a label image or a DICOM SEG.

        Exit codes: 2 bad input (unknown ROI: the message lists those present), 3 unreadable file,
        4 the mask belongs to another image or grid.
        """
        from medlens.cli._common import DICOM_SUFFIXES, check_inputs, check_output, volume_suffixes

        check_inputs(IMAGE=image, MASK=maskfile)
        if fmt is None:
            check_output(out, name="--out", suffixes=(*volume_suffixes(), *DICOM_SUFFIXES))
        kind = _output_format(out, fmt)
        check_output(out, name="--out")
        from medlens.core.errors import InputError
        from medlens.io.api import read_image, volume_suffix
        from medlens.io.masks import read_mask

        img = read_image(image, series_uid=series)
        m = read_mask(maskfile, reference=img, roi=roi)
        n = int(m.array.sum())
        if kind == "nifti":
            from medlens.io.volume_files import write_volume

            write_volume(m, out)
        else:
            if not image.is_dir() and volume_suffix(image) is not None:
                raise InputError(
                    f"{image}: a DICOM SEG must reference DICOM source images; IMAGE is a volume file. "
                    "Write a label image instead (--out mask.nii.gz)"
                )
            from medlens.io.seg import write_seg

            label = str(m.meta.extra.get("roi", roi or "mask"))
            write_seg(m, image, out, segment_label=label, series_uid=img.meta.series_uid or None)
        volume_ml = n * m.voxel_volume_mm3 / 1000.0 if m.ndim == 3 else float("nan")
        typer.echo(
            f"wrote {out} ({'DICOM SEG' if kind == 'seg' else 'label image'}): ROI {m.meta.extra.get('roi', roi)!r}, "
            f"{n} voxels" + (f", {volume_ml:.3f} ml" if m.ndim == 3 else "")
        )
