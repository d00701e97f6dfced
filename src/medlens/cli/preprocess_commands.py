"""``medlens preprocess`` (run a recipe) and ``medlens register`` (rigid/affine PET->CT, MR->CT, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the preprocessing commands to ``app``."""

    @app.command("preprocess")
    def preprocess(
        inp: Annotated[Path, typer.Argument(metavar="IN", help="DICOM folder/file or a NIfTI/NRRD/MHA file.")],
        out: Annotated[Path, typer.Argument(metavar="OUT", help="Output volume: .nii, .nii.gz, .nrrd or .mha.")],
        recipe: Annotated[Path, typer.Option("--recipe", help="Recipe YAML (a list of named steps).")],
        mask: Annotated[
            Path | None, typer.Option("--mask", help="Mask (RTSTRUCT, SEG or label image) for masked steps.")
        ] = None,
        roi: Annotated[str | None, typer.Option("--roi", help="ROI name inside an RTSTRUCT/SEG mask.")] = None,
    ) -> None:
        """Run a preprocessing recipe on an image and write the result."""
        from medlens.cli._common import check_inputs, check_output, volume_suffixes

        check_inputs(IN=inp, recipe=recipe, mask=mask)
        check_output(out, name="OUT", suffixes=volume_suffixes())
        from medlens.io.api import read_image, read_mask, write_image
        from medlens.preprocess.recipe import Recipe

        rec = Recipe.from_yaml(recipe)  # validate before reading pixels
        image = read_image(inp)
        m = read_mask(mask, reference=image, roi=roi) if mask is not None else None
        result = rec.apply(image, mask=m)
        write_image(result, out)
        typer.echo(f"{out}: {len(rec.steps)} steps -> shape {result.shape}, units {result.meta.units}")

    @app.command("register")
    def register_cmd(
        fixed: Annotated[Path, typer.Argument(metavar="FIXED", help="Fixed image (e.g. the CT).")],
        moving: Annotated[Path, typer.Argument(metavar="MOVING", help="Moving image (e.g. the PET).")],
        out: Annotated[Path, typer.Option("--out", help="Moved image on the fixed grid (.nii.gz, .nrrd, .mha).")],
        transform: Annotated[
            Path | None, typer.Option("--transform", help="Write the transform as an ITK .tfm file.")
        ] = None,
        mask: Annotated[
            Path | None, typer.Option("--mask", help="Fixed-image mask restricting the metric (label image/RTSTRUCT).")
        ] = None,
        metric: Annotated[
            str, typer.Option("--metric", help="mi (Mattes MI, multimodal) or ms (mean squares).")
        ] = "mi",
        kind: Annotated[str, typer.Option("--type", help="rigid or affine.")] = "rigid",
        init: Annotated[str, typer.Option("--init", help="geometry, moments or none.")] = "geometry",
        iterations: Annotated[int, typer.Option("--iterations", help="Maximum iterations per level.")] = 200,
        overlay: Annotated[Path | None, typer.Option("--overlay", help="Write a fusion overlay PNG.")] = None,
        strict: Annotated[
            bool, typer.Option("--strict", help="Fail (exit 6) if the optimizer does not converge.")
        ] = False,
        moving_mask: Annotated[
            Path | None,
            typer.Option("--moving-mask", help="Moving-image mask restricting the metric (label image/RTSTRUCT)."),
        ] = None,
        petct: Annotated[
            bool,
            typer.Option(
                "--petct",
                help="PET -> CT inputs for the metric: CT window (40, 400) HU, CT blurred to 7 mm FWHM, log(1 + SUV)"
                " (docs/preprocess.md); each can be set on its own with the three options below.",
            ),
        ] = False,
        fixed_window_hu: Annotated[
            tuple[float, float] | None,
            typer.Option("--fixed-window-hu", help="Clip FIXED to this (centre, width) in HU and scale to [0, 1]."),
        ] = None,
        fixed_blur_fwhm_mm: Annotated[
            float | None, typer.Option("--fixed-blur-fwhm-mm", help="Gaussian blur of FIXED for the metric (mm).")
        ] = None,
        moving_log1p: Annotated[
            bool, typer.Option("--moving-log1p", help="Compare log(1 + max(v, 0)) of MOVING (e.g. SUV).")
        ] = False,
    ) -> None:
        """Register MOVING to FIXED (rigid or affine) and write the moved image.

        The intensity options change only what the metric compares; the transform applies to the
        original MOVING image.
        """
        from medlens.cli._common import check_inputs, check_output, volume_suffixes

        check_inputs(FIXED=fixed, MOVING=moving, mask=mask, moving_mask=moving_mask)
        check_output(out, name="--out", suffixes=volume_suffixes())
        check_output(transform, name="--transform", suffixes=(".tfm",))
        check_output(overlay, name="--overlay", suffixes=(".png",))
        from medlens.io.api import read_image, read_mask, write_image
        from medlens.preprocess.register import PETCT_INPUTS, apply_transform
        from medlens.preprocess.register import register as do_register

        f = read_image(fixed)
        m = read_image(moving)
        fmask = read_mask(mask, reference=f) if mask is not None else None
        mmask = read_mask(moving_mask, reference=m) if moving_mask is not None else None
        # raw images unless --petct; the explicit options override the preset's parts
        inputs: dict = {"fixed_window_hu": None, "fixed_blur_fwhm_mm": 0.0, "moving_log1p": False}
        if petct:
            inputs.update(PETCT_INPUTS)
        if fixed_window_hu is not None:
            inputs["fixed_window_hu"] = fixed_window_hu
        if fixed_blur_fwhm_mm is not None:
            inputs["fixed_blur_fwhm_mm"] = fixed_blur_fwhm_mm
        if moving_log1p:
            inputs["moving_log1p"] = True
        res = do_register(
            f,
            m,
            transform=kind,
            metric=metric,
            init=init,
            iterations=iterations,
            fixed_mask=fmask,
            moving_mask=mmask,
            on_failure="error" if strict else "warn",
            **inputs,
        )
        moved = apply_transform(m, res.transform, reference=f)
        write_image(moved, out)
        if transform is not None:
            res.save(transform)
        if overlay is not None:
            from medlens.preprocess.overlay import fusion_overlay

            fusion_overlay(f, m, overlay, transform=res.transform, title=res.summary()[:90])
        typer.echo(res.summary())
