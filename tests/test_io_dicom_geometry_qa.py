"""Geometry QA from headers only (synthetic positions worked out by hand) and the regular-grid resampler."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.io.geometry_qa import check_slice_geometry, resample_to_regular_grid, slice_normal, sort_slices

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _stack(z):
    return np.array([[10.0, 20.0, float(v)] for v in z])


def _codes(findings):
    return {f.code for f in findings}


def test_regular_stack_in_any_order_has_no_findings():
    z = [5.0, 0.0, 2.5, 10.0, 7.5]
    assert check_slice_geometry(_stack(z), AXIAL) == []
    order, proj = sort_slices(_stack(z), AXIAL)
    assert order.tolist() == [1, 2, 0, 4, 3] and proj.tolist() == [0.0, 2.5, 5.0, 7.5, 10.0]


def test_normal_is_row_cross_column():
    # sagittal: rows along -y? row cosines (0,1,0), column cosines (0,0,-1): normal (-1, 0, 0)
    assert slice_normal([0, 1, 0, 0, 0, -1]).tolist() == [-1.0, 0.0, 0.0]


def test_missing_slices_counted_and_located():
    z = [0, 2, 4, 10, 12]  # 6 and 8 missing
    f = check_slice_geometry(_stack(z), AXIAL, files=["a", "b", "c", "d", "e"])
    assert _codes(f) == {"missing_slices"}
    assert "2 slice(s) missing" in f[0].message and "between c (4.000 mm) and d (10.000 mm)" in f[0].message
    assert f[0].resampleable


def test_nonuniform_spacing():
    f = check_slice_geometry(_stack([0, 2, 4, 6.5, 8]), AXIAL)
    assert _codes(f) == {"nonuniform_spacing"}
    assert "regular step 2 mm" in f[0].message


def test_small_jitter_is_tolerated():
    assert check_slice_geometry(_stack([0, 2.004, 3.998, 6.0]), AXIAL) == []


def test_duplicates_are_not_resampleable():
    f = check_slice_geometry(_stack([0, 2, 2, 4]), AXIAL, files=["a", "b", "c", "d"])
    assert _codes(f) == {"duplicate_position"}
    assert "b and c" in f[0].message and not f[0].resampleable


def test_tilt_detected_with_angle():
    pos = np.array([[0.0, np.tan(np.radians(15)) * z, z] for z in (0.0, 2.0, 4.0, 6.0)])
    f = check_slice_geometry(pos, AXIAL)
    assert _codes(f) == {"gantry_tilt"}
    assert "15 degrees" in f[0].message


def test_inconsistent_orientation_spacing_and_shape():
    iops = np.array([AXIAL] * 4)
    iops[2] = [1.0, 0.0, 0.0, 0.0, 0.9962, 0.0872]
    f = check_slice_geometry(
        _stack([0, 2, 4, 6]),
        iops,
        pixel_spacings=[[1, 1], [1, 1], [1, 1], [1.2, 1]],
        shapes=[(4, 4), (4, 4), (4, 5), (4, 4)],
        files=["a", "b", "c", "d"],
    )
    assert _codes(f) == {"inconsistent_orientation", "inconsistent_pixel_spacing", "inconsistent_shape"}
    msgs = " ".join(x.message for x in f)
    assert "c" in msgs and "d [1.2, 1.0]" in msgs and "c (4, 5)" in msgs


def test_resample_fills_gap_linearly():
    slices = np.stack([np.full((2, 3), v, dtype=np.float32) for v in (0.0, 10.0, 40.0)])
    arr, aff = resample_to_regular_grid(slices, _stack([0, 1, 4]), AXIAL, (0.5, 0.25), step_mm=1.0)
    assert arr.shape == (5, 2, 3)
    assert arr[:, 0, 0].tolist() == pytest.approx([0, 10, 20, 30, 40])
    assert np.allclose(aff[:3, 0], [0, 0, 1]) and np.allclose(aff[:3, 1], [0, 0.5, 0])
    assert np.allclose(aff[:3, 2], [0.25, 0, 0]) and np.allclose(aff[:3, 3], [10, 20, 0])


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    angles = st.floats(-np.pi, np.pi, allow_nan=False)

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(angles, angles, angles, st.floats(0.5, 6.0), st.integers(4, 40), st.randoms(use_true_random=False))
    def test_property_regular_stack_any_orientation_and_order(a, b, c, step, n, rnd):
        r = _rotation(a, b, c)
        iop = np.concatenate([r[:, 0], r[:, 1]])
        normal = slice_normal(iop)
        pos = np.array([10.0, -5.0, 30.0]) + np.outer(np.arange(n) * step, normal)
        perm = list(range(n))
        rnd.shuffle(perm)
        assert check_slice_geometry(pos[perm], iop) == []
        order, _proj = sort_slices(pos[perm], iop)
        assert [perm[i] for i in order] == list(range(n))
        # drop one interior slice: exactly one missing slice is reported
        k = rnd.randrange(1, n - 1)
        f = check_slice_geometry(np.delete(pos, k, axis=0), iop)
        assert [x.code for x in f] == ["missing_slices"] and "1 slice(s) missing" in f[0].message
