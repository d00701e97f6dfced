"""Regenerate ``ps315_e11.csv`` (DICOM PS3.15 Annex E, Table E.1-1) from machine-readable sources.

Not imported at run time. Sources (both on PyPI, fetched with ``pip download --no-deps``):

1. ``dicom-standard`` 0.1.0 (``data/standard/confidentiality_profile_attributes.json``): Table E.1-1
   of the 2020 standard parsed from the NEMA DocBook, with the Basic Profile action *and* every option
   column (retain longitudinal dates, patient characteristics, device identity, clean descriptors, ...).
2. ``dicom-anonymizer`` 2.1.0 (``dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py``):
   the Basic Profile column of the 2026c standard, as lists of tags per action. It adds the
   attributes listed since 2020 (basic action only; their option columns are left empty) and
   supplies the current basic action where it changed.

Usage::

    python -m medlens.io.deid._build_table STANDARD_JSON DICOMFIELDS_PY > src/medlens/io/deid/ps315_e11.csv
"""

from __future__ import annotations

import ast
import csv
import json
import sys

_OPTS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device",
    "rtnInstIdOpt": "retain_institution",
    "rtnPatCharsOpt": "retain_patient_chars",
    "rtnLongFullDatesOpt": "retain_long_full_dates",
    "rtnLongModifDatesOpt": "retain_long_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
_CATS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}


def _anonymizer_table(path: str) -> dict[str, tuple[str, str]]:
    src = open(path, encoding="utf-8").read()
    lines = src.splitlines()
    out: dict[str, tuple[str, str]] = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.List):
            name = node.targets[0].id  # type: ignore[attr-defined]
            if name not in _CATS:
                continue
            for elt in node.value.elts:
                vals = [c.value for c in elt.elts]  # type: ignore[attr-defined]
                g, e = vals[0], vals[1]
                gm, em = (vals[2], vals[3]) if len(vals) == 4 else (0xFFFF, 0xFFFF)
                tag = "".join(
                    "X" if not (mask >> (4 * (3 - i))) & 0xF else f"{v:04X}"[i]
                    for v, mask in ((g, gm), (e, em))
                    for i in range(4)
                )
                comment = lines[elt.end_lineno - 1].split("#", 1)[-1].strip()  # type: ignore[operator]
                out[tag] = (comment, _CATS[name])
    return out


def main(standard_json: str, dicomfields_py: str) -> None:
    rows: dict[str, dict[str, str]] = {}
    for e in json.load(open(standard_json, encoding="utf-8")):
        tag = e["id"].upper()
        row = {"tag": tag, "name": e["name"], "basic": e["basicProfile"], "source": "dicom-standard-2020"}
        for k, col in _OPTS.items():
            row[col] = e.get(k) or ""
        rows[tag] = row
    for tag, (name, action) in _anonymizer_table(dicomfields_py).items():
        if tag in rows:
            if rows[tag]["basic"] != action:
                rows[tag]["basic"] = action
                rows[tag]["source"] += "+basic-2026c"
        else:
            rows[tag] = {"tag": tag, "name": name, "basic": action, "source": "dicomfields-2026c"}
            rows[tag].update({col: "" for col in _OPTS.values()})
    w = csv.DictWriter(sys.stdout, ["tag", "name", "basic", *_OPTS.values(), "source"], lineterminator="\n")
    w.writeheader()
    for tag in sorted(rows):
        w.writerow(rows[tag])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
