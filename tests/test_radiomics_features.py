"""Radiomics bad inputs, settings files, hand-checked feature values and the CLI."""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from medlens import Image
from medlens.core.errors import InputError
from medlens.radiomics import RadiomicsSettings, extract, load_preset, load_settings
from medlens.radiomics.diagnostics import RadiomicsWarning
from medlens.radiomics.intensity import histogram_features, ivh_features, statistics_features
from medlens.radiomics.morphology import moran_geary, morphology_features
from medlens.radiomics.settings import (
    DiscretisationSettings,
    IVHSettings,
    ResegmentationSettings,
    TextureSettings,
    save_settings,
)

NO_TEXTURE = RadiomicsSettings(texture=TextureSettings(families=()))


def _pair(mask_arr: np.ndarray, img_arr: np.ndarray | None = None, spacing=(2.0, 1.0, 1.0)) -> tuple[Image, Image]:
    rng = np.random.default_rng(1)
    if img_arr is None:
        img_arr = rng.normal(100.0, 20.0, size=mask_arr.shape)
    return Image.from_array(img_arr, spacing=spacing), Image.from_array(mask_arr, spacing=spacing)


def _ball(shape=(12, 20, 20), r=5.0) -> np.ndarray:
    z, y, x = np.indices(shape)
    c = (np.asarray(shape) - 1) / 2
    return ((2 * (z - c[0])) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) <= r**2


# ---- bad inputs: defined behaviour, NaN with a named reason -----------------------------------


def test_empty_mask_gives_nan_with_reason() -> None:
    img, msk = _pair(np.zeros((6, 8, 8), bool))
    with pytest.warns(RadiomicsWarning, match=r"radiomics morph: the mask is empty"):
        f = extract(img, msk, NO_TEXTURE)
    assert math.isnan(f["morph_volume"]) and math.isnan(f["stat_mean"]) and math.isnan(f["ivh_v10"])
    assert f["int_mask_vox_count_init_roi"] == 0


def test_one_voxel_mask() -> None:
    m = np.zeros((6, 8, 8), bool)
    m[3, 4, 4] = True
    img, msk = _pair(m)
    with pytest.warns(RadiomicsWarning, match="single voxel"):
        f = extract(img, msk, NO_TEXTURE)
    assert f["morph_vol_approx"] == pytest.approx(2.0)
    assert f["morph_volume"] > 0
    assert math.isnan(f["morph_moran_i"]) and math.isnan(f["morph_pca_elongation"])
    assert f["stat_mean"] == pytest.approx(float(img.array[3, 4, 4]))
    assert f["stat_var"] == 0.0


def test_mask_on_another_grid_is_a_geometry_error() -> None:
    from medlens.core.errors import GeometryError

    img = Image.from_array(np.zeros((6, 8, 8)), spacing=(1.0, 1.0, 1.0))
    msk = Image.from_array(np.ones((4, 4, 4), bool), spacing=(1.0, 1.0, 1.0), origin=(500.0, 500.0, 500.0))
    with pytest.raises(GeometryError, match=r"shape \(6, 8, 8\) vs \(4, 4, 4\); origin \(0, 0, 0\) vs \(500"):
        extract(img, msk, NO_TEXTURE)


def test_constant_roi() -> None:
    m = _ball()
    img, msk = _pair(m, np.full(m.shape, 7.0))
    with pytest.warns(RadiomicsWarning, match="constant"):
        f = extract(img, msk, NO_TEXTURE)
    assert f["stat_var"] == 0.0 and f["stat_skew"] == 0.0
    assert f["ih_entropy"] == 0.0
    assert math.isnan(f["morph_moran_i"]) and math.isnan(f["morph_geary_c"])
    assert f["loc_peak_glob"] == pytest.approx(7.0)


def test_nan_in_image_is_left_out_of_the_intensity_mask() -> None:
    m = _ball()
    arr = np.full(m.shape, 5.0)
    arr[m] = np.arange(int(m.sum()), dtype=float)
    idx = tuple(a[0] for a in np.nonzero(m))
    arr[idx] = np.nan
    img, msk = _pair(m, arr)
    with pytest.warns(RadiomicsWarning, match="non-finite"):
        f = extract(img, msk, NO_TEXTURE)
    assert f["int_mask_vox_count_init_roi"] == m.sum() - 1
    assert f["morph_mask_vox_count_init_roi"] == m.sum()
    assert np.isfinite(f["stat_mean"]) and f["stat_min"] == 1.0


