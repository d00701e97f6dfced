"""Sites: splitting a cohort into hospital folders, and what one site knows about its own folder.

A site folder holds the DICOM of its patients (here symbolic links into the shared cohort) and a
``clinical.csv`` with ``patient_id`` and the outcome column. A site finds its cases only through its
own catalog (:func:`medlens.catalog.scan` of its folder into its work folder): the PET series with an
RTSTRUCT that has the ROI, and the header facts (age, sex, BMI) the ``medlens run`` model uses.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError

__all__ = ["SiteCase", "site_cases", "split_cohort"]


@dataclass(frozen=True)
class SiteCase:
    """One patient of a site, as found in the site's catalog.

    Attributes
    ----------
    patient_id
        DICOM PatientID.
    image
        Folder of the PET series (SUVbw).
    rtstruct
        The RTSTRUCT file that references it.
    outcome
        0/1 from the site's ``clinical.csv`` (None when the column is absent for that patient).
    age_y, sex, bmi_kg_m2
        Header facts from the catalog (``sex``: 1 male, 0 female); NaN when missing.
    """

    patient_id: str
    image: str
    rtstruct: str
    outcome: int | None
    age_y: float
    sex: float
    bmi_kg_m2: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _age_years(value: Any) -> float:
    s = str(value or "")
    if len(s) == 4 and s[:3].isdigit():
        factor = {"Y": 1.0, "M": 1 / 12, "W": 1 / 52.18, "D": 1 / 365.25}.get(s[3].upper())
        return float(s[:3]) * factor if factor else float("nan")
    return float("nan")


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v if np.isfinite(v) else float("nan")


def site_cases(
    data_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    roi: str = "GTV_Mass_PET",
    outcome: str = "lung_metastasis",
) -> list[SiteCase]:
    """The cases of one site, found through its catalog (scanned incrementally into ``work_dir``).

    Parameters
    ----------
    data_dir
        The site folder (read only, never modified): DICOM plus ``clinical.csv``.
    work_dir
        Where the site keeps its catalog and caches (created).
    roi
        RTSTRUCT ROI name that marks the lesion.
    outcome
        Column of ``clinical.csv`` with the 0/1 outcome.

    Raises
    ------
    InputError
        The folder does not exist, has no ``clinical.csv``, or holds no PET series with the ROI.
    """
    from medlens.catalog import Catalog, scan

    data = Path(data_dir)
    if not data.is_dir():
        raise InputError(f"site data folder {data} does not exist; give the folder of this site's DICOM")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "catalog.duckdb"
    scan(data, db, workers=1)
    labels: dict[str, int | None] = {}
    clin = data / "clinical.csv"
    if not clin.is_file():
        raise InputError(f"{clin}: a site folder needs clinical.csv with columns patient_id,{outcome}")
    with clin.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and ("patient_id" not in rows[0] or outcome not in rows[0]):
        raise InputError(f"{clin}: needs the columns patient_id and {outcome}; found {sorted(rows[0])}")
    for r in rows:
        v = r[outcome].strip()
        labels[r["patient_id"]] = int(float(v)) if v else None
    cases: list[SiteCase] = []
    with Catalog(db) as cat:
        ss = cat.query(
            "SELECT s.patient_id, s.path, s.referenced_series_uid, s.roi_names, p.patient_age, p.patient_sex, "
            "p.patient_weight_kg, p.patient_size_m FROM structure_sets s JOIN patients p USING (patient_id) "
            "WHERE s.referenced_modality = 'PT' AND s.modality = 'RTSTRUCT' ORDER BY s.patient_id, s.path"
        )
        for _, r in ss.iterrows():
            if roi not in list(r["roi_names"] if r["roi_names"] is not None else []):
                continue
            pid = str(r["patient_id"])
            if any(c.patient_id == pid for c in cases):
                continue  # one lesion per patient: the first structure set with the ROI
            files = cat.files(str(r["referenced_series_uid"]))
            folders = {str(Path(f).parent) for f in files}
            if len(folders) != 1:
                raise InputError(
                    f"site {data}: the PET series of {pid} is spread over {len(folders)} folders; "
                    "keep one series per folder"
                )
            w, h = _num(r["patient_weight_kg"]), _num(r["patient_size_m"])
            sex = {"M": 1.0, "F": 0.0}.get(str(r["patient_sex"] or "").strip().upper(), float("nan"))
            cases.append(
                SiteCase(
                    patient_id=pid,
                    image=folders.pop(),
                    rtstruct=str(r["path"]),
                    outcome=labels.get(pid),
                    age_y=_age_years(r["patient_age"]),
                    sex=sex,
                    bmi_kg_m2=w / h**2 if np.isfinite(w) and np.isfinite(h) and h > 0.3 else float("nan"),
                )
            )
    if not cases:
        raise InputError(f"site {data}: the catalog holds no PET series with an RTSTRUCT ROI {roi!r}")
    return cases


def split_cohort(
    cohort_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    n_sites: int = 3,
    outcome: str = "lung_metastasis",
    roi: str = "GTV_Mass_PET",
    patients: list[str] | None = None,
) -> dict[str, Any]:
    """Split a cohort into ``n_sites`` site folders by patient, non-IID by SUVmax in the ROI.

    Patients are sorted by their SUVmax inside the ROI (SUVbw) and cut into ``n_sites`` contiguous
    quantile groups: ``site1`` holds the lowest SUVmax, the last site the highest. Each site folder gets
    ``<patient>/PET`` as a symbolic link to the patient's PET folder (image and RTSTRUCT) and a
    ``clinical.csv`` (patient_id, outcome). ``split.json`` (patient -> site, SUVmax) is written beside
    the sites for the administrator; it is not read by the sites.

    Parameters
    ----------
    cohort_csv
        CSV with ``patient_id``, the outcome, ``pet_image`` and ``pet_rtstruct`` (relative paths).
    out_dir
        Parent folder of the site folders (created; existing site folders are refused).
    patients
        Only these patients (default: all rows).

    Returns
    -------
    dict
        ``{"sites": {site: [patient ids]}, "suvmax": {patient: SUVmax}}``.
    """
    import medlens

    src = Path(cohort_csv)
    if not src.is_file():
        raise InputError(f"{src}: cohort CSV not found")
    with src.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"patient_id", outcome, "pet_image", "pet_rtstruct"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{src}: needs the columns {sorted(need)}; found {sorted(rows[0]) if rows else []}")
    if patients is not None:
        wanted = set(patients)
        rows = [r for r in rows if r["patient_id"] in wanted]
    if n_sites < 2 or n_sites > len(rows):
        raise InputError(f"n_sites must be between 2 and the number of patients ({len(rows)}), got {n_sites}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suvmax: dict[str, float] = {}
    for r in rows:
        img = medlens.read_image(src.parent / r["pet_image"])
        mask = medlens.read_mask(src.parent / r["pet_rtstruct"], reference=img, roi=roi)
        suvmax[r["patient_id"]] = float(np.asarray(img.array)[np.asarray(mask.array, bool)].max())
    order = sorted(rows, key=lambda r: (suvmax[r["patient_id"]], r["patient_id"]))
    groups = np.array_split(np.arange(len(order)), n_sites)
    sites: dict[str, list[str]] = {}
    for k, idx in enumerate(groups, start=1):
        name = f"site{k}"
        folder = out / name
        if folder.exists():
            raise InputError(f"{folder} exists; give an empty output folder for the split")
        folder.mkdir()
        members = [order[i] for i in idx]
        for r in members:
            pet = (src.parent / r["pet_image"]).resolve().parent
            (folder / r["patient_id"]).mkdir()
            os.symlink(pet, folder / r["patient_id"] / "PET")
        lines = ["patient_id," + outcome] + [f"{r['patient_id']},{r[outcome]}" for r in members]
        atomic_write_text(folder / "clinical.csv", "\n".join(lines) + "\n")
        sites[name] = [r["patient_id"] for r in members]
    doc = {"sites": sites, "suvmax": suvmax, "by": "SUVmax in " + roi, "source": str(src)}
    atomic_write_text(out / "split.json", json.dumps(doc, indent=1))
    return doc
