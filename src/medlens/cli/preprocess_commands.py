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
        bspline_grid_mm: Annotated[
            float, typer.Option("--bspline-grid-mm", help="B-spline control-point spacing (mm), --type bspline.")
        ] = 50.0,
        force: Annotated[
            bool,
            typer.Option(
                "--force",
                help="Move a pair that shares a frame of reference even if the metric barely improves.",
            ),
        ] = False,
        min_gain: Annotated[
            float | None,
            typer.Option(
                "--min-gain",
                help="Relative metric improvement needed to move an aligned pair (default 0.2, docs/multimodal.md).",
            ),
        ] = None,
    ) -> None:
        """Register MOVING to FIXED (rigid, affine or B-spline) and write the moved image.

        The intensity options change only what the metric compares; the transform applies to the
        original MOVING image. A pair that already shares a frame of reference (PET/CT, or an MR
        registered into it) starts at the identity and is moved only if the metric improves by at least
        --min-gain; otherwise it is kept as it is (the moved image is MOVING resampled onto FIXED and the
        transform the identity), unless --force.
        """
        from medlens.cli._common import check_inputs, check_output, volume_suffixes

        check_inputs(FIXED=fixed, MOVING=moving, mask=mask, moving_mask=moving_mask)
        check_output(out, name="--out", suffixes=volume_suffixes())
        check_output(transform, name="--transform", suffixes=(".tfm",))
        check_output(overlay, name="--overlay", suffixes=(".png",))
        from medlens.io.api import read_image, read_mask, write_image
        from medlens.preprocess.register import MIN_ALIGNED_GAIN, PETCT_INPUTS, apply_transform, register_aligned

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
        options: dict = {
            "transform": kind,
            "metric": metric,
            "iterations": iterations,
            "fixed_mask": fmask,
            "moving_mask": mmask,
            "on_failure": "error" if strict else "warn",
            "bspline_grid_mm": bspline_grid_mm,
            **inputs,
        }
        same_frame = (
            bool(f.meta.frame_of_reference_uid) and f.meta.frame_of_reference_uid == m.meta.frame_of_reference_uid
        )
        if not same_frame or init != "geometry":  # an explicit --init is the user's start; geometry is the default
            options["init"] = init
        decision = register_aligned(
            f, m, min_gain=MIN_ALIGNED_GAIN if min_gain is None else min_gain, force=force, **options
        )
        moved = apply_transform(m, decision.transform, reference=f)
        write_image(moved, out)
        if transform is not None:
            from medlens.preprocess.register import save_transform

            save_transform(decision.transform, transform)
        if overlay is not None:
            from medlens.preprocess.overlay import fusion_overlay

            fusion_overlay(f, m, overlay, transform=decision.transform, title=decision.result.summary()[:90])
        typer.echo(decision.result.summary())
        typer.echo(
            f"metric at the identity {decision.metric_identity:.6g}, registered {decision.metric_registered:.6g}: "
            f"{decision.reason}"
        )
