"""PET intensities in SUVbw (body-weight standardised uptake value, g/ml).

SUVbw = activity concentration (Bq/ml) x body weight (g) / injected dose (Bq), with the dose
decay-corrected to the time the image values refer to (DICOM PS3.3 C.8.9.1, Decay Correction):

* ``DecayCorrection`` START: values are decay-corrected to the series start time (SeriesDate/Time;
  the earliest AcquisitionDate/Time when that is earlier, the usual vendor-neutral choice);
* ADMIN: values are corrected to the administration time, so the dose needs no correction;
* NONE: values are not corrected; each slice uses its own AcquisitionDate/Time.

``Units`` GML means the values already are SUVbw (kept as stored). Values in BQML whose SUV
factor cannot be computed (a needed tag is missing) are kept in BQML with a
:class:`~medlens.core.errors.MedlensWarning` naming the missing tags.
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from collections.abc import Sequence
from typing import Any

from medlens.core.errors import MedlensWarning
from medlens.core.image import Units


def _parse_time(value: Any) -> _dt.time | None:
    s = str(value or "").strip()
    if not s:
        return None
    s = s.replace(":", "")
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f) if f.isdigit() else 0.0
    s = s.ljust(6, "0")
    try:
        hh, mm, ss = int(s[0:2]), int(s[2:4]), int(s[4:6])
        return _dt.time(hh, mm, min(ss, 59), round(frac * 1e6) if frac < 1 else 0)
    except ValueError:
        return None


def _parse_date(value: Any) -> _dt.date | None:
    s = str(value or "").strip()
    if len(s) < 8:
        return None
    try:
        return _dt.date(int(s[0:4]), int(s[4:6]), int(s[6:8]))
    except ValueError:
        return None


def _datetime(date: Any, time: Any, fallback_date: _dt.date | None) -> _dt.datetime | None:
    t = _parse_time(time)
    if t is None:
        return None
    d = _parse_date(date) or fallback_date or _dt.date(2000, 1, 1)
    return _dt.datetime.combine(d, t)


def _parse_dt(value: Any) -> _dt.datetime | None:
    s = str(value or "").strip()
    if len(s) < 8:
        return None
    for sep in ("+", "-"):
        if sep in s[8:]:
            s = s[: 8 + s[8:].index(sep)]
    return _datetime(s[:8], s[8:] or "000000", None)


def _seconds(later: _dt.datetime, earlier: _dt.datetime, *, same_day_guess: bool) -> float:
    dt = (later - earlier).total_seconds()
    if dt < 0 and same_day_guess:
        dt += 86400.0  # injection before midnight, scan after it, dates not recorded
    return dt


def suv_factors(datasets: Sequence[Any], source: str) -> tuple[list[float] | None, str]:
    """Per-slice factors that turn BQML values into SUVbw, and the resulting units.

    Parameters
    ----------
    datasets
        Headers of the slices (sorted), all of one PET series.
    source
        Name of the series for messages.

    Returns
    -------
    factors, units
        ``factors`` (one per dataset) or None when the values stay as they are; ``units`` is
        :data:`Units.SUVBW`, :data:`Units.BQML` or :data:`Units.UNKNOWN`.
    """
    first = datasets[0]
    units = str(first.get("Units", "") or "").upper()
    if units == "GML":
        return None, Units.SUVBW
    if units != "BQML":
        warnings.warn(
            f"{source}: PET Units is {units or 'missing'!r}, neither BQML nor GML; values kept as stored (units "
            "'unknown'), no SUV conversion",
            MedlensWarning,
            stacklevel=3,
        )
        return None, Units.UNKNOWN
    missing: list[str] = []
    weight = first.get("PatientWeight")
    try:
        weight_kg = float(weight) if weight not in (None, "") else 0.0
    except (TypeError, ValueError):
        weight_kg = 0.0
    if weight_kg <= 0:
        missing.append("PatientWeight")
    seq = first.get("RadiopharmaceuticalInformationSequence")
    info = seq[0] if seq else None
    dose = half_life = None
    inj: _dt.datetime | None = None
    if info is None:
        missing.append("RadiopharmaceuticalInformationSequence")
    else:
        try:
            dose = float(info.get("RadionuclideTotalDose") or 0) or None
        except (TypeError, ValueError):
            dose = None
        try:
            half_life = float(info.get("RadionuclideHalfLife") or 0) or None
        except (TypeError, ValueError):
            half_life = None
        if dose is None:
            missing.append("RadionuclideTotalDose")
        if half_life is None:
            missing.append("RadionuclideHalfLife")
        inj = _parse_dt(info.get("RadiopharmaceuticalStartDateTime"))
        if inj is None:
            inj = _datetime(
                first.get("SeriesDate") or first.get("StudyDate"), info.get("RadiopharmaceuticalStartTime"), None
            )
        if inj is None:
            missing.append("RadiopharmaceuticalStartDateTime/RadiopharmaceuticalStartTime")
    decay = str(first.get("DecayCorrection", "") or "").upper()
    if decay not in ("START", "ADMIN", "NONE"):
        missing.append(f"DecayCorrection (START/ADMIN/NONE; found {decay or 'nothing'!r})")
    dates_known = bool(info is not None and info.get("RadiopharmaceuticalStartDateTime"))
    ref_times: list[_dt.datetime | None] = []
    if not missing and inj is not None:
        base_date = inj.date()
        if decay == "START":
            ser = _datetime(first.get("SeriesDate"), first.get("SeriesTime"), base_date)
            acq = [_datetime(d.get("AcquisitionDate"), d.get("AcquisitionTime"), base_date) for d in datasets]
            acq_known = [a for a in acq if a is not None]
            ref = ser
            if acq_known and (ref is None or min(acq_known) < ref):
                ref = min(acq_known)
            if ref is None:
                missing.append("SeriesTime/AcquisitionTime")
            ref_times = [ref] * len(datasets)
        elif decay == "ADMIN":
            ref_times = [inj] * len(datasets)
        else:
            ref_times = [_datetime(d.get("AcquisitionDate"), d.get("AcquisitionTime"), base_date) for d in datasets]
            if any(r is None for r in ref_times):
                missing.append("AcquisitionTime (DecayCorrection NONE)")
    if missing:
        warnings.warn(
            f"{source}: PET values are in BQML but SUVbw cannot be computed, missing or invalid: "
            f"{', '.join(missing)}; values kept in BQML (units 'BQML')",
            MedlensWarning,
            stacklevel=3,
        )
        return None, Units.BQML
    assert inj is not None and dose is not None and half_life is not None  # narrowed above
    factors = []
    for ref in ref_times:
        assert ref is not None
        elapsed = _seconds(ref, inj, same_day_guess=not dates_known)
        decayed = dose * math.exp(-math.log(2.0) * elapsed / half_life)
        factors.append(weight_kg * 1000.0 / decayed)
    return factors, Units.SUVBW
