"""``medlens segment``, ``train-seg``, ``evaluate-seg`` and ``evaluate-seg-cohort``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from medlens.segment.dispatch import Method


def _triple(text: str | None, name: str, cast: Any) -> tuple | None:
    from medlens.core.errors import InputError

    if text is None:
        return None
    try:
        vals = tuple(cast(v) for v in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise InputError(f"{name} must be comma-separated numbers like 10,20,30; got {text!r}") from exc
    return vals


def _write_mask(mask: Any, out: Path, source: Path, method: str) -> None:
    import numpy as np

    from medlens.core.errors import InputError, ProcessingError

    name = out.name.lower()
    if name.endswith(".dcm"):
        if not np.any(mask.array):
            raise ProcessingError(f"the mask is empty; refusing to write an empty DICOM SEG to {out}")
        from medlens.io.api import volume_suffix

        if volume_suffix(source) is not None:
            raise InputError(
                f"DICOM SEG output needs a DICOM source series; {source} is a volume file. Write .nii.gz instead"
            )
        from medlens.io.seg import write_seg

        m = mask if mask.is_mask else mask.with_array(mask.array > 0)
        write_seg(
            m,
            source,
            out,
            segment_label=f"MedLens {method}",
            algorithm_type="SEMIAUTOMATIC" if method not in ("otsu", "multi-otsu", "lungs", "unet") else "AUTOMATIC",
            algorithm_name=f"MedLens {method}",
        )
        return
    from medlens.io.api import write_image

    arr = mask.array.astype(np.uint8) if mask.is_mask else mask.array
    write_image(mask.with_array(arr), out)


def register(app: typer.Typer) -> None:
    @app.command("segment")
    def segment(
        image: Annotated[Path, typer.Argument(help="Image: DICOM folder or NIfTI/NRRD file.")],
        out: Annotated[Path, typer.Option("--out", help="Output mask: .nii.gz/.nrrd, or .dcm for DICOM SEG.")],
        method: Annotated[Method, typer.Option("--method", help="Segmentation method.")] = Method.otsu,
        lower: Annotated[float | None, typer.Option(help="Lower bound (image units: HU, SUVbw).")] = None,
        upper: Annotated[float | None, typer.Option(help="Upper bound (image units).")] = None,
        units: Annotated[str | None, typer.Option(help="Units of --lower/--upper, checked against the image.")] = None,
        seed_index: Annotated[str | None, typer.Option(help="Seed as array index z,y,x.")] = None,
        seed_mm: Annotated[str | None, typer.Option(help="Seed as LPS point x,y,z in mm.")] = None,
        tolerance: Annotated[float | None, typer.Option(help="Region growing: seed value +- tolerance.")] = None,
        multiplier: Annotated[float, typer.Option(help="Confidence connected: mean +- k*sd.")] = 2.5,
        fraction: Annotated[float, typer.Option(help="SUV threshold: fraction of SUVmax.")] = 0.4,
        search_radius_mm: Annotated[float, typer.Option(help="SUV threshold: SUVmax search radius.")] = 15.0,
        classes: Annotated[int, typer.Option(help="Multi-Otsu classes.")] = 3,
        model: Annotated[Path | None, typer.Option(help="U-Net model folder (default: the shipped one).")] = None,
        backend: Annotated[str, typer.Option(help="U-Net backend: torch or onnx.")] = "torch",
        allow_other_modality: Annotated[bool, typer.Option(help="U-Net: warn instead of refusing.")] = False,
        largest: Annotated[bool, typer.Option(help="Keep the largest connected component.")] = False,
        fill: Annotated[bool, typer.Option("--fill-holes", help="Fill holes.")] = False,
        opening_mm: Annotated[float | None, typer.Option(help="Morphological opening radius (mm).")] = None,
        closing_mm: Annotated[float | None, typer.Option(help="Morphological closing radius (mm).")] = None,
    ) -> None:
        """Segment IMAGE and write the mask (label image for multi-otsu and lungs)."""
        import numpy as np

        from medlens.cli._common import DICOM_SUFFIXES, check_inputs, check_output, volume_suffixes

        check_inputs(IMAGE=image, model=model)
        check_output(out, name="--out", suffixes=(*volume_suffixes(), *DICOM_SUFFIXES))
        from medlens.io.api import read_image
        from medlens.segment.dispatch import postprocess_mask
        from medlens.segment.dispatch import segment as segment_image

        img = read_image(image)
        per_method: dict[Method, dict[str, Any]] = {
            Method.otsu: {},
            Method.multi_otsu: {"classes": classes},
            Method.threshold: {"lower": lower, "upper": upper, "units": units},
            Method.region_grow: {"tolerance": tolerance, "lower": lower, "upper": upper},
            Method.confidence: {"multiplier": multiplier},
            Method.suv_threshold: {"fraction": fraction, "search_radius_mm": search_radius_mm},
            Method.lungs: {},
            Method.unet: {"model_dir": model, "backend": backend, "allow_other_modality": allow_other_modality},
        }
        options = per_method[method]
        if method in (Method.region_grow, Method.confidence, Method.suv_threshold):
            options.update(
                seed_index=_triple(seed_index, "--seed-index", int), seed_mm=_triple(seed_mm, "--seed-mm", float)
            )
        mask = segment_image(img, method=method.value, **options)
        mask = postprocess_mask(mask, largest=largest, fill_holes=fill, opening_mm=opening_mm, closing_mm=closing_mm)
        _write_mask(mask, out, image, method.value)
        n = int(np.count_nonzero(mask.array))
        typer.echo(f"{method.value}: {n} voxels ({n * img.voxel_volume_mm3 / 1000.0:.2f} ml) -> {out}")

    @app.command("evaluate-seg")
    def evaluate_seg(
        pred: Annotated[Path, typer.Argument(help="Predicted mask (NIfTI/NRRD, or SEG/RTSTRUCT with --reference).")],
        gt: Annotated[Path, typer.Argument(help="Reference mask (same kinds).")],
        reference: Annotated[Path | None, typer.Option(help="Image whose grid the masks are read onto.")] = None,
        roi: Annotated[str | None, typer.Option(help="ROI name in an RTSTRUCT/SEG.")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Dice, Jaccard, HD95 and ASSD (mm), volume difference between PRED and GT."""
        from medlens.cli._common import check_inputs

        check_inputs(PRED=pred, GT=gt, reference=reference)
        from medlens.io.api import read_image, read_mask
        from medlens.segment import metrics

        if reference is not None:
            ref = read_image(reference)
            p, g = read_mask(pred, reference=ref, roi=roi), read_mask(gt, reference=ref, roi=roi)
        else:
            pi, gi = read_image(pred), read_image(gt)
            p, g = pi.with_array(pi.array > 0), gi.with_array(gi.array > 0)
        res = metrics.evaluate_case(p, g)
        if as_json:
            typer.echo(json.dumps(res, indent=2))
            return
        for k, v in res.items():
            typer.echo(f"{k:>18}: {v:.4g}")

    @app.command("train-seg")
    def train_seg(
        cohort: Annotated[Path, typer.Argument(help="Cohort CSV (patient_id, pet_image, pet_rtstruct).")],
        out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
        epochs: Annotated[int, typer.Option(help="Training epochs.")] = 40,
        dims: Annotated[int, typer.Option(help="2 (slices, 64x64) or 3 (32^3 patches).")] = 2,
        roi: Annotated[str, typer.Option(help="RTSTRUCT ROI name.")] = "GTV_Mass_PET",
        threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 1,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        onnx: Annotated[bool, typer.Option(help="Also export model.onnx.")] = True,
    ) -> None:
        """Train a lesion U-Net on every patient of COHORT and save it (model.pt, model.json[, model.onnx])."""
        from medlens.segment.unet import UNetConfig, export_onnx, load_case, read_cohort, save_model, train

        rows = read_cohort(cohort)
        cases = [load_case(r["pet_image"], r["pet_rtstruct"], roi=roi, patient_id=r["patient_id"]) for r in rows]
        cfg = (
            UNetConfig()
            if dims == 2
            else UNetConfig(spatial_dims=3, channels=(8, 16, 32), strides=(2, 2), roi_size=(32, 32, 32))
        )
        res = train(cases, cfg, epochs=epochs, seed=seed, threads=threads, log=typer.echo)
        info = {"recipe": {"cohort": str(cohort), "epochs": epochs, "seed": seed, "roi": roi}, "losses": res.losses}
        save_model(res.net, cfg, out, info=info)
        if onnx:
            export_onnx(res.net, cfg, out / "model.onnx")
        typer.echo(f"trained on {len(cases)} patients in {res.seconds:.0f} s -> {out}")

    @app.command("evaluate-seg-cohort")
    def evaluate_seg_cohort(
        cohort: Annotated[Path, typer.Argument(help="Cohort CSV (patient_id, pet_image, pet_rtstruct).")],
        folds: Annotated[int, typer.Option(help="Number of patient-level folds.")] = 5,
        epochs: Annotated[int, typer.Option(help="U-Net epochs per fold.")] = 40,
        unet: Annotated[bool, typer.Option(help="Train and evaluate the U-Net (else baselines only).")] = True,
        limit: Annotated[int | None, typer.Option(help="Use only the first N patients.")] = None,
        threads: Annotated[int, typer.Option(help="CPU threads for torch.")] = 1,
        roi: Annotated[str, typer.Option(help="RTSTRUCT ROI name.")] = "GTV_Mass_PET",
        json_out: Annotated[Path | None, typer.Option("--json", help="Write per-case rows as JSON.")] = None,
    ) -> None:
        """Cross-validate the U-Net and the classic baselines; print the per-fold table."""
        from medlens.core.atomic import atomic_write_text
        from medlens.segment.unet import UNetConfig, load_case, read_cohort
        from medlens.segment.unet.evaluate import cross_validate, fold_table

        rows = read_cohort(cohort)[:limit]
        cases = [load_case(r["pet_image"], r["pet_rtstruct"], roi=roi, patient_id=r["patient_id"]) for r in rows]
        res = cross_validate(cases, UNetConfig(), k=folds, epochs=epochs, threads=threads, with_unet=unet)
        typer.echo(fold_table(res))
        if json_out is not None:
            atomic_write_text(json_out, json.dumps(res, indent=1, default=float))
