"""Lesion measurements: Lung-RADS axes on shapes with known sizes, CT composition, PET uptake, growth."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.clinical.measure import axial_diameters, growth, measure_lesion, round_tenth
from medlens.core.errors import GeometryError, InputError
from medlens.core.image import Image, Units


def _ellipsoid(semi_mm: tuple[float, float, float], spacing: tuple[float, float, float], shape=(24, 80, 80)):
    grid = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(float)
    c = [(s - 1) / 2 for s in shape]
    r2 = sum(((grid[a] - c[a]) * spacing[a] / semi_mm[a]) ** 2 for a in range(3))
    return r2 <= 1.0, grid, c


def _ct(values: np.ndarray, spacing) -> Image:
    return Image.from_array(values, spacing=spacing, modality="CT", units=Units.HU)


def test_ellipsoid_axes_volume_and_solid_type() -> None:
    sp = (1.0, 0.5, 0.5)
    m, _, _ = _ellipsoid((8.0, 12.0, 5.0), sp)
    ct = _ct(np.where(m, 30.0, -850.0), sp)
    r = measure_lesion(ct, ct.with_array(m, units=Units.MASK))
    # the mask's pixels extend at most one pixel (0.5 mm) beyond the true 24 x 10 mm section
    assert 24.0 <= r.long_axis_mm <= 24.5 + 1e-9
    assert 10.0 <= r.short_axis_mm <= 10.5 + 1e-9
    assert r.mean_diameter_mm == round_tenth((r.long_axis_mm + r.short_axis_mm) / 2)
    assert r.volume_mm3 == pytest.approx(m.sum() * 0.25)
    assert r.volume_mm3 == pytest.approx(4 / 3 * np.pi * 8 * 12 * 5, rel=0.02)
    assert r.slice_index == 11 or r.slice_index == 12  # the central slices
    assert r.nodule_type == "solid" and r.solid_fraction == 1.0 and r.mean_hu == pytest.approx(30.0)


def test_axes_do_not_depend_on_in_plane_rotation() -> None:
    sp = (0.5, 0.5)
    y, x = np.mgrid[0:90, 0:90].astype(float) - 44.5
    out = []
    for deg in (0.0, 30.0, 45.0, 90.0):
        a = np.deg2rad(deg)
        u = (y * np.cos(a) + x * np.sin(a)) * 0.5
        v = (-y * np.sin(a) + x * np.cos(a)) * 0.5
        m = (u / 14.0) ** 2 + (v / 6.0) ** 2 <= 1
        d = axial_diameters(Image.from_array(m, spacing=sp, units=Units.MASK))
        out.append((d.long_axis_mm, d.short_axis_mm))
    arr = np.array(out)
    # 28 x 12 mm ellipse: within one diagonal pixel (0.71 mm) whatever its orientation
    assert np.all(np.abs(arr[:, 0] - 28.0) <= 0.75) and np.all(np.abs(arr[:, 1] - 12.0) <= 0.75)


def test_single_pixel_measures_its_physical_size() -> None:
    m = np.zeros((5, 5), bool)
    m[2, 2] = True
    d = axial_diameters(Image.from_array(m, spacing=(0.7, 0.7), units=Units.MASK))
    assert d.long_axis_mm == pytest.approx(0.7 * np.sqrt(2)) and d.short_axis_mm == pytest.approx(0.7 * np.sqrt(2))


def test_part_solid_and_ground_glass() -> None:
    sp = (1.0, 0.5, 0.5)
    m, g, c = _ellipsoid((8.0, 10.0, 10.0), sp)
    core = sum(((g[a] - c[a]) * sp[a]) ** 2 for a in range(3)) <= 3.0**2
    vals = np.where(m, -600.0, -850.0)
    vals[core & m] = 40.0
    ct = _ct(vals, sp)
    r = measure_lesion(ct, ct.with_array(m, units=Units.MASK))
    assert r.nodule_type == "part_solid"
    assert 6.0 <= r.solid_mean_diameter_mm <= 6.5  # 6 mm core plus at most a pixel
    assert 20.0 <= r.mean_diameter_mm <= 20.7  # plus at most a diagonal pixel (0.71 mm)
    ggn = _ct(np.where(m, -600.0, -850.0), sp)
    assert measure_lesion(ggn, ggn.with_array(m, units=Units.MASK)).nodule_type == "ground_glass"
    # the threshold decides: at -650 HU the -600 HU ground glass counts as solid
    r2 = measure_lesion(ggn, ggn.with_array(m, units=Units.MASK), solid_threshold_hu=-650.0)
    assert r2.nodule_type == "solid"


def test_pet_uptake_on_real_sts(sts_dir) -> None:
    import medlens

    pet = medlens.read_image(sts_dir / "STS_001" / "PET" / "image")
    mask = medlens.read_mask(sts_dir / "STS_001" / "PET" / "rtstruct", reference=pet, roi="GTV_Mass_PET")
    r = measure_lesion(pet, mask)
    v = np.asarray(pet.array)[np.asarray(mask.array)]
    assert r.suv_max == pytest.approx(float(v.max())) and r.suv_mean == pytest.approx(float(v.mean()))
    assert r.suv_mean < r.suv_peak < r.suv_max
    assert r.tlg_g == pytest.approx(r.suv_mean * r.volume_mm3 / 1000)
    assert r.volume_mm3 == pytest.approx(mask.array.sum() * pet.voxel_volume_mm3)
    # brute-force check of the long axis on the reported slice: farthest pair of pixel corners
    from scipy.spatial.distance import pdist

    m2 = np.asarray(mask.array)[r.slice_index]
    rr, cc = np.nonzero(m2)
    pts = np.concatenate([np.stack([rr + a, cc + b], 1) for a in (-0.5, 0.5) for b in (-0.5, 0.5)]) * pet.spacing[1:]
    assert r.long_axis_mm == round_tenth(float(pdist(pts).max()))
    assert r.study_date == "20000907"


def _m(mean: float, vol: float, date: str = ""):
    from medlens.clinical.measure import LesionMeasurement

    return LesionMeasurement(
        mean, mean, mean, vol, 0, "CT", "HU", ((0, 0), (0, 0)), ((0, 0), (0, 0)), 1, study_date=date
    )


def test_growth_definition() -> None:
    g = growth(_m(7.7, 240.0), _m(6.0, 113.0), current_date="20240601", prior_date="20230601")
    assert g.interval_days == 366 and g.mean_diameter_change_mm == 1.7 and g.growing
    assert g.volume_change_mm3 == pytest.approx(127.0)
    assert g.volume_doubling_time_days == pytest.approx(366 * np.log(2) / np.log(240 / 113))
    assert not growth(_m(7.5, 200.0), _m(6.0, 113.0), current_date="20240601", prior_date="20230601").growing
    late = growth(_m(9.0, 300.0), _m(6.0, 113.0), current_date="20250601", prior_date="20230601")
    assert not late.growing and "slow growth" in late.rule
    # dates from the measurements themselves
    assert growth(_m(8.0, 1.0, "20240301"), _m(6.0, 1.0, "20240101")).interval_days == 60
    with pytest.raises(InputError, match="after the current"):
        growth(_m(8.0, 1.0), _m(6.0, 1.0), current_date="20230101", prior_date="20240101")
    with pytest.raises(InputError, match="YYYYMMDD"):
        growth(_m(8.0, 1.0), _m(6.0, 1.0), current_date="June 2024")


def test_bad_inputs() -> None:
    ct = _ct(np.zeros((3, 8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="empty"):
        measure_lesion(ct, ct.with_array(np.zeros((3, 8, 8), bool)))
    with pytest.raises(InputError, match="boolean"):
        measure_lesion(ct, ct.with_array(np.ones((3, 8, 8), np.uint8)))
    other = Image.from_array(np.ones((3, 8, 8), bool), spacing=(2.0, 1.0, 1.0))
    with pytest.raises(GeometryError, match="different grid"):
        measure_lesion(ct, other)
