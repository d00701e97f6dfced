"""``medlens transfer-cls``: pretrained-vs-scratch label efficiency of a patient-level image classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("transfer-cls")
    def transfer_cls_cmd(
        cohort: Annotated[
            Path, typer.Argument(help="Cohort CSV: patient_id, the label column, pet_image, pet_rtstruct.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Output folder (transfer_cls.csv/.json/.md).")],
        checkpoint: Annotated[
            Path | None, typer.Option(help="unet-encoder checkpoint (.pt + .json); default the shipped SimCLR PET one.")
        ] = None,
        label: Annotated[str, typer.Option(help="Binary (0/1) label column of COHORT.")] = "lung_metastasis",
        fractions: Annotated[str, typer.Option(help="Labelled fractions of each fold's training patients.")] = (
            "0.1,0.25,0.5,1.0"
        ),
        folds: Annotated[int, typer.Option(help="Stratified patient-level folds.")] = 5,
        seed: Annotated[int, typer.Option(help="Seed of folds, subsets and training.")] = 0,
        repeats: Annotated[int, typer.Option(help="Repeated stratified splits (seeds seed, seed+1, ...).")] = 1,
        steps: Annotated[int, typer.Option(help="Optimisation steps per trained model.")] = 120,
        arms: Annotated[str, typer.Option(help="Image arms: scratch, pretrained, probe.")] = "scratch,pretrained,probe",
        clinical: Annotated[bool, typer.Option(help="Add the clinical model and the late-fusion arms.")] = True,
        pooling: Annotated[str, typer.Option(help="Slice pooling: attention or mean.")] = "attention",
        cache: Annotated[Path | None, typer.Option(help="Folder for the cached GTV slice crops.")] = None,
    ) -> None:
        """Label-efficiency table of COHORT: AUC [95 % CI] per arm and labelled fraction (docs/learn-classification)."""
        from medlens.cli._common import check_inputs, check_output
        from medlens.core.errors import InputError
        from medlens.learn.transfer_cls import run_transfer_cls

        check_inputs(cohort=cohort, checkpoint=checkpoint)
        check_output(out, name="--out", folder=True)
        try:
            fr = [float(f) for f in fractions.split(",") if f.strip()]
        except ValueError:
            raise InputError(f"--fractions {fractions!r}: expected comma-separated numbers in (0, 1]") from None
        if not fr or any(not 0 < f <= 1 for f in fr):
            raise InputError(f"--fractions {fractions!r}: every fraction must be in (0, 1]")
        doc = run_transfer_cls(
            cohort,
            out,
            checkpoint=checkpoint,
            label=label,
            fractions=fr,
            k=folds,
            seed=seed,
            repeats=repeats,
            arms=[a.strip() for a in arms.split(",") if a.strip()],
            clinical=clinical,
            pooling=pooling,
            steps=steps,
            cache_dir=cache,
            log=typer.echo,
        )
        from medlens.learn.transfer_cls import markdown_table

        typer.echo(markdown_table(doc["summary"]))
        typer.echo(f"{doc['n_patients']} patients, {doc['seconds']:.0f} s -> {out}")