def test_one_bin_discretisation() -> None:
    m = _ball()
    img, msk = _pair(m)
    s = RadiomicsSettings(
        discretisation=DiscretisationSettings(method="FBN", n_bins=1), texture=TextureSettings(families=())
    )
    with pytest.warns(RadiomicsWarning, match="one grey level"):
        f = extract(img, msk, s)
    assert f["ih_mean"] == 1.0 and f["ih_entropy"] == 0.0 and f["ih_uniformity"] == 1.0


def test_non_boolean_mask_and_2d_image_are_rejected() -> None:
    img = Image.from_array(np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="mask must be boolean"):
        extract(img, Image.from_array(np.ones((4, 4, 4), np.uint8)), NO_TEXTURE)
    with pytest.raises(InputError, match="needs a 3D image"):
        extract(Image.from_array(np.zeros((4, 4))), Image.from_array(np.ones((4, 4), bool)), NO_TEXTURE)
    with pytest.raises(InputError, match=r"medlens.Image"):
        extract(np.zeros((4, 4, 4)), img, NO_TEXTURE)  # type: ignore[arg-type]


def test_discretisation_none_needs_integer_levels() -> None:
    m = _ball()
    img, msk = _pair(m)
    s = RadiomicsSettings(discretisation=DiscretisationSettings(method="none"), texture=TextureSettings(families=()))
    with pytest.raises(InputError, match="integer intensities >= 1"):
        extract(img, msk, s)


# ---- settings ---------------------------------------------------------------------------------


