"""One-page lesion reports: HTML (key images embedded as PNG data URIs) and PDF (headless Chromium).

:func:`key_image_png` draws the axial slice through a lesion (the slice of its long axis) with the mask
contour, the long and short axes and, when given, a Grad-CAM map; :func:`render_report` lays out the
measurement table, the Lung-RADS category and its rule trail, growth against a prior and the key images;
:func:`write_report` measures masks on an image and writes the HTML (and the PDF when Chromium is found);
:func:`study_report` is the entry point of the REST service's ``report`` job: DICOM series in, SEG (when
the masks came from an RTSTRUCT), Comprehensive 3D SR, JSON, HTML and PDF out.

The HTML is self-contained (no external resources) so it can be archived or e-mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medlens.clinical.lungrads import LungRADSResult
from medlens.clinical.measure import Growth, LesionMeasurement, measure_lesion
from medlens.core.atomic import atomic_path, atomic_write_text
from medlens.core.errors import InputError, MedlensWarning, ProcessingError
from medlens.core.image import Image, Units

__all__ = [
    "CT_LUNG_WINDOW_HU",
    "CT_SOFT_TISSUE_WINDOW_HU",
    "ReportFinding",
    "html_to_pdf",
    "key_image_png",
    "render_report",
    "screenshot",
    "study_report",
    "write_report",
]

PathLike = str | os.PathLike[str]

#: Lung window (centre, width) in HU; Lung-RADS: "nodules should be measured on lung windows".
CT_LUNG_WINDOW_HU = (-600.0, 1500.0)
#: Soft-tissue window (centre, width) in HU, for CT lesions reported without Lung-RADS.
CT_SOFT_TISSUE_WINDOW_HU = (40.0, 400.0)


def _display_range(image: Image, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        c, w = float(window[0]), float(window[1])
        if not w > 0:
            raise InputError(f"window must be (centre, width) with width > 0, got {window}")
        return c - w / 2, c + w / 2
    if image.meta.units == Units.HU:
        c, w = CT_LUNG_WINDOW_HU
        return c - w / 2, c + w / 2
    a = np.asarray(image.array, np.float64)
    lo, hi = float(np.percentile(a, 1)), float(np.percentile(a, 99.5))
    return lo, hi if hi > lo else lo + 1.0


def key_image_png(
    image: Image,
    mask: Image,
    measurement: LesionMeasurement,
    *,
    cam: Image | None = None,
    window: tuple[float, float] | None = None,
    title: str | None = None,
    crop_margin_mm: float = 30.0,
) -> bytes:
    """PNG bytes of the axial slice through the lesion: image in grey, mask contour, long/short axis.

    Parameters
    ----------
    image, mask
        The volume and the lesion mask on its grid.
    measurement
        From :func:`~medlens.clinical.measure.measure_lesion` (gives the slice and the axes' end points).
    cam
        A Grad-CAM map on the same grid, drawn in colour where above 0.05.
    window
        Display (centre, width) in image units; default: the lung window for CT, percentiles otherwise.
    crop_margin_mm
        Field of view: the lesion's bounding box on the slice plus this margin.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image.require_same_grid(mask, what="mask")
    if cam is not None:
        image.require_same_grid(cam, what="Grad-CAM map")
    z = measurement.slice_index
    img = np.asarray(image.array[z], np.float64)
    m = np.asarray(mask.array[z], bool)
    if not m.any():
        raise InputError(f"the mask has no voxel on slice {z}, where the measurement was made")
    dy, dx = image.spacing[1], image.spacing[2]
    rr, cc = np.nonzero(m)
    my, mx = int(np.ceil(crop_margin_mm / dy)), int(np.ceil(crop_margin_mm / dx))
    r0, r1 = max(0, rr.min() - my), min(img.shape[0], rr.max() + my + 1)
    c0, c1 = max(0, cc.min() - mx), min(img.shape[1], cc.max() + mx + 1)
    lo, hi = _display_range(image, window)
    h, w = (r1 - r0) * dy, (c1 - c0) * dx
    fig, ax = plt.subplots(figsize=(3.4, 3.4 * h / max(w, 1e-6)), dpi=110)
    extent = (c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5)
    ax.imshow(img[r0:r1, c0:c1], cmap="gray", vmin=lo, vmax=hi, aspect=dy / dx, extent=extent, interpolation="nearest")
    if cam is not None:
        c = np.asarray(cam.array[z], np.float64)[r0:r1, c0:c1]
        ax.imshow(
            np.ma.masked_less_equal(c, 0.05), cmap="jet", vmin=0, vmax=1, alpha=0.45, aspect=dy / dx, extent=extent
        )
    ax.contour(
        np.arange(img.shape[1]),
        np.arange(img.shape[0]),
        m.astype(float),
        levels=[0.5],
        colors="#00e5ff",
        linewidths=1.0,
    )
    (a0, a1), (b0, b1) = measurement.long_axis_ends, measurement.short_axis_ends
    ax.plot([a0[1], a1[1]], [a0[0], a1[0]], color="#ffd400", lw=1.2)
    ax.plot([b0[1], b1[1]], [b0[0], b1[0]], color="#ff5a36", lw=1.2)
    ax.set_xlim(c0 - 0.5, c1 - 0.5)
    ax.set_ylim(r1 - 0.5, r0 - 0.5)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout(pad=0.1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@dataclass(frozen=True)
class ReportFinding:
    """One lesion on the report."""

    label: str
    measurement: LesionMeasurement
    key_image: bytes | None = None
    cam_image: bytes | None = None
    lungrads: LungRADSResult | None = None
    growth: Growth | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


def _fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.{digits}f}{(' ' + unit) if unit else ''}"
    return html.escape(str(v)) + (f" {unit}" if unit else "")


def _rows(m: LesionMeasurement) -> list[tuple[str, str]]:
    rows = [
        ("Long axis", _fmt(m.long_axis_mm, "mm")),
        ("Short axis", _fmt(m.short_axis_mm, "mm")),
        ("Mean diameter", _fmt(m.mean_diameter_mm, "mm")),
        ("Volume", f"{m.volume_mm3:,.0f} mm&sup3;"),
        ("Measured on slice", str(m.slice_index)),
    ]
    if m.mean_hu is not None:
        rows.append(("Mean attenuation", _fmt(m.mean_hu, "HU")))
        rows.append(("Composition", _fmt((m.nodule_type or "").replace("_", "-"))))
        thr = m.solid_threshold_hu
        rows.append((f"Solid fraction (&ge; {thr:.0f} HU)", _fmt(100 * (m.solid_fraction or 0.0), "%")))
        if m.solid_mean_diameter_mm is not None:
            rows.append(("Solid component mean diameter", _fmt(m.solid_mean_diameter_mm, "mm")))
    if m.suv_max is not None:
        rows += [
            ("SUVmax", _fmt(m.suv_max, "g/ml", 2)),
            ("SUVpeak (1 ml sphere)", _fmt(m.suv_peak, "g/ml", 2)),
            ("SUVmean", _fmt(m.suv_mean, "g/ml", 2)),
            ("Total lesion glycolysis", _fmt(m.tlg_g, "g", 1)),
        ]
    return rows


_CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 10.5px; color: #111; margin: 8px; }
h1 { font-size: 17px; margin: 0 0 2px 0; } h2 { font-size: 13px; margin: 10px 0 4px 0; border-bottom: 1px solid #999; }
.meta { color: #444; margin-bottom: 6px; } table { border-collapse: collapse; }
td, th { padding: 1px 8px 1px 0; text-align: left; vertical-align: top; }
.finding { display: flex; gap: 12px; page-break-inside: avoid; margin-bottom: 6px; }
.cat { font-size: 22px; font-weight: bold; padding: 2px 10px; border: 2px solid #333; display: inline-block; }
.trail td { font-family: 'DejaVu Sans Mono', monospace; font-size: 9.5px; }
.imgs img { height: 210px; margin-right: 4px; } .small { color: #555; font-size: 9px; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_report(
    findings: Sequence[ReportFinding],
    *,
    title: str = "Lesion measurement report",
    patient_id: str = "",
    study_date: str = "",
    modality: str = "",
    source: str = "",
    exam_category: str | None = None,
    exam_management: str | None = None,
) -> str:
    """The report as a self-contained HTML page (one A4 page for up to two or three lesions)."""
    from medlens.core._version import __version__

    if not findings:
        raise InputError("render_report needs at least one finding")
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<div class='meta'>Patient {esc(patient_id or '-')} &middot; study date {esc(study_date or '-')} &middot; "
        f"{esc(modality or '-')} &middot; {len(findings)} lesion(s)</div>",
    ]
    if exam_category is not None:
        parts.append(
            f"<div>Lung-RADS v2022 exam category <span class='cat'>{esc(exam_category)}</span> "
            f"&nbsp; {esc(exam_management or '')}</div>"
        )
    for f in findings:
        parts.append(f"<h2>{esc(f.label)}</h2><div class='finding'><div>")
        parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in _rows(f.measurement)))
        if f.growth is not None:
            g = f.growth
            parts.append(
                f"<tr><th>Change vs prior</th><td>{g.mean_diameter_change_mm:+.1f} mm mean diameter, "
                f"{g.volume_change_relative * 100:+.0f}% volume"
                + (f", {g.interval_days} days" if g.interval_days is not None else "")
                + (f", VDT {g.volume_doubling_time_days:.0f} d" if g.volume_doubling_time_days else "")
                + f"; <b>{'growing' if g.growing else 'not growing'}</b></td></tr>"
            )
        parts.append("</table>")
        if f.lungrads is not None:
            lr = f.lungrads
            parts.append(
                f"<p>Lung-RADS v2022 <span class='cat'>{esc(lr.category.value)}</span> {esc(lr.management)}</p>"
                "<table class='trail'>" + "".join(f"<tr><td>{esc(str(h))}</td></tr>" for h in lr.trail) + "</table>"
            )
        for n in f.notes:
            parts.append(f"<p class='small'>{esc(n)}</p>")
        parts.append("</div><div class='imgs'>")
        if f.key_image is not None:
            parts.append(f"<img alt='key image {esc(f.label)}' src='{_data_uri(f.key_image)}'>")
        if f.cam_image is not None:
            parts.append(f"<img alt='Grad-CAM {esc(f.label)}' src='{_data_uri(f.cam_image)}'>")
        parts.append("</div></div>")
    parts.append(
        f"<p class='small'>Key images: lesion contour (cyan), long axis (yellow), short axis (red); Grad-CAM in "
        f"colour where shown. Diameters per Lung-RADS v2022 (axial slice with the longest diameter, 0.1 mm). "
        f"Source: {esc(source)}. MedLens {esc(__version__)}; not for clinical use without review.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _run_chromium(args: list[str], out: Path, what: str, timeout_s: float) -> Path:
    exe = _chromium()
    if exe is None:
        raise ProcessingError(f"{what} needs Chromium (apt-get install chromium); none found on PATH")
    with tempfile.TemporaryDirectory(prefix="medlens-chromium-") as profile, atomic_path(out) as tmp:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",  # root in containers; the page is our own file
            "--disable-gpu",
            f"--user-data-dir={profile}",
            *[a.replace("{OUT}", str(tmp)) for a in args],
        ]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ProcessingError(f"{what}: Chromium did not finish within {timeout_s:.0f} s") from exc
        if res.returncode != 0 or not Path(tmp).is_file() or Path(tmp).stat().st_size == 0:
            tail = (res.stderr or "").strip().splitlines()[-3:]
            raise ProcessingError(f"{what}: Chromium failed (exit {res.returncode}): {' | '.join(tail)}")
    return out


def html_to_pdf(html_path: PathLike, pdf_path: PathLike, *, timeout_s: float = 60.0) -> Path:
    """Print an HTML file to PDF with headless Chromium (A4, no header/footer), atomically."""
    src = Path(html_path).resolve()
    return _run_chromium(
        ["--no-pdf-header-footer", "--print-to-pdf={OUT}", src.as_uri()], Path(pdf_path), "PDF output", timeout_s
    )


def screenshot(
    html_path: PathLike, png_path: PathLike, *, size_px: tuple[int, int] = (900, 1270), timeout_s: float = 60.0
):
    """PNG screenshot of an HTML file with headless Chromium (to look at a report)."""
    src = Path(html_path).resolve()
    return _run_chromium(
        [f"--window-size={size_px[0]},{size_px[1]}", "--screenshot={OUT}", src.as_uri()],
        Path(png_path),
        "screenshot",
        timeout_s,
    )


def write_report(
    image: Image,
    masks: Mapping[str, Image],
    out_dir: PathLike,
    *,
    lungrads: Mapping[str, LungRADSResult] | None = None,
    growths: Mapping[str, Growth] | None = None,
    cams: Mapping[str, Image] | None = None,
    exam_category: str | None = None,
    exam_management: str | None = None,
    measurements: Mapping[str, LesionMeasurement] | None = None,
    pdf: bool | None = None,
    title: str = "Lesion measurement report",
    stem: str = "report",
    window: tuple[float, float] | None = None,
) -> dict[str, Path]:
    """Measure each mask on ``image`` and write ``report.html`` (+ ``report.pdf``) and ``measurements.json``.

    Parameters
    ----------
    image
        CT (HU) or PET (SUVbw) volume.
    masks
        Lesion label -> boolean mask on ``image``'s grid.
    lungrads, growths, cams
        Optional per-label Lung-RADS result, growth against a prior, Grad-CAM map (on ``image``'s grid).
    measurements
        Precomputed measurements per label (default: :func:`measure_lesion`).
    pdf
        ``True``: PDF required; ``False``: no PDF; ``None`` (default): PDF when Chromium is installed.
    window
        Key-image display (centre, width); default for CT: the lung window when Lung-RADS results are
        given, the soft-tissue window otherwise.

    Returns
    -------
    dict
        ``{"html": ..., "json": ..., "pdf": ...}`` (``pdf`` only when written).
    """
    if not masks:
        raise InputError("write_report needs at least one mask")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if window is None and image.meta.units == Units.HU:
        window = CT_LUNG_WINDOW_HU if lungrads else CT_SOFT_TISSUE_WINDOW_HU
    found = []
    table = {}
    for label, mask in masks.items():
        m = (measurements or {}).get(label) or measure_lesion(image, mask)
        table[label] = m.to_dict()
        key = key_image_png(image, mask, m, window=window, title=f"{label}: axial slice {m.slice_index}")
        cam_png = None
        if cams and label in cams:
            cam_png = key_image_png(image, mask, m, cam=cams[label], window=window, title=f"{label}: Grad-CAM")
        lr = (lungrads or {}).get(label)
        g = (growths or {}).get(label)
        if lr is not None:
            table[label]["lungrads"] = lr.to_dict()
        if g is not None:
            table[label]["growth"] = g.to_dict()
        found.append(ReportFinding(label, m, key, cam_png, lr, g))
    page = render_report(
        found,
        title=title,
        patient_id=image.meta.patient_id,
        study_date=str(image.meta.extra.get("study_date", "") or ""),
        modality=image.meta.modality,
        source=image.meta.source,
        exam_category=exam_category,
        exam_management=exam_management,
    )
    paths = {"html": out / f"{stem}.html", "json": out / "measurements.json"}
    atomic_write_text(paths["html"], page)
    atomic_write_text(paths["json"], json.dumps(table, indent=2, default=str))
    if pdf is None:
        pdf = _chromium() is not None
    if pdf:
        paths["pdf"] = html_to_pdf(paths["html"], out / f"{stem}.pdf")
    return paths


def study_report(
    *,
    image_files: PathLike | Sequence[PathLike],
    mask_path: PathLike,
    rois: Sequence[str] | None,
    out_dir: PathLike,
    pdf: bool | None = None,
    lungrads_status: str | None = None,
    prior_category: str | None = None,
    cam: Image | None = None,
) -> dict[str, Path]:
    """Measurements, DICOM SR and report of the lesions of one series (the REST ``report`` job).

    Parameters
    ----------
    image_files
        The DICOM files of the image series (CT or PET), or its folder.
    mask_path
        An RTSTRUCT or a DICOM SEG on that series (file or folder holding one).
    rois
        ROI names / segment labels to report (default: all of them).
    out_dir
        Receives ``seg.dcm`` (only when the masks came from an RTSTRUCT: the SR references a SEG),
        ``measurements_sr.dcm``, ``measurements.json``, ``report.html`` and ``report.pdf``.
    lungrads_status
        CT only: assess each lesion as a lung nodule with this status (``baseline``, ``new``, ``growing``,
        ``stable``; the type comes from the HU composition) and record the category in the SR and report.
    prior_category
        For ``stable`` nodules: their category at the previous exam.
    cam
        A Grad-CAM map on the image's grid, overlaid on every lesion's key image.

    Returns
    -------
    dict
        Paths by kind: ``sr``, ``seg``, ``json``, ``html``, ``pdf``.
    """
    import pydicom

    import medlens
    from medlens.clinical.sr import Finding, write_measurement_sr
    from medlens.io.seg import is_seg, list_segments, write_seg

    if isinstance(image_files, (str, os.PathLike)):
        source: Any = Path(image_files)
        image = medlens.read_image(source)
    else:
        source = [Path(f) for f in image_files]
        if not source:
            raise InputError("study_report needs the image series' files (image_files is empty)")
        image = medlens.read_image(source if len(source) > 1 else source[0])
    mp = Path(mask_path)
    probe = mp if mp.is_file() else next((q for q in sorted(mp.rglob("*")) if q.is_file()), mp)
    try:
        hdr = pydicom.dcmread(str(probe), stop_before_pixels=True)
    except Exception as exc:
        raise InputError(f"{mask_path}: not a readable RTSTRUCT or SEG ({type(exc).__name__}: {exc})") from exc
    seg_mode = is_seg(hdr)
    if rois:
        names = list(rois)
    elif seg_mode:
        names = list_segments(probe)
    else:
        names = [str(r.ROIName) for r in getattr(hdr, "StructureSetROISequence", [])]
    if not names:
        raise InputError(f"{mask_path}: no ROI to report")
    masks = {}
    for n in names:
        m = medlens.read_mask(probe if seg_mode else mask_path, reference=image, roi=n)
        if not np.asarray(m.array).any():
            warnings.warn(f"ROI {n!r} is empty on this series; left out of the report", MedlensWarning, stacklevel=2)
            continue
        masks[n] = m
    if not masks:
        raise ProcessingError(f"{mask_path}: every ROI is empty on the image series")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if seg_mode:
        seg_path = probe
        seg_numbers = {lab: i for i, lab in enumerate(list_segments(probe), start=1)}
    else:
        seg_path = write_seg(
            dict(masks), source, out / "seg.dcm", algorithm_type="MANUAL", series_description="MedLens report masks"
        )
        paths["seg"] = seg_path
        seg_numbers = {lab: i for i, lab in enumerate(masks, start=1)}
    measurements = {lab: measure_lesion(image, m) for lab, m in masks.items()}
    lungrads: dict[str, LungRADSResult] = {}
    exam = None
    if lungrads_status is not None:
        from medlens.clinical.lungrads import Category, Nodule, NoduleType, Status, assess_exam

        if image.meta.units != Units.HU:
            raise InputError(f"Lung-RADS needs a CT in HU; this series is {image.meta.modality} in {image.meta.units}")
        nodules = [
            Nodule(
                nodule_type=NoduleType(m.nodule_type or "solid"),
                mean_diameter_mm=m.mean_diameter_mm,
                solid_mean_diameter_mm=m.solid_mean_diameter_mm if m.nodule_type == "part_solid" else None,
                status=Status(lungrads_status),
                prior_category=None if prior_category is None else Category(prior_category),
                label=lab,
            )
            for lab, m in measurements.items()
        ]
        exam = assess_exam(nodules)
        lungrads = {r.label: r for r in exam.nodules}
    kind = "nodule" if lungrads else ("tumor" if image.meta.modality == "PT" else "lesion")
    findings = [
        Finding(
            seg_numbers[lab],
            measurements[lab],
            label=lab,
            finding_type=kind,
            lungrads_category=lungrads[lab].category.value if lab in lungrads else None,
        )
        for lab in masks
    ]
    paths["sr"] = write_measurement_sr(source, seg_path, findings, out / "measurements_sr.dcm")
    paths.update(
        write_report(
            image,
            masks,
            out,
            measurements=measurements,
            pdf=pdf,
            lungrads=lungrads or None,
            cams={lab: cam for lab in masks} if cam is not None else None,
            exam_category=None if exam is None else exam.label,
            exam_management=None if exam is None else exam.management,
        )
    )
    return paths
