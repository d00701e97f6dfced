"""Texture features on synthetic ROIs: invariances, edge cases and bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.radiomics import texture as tx
from medlens.radiomics.texture import compute_texture_features

ALL_DIMS = {"dims": ("2D", "2_5D", "3D")}


def _random_roi(seed: int = 0, shape: tuple[int, int, int] = (5, 12, 12), levels: int = 5):
    rng = np.random.default_rng(seed)
    grey = rng.integers(1, levels + 1, size=shape)
    _zz, yy, xx = np.indices(shape)
    roi = (yy - shape[1] / 2 + 0.5) ** 2 + (xx - shape[2] / 2 + 0.5) ** 2 <= (shape[1] / 2 - 1) ** 2
    roi[0] = False
    return np.where(roi, grey, 0), roi


def test_tags_follow_ibsi_suffixes():
    grey, roi = _random_roi()
    f = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=5, settings=ALL_DIMS)
    assert len(f) == 408
    assert {k.rsplit("_", 1)[-1] for k in f if k.startswith(("cm_", "rlm_"))} == {"avg", "comb"}
    assert all(k.endswith(("_2D", "_2_5D", "_3D")) for k in f if k.startswith(("szm_", "dzm_", "ngt_", "ngl_")))
    assert all(math.isfinite(v) for v in f.values())


def test_in_plane_rotation_leaves_2d_merged_features_unchanged():
    grey, roi = _random_roi(1)
    rot_g, rot_r = np.rot90(grey, axes=(1, 2)), np.rot90(roi, axes=(1, 2))
    s = {"dims": ("2D", "2_5D")}
    a = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=5, settings=s)
    b = compute_texture_features(rot_g, roi=rot_r, morph_roi=rot_r, n_levels=5, settings=s)
    for k in a:
        if k.endswith(("_comb", "_avg", "_2D", "_2_5D")):
            assert b[k] == pytest.approx(a[k], rel=1e-12, abs=1e-12), k


def test_3d_features_invariant_to_axis_flip():
    grey, roi = _random_roi(2)
    a = compute_texture_features(grey, roi=roi, n_levels=5, settings={"dims": ("3D",)})
    b = compute_texture_features(grey[::-1, :, ::-1], roi=roi[::-1, :, ::-1], n_levels=5, settings={"dims": ("3D",)})
    assert a.keys() == b.keys()
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-12, abs=1e-12), k


def test_matrices_are_consistent_with_voxel_counts():
    grey, roi = _random_roi(3)
    n = int(roi.sum())
    rl = tx.glrlm_matrices(grey, roi, n_levels=5, dims=("3D",))["3D"]
    lengths = np.arange(1, rl.shape[-1] + 1)
    assert ((rl * lengths).sum(axis=(1, 2)) == n).all()  # every voxel in one run per direction
    sz = tx.glszm_matrices(grey, roi, n_levels=5, dims=("2D", "3D"))
    assert (sz["3D"] * np.arange(1, sz["3D"].shape[1] + 1)).sum() == n
    assert (sz["2D"] * np.arange(1, sz["2D"].shape[2] + 1)).sum() == n
    ngl = tx.ngldm_matrices(grey, roi, n_levels=5, dims=("3D",))["3D"]
    assert ngl.sum() == n
    cm = tx.glcm_matrices(grey, roi, n_levels=5, dims=("3D",), symmetric=True)["3D"]
    assert (cm == cm.transpose(0, 2, 1)).all()
    asym = tx.glcm_matrices(grey, roi, n_levels=5, dims=("3D",), symmetric=False)["3D"]
    assert (asym + asym.transpose(0, 2, 1) == cm).all()


def test_absent_levels_keep_matrix_size():
    grey, roi = _random_roi(4, levels=3)
    m = tx.glcm_matrices(grey, roi, n_levels=8, dims=("3D",))["3D"]
    assert m.shape == (13, 8, 8) and m[:, 3:, :].sum() == 0


def test_constant_roi_defined_values_and_nan_with_warning():
    grey = np.zeros((3, 6, 6), dtype=np.int64)
    roi = np.zeros(grey.shape, dtype=bool)
    roi[:, 1:5, 1:5] = True
    grey[roi] = 2
    with pytest.warns(Warning, match="NaN in cm"):
        f = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=4, settings=ALL_DIMS)
    nan = sorted(k for k, v in f.items() if not math.isfinite(v))
    assert nan and all(k.startswith(("cm_corr_", "cm_info_corr1_")) for k in nan)
    assert f["cm_joint_max_3D_comb"] == 1.0
    assert f["cm_contrast_3D_avg"] == 0.0
    assert f["ngt_coarseness_3D"] == 1e6  # IBSI cap when sum(p_i s_i) = 0
    assert f["ngt_contrast_3D"] == 0.0 and f["ngt_busyness_3D"] == 0.0
    assert f["szm_zs_entr_3D"] == 0.0 and not math.copysign(1.0, f["szm_zs_entr_3D"]) < 0


def test_single_voxel_roi_gives_nan_with_a_warning():
    grey = np.zeros((3, 5, 5), dtype=np.int64)
    roi = np.zeros(grey.shape, dtype=bool)
    roi[1, 2, 2] = True
    grey[roi] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy division warning may leak
        with pytest.warns(Warning, match="NaN in cm, ngt"):
            f = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=4, settings=ALL_DIMS)
    assert all(math.isnan(v) for k, v in f.items() if k.startswith(("cm_", "ngt_")))
    assert f["szm_sze_3D"] == 1.0 and f["rlm_sre_3D_comb"] == 1.0


def test_roi_thinner_than_distance_gives_nan_glcm():
    grey, roi = _random_roi(5)
    s = {"dims": ("3D",), "glcm_distance": 20, "families": ("glcm",)}
    with pytest.warns(Warning, match="NaN in cm"):
        f = compute_texture_features(grey, roi=roi, n_levels=5, settings=s)
    assert all(math.isnan(v) for v in f.values())


def test_empty_roi_warns_and_returns_nothing():
    grey = np.zeros((2, 3, 3), dtype=np.int64)
    with pytest.warns(Warning, match="ROI is empty"):
        assert compute_texture_features(grey, roi=grey > 0, n_levels=2) == {}


def test_2d_image_is_one_slice():
    grey, roi = _random_roi(6)
    a = compute_texture_features(grey[2], roi=roi[2], n_levels=5, settings={"dims": ("2D",)})
    b = compute_texture_features(grey[2:3], roi=roi[2:3], n_levels=5, settings={"dims": ("2D",)})
    assert a == b


def test_gldzm_metric_choice_and_morphological_mask():
    grey = np.ones((1, 7, 7), dtype=np.int64)
    roi = np.ones(grey.shape, dtype=bool)
    d_man = tx.gldzm.border_distance(roi, three_d=False, metric="manhattan")
    d_cheb = tx.gldzm.border_distance(roi, three_d=False, metric="chebyshev")
    assert d_man[0, 3, 3] == 4 and d_cheb[0, 3, 3] == 4
    assert d_man[0, 1, 1] == 2 and d_cheb[0, 1, 1] == 2
    assert d_man[0, 1, 2] == 2 and d_man[0, 2, 2] == 3
    # a larger morphological mask moves the border outwards
    inner = np.zeros_like(roi)
    inner[0, 2:5, 2:5] = True
    m_small = tx.gldzm_matrices(grey, inner, inner, n_levels=1, dims=("2D",))["2D"]
    m_big = tx.gldzm_matrices(grey, inner, roi, n_levels=1, dims=("2D",))["2D"]
    assert m_small.shape[-1] == 1 and m_big.shape[-1] == 3
    with pytest.raises(InputError, match="distance metric"):
        tx.gldzm.border_distance(roi, three_d=True, metric="euclid")


def test_bad_input_messages():
    grey, roi = _random_roi()
    with pytest.raises(InputError, match="differs from roi shape"):
        compute_texture_features(grey, roi=roi[:, :-1], n_levels=5)
    with pytest.raises(InputError, match=r"expected 1\.\.3"):
        compute_texture_features(grey, roi=roi, n_levels=3)
    with pytest.raises(InputError, match="n_levels must be >= 1"):
        compute_texture_features(grey, roi=roi, n_levels=0)
    with pytest.raises(InputError, match="unknown families"):
        compute_texture_features(grey, roi=roi, n_levels=5, settings={"families": ("glcm", "lbp")})
    with pytest.raises(InputError, match="morph_roi shape"):
        compute_texture_features(grey, roi=roi, morph_roi=roi[:1], n_levels=5)


def test_texture_settings_dataclass_is_accepted():
    import medlens.radiomics.settings as settings_mod

    grey, roi = _random_roi(7)
    s = settings_mod.TextureSettings(dims=("3D",), families=("ngldm",), ngldm_alpha=1)
    f = compute_texture_features(grey, roi=roi, n_levels=5, settings=s)
    g = compute_texture_features(grey, roi=roi, n_levels=5, settings={"dims": ("3D",), "families": ("ngldm",)})
    assert set(f) == {k for k in g} and f["ngl_lde_3D"] < g["ngl_lde_3D"]  # alpha=1 links more neighbours
