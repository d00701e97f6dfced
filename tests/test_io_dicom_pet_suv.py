"""SUVbw factors from PET headers: decay correction modes worked out by hand."""

from __future__ import annotations

import math

import pytest
from pydicom.dataset import Dataset

from medlens.core.errors import MedlensWarning
from medlens.io.dicom.pet import suv_factors

HALF_LIFE_S = 6586.2  # 18F
DOSE_BQ = 370e6
WEIGHT_KG = 80.0


def _pet(decay: str, *, acq_time: str = "110000", units: str = "BQML") -> Dataset:
    ds = Dataset()
    ds.Units = units
    ds.DecayCorrection = decay
    ds.PatientWeight = WEIGHT_KG
    ds.SeriesDate = "20200101"
    ds.SeriesTime = "110000"
    ds.AcquisitionDate = "20200101"
    ds.AcquisitionTime = acq_time
    info = Dataset()
    info.RadiopharmaceuticalStartTime = "100000"  # one hour before the series
    info.RadionuclideTotalDose = DOSE_BQ
    info.RadionuclideHalfLife = HALF_LIFE_S
    ds.RadiopharmaceuticalInformationSequence = [info]
    return ds


def test_start_decays_dose_to_series_time():
    factors, units = suv_factors([_pet("START")] * 2, "pet")
    expected = WEIGHT_KG * 1000 / (DOSE_BQ * 0.5 ** (3600 / HALF_LIFE_S))
    assert units == "SUVbw" and factors == pytest.approx([expected, expected], rel=1e-9)


def test_admin_uses_the_injected_dose():
    factors, _ = suv_factors([_pet("ADMIN")], "pet")
    assert factors == pytest.approx([WEIGHT_KG * 1000 / DOSE_BQ], rel=1e-12)


def test_none_decays_to_each_slice_acquisition_time():
    factors, _ = suv_factors([_pet("NONE", acq_time="110000"), _pet("NONE", acq_time="113000")], "pet")
    f0 = WEIGHT_KG * 1000 / (DOSE_BQ * math.exp(-math.log(2) * 3600 / HALF_LIFE_S))
    f1 = WEIGHT_KG * 1000 / (DOSE_BQ * math.exp(-math.log(2) * 5400 / HALF_LIFE_S))
    assert factors == pytest.approx([f0, f1], rel=1e-9)


def test_gml_is_kept_as_suv():
    assert suv_factors([_pet("START", units="GML")], "pet") == (None, "SUVbw")


def test_counts_are_unknown_units_with_warning():
    with pytest.warns(MedlensWarning, match="'CNTS', neither BQML nor GML"):
        assert suv_factors([_pet("START", units="CNTS")], "pet") == (None, "unknown")


def test_missing_dose_keeps_bqml_and_names_the_tag():
    ds = _pet("START")
    del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
    with pytest.warns(MedlensWarning, match=r"pet: PET values are in BQML.*RadionuclideTotalDose"):
        assert suv_factors([ds], "pet") == (None, "BQML")
