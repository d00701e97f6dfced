"""``medlens pretrain`` (self-supervised U-Net encoder), ``medlens lowdose`` (simulate a low-dose CT) and
``medlens denoise-ct`` (the shipped low-dose CT denoiser)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("pretrain")
    def pretrain_cmd(
        cohort: Annotated[
            Path,
            typer.Argument(
                help="Cohort CSV listing image series (pet_image / ct_image / mr_image columns; without one, "
                "<patient_id>/PET|CT|MR_T1/image beside the CSV)."
            ),
        ],
        out: Annotated[Path, typer.Option("--out", help="Checkpoint to write (.pt; a .json is written beside it).")],
        method: Annotated[str, typer.Option(help="simclr or mae.")] = "simclr",
        modality: Annotated[str, typer.Option(help="PT (SUVbw), CT (HU) or MR (T1, per-volume scaling).")] = "PT",
        steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 300,
        batch_size: Annotated[int, typer.Option(help="Slices per step.")] = 32,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        crops: Annotated[
            int, typer.Option(help="Windows per slice: 1 = centre crop; more = random 64 x 64 windows (CT, MR).")
        ] = 1,
    ) -> None:
        """Pretrain the lesion U-Net's encoder on the unlabelled slices of every COHORT image (no masks read)."""
        from medlens.learn import ssl

        images = ssl.images_from_cohort(cohort, modality=modality)
        slices = ssl.slices_for_pretraining(images, modality=modality, crops=crops, seed=seed)
        typer.echo(f"{len(images)} {modality} images, {len(slices)} windows")
        res = ssl.pretrain(slices, method=method, steps=steps, batch_size=batch_size, seed=seed, log=typer.echo)
        info = {
            "data": (
                f"{len(slices)} axial {modality} slices of the {len(images)} series in {cohort.name}"
                if crops == 1
                else f"{len(slices)} 64 x 64 windows of the axial slices of the {len(images)} {modality} series "
                f"in {cohort.name} ({crops} random windows per slice, those with signal kept)"
            ),
            "crops": crops,
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "command": f"medlens pretrain {cohort.name} --method {method} --modality {modality} --steps {steps}"
            + (f" --crops {crops}" if crops > 1 else ""),
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

    @app.command("denoise-ct")
    def denoise_ct_cmd(
        image: Annotated[Path, typer.Argument(help="CT in HU (a low-dose one): DICOM folder or NIfTI/NRRD file.")],
        out: Annotated[Path, typer.Option("--out", help="Output volume (.nii.gz / .nrrd).")],
        method: Annotated[
            str, typer.Option(help="cnn (supervised residual CNN) or diffusion (DDPM prior of full-dose CT, slow).")
        ] = "cnn",
        checkpoint: Annotated[
            Path | None,
            typer.Option(
                help="A checkpoint of the method's kind (.pt with its .json); default the shipped "
                "sts_ct_denoise_cnn or sts_ct_diffusion_prior."
            ),
        ] = None,
        threads: Annotated[int, typer.Option(help="Intra-op threads.")] = 1,
        engine: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime, faster on CPU; cnn only).")] = "torch",
        ddim_steps: Annotated[int, typer.Option(help="DDIM steps of the diffusion method.")] = 8,
    ) -> None:
        """Denoise a CT with a model trained on STS CT (CNN or diffusion prior; see docs/learn-denoise.md)."""
        from medlens.io.api import read_image, write_image
        from medlens.learn.lowdose import DEFAULT_DENOISER, DEFAULT_DIFFUSION_PRIOR, denoise_ct

        img = read_image(image)
        res = denoise_ct(
            img, method=method, checkpoint=checkpoint, threads=threads, engine=engine, ddim_steps=ddim_steps
        )
        write_image(res, out)
        default = DEFAULT_DIFFUSION_PRIOR if method == "diffusion" else DEFAULT_DENOISER
        typer.echo(f"denoised ({method}) with {(checkpoint or default).name} ({engine}) -> {out}")
