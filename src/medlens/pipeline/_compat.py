"""Bridges to the science packages, with clearly-marked minimal fallbacks.

The pipeline composes :mod:`medlens.io`, :mod:`medlens.preprocess`, :mod:`medlens.radiomics`,
:mod:`medlens.segment` and :mod:`medlens.audit`. When one of them is not installed in this
checkout, the functions below fall back to a *minimal* implementation and say so: every result
carries the names of the fallbacks used (``"fallbacks"`` in the case result, shown in the report),
so a run never silently pretends to have done more than it did.

FALLBACK implementations (only used when the real module cannot be imported):

* DICOM series reading: pydicom, slices sorted along the slice normal, rescale slope/intercept.
* RTSTRUCT reading: closed planar contours filled slice by slice (even-odd rule).
* Radiomics: IBSI first-order statistics (``stat_*``) and the voxel-counting volume
  (``morph_vol_approx``) only.
* Audit log: an append-only JSON-lines file, each entry hash-chained to the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import FormatError, InputError, MissingDependencyError
from medlens.core.image import Image, ImageMeta, Units


def _module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------- DICOM headers (lineage, clinical)
def dicom_files(path: str | os.PathLike[str]) -> list[Path]:
    """DICOM files under ``path`` (a file or a folder searched recursively), sorted by name."""
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))


def header_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Patient age (years), sex, weight (kg), height (m), BMI and UIDs from the first DICOM file.

    Missing values are ``None``; not a DICOM input (NIfTI, ...) gives an empty dict.
    """
    import pydicom

    files = dicom_files(path)
    if not files or Path(path).suffix.lower() in (".nii", ".gz", ".nrrd", ".mha", ".mhd", ".nhdr"):
        return {}
    try:
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    except Exception:
        return {}
    age = None
    raw_age = str(getattr(ds, "PatientAge", "") or "")
    if len(raw_age) == 4 and raw_age[:3].isdigit():
        factor = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}.get(raw_age[3].upper())
        age = float(raw_age[:3]) * factor if factor else None
    weight = float(ds.PatientWeight) if getattr(ds, "PatientWeight", None) not in (None, "") else None
    height = float(ds.PatientSize) if getattr(ds, "PatientSize", None) not in (None, "") else None
    bmi = weight / height**2 if weight and height and height > 0.3 else None
    sex = str(getattr(ds, "PatientSex", "") or "") or None
    return {
        "age": age,
        "sex": sex,
        "weight_kg": weight,
        "height_m": height,
        "bmi": bmi,
        "study_uid": str(getattr(ds, "StudyInstanceUID", "")),
        "series_uid": str(getattr(ds, "SeriesInstanceUID", "")),
        "modality": str(getattr(ds, "Modality", "")),
    }


# ---------------------------------------------------------------- images
def read_image(path: str | os.PathLike[str]) -> tuple[Image, list[str]]:
    """Read an image with :func:`medlens.read_image`, or the FALLBACK reader; returns (image, fallbacks)."""
    if _module_available("medlens.io.dicom_series") or not Path(path).is_dir():
        import medlens

        try:
            return medlens.read_image(path), []
        except ModuleNotFoundError as exc:
            if not str(exc.name or "").startswith("medlens"):
                raise
    return _fallback_read_dicom_series(path), ["io.read_image (minimal pydicom reader)"]


