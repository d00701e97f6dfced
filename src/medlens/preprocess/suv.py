"""PET SUV normalisations: body weight (as read), lean body mass (SUL) and body surface area.

The DICOM reader gives PET in SUVbw (g/ml: activity concentration x body weight / decay-corrected
dose). Other normalisations rescale it by ``X / body weight``:

* **SUL** (SUV normalised by lean body mass, the PERCIST quantity), ``units="SUVlbm"`` (g/ml), with the lean
  body mass of Janmahasatian et al. (Clin Pharmacokinet 2005; 44:1051), the formula PERCIST users are advised to
  use: male ``9270 W / (6680 + 216 BMI)``, female ``9270 W / (8780 + 244 BMI)`` (W in kg, BMI in kg/m^2);
  or of James (1976), ``1.10 W - 128 (W/H)^2`` (male) / ``1.07 W - 148 (W/H)^2`` (female), H in cm, which
  becomes too small, even negative, for obese patients (refused when it is not positive).
* **SUVbsa**, ``units="SUVbsa"`` (cm^2/ml), with the body surface area of Du Bois and Du Bois (1916),
  ``0.007184 W^0.425 H^0.725`` m^2 (H in cm).

Weight, height and sex come from the image's metadata (``PatientWeight``, ``PatientSize``,
``PatientSex`` as the DICOM reader stores them) unless given.
"""

from __future__ import annotations

import math

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, Units

__all__ = ["body_surface_area_m2", "lean_body_mass_kg", "suv_normalise"]


def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str, *, formula: str = "janmahasatian") -> float:
    """Lean body mass in kg (``formula``: ``"janmahasatian"`` or ``"james"``; ``sex``: ``"M"`` or ``"F"``)."""
    w, h, s = _check_body(weight_kg, height_m, sex, need_sex=True)
    if formula == "janmahasatian":
        bmi = w / h**2
        return 9270.0 * w / ((6680.0 + 216.0 * bmi) if s == "M" else (8780.0 + 244.0 * bmi))
    if formula == "james":
        ratio = w / (100.0 * h)
        lbm = (1.10 * w - 128.0 * ratio**2) if s == "M" else (1.07 * w - 148.0 * ratio**2)
        if not lbm > 0:
            raise InputError(
                f"the James lean body mass is not positive ({lbm:.1f} kg) for weight {w} kg, height {h} m: the "
                "formula fails for high BMI; use formula='janmahasatian'"
            )
        return lbm
    raise InputError(f"lean body mass formula must be 'janmahasatian' or 'james', got {formula!r}")


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Body surface area in m^2 (Du Bois and Du Bois)."""
    w, h, _ = _check_body(weight_kg, height_m, None, need_sex=False)
    return 0.007184 * w**0.425 * (100.0 * h) ** 0.725


def _check_body(weight_kg: object, height_m: object, sex: object, *, need_sex: bool) -> tuple[float, float, str]:
    try:
        w, h = float(weight_kg), float(height_m)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(
            f"weight_kg and height_m must be numbers, got {weight_kg!r} and {height_m!r}; pass them when the "
            "DICOM header lacks PatientWeight / PatientSize"
        ) from None
    if not (math.isfinite(w) and 1.0 <= w <= 500.0):
        raise InputError(f"weight_kg must be a body weight in kg (1-500), got {w}")
    if not (math.isfinite(h) and 0.3 <= h <= 2.6):
        raise InputError(f"height_m must be a body height in metres (0.3-2.6), got {h}; centimetres? divide by 100")
    s = str(sex or "").strip().upper()[:1]
    if need_sex and s not in ("M", "F"):
        raise InputError(f"sex must be 'M' or 'F' for a lean body mass formula, got {sex!r}; pass sex=")
    return w, h, s


def suv_normalise(
    image: Image,
    *,
    to: str = "lbm",
    weight_kg: float | None = None,
    height_m: float | None = None,
    sex: str | None = None,
    lbm_formula: str = "janmahasatian",
) -> Image:
    """Convert a PET image in SUVbw to SUL (``to="lbm"``) or SUVbsa (``to="bsa"``).

    Parameters
    ----------
    image
        PET in SUVbw (``meta.units == "SUVbw"``, as :func:`medlens.read_image` gives).
    to
        ``"lbm"`` (SUL, g/ml) or ``"bsa"`` (cm^2/ml).
    weight_kg, height_m, sex
        Override the patient's weight (kg), height (m) and sex (``"M"``/``"F"``) read from the header
        (``meta.extra["patient_weight_kg"]``, ``["patient_size_m"]``, ``["patient_sex"]``).
    lbm_formula
        ``"janmahasatian"`` (default) or ``"james"``.

    Returns
    -------
    Image
        float32, same grid; ``meta.units`` ``"SUVlbm"`` or ``"SUVbsa"``; the factor and the body values used
        are recorded in ``meta.history`` and ``meta.extra``.

    Raises
    ------
    InputError
        The image is not in SUVbw, ``to`` is unknown, or weight / height / sex are missing or implausible.
    """
    if not isinstance(image, Image):
        raise InputError(f"suv_normalise needs a medlens.Image, got {type(image).__name__}")
    if image.meta.units != Units.SUVBW:
        raise InputError(
            f"suv_normalise needs a PET image in SUVbw, got units {image.meta.units!r}; read the PET with "
            "medlens.read_image (it converts BQML to SUVbw when the header allows)"
        )
    extra = image.meta.extra
    w = weight_kg if weight_kg is not None else extra.get("patient_weight_kg")
    h = height_m if height_m is not None else extra.get("patient_size_m")
    s = sex if sex is not None else extra.get("patient_sex")
    if w is None or h is None:
        raise InputError(
            f"suv_normalise: the patient's {'weight' if w is None else 'height'} is not in the image metadata "
            "(DICOM PatientWeight / PatientSize); pass weight_kg= and height_m="
        )
    if to == "lbm":
        body = lean_body_mass_kg(float(w), float(h), str(s or ""), formula=lbm_formula)
        factor = body / float(w)
        units, what = Units.SUVLBM, f"lbm_{lbm_formula}={body:.4g}kg"
    elif to == "bsa":
        body = body_surface_area_m2(float(w), float(h))
        factor = body * 1.0e4 / (float(w) * 1.0e3)  # BSA in cm^2 over weight in g: SUVbsa in cm^2/ml
        units, what = Units.SUVBSA, f"bsa_dubois={body:.4g}m2"
    else:
        raise InputError(f"suv_normalise: to must be 'lbm' or 'bsa', got {to!r}")
    out = (np.asarray(image.array, dtype=np.float64) * factor).astype(np.float32)
    return image.with_array(
        out,
        op=f"suv_normalise(to={to},{what},weight={float(w):g}kg,height={float(h):g}m,factor={factor:.6g})",
        units=units,
        extra={"suv_normalisation": to, "suv_factor_from_suvbw": factor},
    )
