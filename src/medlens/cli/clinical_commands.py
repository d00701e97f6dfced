"""``medlens clinical measure|lungrads|sr|report`` and ``medlens explain gradcam``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _read_pair(image: Path, mask: Path, roi: str | None) -> tuple[Any, Any]:
    import medlens

    img = medlens.read_image(image)
    return img, medlens.read_mask(mask, reference=img, roi=roi)


def _print_measurement(d: dict[str, Any]) -> None:
    keys = [
        ("long_axis_mm", "long axis (mm)"),
        ("short_axis_mm", "short axis (mm)"),
        ("mean_diameter_mm", "mean diameter (mm)"),
        ("volume_mm3", "volume (mm3)"),
        ("nodule_type", "composition"),
        ("solid_mean_diameter_mm", "solid component mean diameter (mm)"),
        ("mean_hu", "mean attenuation (HU)"),
        ("suv_max", "SUVmax"),
        ("suv_peak", "SUVpeak"),
        ("suv_mean", "SUVmean"),
        ("tlg_g", "TLG (g)"),
    ]
    for k, name in keys:
        v = d.get(k)
        if v is None:
            continue
        typer.echo(f"{name:36s} {v:.2f}" if isinstance(v, float) else f"{name:36s} {v}")


def register(app: typer.Typer) -> None:
    """Add the clinical and explanation commands to the ``medlens`` app."""
    clinical = typer.Typer(help="Lesion measurements, Lung-RADS v2022, DICOM SR and reports.", no_args_is_help=True)
    explain = typer.Typer(help="Explanations of the deep models (Grad-CAM).", no_args_is_help=True)
    app.add_typer(clinical, name="clinical")
    app.add_typer(explain, name="explain")

    @clinical.command("measure")
    def measure(
        image: Annotated[Path, typer.Argument(help="CT (HU) or PET (SUVbw): DICOM folder or NIfTI/NRRD.")],
        mask: Annotated[Path, typer.Argument(help="RTSTRUCT, DICOM SEG or label image on IMAGE.")],
        roi: Annotated[str | None, typer.Option(help="ROI name / segment label.")] = None,
        prior: Annotated[Path | None, typer.Option(help="Image of the prior exam (same lesion, earlier).")] = None,
        prior_mask: Annotated[Path | None, typer.Option(help="Mask on the prior image.")] = None,
        prior_roi: Annotated[str | None, typer.Option(help="ROI name on the prior mask (default: --roi).")] = None,
        current_date: Annotated[str | None, typer.Option(help="Current exam date YYYYMMDD (default: header).")] = None,
        prior_date: Annotated[str | None, typer.Option(help="Prior exam date YYYYMMDD (default: header).")] = None,
        solid_threshold_hu: Annotated[float, typer.Option(help="CT: solid voxels at or above (HU).")] = -300.0,
        out: Annotated[Path | None, typer.Option("--json", help="Write the measurements as JSON here.")] = None,
    ) -> None:
        """Lung-RADS long/short axis, mean diameter, volume, CT composition or PET SUVs; growth vs a prior."""
        from medlens.clinical.measure import growth, measure_lesion
        from medlens.core.atomic import atomic_write_text
        from medlens.core.errors import InputError

        img, m = _read_pair(image, mask, roi)
        cur = measure_lesion(img, m, solid_threshold_hu=solid_threshold_hu)
        doc: dict[str, Any] = cur.to_dict()
        _print_measurement(doc)
        if (prior is None) != (prior_mask is None):
            raise InputError("growth needs both --prior (image) and --prior-mask")
        if prior is not None and prior_mask is not None:
            pimg, pm = _read_pair(prior, prior_mask, prior_roi or roi)
            g = growth(
                cur,
                measure_lesion(pimg, pm, solid_threshold_hu=solid_threshold_hu),
                current_date=current_date,
                prior_date=prior_date,
            )
            doc["growth"] = g.to_dict()
            typer.echo(f"{'growth':36s} {'growing' if g.growing else 'not growing'}: {g.rule}")
        if out is not None:
            atomic_write_text(out, json.dumps(doc, indent=2, default=str))

    @clinical.command("lungrads")
    def lungrads(
        mean_diameter: Annotated[float, typer.Option("--mean-diameter", help="Mean diameter (mm).")] = 0.0,
        nodule_type: Annotated[str, typer.Option("--type", help="solid, part_solid or ground_glass.")] = "solid",
        status: Annotated[str, typer.Option(help="baseline, new, growing or stable.")] = "baseline",
        solid_diameter: Annotated[
            float | None, typer.Option("--solid-diameter", help="Part-solid: solid component (mm).")
        ] = None,
        prior_category: Annotated[str | None, typer.Option(help="Category at the previous exam (stable).")] = None,
        measurements: Annotated[
            Path | None, typer.Option("--from-json", help="Take type and diameters from `clinical measure --json`.")
        ] = None,
        benign_calcification: Annotated[bool, typer.Option(help="Benign calcification pattern.")] = False,
        fat: Annotated[bool, typer.Option("--fat", help="Fat-containing.")] = False,
        juxtapleural: Annotated[bool, typer.Option(help="Juxtapleural with benign morphology.")] = False,
        airway: Annotated[str | None, typer.Option(help="subsegmental or segmental_or_proximal.")] = None,
        cyst: Annotated[str | None, typer.Option(help="Atypical cyst finding (see docs/clinical.md).")] = None,
        slow_growth: Annotated[bool, typer.Option(help="Slow growth over several exams.")] = False,
        suspicious: Annotated[bool, typer.Option(help="Additional suspicious features (4X).")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Lung-RADS v2022 category of one nodule, with the rule trail."""
        from medlens.clinical.lungrads import Nodule, assess_nodule
        from medlens.core.errors import FormatError

        if measurements is not None:
            try:
                doc = json.loads(Path(measurements).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise FormatError(f"{measurements}: not a JSON file from `medlens clinical measure` ({exc})") from exc
            mean_diameter = float(doc["mean_diameter_mm"])
            nodule_type = doc.get("nodule_type") or nodule_type
            if solid_diameter is None and nodule_type == "part_solid":
                solid_diameter = doc.get("solid_mean_diameter_mm")
        res = assess_nodule(
            Nodule(
                nodule_type=nodule_type,  # type: ignore[arg-type]
                mean_diameter_mm=mean_diameter,
                status=status,  # type: ignore[arg-type]
                solid_mean_diameter_mm=solid_diameter,
                prior_category=prior_category,  # type: ignore[arg-type]
                benign_calcification=benign_calcification,
                fat_containing=fat,
                juxtapleural_benign=juxtapleural,
                airway=airway,  # type: ignore[arg-type]
                cyst=cyst,  # type: ignore[arg-type]
                slow_growth_multiple_exams=slow_growth,
                suspicious_features=suspicious,
            )
        )
        if as_json:
            typer.echo(json.dumps(res.to_dict(), indent=2))
            return
        typer.echo(f"Lung-RADS v2022 category {res.category.value}: {res.management}")
        for h in res.trail:
            typer.echo(f"  {h}")

    @clinical.command("sr")
    def sr(
        image: Annotated[Path, typer.Argument(help="DICOM folder of the image series.")],
        mask: Annotated[Path, typer.Argument(help="RTSTRUCT or DICOM SEG on that series.")],
        out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for seg.dcm and measurements_sr.dcm.")],
        roi: Annotated[list[str] | None, typer.Option(help="ROI(s) to report (default: all).")] = None,
        lungrads_status: Annotated[
            str | None, typer.Option(help="CT: record the Lung-RADS category for this status.")
        ] = None,
    ) -> None:
        """Measure the ROIs and write a Comprehensive 3D SR (TID 1500) referencing a SEG."""
        from medlens.clinical.report import study_report

        paths = study_report(
            image_files=image, mask_path=mask, rois=roi, out_dir=out_dir, pdf=False, lungrads_status=lungrads_status
        )
        for kind in ("seg", "sr"):
            if kind in paths:
                typer.echo(f"{kind}: {paths[kind]}")

    @clinical.command("report")
    def report(
        image: Annotated[Path, typer.Argument(help="DICOM folder of the image series.")],
        mask: Annotated[Path, typer.Argument(help="RTSTRUCT or DICOM SEG on that series.")],
        out_dir: Annotated[Path, typer.Option("--out-dir", help="Output folder.")],
        roi: Annotated[list[str] | None, typer.Option(help="ROI(s) to report (default: all).")] = None,
        lungrads_status: Annotated[str | None, typer.Option(help="CT: assess as lung nodules (baseline...).")] = None,
        prior_category: Annotated[str | None, typer.Option(help="For stable nodules: previous category.")] = None,
        cam: Annotated[Path | None, typer.Option(help="Grad-CAM NIfTI on the image grid to overlay.")] = None,
        pdf: Annotated[
            bool | None, typer.Option("--pdf/--no-pdf", help="PDF (default: when Chromium is found).")
        ] = None,
    ) -> None:
        """One-page HTML (+PDF) report with key images, plus SEG, SR and measurements.json."""
        import medlens
        from medlens.clinical.report import study_report

        cam_img = None
        if cam is not None:
            cam_img = medlens.read_image(cam)
        paths = study_report(
            image_files=image,
            mask_path=mask,
            rois=roi,
            out_dir=out_dir,
            pdf=pdf,
            lungrads_status=lungrads_status,
            prior_category=prior_category,
            cam=cam_img,
        )
        for kind, p in paths.items():
            typer.echo(f"{kind}: {p}")

    @explain.command("gradcam")
    def gradcam(
        image: Annotated[Path, typer.Argument(help="PET in SUVbw: DICOM folder or NIfTI.")],
        out: Annotated[Path, typer.Option("--out", help="Grad-CAM map (.nii.gz) on the image grid.")],
        png: Annotated[Path | None, typer.Option(help="Overlay PNG of the slice with the highest map.")] = None,
        model: Annotated[Path | None, typer.Option(help="U-Net model folder (default: the shipped one).")] = None,
        method: Annotated[str, typer.Option(help="gradcam or gradcampp.")] = "gradcam",
        layer: Annotated[str | None, typer.Option(help="Target layer (default: the documented one).")] = None,
        mask: Annotated[Path | None, typer.Option(help="Lesion mask to explain (default: the prediction).")] = None,
        roi: Annotated[str | None, typer.Option(help="ROI name in --mask.")] = None,
    ) -> None:
        """Grad-CAM of the lesion U-Net (lesion logit over the predicted or given mask), saved as NIfTI."""
        import numpy as np

        import medlens
        from medlens.core.errors import ProcessingError
        from medlens.learn.explain import UNET_TARGET_LAYER, gradcam_unet, overlay_png

        img = medlens.read_image(image)
        m = medlens.read_mask(mask, reference=img, roi=roi) if mask is not None else None
        cam = gradcam_unet(img, model_dir=model, method=method, target_layer=layer or UNET_TARGET_LAYER, mask=m)
        a = np.asarray(cam.array)
        if not a.any():
            raise ProcessingError(f"{image}: the U-Net finds no lesion to explain (the map is empty); pass --mask")
        medlens.write_image(cam, out)
        typer.echo(f"map: {out}")
        if png is not None:
            z = int(np.argmax(a.reshape(a.shape[0], -1).sum(axis=1)))
            overlay_png(
                np.asarray(img.array[z]),
                a[z],
                png,
                mask2d=None if m is None else np.asarray(m.array[z]),
                spacing_mm=(img.spacing[1], img.spacing[2]),
                title=f"{method} slice {z}",
            )
            typer.echo(f"overlay: {png}")
