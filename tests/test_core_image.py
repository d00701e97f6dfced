"""The Image contract: geometry, immutability, derivation, the SimpleITK bridge."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from medlens import GeometryError, Image, ImageMeta, InputError, Units
from medlens.core.sitk_bridge import from_sitk, to_sitk


def _vol(shape=(4, 5, 6), spacing=(2.5, 0.7, 0.8), origin=(10.0, -20.0, 30.0), direction=None):
    arr = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    return Image.from_array(arr, spacing=spacing, origin=origin, direction=direction, modality="CT", units=Units.HU)


def test_array_is_read_only_and_caller_copy_is_independent():
    src = np.zeros((3, 4, 5))
    img = Image.from_array(src, spacing=(1, 1, 1))
    with pytest.raises(ValueError):
        img.array[0, 0, 0] = 1
    src[0, 0, 0] = 7
    assert img.array[0, 0, 0] == 0


def test_image_is_frozen():
    img = _vol()
    with pytest.raises(AttributeError):
        img.array = np.zeros((1, 1, 1))  # type: ignore[misc]
    with pytest.raises(ValueError):
        img.affine[0, 0] = 3


def test_derived_geometry_in_array_axis_order():
    img = _vol()
    assert img.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert img.origin == (10.0, -20.0, 30.0)
    # axis 0 (z) goes along +S, axis 2 (x) along +L
    assert img.index_to_world([1, 0, 0]) == pytest.approx([10.0, -20.0, 32.5])
    assert img.index_to_world([0, 0, 1]) == pytest.approx([10.8, -20.0, 30.0])
    np.testing.assert_allclose(img.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


def test_two_d_image_is_first_class():
    img = Image.from_array(np.ones((3, 4)), spacing=(0.2, 0.3), modality="CR")
    assert img.ndim == 2 and img.spacing == pytest.approx((0.2, 0.3))
    assert img.index_to_world([1, 1]) == pytest.approx([0.3, 0.2, 0.0])
    assert img.world_to_index([0.3, 0.2, 5.0]) == pytest.approx([1.0, 1.0])


def test_slice2d_keeps_plane_in_space():
    img = _vol()
    s = img.slice2d(2)
    assert s.ndim == 2 and s.shape == (5, 6)
    np.testing.assert_array_equal(s.array, img.array[2])
    assert s.index_to_world([3, 4]) == pytest.approx(img.index_to_world([2, 3, 4]))


def test_with_array_keeps_geometry_and_records_history():
    img = _vol()
    out = img.with_array(img.array * 2.0, op="double", units=Units.NORMALISED)
    assert out.same_grid(img)
    assert out.meta.history == ("double",)
    assert out.meta.units == Units.NORMALISED and img.meta.units == Units.HU
    with pytest.raises(InputError, match="shape"):
        img.with_array(np.zeros((2, 2, 2)))


def test_bad_construction_messages():
    with pytest.raises(InputError, match=r"2D .* or 3D"):
        Image.from_array(np.zeros(5))
    with pytest.raises(InputError, match="spacing has 2 values"):
        Image.from_array(np.zeros((2, 2, 2)), spacing=(1, 1))
    with pytest.raises(InputError, match="positive"):
        Image.from_array(np.zeros((2, 2)), spacing=(1, 0))
    with pytest.raises(GeometryError, match="singular"):
        Image(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="dtype"):
        Image(np.array([["a"]]), np.eye(4))


def test_require_same_grid_explains_difference():
    a = _vol()
    b = _vol(spacing=(3.0, 0.7, 0.8))
    with pytest.raises(GeometryError, match=r"different grid.*spacing"):
        a.require_same_grid(b)


def test_meta_is_immutable_and_extra_merges():
    m = ImageMeta(modality="PT", extra={"a": 1})
    with pytest.raises(TypeError):
        m.extra["b"] = 2  # type: ignore[index]
    m2 = m.replace(extra={"b": 2})
    assert dict(m2.extra) == {"a": 1, "b": 2} and dict(m.extra) == {"a": 1}


def _rotation(angles):
    return Rotation.from_euler("xyz", angles, degrees=True).as_matrix()


@settings(max_examples=50, deadline=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
    index=st.tuples(*[st.floats(-10, 50)] * 3),
)
def test_index_world_round_trip(angles, spacing, origin, index):
    img = _vol(spacing=spacing, origin=origin, direction=_rotation(angles))
    w = img.index_to_world(index)
    np.testing.assert_allclose(img.world_to_index(w), index, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(angles=st.tuples(*[st.floats(-180, 180)] * 3), spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3))
def test_sitk_round_trip_keeps_geometry_and_pixels(angles, spacing):
    img = _vol(spacing=spacing, direction=_rotation(angles))
    s = to_sitk(img)
    # SimpleITK's physical point of index (x, y, z) equals ours of (z, y, x)
    p = s.TransformIndexToPhysicalPoint((3, 2, 1))
    np.testing.assert_allclose(p, img.index_to_world([1, 2, 3]), atol=1e-6)
    back = from_sitk(s)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-9)


def test_sitk_2d_round_trip():
    img = Image.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), spacing=(0.5, 0.25), origin=(1, 2, 0))
    s = to_sitk(img)
    assert s.GetDimension() == 2 and s.GetSpacing() == (0.25, 0.5)
    back = from_sitk(s)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.affine, img.affine)


def test_sitk_2d_outside_axial_plane_becomes_one_slice_volume():
    # a 2D image whose plane is not axial (normal along +P) and not through z = 0
    d = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]).T
    img = Image.from_array(np.arange(6.0).reshape(2, 3), spacing=(2.0, 0.5), origin=(1, 2, 5), direction=d)
    s = to_sitk(img)
    assert s.GetSize() == (3, 2, 1)
    for j, i in [(0, 0), (2, 1), (1, 1)]:
        np.testing.assert_allclose(s.TransformIndexToPhysicalPoint((j, i, 0)), img.index_to_world([i, j]))
        assert s.GetPixel(j, i, 0) == img.array[i, j]


def test_atomic_path_gives_normal_permissions(tmp_path):
    import os
    import stat

    from medlens.core.atomic import atomic_write_text

    out = atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
