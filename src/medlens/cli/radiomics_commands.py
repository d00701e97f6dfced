"""``medlens features`` and ``medlens features-batch``: IBSI radiomics features to CSV.

Output: one row per case with the inputs (image, mask, ROI), the preset name, the settings
hash (lineage) and the warnings that explain NaN values, then one column per IBSI feature tag.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Annotated, Any

import typer

_PRESET_HELP = "Preset (default|ibsi-a|ibsi-b|ibsi-c|ibsi-d|ibsi-e|ibsi-dig) or a settings YAML file."


def _read_pair(image_path: Path, mask_path: Path, roi: str | None) -> tuple[Any, Any]:
    import medlens
    from medlens.core.errors import InputError

    img = medlens.read_image(image_path)
    try:
        msk = medlens.read_mask(mask_path, reference=img, roi=roi)
    except ModuleNotFoundError:
        # mask reader not installed yet: a label volume is accepted directly (non-zero = ROI)
        if roi is not None:
            raise InputError(
                f"{mask_path}: reading ROI {roi!r} from RTSTRUCT/SEG needs medlens.io.masks, which is not available"
            ) from None
        lab = medlens.read_image(mask_path)
        msk = lab.with_array(lab.array != 0)
    return img, msk


def _fmt(v: float) -> str:
    return "nan" if not math.isfinite(v) else repr(float(v))


def _write_table(rows: list[dict[str, Any]], out: Path) -> None:
    from medlens.core.atomic import atomic_write_text

    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    for r in rows:
        w.writerow({k: (_fmt(v) if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(out, buf.getvalue())


def _one(case_id: str, image: Path, mask: Path, roi: str | None, preset: str) -> dict[str, Any]:
    import warnings

    from medlens.core.errors import MedlensWarning
    from medlens.radiomics import extract, load_preset

    settings = load_preset(preset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img, msk = _read_pair(image, mask, roi)
        feats = extract(img, msk, settings)
    reasons: list[str] = []
    for w in caught:
        if not issubclass(w.category, MedlensWarning):
            continue
        msg = str(w.message)
        if msg not in reasons:
            reasons.append(msg)
            typer.echo(f"warning: {case_id}: {msg}", err=True)
    row: dict[str, Any] = {
        "case_id": case_id,
        "image": str(image),
        "mask": str(mask),
        "roi": roi or "",
        "preset": settings.name,
        "settings_hash": settings.settings_hash(),
        # why features are NaN (empty ROI, constant ROI, ...): kept in the output, not only on stderr
        "warnings": " | ".join(reasons),
    }
    row.update(feats)
    return row


def register(app: typer.Typer) -> None:
    @app.command("warm-up")
    def warm_up_cmd(
        aot: Annotated[
            bool,
            typer.Option("--aot/--no-aot", help="Also build the ahead-of-time kernel module (needs a C compiler)."),
        ] = True,
    ) -> None:
        """Compile the radiomics kernels into the user cache (once after installing; ~1 min), so no run pays it."""
        from medlens.radiomics._jit import cache_dir
        from medlens.radiomics.warmup import prepare_kernels

        seconds, built = prepare_kernels(aot=aot)
        typer.echo(f"radiomics kernels ready in {seconds:.1f} s (numba cache: {cache_dir()})")
        if built is None:
            return
        if built.error is not None:
            typer.echo(
                f"ahead-of-time kernels not built ({built.error}); fresh processes will import numba and load "
                "the cached kernels instead (~0.6 s more per process)"
            )
        else:
            typer.echo(
                f"ahead-of-time kernels: {built.kernels} kernels, {built.signatures} signatures in "
                f"{built.seconds:.1f} s -> {built.path}"
            )

    @app.command("features")
    def features(
        image: Annotated[Path, typer.Argument(help="Image: DICOM folder or NIfTI/NRRD/MHA file.")],
        mask: Annotated[Path, typer.Argument(help="Mask: RTSTRUCT/SEG or label volume.")],
        out: Annotated[Path, typer.Option("--out", help="Output CSV (one row).")],
        preset: Annotated[str, typer.Option("--preset", help=_PRESET_HELP)] = "default",
        roi: Annotated[str | None, typer.Option("--roi", help="ROI name in an RTSTRUCT/SEG.")] = None,
    ) -> None:
        """Compute IBSI radiomics features of one ROI and write them as a one-row CSV."""
        from medlens.cli._common import CSV_SUFFIXES, check_inputs, check_output

        check_inputs(IMAGE=image, MASK=mask)
        check_output(out, name="--out", suffixes=CSV_SUFFIXES)
        row = _one(image.name, image, mask, roi, preset)
        _write_table([row], out)
        n = sum(1 for k in row if k not in ("case_id", "image", "mask", "roi", "preset", "settings_hash", "warnings"))
        typer.echo(f"{n} features written to {out}")

    @app.command("features-batch")
    def features_batch(
        cases: Annotated[Path, typer.Argument(help="CSV with columns image, mask and optional case_id, roi.")],
        out: Annotated[Path, typer.Option("--out", help="Output CSV, one row per case.")],
        preset: Annotated[str, typer.Option("--preset", help=_PRESET_HELP)] = "default",
    ) -> None:
        """Compute features for every case listed in CASES.csv (paths relative to that file's folder)."""
        from medlens.cli._common import CSV_SUFFIXES, check_inputs, check_output
        from medlens.core.errors import InputError, MedlensError

        check_inputs(CASES=cases)
        check_output(out, name="--out", suffixes=CSV_SUFFIXES)
        if not cases.is_file():
            raise InputError(f"{cases}: no such cases file")
        with cases.open(newline="") as fh:
            table = list(csv.DictReader(fh))
        if not table:
            raise InputError(f"{cases}: no case rows (expected a header image,mask[,case_id,roi] and rows)")
        missing = {"image", "mask"} - set(table[0])
        if missing:
            raise InputError(f"{cases}: missing column(s) {sorted(missing)}; found {list(table[0])}")
        base = cases.parent
        rows = []
        for i, rec in enumerate(table, start=1):
            img = Path(rec["image"])
            msk = Path(rec["mask"])
            img = img if img.is_absolute() else base / img
            msk = msk if msk.is_absolute() else base / msk
            cid = rec.get("case_id") or f"case{i}"
            try:
                rows.append(_one(cid, img, msk, rec.get("roi") or None, preset))
            except MedlensError as exc:  # name the failing row; nothing is written
                raise type(exc)(f"{cases} row {i} (case {cid}): {exc}") from exc
            typer.echo(f"{cid}: done")
        _write_table(rows, out)
        typer.echo(f"{len(rows)} cases written to {out}")