def test_settings_unknown_keys_are_named(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("discretisation: {method: FBS, bin_widht: 25}\n")
    with pytest.raises(InputError, match=r"unknown key 'bin_widht'; allowed keys: method, n_bins, bin_width"):
        load_settings(p)
    p.write_text("interpolaton: {}\n")
    with pytest.raises(InputError, match=r"unknown key 'interpolaton'.*interpolation"):
        load_settings(p)
    with pytest.raises(InputError, match="unknown preset"):
        load_preset("ibsi-z")
    with pytest.raises(InputError, match="FBN, FBS or none"):
        DiscretisationSettings(method="equal")


def test_settings_round_trip_and_hash(tmp_path: Path) -> None:
    s = load_preset("ibsi-e")
    p = tmp_path / "e.yaml"
    save_settings(s, p)
    back = load_settings(p)
    assert back == s and back.settings_hash() == s.settings_hash()
    assert load_preset("ibsi-c").settings_hash() != s.settings_hash()
    assert load_preset("default") == RadiomicsSettings(name="default")


# ---- hand-checked values -----------------------------------------------------------------------


def test_statistics_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    f = statistics_features(x)
    assert f["stat_mean"] == 4.0
    assert f["stat_var"] == pytest.approx(np.mean((x - 4.0) ** 2))
    assert f["stat_energy"] == 1 + 4 + 9 + 16 + 100
    assert f["stat_medad"] == pytest.approx((2 + 1 + 0 + 1 + 7) / 5)
    assert f["stat_range"] == 9.0


def test_histogram_mode_tie_goes_to_bin_closest_to_mean() -> None:
    lev = np.array([1, 1, 4, 4, 3])  # mean 2.6: bins 1 and 4 tie at 2 counts; 4 is closer
    f = histogram_features(lev, 4)
    assert f["ih_mode"] == 4.0
    # histogram (2, 0, 1, 2): gradients (-2, -0.5, 1, 1) -> max at level 3 (first), min at 1
    assert f["ih_max_grad"] == 1.0 and f["ih_max_grad_g"] == 3.0
    assert f["ih_min_grad"] == -2.0 and f["ih_min_grad_g"] == 1.0


def test_ivh_matches_the_ibsi_digital_phantom_table() -> None:
    # 74 voxels with the volume fractions of the IBSI example table (levels 2 and 5 absent)
    x = np.array([1] * 50 + [3] * 1 + [4] * 16 + [6] * 7, dtype=float)
    f = ivh_features(x, IVHSettings(method="none"), ResegmentationSettings())
    assert f["ivh_v10"] == pytest.approx(24 / 74)
    assert f["ivh_v90"] == pytest.approx(7 / 74)
    assert f["ivh_i10"] == 5.0 and f["ivh_i90"] == 2.0


def _moran_geary_pairs(v: np.ndarray, m: np.ndarray, sp: tuple[float, ...]) -> tuple[float, float]:
    """Moran's I and Geary's C straight from their O(N^2) pair definitions (weights 1 / distance in mm)."""
    pos = np.argwhere(m) * np.asarray(sp)
    x = v[m]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    w = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    y = x - x.mean()
    n = x.size
    mi_ref = n / w.sum() * (w * np.outer(y, y)).sum() / (y**2).sum()
    gc_ref = (n - 1) * (w * (x[:, None] - x[None]) ** 2).sum() / (2 * w.sum() * (y**2).sum())
    return float(mi_ref), float(gc_ref)


def test_moran_geary_match_the_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    m = rng.random((4, 5, 6)) > 0.4
    v = rng.normal(size=m.shape)
    sp = (2.0, 1.0, 0.5)
    mi, gc = moran_geary(v, m, sp)
    mi_ref, gc_ref = _moran_geary_pairs(v, m, sp)
    # the FFTs run in single precision: agreement to 1e-5 relative (IBSI tolerances are ~1e-3)
    assert mi == pytest.approx(mi_ref, rel=1e-5) and gc == pytest.approx(gc_ref, rel=1e-5)


def test_moran_geary_on_an_anisotropic_elongated_roi_match_pairs() -> None:
    # odd and even box extents, one-voxel-thick parts: exercises the spectral mirror and weights
    rng = np.random.default_rng(7)
    m = np.zeros((3, 7, 10), bool)
    m[0, 1:6, 2:9] = True
    m[1, 3, :] = True
    m[2, :, 4] = True
    v = rng.normal(size=m.shape) * 40.0 + 50.0
    sp = (3.0, 0.7, 1.3)
    mi, gc = moran_geary(v, m, sp)
    mi_ref, gc_ref = _moran_geary_pairs(v, m, sp)
    assert mi == pytest.approx(mi_ref, rel=1e-5, abs=1e-7) and gc == pytest.approx(gc_ref, rel=1e-5)


def test_sphere_morphology() -> None:
    z, y, x = np.indices((41, 41, 41))
    m = ((z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2) <= 15**2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = morphology_features(np.ones(m.shape), m, m, (1.0, 1.0, 1.0))
    true_v = 4 / 3 * math.pi * 15**3
    assert f["morph_volume"] == pytest.approx(true_v, rel=0.02)
    assert f["morph_sphericity"] == pytest.approx(1.0, abs=0.1)
    assert f["morph_diam"] == pytest.approx(30.0, abs=1.5)
    assert f["morph_pca_elongation"] == pytest.approx(1.0, abs=0.02)
    # IBSI's ellipsoid has semi-axes 2 sqrt(lambda); a solid ball has lambda = r^2 / 5, so the
    # density is (sqrt(5) / 2)^3 = 1.398
    assert f["morph_vol_dens_aee"] == pytest.approx((5**0.5 / 2) ** 3, rel=0.03)
    assert f["morph_vol_dens_mvee"] == pytest.approx(1.0, abs=0.1)
    assert f["morph_com"] == pytest.approx(0.0, abs=1e-9)


# ---- CLI --------------------------------------------------------------------------------------


def test_cli_features_and_batch(tmp_path: Path, digital_phantom_dir: Path, capsys) -> None:
    from medlens.cli import main

    img = digital_phantom_dir / "nifti" / "image" / "phantom.nii.gz"
    msk = digital_phantom_dir / "nifti" / "mask" / "mask.nii.gz"
    out = tmp_path / "f.csv"
    code = main(["features", str(img), str(msk), "--preset", "ibsi-dig", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and float(rows[0]["morph_volume"]) == pytest.approx(556, abs=4)
    assert rows[0]["settings_hash"] == load_preset("ibsi-dig").settings_hash()

    cases = tmp_path / "cases.csv"
    cases.write_text(f"case_id,image,mask\np1,{img},{msk}\np2,{img},{msk}\n")
    table = tmp_path / "t.csv"
    assert main(["features-batch", str(cases), "--preset", "ibsi-dig", "--out", str(table)]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [r["case_id"] for r in rows] == ["p1", "p2"] and rows[0]["stat_mean"] == rows[1]["stat_mean"]


def test_cli_records_nan_reasons(tmp_path: Path, capsys) -> None:
    import SimpleITK as sitk

    from medlens.cli import main
    from medlens.core.sitk_bridge import to_sitk

    # every ROI value is above the ibsi-c re-segmentation range [-1000, 400] HU
    img, msk = _pair(_ball(), np.full((12, 20, 20), 3000.0))
    ip, mp = tmp_path / "i.nii.gz", tmp_path / "m.nii.gz"
    sitk.WriteImage(to_sitk(img), str(ip))
    sitk.WriteImage(to_sitk(msk), str(mp))
    out = tmp_path / "f.csv"
    assert main(["features", str(ip), str(mp), "--preset", "ibsi-c", "--out", str(out)]) == 0
    row = next(csv.DictReader(out.open()))
    assert row["stat_mean"] == "nan" and "no ROI voxel is left after re-segmentation" in row["warnings"]
    assert "no ROI voxel is left after re-segmentation" in capsys.readouterr().err


def test_cli_bad_preset_and_cases(tmp_path: Path, digital_phantom_dir: Path, capsys) -> None:
    from medlens.cli import main

    img = digital_phantom_dir / "nifti" / "image" / "phantom.nii.gz"
    msk = digital_phantom_dir / "nifti" / "mask" / "mask.nii.gz"
    assert main(["features", str(img), str(msk), "--preset", "nope", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    cases = tmp_path / "c.csv"
    cases.write_text("img,mask\na,b\n")
    assert main(["features-batch", str(cases), "--out", str(tmp_path / "t.csv")]) == 2
    assert "missing column(s) ['image']" in capsys.readouterr().err
    cases.write_text(f"case_id,image,mask\nbad1,{tmp_path / 'nope.nii.gz'},{msk}\n")
    assert main(["features-batch", str(cases), "--out", str(tmp_path / "t.csv")]) == 2
    assert "row 1 (case bad1)" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_features_do_not_depend_on_image_extent_beyond_the_roi() -> None:
    """Padding the scan far from the ROI changes the image diagnostics only (features use the ROI box)."""
    m = _ball((16, 30, 30), r=6.0)  # >= 8 mm from every edge: the 1 cm^3 sphere (r 6.2 mm) stays inside
    img, msk = _pair(m, spacing=(2.0, 1.0, 1.0))
    pad = ((3, 4), (20, 10), (15, 25))
    big_img = Image.from_array(np.pad(img.array, pad), spacing=(2.0, 1.0, 1.0), origin=(-6.0, -20.0, -15.0))
    big_msk = Image.from_array(np.pad(msk.array, pad), spacing=(2.0, 1.0, 1.0), origin=(-6.0, -20.0, -15.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = extract(img, msk, NO_TEXTURE)
        large = extract(big_img, big_msk, NO_TEXTURE)
    feats = [k for k in small if not k.endswith(("_img", "_roi"))]
    assert len(feats) > 70
    for k in feats:
        assert np.isclose(small[k], large[k], rtol=1e-9, equal_nan=True), (k, small[k], large[k])
    assert large["img_dim_x_init_img"] == 30 + 40 and large["int_mask_dim_x_init_roi"] == 70


def test_cli_features_from_dicom_rtstruct(tmp_path: Path, ct_phantom_dir: Path, capsys) -> None:
    from medlens.cli import main

    out = tmp_path / "f.csv"
    args = ["features", str(ct_phantom_dir / "dicom" / "image"), str(ct_phantom_dir / "dicom" / "mask")]
    assert main([*args, "--roi", "GTV-1", "--preset", "ibsi-a", "--out", str(out)]) == 0, capsys.readouterr().err
    row = next(csv.DictReader(out.open()))
    # IBSI config A: morph_volume 358000 +- 5000 mm^3, int_mask_vox_count_reseg_roi 114596 +- 1000
    assert abs(float(row["morph_volume"]) - 358000) <= 5000
    assert abs(float(row["int_mask_vox_count_reseg_roi"]) - 114596) <= 1000
    assert row["roi"] == "GTV-1" and row["preset"] == "ibsi-a"


def test_oriented_box_of_a_rotated_cuboid() -> None:
    """A cuboid rotated 30 degrees in-plane: the oriented box hugs it, the axis-aligned one does not."""
    z, y, x = np.indices((20, 60, 60)).astype(float)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    u = (x - 30) * c + (y - 30) * s
    v = -(x - 30) * s + (y - 30) * c
    m = (np.abs(u) <= 18) & (np.abs(v) <= 8) & (z >= 4) & (z <= 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = morphology_features(np.ones(m.shape), m, m, (1.0, 1.0, 1.0))
    assert f["morph_vol_dens_ombb"] > 0.9
    assert f["morph_vol_dens_aabb"] < 0.7


def test_flat_and_tiny_rois_never_give_silent_nan() -> None:
    rng = np.random.default_rng(5)
    flat = np.zeros((6, 10, 10), bool)
    flat[3, 2:7, 2:8] = True  # one slice
    two = np.zeros((6, 10, 10), bool)
    two[3, 5, 5:7] = True
    for m, expect in ((flat, "the ROI is flat"), (two, "only 2 voxel")):
        img = Image.from_array(rng.normal(size=m.shape) * 100, spacing=(2.0, 1.0, 1.0))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            f = extract(img, Image.from_array(m, spacing=(2.0, 1.0, 1.0)), NO_TEXTURE)
        text = " | ".join(str(w.message) for w in rec if issubclass(w.category, RadiomicsWarning))
        assert expect in text
        for tag, value in f.items():
            if not math.isfinite(value):
                assert tag in text, f"{tag} is NaN without a warning naming it"


def test_a_regular_roi_gives_no_nan() -> None:
    m = _ball()
    img, msk = _pair(m)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        f = extract(img, msk, NO_TEXTURE)
    assert not [w for w in rec if issubclass(w.category, RadiomicsWarning)]
    assert all(math.isfinite(v) for v in f.values())


def test_texture_interface_contract(monkeypatch) -> None:
    """extract() hands the texture module the agreed arguments and merges what it returns."""
    import types

    calls = {}

    def fake(grey, *, roi, morph_roi, spacing_mm, n_levels, settings):
        calls.update(grey=grey, roi=roi, morph_roi=morph_roi, spacing=spacing_mm, n=n_levels, settings=settings)
        return {"cm_fake_3D_avg": 1.5}

    mod = types.ModuleType("medlens.radiomics.texture")
    mod.compute_texture_features = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "medlens.radiomics.texture", mod)
    m = _ball()
    img, msk = _pair(m)
    s = RadiomicsSettings(discretisation=DiscretisationSettings(method="FBN", n_bins=8))
    f = extract(img, msk, s)
    assert f["cm_fake_3D_avg"] == 1.5
    grey, roi = calls["grey"], calls["roi"]
    assert grey.dtype == np.int32 and grey.shape == roi.shape == calls["morph_roi"].shape
    assert roi.dtype == bool and roi.sum() == m.sum()
    assert grey[roi].min() == 1 and grey[roi].max() == 8 and not grey[~roi].any()
    assert calls["n"] == 8 and calls["spacing"] == (2.0, 1.0, 1.0)
    assert isinstance(calls["settings"], TextureSettings)


@pytest.mark.parametrize("at_edge", [False, True])
def test_local_intensity_matches_brute_force(at_edge: bool) -> None:
    from medlens.radiomics.local_intensity import local_intensity_features

    rng = np.random.default_rng(7)
    sp = (2.0, 1.5, 1.0)
    img = rng.normal(size=(14, 18, 22))
    m = np.zeros(img.shape, bool)
    if at_edge:
        m[0:3, 0:4, 15:22] = True  # touches three faces of the image
    else:
        m[6:9, 7:11, 8:13] = True
    radius = (3000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    pos = np.argwhere(np.ones(img.shape, bool)) * np.asarray(sp)
    flat = img.ravel()
    means = {}
    for idx in np.argwhere(m):
        d = np.linalg.norm(pos - idx * np.asarray(sp), axis=1)
        means[tuple(idx)] = flat[d <= radius + 1e-9].mean()
    vals = {k: img[k] for k in means}
    vmax = max(vals.values())
    expect_loc = max(means[k] for k in means if vals[k] == vmax)
    f = local_intensity_features(img, m, sp)
    assert f["loc_peak_glob"] == pytest.approx(max(means.values()), rel=1e-6)
    assert f["loc_peak_loc"] == pytest.approx(expect_loc, rel=1e-6)


@hyp_settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    fill=st.floats(0.02, 0.9),
    constant=st.booleans(),
    preset=st.sampled_from(["ibsi-c", "ibsi-d", "ibsi-b"]),
)
def test_random_rois_never_crash_or_give_silent_nan(seed: int, fill: float, constant: bool, preset: str) -> None:
    rng = np.random.default_rng(seed)
    m = rng.random((5, 7, 6)) < fill
    arr = np.full(m.shape, 30.0) if constant else rng.normal(0.0, 200.0, m.shape).round()
    img = Image.from_array(arr, spacing=(3.0, 1.0, 1.0))
    msk = Image.from_array(m, spacing=(3.0, 1.0, 1.0))
    s = dataclasses.replace(load_preset(preset), texture=TextureSettings(families=()))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        f = extract(img, msk, s)
    text = " | ".join(str(w.message) for w in rec if issubclass(w.category, RadiomicsWarning))
    for tag, value in f.items():
        if not math.isfinite(value):
            assert tag in text or "its features are NaN" in text, f"{tag} NaN without a reason: {text!r}"


def test_extract_accepts_none_and_mappings() -> None:
    m = _ball()
    img, msk = _pair(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f_default = extract(img, msk)
        f_map = extract(img, msk, {"discretisation": {"method": "FBN", "n_bins": 16}})
    assert f_default["ih_max"] <= 32 and f_map["ih_max"] <= 16
    with pytest.raises(InputError, match="unknown key 'bins'"):
        extract(img, msk, {"discretisation": {"bins": 16}})
