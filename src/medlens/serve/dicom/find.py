"""C-FIND matching on the store's catalog (PS3.4 C.2.2.2 attribute matching, C.6 information models).

Supported: Patient Root and Study Root, levels PATIENT (Patient Root only), STUDY, SERIES and
IMAGE. Matching kinds: universal (empty value), single value, list of UIDs (``a\\b``), wildcard
(``*`` and ``?``, case-insensitive for person names) and ranges for dates (``20000101-20001231``,
``-2000``, ``2000-``). Requested keys that the catalog does not hold are returned empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from medlens.core.errors import InputError

__all__ = ["PATIENT_ROOT_FIND", "STUDY_ROOT_FIND", "find"]

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True)
class _Key:
    sql: str  # aggregate expression over `instances` (grouped at the level)
    column: str  # row-level column for matching ("" : computed, matched specially)
    kind: str  # "uid" | "str" | "pn" | "date" | "int"


# Keys by level; a level also answers the keys of the levels above it.
_PATIENT = {
    "PatientID": _Key("any_value(patient_id)", "patient_id", "str"),
    "PatientName": _Key("any_value(patient_name)", "patient_name", "pn"),
    "PatientSex": _Key("any_value(patient_sex)", "patient_sex", "str"),
    "PatientBirthDate": _Key("any_value(patient_birth_date)", "patient_birth_date", "date"),
    "NumberOfPatientRelatedStudies": _Key("count(DISTINCT study_uid)", "", "int"),
    "NumberOfPatientRelatedSeries": _Key("count(DISTINCT series_uid)", "", "int"),
    "NumberOfPatientRelatedInstances": _Key("count(*)", "", "int"),
}
_STUDY = {
    "StudyInstanceUID": _Key("any_value(study_uid)", "study_uid", "uid"),
    "StudyDate": _Key("any_value(study_date)", "study_date", "date"),
    "StudyDescription": _Key("any_value(study_description)", "study_description", "str"),
    "AccessionNumber": _Key("any_value(accession_number)", "accession_number", "str"),
    "ModalitiesInStudy": _Key("string_agg(DISTINCT modality, '\\' ORDER BY modality)", "modality", "str"),
    "NumberOfStudyRelatedSeries": _Key("count(DISTINCT series_uid)", "", "int"),
    "NumberOfStudyRelatedInstances": _Key("count(*)", "", "int"),
}
_SERIES = {
    "SeriesInstanceUID": _Key("any_value(series_uid)", "series_uid", "uid"),
    "Modality": _Key("any_value(modality)", "modality", "str"),
    "SeriesNumber": _Key("any_value(series_number)", "series_number", "int"),
    "SeriesDescription": _Key("any_value(series_description)", "series_description", "str"),
    "BodyPartExamined": _Key("any_value(body_part)", "body_part", "str"),
    "FrameOfReferenceUID": _Key("any_value(frame_of_reference_uid)", "frame_of_reference_uid", "uid"),
    "NumberOfSeriesRelatedInstances": _Key("count(*)", "", "int"),
}
_IMAGE = {
    "SOPInstanceUID": _Key("any_value(sop_instance_uid)", "sop_instance_uid", "uid"),
    "SOPClassUID": _Key("any_value(sop_class_uid)", "sop_class_uid", "uid"),
    "InstanceNumber": _Key("any_value(instance_number)", "instance_number", "int"),
    "Rows": _Key("any_value(rows)", "rows", "int"),
    "Columns": _Key("any_value(columns)", "columns", "int"),
    "NumberOfFrames": _Key("any_value(n_frames)", "n_frames", "int"),
}
_LEVELS: dict[str, tuple[str, dict[str, _Key]]] = {
    # level -> (grouping column, keys answered)
    "PATIENT": ("patient_id", _PATIENT),
    "STUDY": ("study_uid", {**_PATIENT, **_STUDY}),
    "SERIES": ("series_uid", {**_PATIENT, **_STUDY, **_SERIES}),
    "IMAGE": ("sop_instance_uid", {**_PATIENT, **_STUDY, **_SERIES, **_IMAGE}),
}
# Counts of the levels below are answered at the level itself only.
_ONLY_AT = {
    "NumberOfPatientRelatedStudies": "PATIENT",
    "NumberOfPatientRelatedSeries": "PATIENT",
    "NumberOfPatientRelatedInstances": "PATIENT",
    "NumberOfStudyRelatedSeries": "STUDY",
    "NumberOfStudyRelatedInstances": "STUDY",
    "NumberOfSeriesRelatedInstances": "SERIES",
}
_SKIP = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "TimezoneOffsetFromUTC"}


def _like(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _condition(keyword: str, key: _Key, value: str, params: list[Any]) -> str | None:
    """SQL condition on instance rows for one non-empty matching key (``None``: universal)."""
    value = value.strip()
    if not value or value == "*":
        return None
    col = key.column
    if not col:
        raise InputError(f"C-FIND: {keyword} is a return key only; send it empty")
    if key.kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        params.append(uids)
        return f"{col} IN (SELECT unnest(?))"
    if key.kind == "date":
        if "-" in value:
            lo, hi = (p.strip() for p in value.split("-", 1))
            conds = []
            if lo:
                conds.append(f"{col} >= ?")
                params.append(lo)
            if hi:
                conds.append(f"{col} <= ?")
                params.append(hi)
            return "(" + " AND ".join(conds) + ")" if conds else None
        params.append(value)
        return f"{col} = ?"
    if key.kind == "int":
        try:
            params.append(int(value))
        except ValueError as exc:
            raise InputError(f"C-FIND: {keyword} must be an integer, got {value!r}") from exc
        return f"{col} = ?"
    values = value.split("\\") if keyword == "ModalitiesInStudy" else [value]
    conds = []
    for v in values:
        op = "ILIKE" if key.kind == "pn" else "LIKE"
        if "*" in v or "?" in v or key.kind == "pn":
            params.append(_like(v))
            conds.append(f"{col} {op} ? ESCAPE '\\'")
        else:
            params.append(v)
            conds.append(f"{col} = ?")
    cond = "(" + " OR ".join(conds) + ")"
    if keyword == "ModalitiesInStudy":
        # A study matches when any of its series has one of the modalities; its rows all stay.
        return f"study_uid IN (SELECT study_uid FROM instances WHERE {cond})"
    return cond


def find(store: Any, identifier: Any, *, model: str = STUDY_ROOT_FIND) -> Iterator[Any]:
    """Datasets answering a C-FIND ``identifier`` from the store's catalog.

    Parameters
    ----------
    store
        The :class:`~medlens.serve.store.StudyStore`.
    identifier
        The request's pydicom Dataset (``QueryRetrieveLevel`` and the keys).
    model
        The information model's SOP class UID (:data:`PATIENT_ROOT_FIND`, :data:`STUDY_ROOT_FIND`).

    Yields
    ------
    pydicom.dataset.Dataset
        One identifier per match, holding the requested keys (values from the catalog).

    Raises
    ------
    InputError
        Missing or unsupported ``QueryRetrieveLevel`` or a malformed key.
    """
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataset import Dataset
    from pydicom.multival import MultiValue

    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    allowed = ("PATIENT", "STUDY", "SERIES", "IMAGE") if model == PATIENT_ROOT_FIND else ("STUDY", "SERIES", "IMAGE")
    if level not in allowed:
        raise InputError(
            f"C-FIND: QueryRetrieveLevel {level or '(missing)'!r} is not supported by this information model; "
            f"use one of {', '.join(allowed)}"
        )
    group_col, keys = _LEVELS[level]
    requested: list[str] = []
    params: list[Any] = []
    where: list[str] = []
    for elem in identifier:
        kw = elem.keyword
        if not kw or kw in _SKIP:
            continue
        requested.append(kw)
        key = keys.get(kw)
        if key is None or (kw in _ONLY_AT and _ONLY_AT[kw] != level):
            continue  # returned empty
        if elem.VR == "SQ":
            continue
        raw = elem.value
        if isinstance(raw, MultiValue | list | tuple):
            value = "\\".join(str(v) for v in raw)
        else:
            value = "" if raw is None else str(raw)
        cond = _condition(kw, key, value, params)
        if cond is not None:
            where.append(cond)
    answered = [kw for kw in requested if kw in keys and not (kw in _ONLY_AT and _ONLY_AT[kw] != level)]
    selects = [f'{keys[kw].sql} AS "{kw}"' for kw in answered]
    sql = (
        f"SELECT {', '.join(selects) if selects else 'count(*) AS n'} FROM instances"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" GROUP BY {group_col} ORDER BY any_value(patient_id), any_value(study_uid), any_value(series_number),"
        " any_value(series_uid), any_value(instance_number), any_value(sop_instance_uid)"
    )
    rows = store.query(sql, params)
    for row in rows:
        ds = Dataset()
        if "SpecificCharacterSet" in identifier:
            ds.SpecificCharacterSet = identifier.SpecificCharacterSet
        ds.QueryRetrieveLevel = level
        for kw in requested:
            tag = tag_for_keyword(kw)
            vr = dictionary_VR(tag) if tag is not None else "UN"
            v = row.get(kw)
            if v is None or (isinstance(v, float) and v != v):
                ds.add_new(kw, vr, None if vr != "SQ" else [])
            elif kw == "ModalitiesInStudy":
                ds.ModalitiesInStudy = [m for m in str(v).split("\\") if m]
            elif vr in ("IS", "US", "UL", "SL", "SS"):
                ds.add_new(kw, vr, int(v))
            else:
                ds.add_new(kw, vr, str(v))
        yield ds
