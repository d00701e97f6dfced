"""BIDS-style export of a catalogued DICOM collection: NIfTI + JSON sidecars, participants.tsv, masks.

Layout (BIDS 1.9 naming; CT follows the CT proposal's ``_ct`` suffix, PET follows PET-BIDS)::

    OUT/dataset_description.json
    OUT/participants.tsv                         participant_id, sex, age, weight, height
    OUT/sub-<label>/ses-<NN>/anat/sub-<label>_ses-<NN>[_run-<n>]_ct.nii.gz   (+ .json)
    OUT/sub-<label>/ses-<NN>/pet/sub-<label>_ses-<NN>[_run-<n>]_pet.nii.gz   (+ .json)
    OUT/sub-<label>/ses-<NN>/anat/sub-<label>_ses-<NN>[_run-<n>]_<T1w|T2w|FLAIR|PDw|MRI>.nii.gz  (MR, :func:`mr_suffix`)
    OUT/derivatives/masks/sub-<label>/ses-<NN>/<anat|pet>/
        sub-<label>_ses-<NN>[_run-<n>]_space-<ct|pet>_desc-<ROI>_mask.nii.gz   (+ .json)

``<label>`` is the catalog's PatientID with non-alphanumerics removed (de-identify first:
``medlens deid``); sessions are numbered by study date. Images are read with
:func:`medlens.read_image` (CT in HU, PET in SUVbw where the header allows) and written with
:func:`medlens.write_image`; masks with :func:`medlens.read_mask` on the image grid.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError

__all__ = ["BidsReport", "export_bids", "mr_suffix", "sidecar_from_header"]

BIDS_VERSION = "1.9.0"
_DATATYPE = {"CT": ("anat", "ct"), "PT": ("pet", "pet"), "MR": ("anat", "MRI")}
# MR contrast from the series/protocol names (BIDS anat suffixes); FLAIR before T2, which its names often hold too
_MR_CONTRAST = (
    ("FLAIR", re.compile(r"flair", re.IGNORECASE)),
    ("T1w", re.compile(r"(?<![a-z0-9])t1(?![0-9])|mprage|spgr|\bvibe\b", re.IGNORECASE)),
    ("T2w", re.compile(r"(?<![a-z0-9])t2(?![0-9])|\bstir\b", re.IGNORECASE)),
    ("PDw", re.compile(r"(?<![a-z0-9])pd(?![a-z0-9])|proton.density", re.IGNORECASE)),
)


def mr_suffix(ds: Any) -> str:
    """BIDS ``anat`` suffix of an MR series: ``T1w``, ``T2w``, ``FLAIR``, ``PDw``, or ``MRI`` when unknown.

    From SeriesDescription, ProtocolName and SequenceName (``T1``, ``MPRAGE``, ``T2``, ``FLAIR``, ...); failing
    that from the timing: TR < 800 ms with TE < 30 ms is T1-weighted, TR > 2000 ms with TE > 80 ms T2-weighted.
    """
    text = " ".join(str(getattr(ds, k, "") or "") for k in ("SeriesDescription", "ProtocolName", "SequenceName"))
    text = text.replace("_", " ")
    for suffix, rx in _MR_CONTRAST:
        if rx.search(text):
            return suffix
    tr, te = _num(getattr(ds, "RepetitionTime", None)), _num(getattr(ds, "EchoTime", None))
    if tr is not None and te is not None:
        if tr < 800 and te < 30:
            return "T1w"
        if tr > 2000 and te > 80:
            return "T2w"
    return "MRI"


@dataclass
class BidsReport:
    output_dir: str
    n_images: int = 0
    n_masks: int = 0
    n_participants: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"BIDS export {self.output_dir}: {self.n_participants} participants, {self.n_images} images, "
            f"{self.n_masks} masks, {len(self.skipped)} series skipped ({self.seconds:.1f} s)"
        )


def _label(text: str | None, fallback: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]", "", text or "")
    return s or fallback


def _num(v: Any) -> float | None:
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _tm_seconds(v: Any) -> float | None:
    s = str(v or "").strip()
    if len(s) < 4:
        return None
    try:
        return int(s[:2]) * 3600 + int(s[2:4]) * 60 + float(s[4:] or 0)
    except ValueError:
        return None


def _hms(v: Any) -> str | None:
    s = str(v or "").strip()
    return f"{s[:2]}:{s[2:4]}:{s[4:6] or '00'}" if len(s) >= 4 and s[:4].isdigit() else None


def sidecar_from_header(ds: Any, image: Any) -> dict[str, Any]:
    """JSON sidecar of an image series from its first header and the image read from it.

    Fields: BIDS common (Modality, Manufacturer, ManufacturersModelName, ConvolutionKernel,
    SliceThickness, ...), the image's Units and voxel spacing (mm, in (x, y, z) order as NIfTI
    stores them) and, for PET, the PET-BIDS fields the header gives (TracerName, TracerRadionuclide,
    InjectedRadioactivity in MBq, time of injection relative to the scan start, frame durations,
    reconstruction and corrections).
    """
    sc: dict[str, Any] = {
        "Modality": str(ds.get("Modality", "")),
        "Manufacturer": ds.get("Manufacturer"),
        "ManufacturersModelName": ds.get("ManufacturerModelName"),
        "SoftwareVersions": str(ds.get("SoftwareVersions")) if ds.get("SoftwareVersions") else None,
        "BodyPart": ds.get("BodyPartExamined"),
        "SeriesDescription": ds.get("SeriesDescription"),
        "ConvolutionKernel": str(ds.get("ConvolutionKernel")) if ds.get("ConvolutionKernel") else None,
        "SliceThickness": _num(ds.get("SliceThickness")),
        "KVP": _num(ds.get("KVP")),
        "Units": image.meta.units,
        "VoxelSpacingMM": [float(v) for v in image.spacing[::-1]],
        "ImageShape": [int(v) for v in image.shape[::-1]],
        "PatientIdentityRemoved": ds.get("PatientIdentityRemoved", "NO"),
    }
    if sc["Modality"] == "PT":
        rp = (ds.get("RadiopharmaceuticalInformationSequence") or [None])[0]
        if rp is not None:
            code = (rp.get("RadionuclideCodeSequence") or [None])[0]
            dose = _num(rp.get("RadionuclideTotalDose"))
            inj = _tm_seconds(rp.get("RadiopharmaceuticalStartTime"))
            start = _tm_seconds(ds.get("SeriesTime") or ds.get("AcquisitionTime"))
            sc.update(
                {
                    "TracerName": rp.get("Radiopharmaceutical"),
                    "TracerRadionuclide": code.get("CodeMeaning") if code is not None else None,
                    "InjectedRadioactivity": dose / 1e6 if dose is not None else None,
                    "InjectedRadioactivityUnits": "MBq" if dose is not None else None,
                    "RadionuclideHalfLifeS": _num(rp.get("RadionuclideHalfLife")),
                    "InjectedVolume": _num(rp.get("RadiopharmaceuticalVolume")),
                    "InjectionStart": (inj - start) if inj is not None and start is not None else None,
                    "TimeZero": _hms(ds.get("SeriesTime") or ds.get("AcquisitionTime")),
                }
            )
        dur = _num(ds.get("ActualFrameDuration"))
        sc.update(
            {
                "FrameDuration": [dur / 1000.0] if dur is not None else None,
                "ReconMethodName": ds.get("ReconstructionMethod"),
                "AttenuationCorrection": ds.get("AttenuationCorrectionMethod"),
                "DecayCorrection": ds.get("DecayCorrection"),
                "ImageDecayCorrected": bool(ds.get("DecayCorrection")) and ds.get("DecayCorrection") != "NONE",
                "OriginalUnits": ds.get("Units"),
            }
        )
    return {k: v for k, v in sc.items() if v not in (None, "")}


def export_bids(
    catalog: str | os.PathLike[str], output_dir: str | os.PathLike[str], *, overwrite: bool = False
) -> BidsReport:
    """Export every CT/PET/MR image series of a catalog (and its RTSTRUCT/SEG masks) BIDS-style.

    Parameters
    ----------
    catalog
        DuckDB catalog from :func:`medlens.catalog.scan`.
    output_dir
        New folder (an existing, non-empty one is refused unless ``overwrite``).

    Returns
    -------
    BidsReport
        Counts, and the series skipped with the reason (unsupported modality, irregular geometry, ...).
    """
    import pydicom

    import medlens
    from medlens.catalog import Catalog

    t0 = time.perf_counter()
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"BIDS output {out} already exists and is not empty; pass --overwrite or choose a new folder")
    rep = BidsReport(str(out))
    with Catalog(catalog) as cat:
        series = cat.query(
            """SELECT s.*, st.study_date FROM series s LEFT JOIN studies st USING (study_uid)
               WHERE s.is_image ORDER BY s.patient_id, st.study_date, s.study_uid, s.modality, s.series_number,
               s.series_uid"""
        )
        patients = cat.patients()
        structs = cat.structure_sets()
        files = {uid: cat.files(uid) for uid in series["series_uid"]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "dataset_description.json",
        json.dumps(
            {
                "Name": "MedLens BIDS-style export",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": "MedLens", "Version": medlens.__version__}],
            },
            indent=2,
        ),
    )
    exported: dict[str, tuple[Any, Path, str, str]] = {}  # series uid -> (image, nifti path, datatype, entities)
    sessions: dict[tuple[str, str], str] = {}
    runs: dict[tuple[str, str, str], int] = {}
    labels: dict[str, str] = {}
    for row in series.to_dict(orient="records"):
        mod = row["modality"]
        if mod not in _DATATYPE:
            rep.skipped.append((row["series_uid"], f"modality {mod} has no BIDS datatype here"))
            continue
        pid = row["patient_id"] or ""
        sub = labels.setdefault(pid, _label(pid, f"{len(labels) + 1:03d}"))
        ses_key = (pid, row["study_uid"])
        if ses_key not in sessions:
            sessions[ses_key] = f"{sum(1 for k in sessions if k[0] == pid) + 1:02d}"
        ses = sessions[ses_key]
        datatype, suffix = _DATATYPE[mod]
        ds = pydicom.dcmread(files[row["series_uid"]][0], stop_before_pixels=True)
        if mod == "MR":
            suffix = mr_suffix(ds)
        n = runs[(pid, ses, suffix)] = runs.get((pid, ses, suffix), 0) + 1
        ent = f"sub-{sub}_ses-{ses}" + (f"_run-{n}" if n > 1 else "")
        try:
            img = medlens.read_image(files[row["series_uid"]])
        except Exception as exc:  # one bad series never stops an export
            rep.skipped.append((row["series_uid"], f"{type(exc).__name__}: {exc}"))
            continue
        folder = out / f"sub-{sub}" / f"ses-{ses}" / datatype
        nii = folder / f"{ent}_{suffix}.nii.gz"
        medlens.write_image(img, nii)
        atomic_write_text(
            nii.with_name(f"{ent}_{suffix}.json"), json.dumps(sidecar_from_header(ds, img), indent=2, default=str)
        )
        exported[row["series_uid"]] = (img, nii, datatype, ent)
        rep.n_images += 1
    # Masks: one per ROI of each RTSTRUCT/SEG whose referenced series was exported.
    deriv = out / "derivatives" / "masks"
    for s in structs.to_dict(orient="records"):
        ref = exported.get(s["referenced_series_uid"])
        if ref is None:
            continue
        img, nii, datatype, ent = ref
        space = "ct" if "_ct" in nii.name else "pet" if "_pet" in nii.name else "orig"
        for roi in list(s["roi_names"] if s["roi_names"] is not None else []):
            if not roi:
                continue
            try:
                mask = medlens.read_mask(s["path"], reference=img, roi=roi)
            except Exception as exc:
                rep.skipped.append((s["series_uid"], f"mask {roi!r}: {type(exc).__name__}: {exc}"))
                continue
            name = f"{ent}_space-{space}_desc-{_label(roi, 'roi')}_mask"
            target = deriv / nii.parent.relative_to(out) / f"{name}.nii.gz"
            medlens.write_image(mask, target)
            atomic_write_text(
                target.with_name(f"{name}.json"),
                json.dumps(
                    {
                        "Type": "ROI",
                        "ROIName": roi,
                        "SourceModality": s["modality"],
                        "RawSources": [str(nii.relative_to(out))],
                        "Voxels": int(mask.array.sum()),
                    },
                    indent=2,
                ),
            )
            rep.n_masks += 1
    if rep.n_masks:
        atomic_write_text(
            deriv / "dataset_description.json",
            json.dumps(
                {
                    "Name": "MedLens masks",
                    "BIDSVersion": BIDS_VERSION,
                    "DatasetType": "derivative",
                    "GeneratedBy": [{"Name": "MedLens", "Version": medlens.__version__}],
                },
                indent=2,
            ),
        )
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["participant_id", "sex", "age", "weight", "height"])
    pats = {p["patient_id"]: p for p in patients.to_dict(orient="records")}
    for pid, sub in sorted(labels.items(), key=lambda kv: kv[1]):
        p = pats.get(pid, {})
        age = p.get("patient_age") or ""
        from medlens.io.dicom.headers import age_years

        years = age_years(age)  # the one PatientAge parser; BIDS wants whole years
        age_txt = str(int(years)) if years is not None else "n/a"

        def na(v: Any) -> str:
            if v is None or v == "" or v != v:
                return "n/a"
            return f"{v:.4g}" if isinstance(v, float) else str(v)

        w.writerow(
            [
                f"sub-{sub}",
                na(p.get("patient_sex")),
                age_txt,
                na(p.get("patient_weight_kg")),
                na(p.get("patient_size_m")),
            ]
        )
    atomic_write_text(out / "participants.tsv", buf.getvalue())
    rep.n_participants = len(labels)
    rep.seconds = time.perf_counter() - t0
    return rep
