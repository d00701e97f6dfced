"""``medlens pretrain`` (self-supervised U-Net encoder) and ``medlens lowdose`` (simulate a low-dose CT)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        cohort: Annotated[Path, typer.Argument(help="Cohort CSV listing image series (pet_image / ct_image columns).")],
        out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.pt; a .json is written beside it).")],
        method: Annotated[str, typer.Option(help="simclr or mae.")] = "simclr",
        modality: Annotated[str, typer.Option(help="PT (SUVbw) or CT (HU).")] = "PT",
        steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 300,
        batch_size: Annotated[int, typer.Option(help="Slices per step.")] = 32,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    ) -> None:
        """Pretrain the lesion U-Net's encoder on the unlabelled slices of every COHORT image (no masks read)."""
        from medlens.learn import ssl

        images = ssl.images_from_cohort(cohort, modality=modality)
        slices = ssl.slices_for_pretraining(images, modality=modality)
        typer.echo(f"{len(images)} {modality} images, {len(slices)} slices")
        res = ssl.pretrain(slices, method=method, steps=steps, batch_size=batch_size, seed=seed, log=typer.echo)
        info = {
            "data": f"{len(slices)} axial {modality} slices of the {len(images)} series in {cohort.name}",
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "command": f"medlens pretrain {cohort.name} --method {method} --modality {modality} --steps {steps}",
        }
        path = ssl.save_pretrained(res, out, modality=modality, info=info)
        typer.echo(
            f"{res.method.value}: loss {res.losses[0]:.4f} -> {res.losses[-1]:.4f} in {res.seconds:.0f} s -> {path}"
        )

    @app.command("lowdose")
    def lowdose_cmd(
        image: Annotated[Path, typer.Argument(help="CT in HU: DICOM folder or NIfTI/NRRD file.")],
        out: Annotated[Path, typer.Option("--out", help="Output volume (.nii.gz / .nrrd).")],
        dose: Annotated[float, typer.Option(help="Dose fraction in (0, 1], e.g. 0.1.")] = 0.25,
        i0: Annotated[float, typer.Option(help="Incident photons per ray at full dose.")] = 1e5,
        views: Annotated[int, typer.Option(help="Projection angles over 180 degrees.")] = 360,
        seed: Annotated[int, typer.Option(help="Seed of the Poisson noise.")] = 0,
    ) -> None:
        """Simulate a low-dose acquisition of IMAGE (projection, Poisson noise, FBP; see docs/learn.md)."""
        from medlens.io.api import read_image, write_image
        from medlens.learn.lowdose import LowDoseModel, simulate_low_dose

        img = read_image(image)
        res = simulate_low_dose(img, dose_fraction=dose, model=LowDoseModel(i0_full=i0, n_views=views), seed=seed)
        write_image(res, out)
        typer.echo(f"low-dose ({dose:g} x {i0:g} photons/ray, {views} views, seed {seed}) -> {out}")
