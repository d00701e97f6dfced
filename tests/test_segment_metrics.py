"""Segmentation metrics against values worked out by hand on tiny synthetic masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlens.core.errors import GeometryError, InputError
from medlens.core.image import Image
from medlens.segment import metrics as m


def _line(n: int, lo: int, hi: int) -> np.ndarray:
    a = np.zeros((1, 1, n), bool)
    a[0, 0, lo : hi + 1] = True
    return a


def test_segment_metrics_overlapping_lines_anisotropic():
    # A: x=0..3, B: x=2..5, dx = 2 mm. In a one-voxel-thick line every voxel is surface.
    a, b = _line(10, 0, 3), _line(10, 2, 5)
    sp = (1.0, 1.0, 2.0)
    assert m.dice(a, b) == pytest.approx(2 * 2 / 8)
    assert m.jaccard(a, b) == pytest.approx(2 / 6)
    # A->B distances: 4, 2, 0, 0 mm; B->A: 0, 0, 2, 4 mm; mean 12/8.
    assert m.assd_mm(a, b, spacing_mm=sp) == pytest.approx(12 / 8)
    assert m.hausdorff95_mm(a, b, spacing_mm=sp) == pytest.approx(4.0)
    assert m.volume_difference(a, b, spacing_mm=sp) == (pytest.approx(0.0), pytest.approx(0.0))


def test_segment_metrics_nested_lines_percentile_and_volume():
    # A: x=0..3, B: x=0..1, spacing (3, 1, 2) mm -> voxel 6 mm^3.
    a, b = _line(6, 0, 3), _line(6, 0, 1)
    sp = (3.0, 1.0, 2.0)
    # pooled distances sorted: 0,0,0,0,2,4 ; 95th percentile at rank 0.95*5 = 4.75 -> 2 + 0.75*2
    assert m.hausdorff95_mm(a, b, spacing_mm=sp) == pytest.approx(3.5)
    assert m.assd_mm(a, b, spacing_mm=sp) == pytest.approx(6 / 6)
    vd, pct = m.volume_difference(a, b, spacing_mm=sp)
    assert vd == pytest.approx(24.0 - 12.0)
    assert pct == pytest.approx(100.0)
    assert m.dice(a, b) == pytest.approx(2 * 2 / 6)


def test_segment_metrics_2d_square_ring_anisotropic_image_spacing():
    # 3x3 square (surface = the 8-pixel ring) vs its centre pixel, rows 2 mm, columns 1 mm.
    a = np.zeros((5, 5), bool)
    a[1:4, 1:4] = True
    b = np.zeros((5, 5), bool)
    b[2, 2] = True
    ia = Image.from_array(a, spacing=(2.0, 1.0))
    ib = Image.from_array(b, spacing=(2.0, 1.0))
    # ring -> centre: two at 2 mm (above/below), two at 1 mm (left/right), four at sqrt(5) mm;
    # centre -> ring: 1 mm.
    expected_assd = (2 * 2 + 2 * 1 + 4 * math.sqrt(5) + 1) / 9
    assert m.assd_mm(ia, ib) == pytest.approx(expected_assd)
    assert m.dice(ia, ib) == pytest.approx(2 / 10)
    assert m.jaccard(ia, ib) == pytest.approx(1 / 9)
    # sorted: 1,1,1,2,2,√5,√5,√5,√5; rank 0.95*8 = 7.6 lies between two √5
    assert m.hausdorff95_mm(ia, ib) == pytest.approx(math.sqrt(5))
    case = m.evaluate_case(ia, ib)
    assert case["volume_pred_mm3"] == pytest.approx(9 * 2.0)
    assert case["volume_truth_mm3"] == pytest.approx(2.0)


def test_segment_metrics_identical_masks_are_perfect():
    a = np.zeros((4, 6, 6), bool)
    a[1:3, 2:5, 1:4] = True
    c = m.evaluate_case(a, a, spacing_mm=(2.5, 0.7, 0.7))
    assert c["dice"] == 1.0 and c["jaccard"] == 1.0
    assert c["hd95_mm"] == 0.0 and c["assd_mm"] == 0.0


def test_segment_metrics_empty_masks():
    e = np.zeros((3, 3, 3), bool)
    f = e.copy()
    f[1, 1, 1] = True
    g = f.copy()
    g[1, 1, 2] = True
    # worked values at the edge of emptiness: 2*1/(1+1), 2*1/(1+2), 1/2 ; empty vs one voxel: 2*0/(0+1)
    assert m.dice(f, f) == 1.0 and m.dice(f, g) == pytest.approx(2 / 3) and m.jaccard(f, g) == pytest.approx(1 / 2)
    assert m.dice(e, f) == 0.0 and m.jaccard(e, f) == 0.0
    assert m.dice(e, e) == 1.0 and m.jaccard(e, e) == 1.0  # documented convention (not 0/0 = NaN)
    with pytest.warns(m.EmptyMaskWarning, match="predicted"):
        assert math.isnan(m.hausdorff95_mm(e, f))
    assert math.isnan(m.volume_difference(f, e)[1])


def test_segment_metrics_summary_mean_sd_median():
    s = m.summarise([{"dice": 0.5, "id": "a"}, {"dice": 0.7, "id": "b"}, {"dice": 0.9, "id": "c"}])
    assert s["dice"]["mean"] == pytest.approx(0.7)
    assert s["dice"]["sd"] == pytest.approx(0.2)  # sqrt(((0.2)^2 + 0 + (0.2)^2) / 2)
    assert s["dice"]["median"] == pytest.approx(0.7)
    assert "id" not in s


def test_segment_metrics_bad_inputs():
    a = np.zeros((3, 3), bool)
    with pytest.raises(InputError, match="shape"):
        m.dice(a, np.zeros((3, 4), bool))
    with pytest.raises(InputError, match="boolean"):
        m.dice(a.astype(np.uint8), a)
    with pytest.raises(InputError, match="spacing_mm"):
        m.assd_mm(a, a, spacing_mm=(1.0,))
    ia = Image.from_array(a, spacing=(1.0, 1.0))
    ib = Image.from_array(a, spacing=(2.0, 1.0))
    with pytest.raises(GeometryError, match="different grid"):
        m.dice(ia, ib)
