"""PET SUV normalisations: SUL (lean body mass) and SUVbsa, hand-computed and on a real STS PET."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.preprocess import body_surface_area_m2, lean_body_mass_kg, suv_normalise


def test_lean_body_mass_formulas_by_hand() -> None:
    # Janmahasatian: 9270 W / (6680 + 216 BMI) (male), 9270 W / (8780 + 244 BMI) (female)
    bmi = 71.0 / 1.63**2
    assert lean_body_mass_kg(71.0, 1.63, "M") == pytest.approx(9270 * 71 / (6680 + 216 * bmi), rel=1e-12)
    assert lean_body_mass_kg(71.0, 1.63, "M") == pytest.approx(52.856, abs=1e-3)
    assert lean_body_mass_kg(60.0, 1.65, "female") == pytest.approx(9270 * 60 / (8780 + 244 * 60 / 1.65**2))
    # James: 1.10 W - 128 (W / H_cm)^2 (male), 1.07 W - 148 (W / H_cm)^2 (female)
    assert lean_body_mass_kg(71.0, 1.63, "M", formula="james") == pytest.approx(1.10 * 71 - 128 * (71 / 163) ** 2)
    assert lean_body_mass_kg(60.0, 1.65, "F", formula="james") == pytest.approx(1.07 * 60 - 148 * (60 / 165) ** 2)


def test_body_surface_area_du_bois() -> None:
    # 70 kg, 175 cm: 0.007184 * 70^0.425 * 175^0.725 = 1.85 m^2 (the textbook adult)
    assert body_surface_area_m2(70.0, 1.75) == pytest.approx(0.007184 * 70**0.425 * 175**0.725, rel=1e-12)
    assert body_surface_area_m2(70.0, 1.75) == pytest.approx(1.85, abs=0.01)


def test_body_values_are_checked() -> None:
    with pytest.raises(InputError, match="James lean body mass is not positive"):
        lean_body_mass_kg(200.0, 1.50, "F", formula="james")  # the formula fails for a BMI of 89
    with pytest.raises(InputError, match="centimetres"):
        lean_body_mass_kg(70.0, 175.0, "M")
    with pytest.raises(InputError, match="sex must be 'M' or 'F'"):
        lean_body_mass_kg(70.0, 1.75, "O")
    with pytest.raises(InputError, match="weight_kg must be a body weight"):
        body_surface_area_m2(0.0, 1.75)
    with pytest.raises(InputError, match="formula must be"):
        lean_body_mass_kg(70.0, 1.75, "M", formula="boer")


def _pet(extra: dict) -> Image:
    arr = np.linspace(0.0, 10.0, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    img = Image.from_array(arr, spacing=(3.0, 4.0, 4.0), modality="PT", units=Units.SUVBW)
    return img.with_meta(extra=extra)


def test_suv_normalise_scales_by_body_over_weight() -> None:
    pet = _pet({"patient_weight_kg": 80.0, "patient_size_m": 1.70, "patient_sex": "F"})
    sul = suv_normalise(pet)
    factor = lean_body_mass_kg(80.0, 1.70, "F") / 80.0
    np.testing.assert_allclose(sul.array, pet.array.astype(np.float64) * factor, rtol=1e-6)
    assert sul.meta.units == Units.SUVLBM and sul.same_grid(pet) and sul.array.dtype == np.float32
    assert sul.meta.extra["suv_factor_from_suvbw"] == pytest.approx(factor)
    assert sul.meta.history[-1].startswith("suv_normalise(to=lbm,lbm_janmahasatian=")
    bsa = suv_normalise(pet, to="bsa")
    # SUVbsa = SUVbw x BSA (cm^2) / weight (g)
    np.testing.assert_allclose(bsa.array, pet.array * body_surface_area_m2(80.0, 1.70) * 1e4 / 80e3, rtol=1e-6)
    assert bsa.meta.units == Units.SUVBSA
    # explicit values override the header
    assert suv_normalise(pet, weight_kg=60.0, sex="M").meta.extra["suv_factor_from_suvbw"] == pytest.approx(
        lean_body_mass_kg(60.0, 1.70, "M") / 60.0
    )
    assert pet.meta.units == Units.SUVBW  # input unchanged


def test_suv_normalise_bad_input() -> None:
    ct = Image.from_array(np.zeros((2, 3, 4), np.float32), modality="CT", units=Units.HU)
    with pytest.raises(InputError, match="needs a PET image in SUVbw, got units 'HU'"):
        suv_normalise(ct)
    with pytest.raises(InputError, match="height is not in the image metadata"):
        suv_normalise(_pet({"patient_weight_kg": 80.0, "patient_sex": "F"}))
    with pytest.raises(InputError, match="sex must be 'M' or 'F'"):
        suv_normalise(_pet({"patient_weight_kg": 80.0, "patient_size_m": 1.7}))
    with pytest.raises(InputError, match="to must be 'lbm' or 'bsa'"):
        suv_normalise(_pet({"patient_weight_kg": 80.0, "patient_size_m": 1.7, "patient_sex": "F"}), to="bw2")


def test_suv_normalise_on_a_real_sts_pet_and_as_a_recipe_step(sts_dir: Path) -> None:
    import medlens
    from medlens.preprocess import Recipe

    pet = medlens.read_image(sts_dir / "STS_001" / "PET" / "image")
    assert pet.meta.units == Units.SUVBW
    w, h, s = (pet.meta.extra[k] for k in ("patient_weight_kg", "patient_size_m", "patient_sex"))
    assert (w, h, s) == (71.0, 1.63, "M")  # from the DICOM header
    sul = suv_normalise(pet)
    # SULmax = SUVmax x LBM / weight, LBM (Janmahasatian, male, 71 kg, 1.63 m) = 52.856 kg
    assert float(sul.array.max()) == pytest.approx(float(pet.array.max()) * 52.856 / 71.0, rel=1e-4)
    via_recipe = Recipe.from_dict({"steps": [{"suv_normalise": {"to": "lbm"}}]}).apply(pet)
    np.testing.assert_array_equal(via_recipe.array, sul.array)
    assert via_recipe.meta.units == Units.SUVLBM
