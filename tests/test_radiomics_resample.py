"""Invariants of medlens.preprocess.resample (IBSI centre-aligned grid)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medlens import Image
from medlens.core.errors import InputError
from medlens.preprocess.resample import ibsi_grid, resample, resample_mask, resample_to_reference


def _centre(img: Image) -> np.ndarray:
    return img.index_to_world((np.asarray(img.shape) - 1) / 2.0)


def _img(shape=(6, 7, 8), spacing=(3.0, 0.9, 1.1), seed=0) -> Image:
    rng = np.random.default_rng(seed)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return Image.from_array(rng.normal(size=shape), spacing=spacing, origin=(-10.0, 5.0, 2.0), direction=direction)


def test_resample_grid_size_is_ceiling_and_centre_kept() -> None:
    img = _img()
    out = resample(img, (2.0, 2.0, 2.0))
    # ceil(6*3/2)=9, ceil(7*0.9/2)=ceil(3.15)=4, ceil(8*1.1/2)=ceil(4.4)=5
    assert out.shape == (9, 4, 5)
    assert np.allclose(out.spacing, (2.0, 2.0, 2.0))
    assert np.allclose(_centre(out), _centre(img))


def test_resample_constant_stays_constant() -> None:
    img = Image.from_array(np.full((5, 6, 7), 42.0), spacing=(3.0, 0.7, 0.7))
    for order in ("nearest", "linear", "cubic"):
        out = resample(img, (1.3, 1.9, 0.5), order=order)
        assert np.allclose(out.array, 42.0), order


def test_resample_identity_spacing_is_identity() -> None:
    img = _img()
    out = resample(img, img.spacing, order="cubic")
    assert out.shape == img.shape
    assert np.allclose(out.affine, img.affine)
    assert np.allclose(out.array, img.array)


def test_resample_in_plane_only_keeps_slices() -> None:
    img = _img()
    out = resample(img, (2.0, 2.0), in_plane_only=True)
    assert out.shape[0] == img.shape[0]
    assert np.isclose(out.spacing[0], 3.0)
    assert np.allclose(_centre(out), _centre(img))


def test_resample_linear_reproduces_a_linear_ramp() -> None:
    z, y, x = np.meshgrid(np.arange(8), np.arange(9), np.arange(10), indexing="ij")
    img = Image.from_array(2.0 * z + 3.0 * y - x, spacing=(1.0, 1.0, 1.0))
    out = resample(img, (0.5, 0.5, 0.5))
    world = out.index_to_world(np.argwhere(np.ones(out.shape, bool)))
    src = img.world_to_index(world)
    inside = np.all((src >= 0) & (src <= np.asarray(img.shape) - 1), axis=1)
    expected = 2.0 * src[:, 0] + 3.0 * src[:, 1] - src[:, 2]
    assert np.allclose(out.array.ravel()[inside], expected[inside])


def test_resample_rounding() -> None:
    img = Image.from_array(np.arange(27, dtype=float).reshape(3, 3, 3) * 0.37, spacing=(1.0, 1.0, 1.0))
    out = resample(img, (0.7, 0.7, 0.7), round_intensities=True)
    assert np.array_equal(out.array, np.round(out.array))


def test_resample_mask_threshold_and_identity() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    mask = Image.from_array(m, spacing=(1.0, 1.0, 1.0))
    same = resample_mask(mask, (1.0, 1.0, 1.0))
    assert same.is_mask and np.array_equal(same.array, m)
    fine = resample_mask(mask, (0.5, 0.5, 0.5))
    # a 3-voxel cube of 3 mm keeps about 27 mm^3 under linear interpolation and threshold 0.5
    assert abs(fine.array.sum() * 0.125 - 27.0) < 6.0
    with pytest.raises(InputError, match="threshold"):
        resample_mask(mask, 1.0, threshold=0.0)


def test_resample_to_reference_identity_and_shift() -> None:
    img = _img()
    same = resample_to_reference(img, img, order="linear")
    assert np.allclose(same.array, img.array)
    m = Image.from_array(np.ones((4, 4, 4), bool), spacing=(1.0, 1.0, 1.0), origin=(100.0, 100.0, 100.0))
    ref = Image.from_array(np.zeros((4, 4, 4)), spacing=(1.0, 1.0, 1.0))
    assert not resample_to_reference(m, ref).array.any()


def test_resample_bad_parameters() -> None:
    img = _img()
    with pytest.raises(InputError, match="order must be one of"):
        resample(img, 1.0, order="quintic")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="spacing_mm has 2 values"):
        resample(img, (1.0, 1.0))
    with pytest.raises(InputError, match="positive finite"):
        resample(img, (1.0, -1.0, 1.0))
    with pytest.raises(InputError, match="grid must be"):
        resample(img, 1.0, grid="corner")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    sp=st.floats(0.3, 5.0),
    new=st.floats(0.3, 5.0),
)
def test_ibsi_grid_covers_original_extent(n: int, sp: float, new: float) -> None:
    (m,), start, step = ibsi_grid((n,), (sp,), (new,))
    assert m * new >= n * sp - 1e-6  # never smaller than the original
    centre_new = start[0] + (m - 1) / 2.0 * step[0]
    assert np.isclose(centre_new, (n - 1) / 2.0)


def test_resample_2d_image_keeps_its_plane() -> None:
    img = Image.from_array(np.arange(30.0).reshape(5, 6), spacing=(0.8, 0.6), origin=(1.0, 2.0, 3.0))
    out = resample(img, (0.4, 0.4))
    assert out.ndim == 2 and out.shape == (10, 9)
    assert np.allclose(_centre(out), _centre(img))
    assert np.allclose(out.affine[:3, 2], img.affine[:3, 2])  # slice normal unchanged