def _fallback_read_dicom_series(path: str | os.PathLike[str]) -> Image:
    """FALLBACK: read the single image series in a folder (sorted along the normal, rescaled)."""
    import pydicom

    datasets = []
    for f in dicom_files(path):
        try:
            ds = pydicom.dcmread(str(f))
        except Exception:
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            datasets.append(ds)
    if not datasets:
        raise FormatError(f"{path}: no DICOM image slices found")
    series = {str(d.SeriesInstanceUID) for d in datasets}
    if len(series) > 1:
        raise InputError(f"{path}: holds {len(series)} series ({', '.join(sorted(series))}); point at one series")
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    datasets.sort(key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
    ipp = np.array([[float(v) for v in d.ImagePositionPatient] for d in datasets])
    vol = np.stack(
        [
            d.pixel_array.astype(np.float64) * float(getattr(d, "RescaleSlope", 1) or 1)
            + float(getattr(d, "RescaleIntercept", 0) or 0)
            for d in datasets
        ]
    )
    dy, dx = (float(v) for v in datasets[0].PixelSpacing)
    if len(datasets) > 1:
        steps = np.diff(ipp, axis=0)
        step = steps.mean(axis=0)
        if np.abs(steps - step).max() > 0.01 * max(float(np.linalg.norm(step)), 1e-6) + 1e-3:
            raise InputError(f"{path}: irregular slice spacing; the minimal fallback reader cannot resample it")
    else:
        step = normal * float(getattr(datasets[0], "SliceThickness", 1) or 1)
    aff = np.eye(4)
    aff[:3, 0] = step
    aff[:3, 1] = col * dy
    aff[:3, 2] = row * dx
    aff[:3, 3] = ipp[0]
    d0 = datasets[0]
    modality = str(getattr(d0, "Modality", ""))
    units = {"CT": Units.HU}.get(modality, Units.UNKNOWN)
    if modality == "PT" and str(getattr(d0, "Units", "")).upper() == "GML":
        units = Units.SUVBW
    meta = ImageMeta(
        modality=modality,
        units=units,
        study_uid=str(getattr(d0, "StudyInstanceUID", "")),
        series_uid=str(getattr(d0, "SeriesInstanceUID", "")),
        frame_of_reference_uid=str(getattr(d0, "FrameOfReferenceUID", "")),
        sop_instance_uids=tuple(str(d.SOPInstanceUID) for d in datasets),
        patient_id=str(getattr(d0, "PatientID", "")),
        source=str(path),
    )
    return Image(vol.astype(np.float32), aff, meta)


# ---------------------------------------------------------------- masks
def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """ROI names of the RTSTRUCT at ``path`` (file or folder holding one); [] if none is found."""
    import pydicom

    for f in dicom_files(path):
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            continue
        if str(getattr(ds, "Modality", "")) == "RTSTRUCT":
            return [str(r.ROIName) for r in getattr(ds, "StructureSetROISequence", [])]
    return []


def read_mask(path: str | os.PathLike[str], reference: Image, roi: str | None) -> tuple[Image, list[str]]:
    """Read a mask with :func:`medlens.read_mask`, or the FALLBACK rasteriser; returns (mask, fallbacks)."""
    if _module_available("medlens.io.masks"):
        import medlens

        return medlens.read_mask(path, reference=reference, roi=roi), []
    return _fallback_read_rtstruct(path, reference, roi), ["io.read_mask (minimal RTSTRUCT rasteriser)"]


def _fallback_read_rtstruct(path: str | os.PathLike[str], reference: Image, roi: str | None) -> Image:
    """FALLBACK: fill the closed planar contours of one ROI onto the reference grid (even-odd rule)."""
    import pydicom
    from skimage.draw import polygon

    ds = None
    for f in dicom_files(path):
        try:
            cand = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:
            continue
        if str(getattr(cand, "Modality", "")) == "RTSTRUCT":
            ds = cand
            break
    if ds is None:
        raise FormatError(f"{path}: no RTSTRUCT found")
    numbers = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    wanted = [n for n, name in numbers.items() if name == roi]
    if not wanted:
        raise InputError(f"{path}: no ROI named {roi!r}; available: {', '.join(numbers.values())}")
    mask = np.zeros(reference.shape, dtype=bool)
    for rc in ds.ROIContourSequence:
        if int(rc.ReferencedROINumber) not in wanted:
            continue
        for c in getattr(rc, "ContourSequence", []):
            pts = np.array([float(v) for v in c.ContourData]).reshape(-1, 3)
            idx = reference.world_to_index(pts)
            k = int(np.rint(idx[:, 0].mean()))
            if not 0 <= k < reference.shape[0]:
                continue
            rr, cc = polygon(idx[:, 1], idx[:, 2], shape=reference.shape[1:])
            sl = np.zeros(reference.shape[1:], dtype=bool)
            sl[rr, cc] = True
            mask[k] ^= sl
    return reference.with_array(mask, op=f"mask:{roi}", units=Units.MASK)


# ---------------------------------------------------------------- preprocessing / segmentation
def preprocess(image: Image, recipe_spec: Any, base_dir: Path) -> tuple[Image, list[str]]:
    """Apply a :mod:`medlens.preprocess` recipe (path to YAML, or mapping); ``None`` does nothing."""
    if recipe_spec is None:
        return image, []
    try:
        from medlens import preprocess as pp

        recipe_cls = pp.Recipe
    except (ImportError, AttributeError):
        return image, ["preprocess (module unavailable: recipe NOT applied)"]
    if isinstance(recipe_spec, str):
        p = Path(recipe_spec)
        recipe = recipe_cls.from_yaml(p if p.is_absolute() else base_dir / p)
    else:
        recipe = recipe_cls.from_dict(recipe_spec, source="config preprocess.recipe")
    return recipe.apply(image), []


def segment(image: Image, method: str) -> Image:
    """Segment with :mod:`medlens.segment` (``segment(image, method=...)``)."""
    if not _module_available("medlens.segment"):
        raise MissingDependencyError(f"mask.method {method!r} needs medlens.segment, which is not available")
    from medlens import segment as seg

    fn = getattr(seg, "segment", None)
    if fn is None:
        raise MissingDependencyError("medlens.segment has no segment(image, method=...) function in this version")
    return fn(image, method=method)


# ---------------------------------------------------------------- radiomics
def radiomics_available() -> bool:
    return _module_available("medlens.radiomics")


def extract_features(image: Image, mask: Image, settings: Any) -> tuple[dict[str, float], list[str]]:
    """IBSI-tagged features with :func:`medlens.radiomics.extract`, or FALLBACK first-order + volume."""
    if radiomics_available():
        try:
            from medlens import radiomics

            fn = radiomics.extract
        except (ModuleNotFoundError, AttributeError) as exc:
            if isinstance(exc, ModuleNotFoundError) and not str(exc.name or "").startswith("medlens"):
                raise
        else:
            feats = fn(image, mask, settings) if settings is not None else fn(image, mask)
            return {str(k): float(v) for k, v in feats.items()}, []
    return first_order_features(image, mask), ["radiomics (unavailable: first-order statistics and volume only)"]


def first_order_features(image: Image, mask: Image) -> dict[str, float]:
    """FALLBACK: IBSI intensity-based statistics (``stat_*``) and ``morph_vol_approx`` (mm^3)."""
    x = np.asarray(image.array, dtype=np.float64)[np.asarray(mask.array, dtype=bool)]
    if x.size == 0:
        raise InputError("the mask is empty on the image grid; no features can be computed")
    mean = float(x.mean())
    var = float(x.var())
    sd = np.sqrt(var)
    p10, p25, med, p75, p90 = (float(v) for v in np.percentile(x, [10, 25, 50, 75, 90]))
    in_10_90 = x[(x >= p10) & (x <= p90)]
    out = {
        "stat_mean": mean,
        "stat_var": var,
        "stat_skew": float(((x - mean) ** 3).mean() / sd**3) if sd > 0 else 0.0,
        "stat_kurt": float(((x - mean) ** 4).mean() / var**2 - 3.0) if var > 0 else 0.0,
        "stat_median": med,
        "stat_min": float(x.min()),
        "stat_p10": p10,
        "stat_p90": p90,
        "stat_max": float(x.max()),
        "stat_iqr": p75 - p25,
        "stat_range": float(x.max() - x.min()),
        "stat_mad": float(np.abs(x - mean).mean()),
        "stat_rmad": float(np.abs(in_10_90 - in_10_90.mean()).mean()) if in_10_90.size else 0.0,
        "stat_medad": float(np.abs(x - med).mean()),
        "stat_cov": float(sd / mean) if mean != 0 else float("nan"),
        "stat_qcod": float((p75 - p25) / (p75 + p25)) if (p75 + p25) != 0 else float("nan"),
        "stat_energy": float((x**2).sum()),
        "stat_rms": float(np.sqrt((x**2).mean())),
        "morph_vol_approx": float(x.size * mask.voxel_volume_mm3),
    }
    return out


# ---------------------------------------------------------------- audit
class _FallbackAuditLog:
    """FALLBACK append-only audit log: JSON lines, each entry carrying the hash of the previous one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _last_hash(self) -> str:
        if not self.path.exists():
            return "0" * 64
        lines = [ln for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return json.loads(lines[-1])["hash"] if lines else "0" * 64

    def append(self, *, action: str, inputs: Any = None, outputs: Any = None, details: Any = None) -> dict[str, Any]:
        import datetime as dt

        entry = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "action": action,
            "inputs": inputs,
            "outputs": outputs,
            "details": details,
            "prev": self._last_hash(),
        }
        body = json.dumps(entry, sort_keys=True, default=str)
        entry["hash"] = hashlib.sha256(body.encode()).hexdigest()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        return entry


def audit_log(path: str | os.PathLike[str]) -> tuple[Any, list[str]]:
    """The run's audit log: :class:`medlens.audit.AuditLog` or the FALLBACK JSON-lines log."""
    if _module_available("medlens.audit"):
        from medlens.audit import AuditLog

        return AuditLog(path), []
    return _FallbackAuditLog(path), ["audit (minimal hash-chained JSON-lines log)"]


def read_audit_entries(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Entries of the audit log at ``path`` as dictionaries (empty if none)."""
    p = Path(path)
    if not p.exists():
        return []
    if _module_available("medlens.audit"):
        from medlens import audit

        reader = getattr(audit.AuditLog(p), "entries", None) or getattr(audit.AuditLog(p), "read", None)
        if callable(reader):
            try:
                return [dict(e) if isinstance(e, Mapping) else {"entry": str(e)} for e in reader()]
            except Exception:
                pass
    out = []
    for ln in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(ln))
        except json.JSONDecodeError:
            continue
    return out
