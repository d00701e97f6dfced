"""Classic segmentation: thresholds, region growing invariants, components, morphology in mm."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image, Units
from medlens.segment import classic as c


def _blob_image(units: str = Units.HU) -> Image:
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 5.0, (20, 30, 30))
    a[5:12, 8:18, 8:18] += 100.0  # a bright box
    a[14:17, 22:26, 22:26] += 100.0  # a second, separate bright box
    return Image.from_array(a.astype(np.float32), spacing=(2.0, 1.0, 1.0), units=units, modality="CT")


def test_segment_classic_otsu_separates_boxes():
    img = _blob_image()
    m = c.otsu(img)
    assert m.is_mask and m.same_grid(img)
    assert m.array.sum() == 7 * 10 * 10 + 3 * 4 * 4
    assert 5 < m.meta.extra["threshold"] < 95
    labels = c.multi_otsu(img, classes=2)
    assert labels.array.max() == 1 and (labels.array == 1).sum() == m.array.sum()


def test_segment_classic_threshold_units_checked():
    img = _blob_image()
    assert c.threshold(img, lower=50, units="HU").array.sum() == 748
    with pytest.raises(InputError, match=r"SUVbw.*HU"):
        c.threshold(img, lower=2.5, units=Units.SUVBW)
    with pytest.raises(InputError, match="lower"):
        c.threshold(img)


def test_segment_classic_region_grow_never_leaves_range_or_component():
    img = _blob_image()
    m = c.region_grow(img, seed_index=(8, 12, 12), lower=50, upper=200)
    arr = img.array
    # inside the range
    assert np.all(arr[m.array] >= 50) and np.all(arr[m.array] <= 200)
    # only the seed's box, never the second one
    assert m.array.sum() == 7 * 10 * 10
    assert not m.array[14:17, 22:26, 22:26].any()
    # tolerance variant stays within seed +- tolerance
    t = c.region_grow(img, seed_index=(8, 12, 12), tolerance=30.0)
    v = float(arr[8, 12, 12])
    assert np.all(np.abs(arr[t.array] - v) <= 30.0 + 1e-4)
    assert t.array[8, 12, 12]


def test_segment_classic_region_grow_bad_seeds():
    img = _blob_image()
    with pytest.raises(InputError, match="outside the image"):
        c.region_grow(img, seed_index=(25, 0, 0), tolerance=10)
    with pytest.raises(InputError, match="outside the image"):
        c.region_grow(img, seed_mm=(500.0, 0.0, 0.0), tolerance=10)
    with pytest.raises(InputError, match="background"):
        c.region_grow(img, seed_index=(0, 0, 0), lower=50, upper=200)
    with pytest.raises(ProcessingError, match="background"):
        c.region_grow(img, seed_index=(0, 0, 0), tolerance=40)
    with pytest.raises(InputError, match="exactly one"):
        c.region_grow(img, tolerance=10)


def test_segment_classic_seed_mm_matches_index():
    img = _blob_image()
    pt = img.index_to_world([8, 12, 12])
    a = c.region_grow(img, seed_mm=pt, lower=50, upper=200)
    b = c.region_grow(img, seed_index=(8, 12, 12), lower=50, upper=200)
    assert np.array_equal(a.array, b.array)


def test_segment_classic_confidence_connected_finds_box():
    img = _blob_image()
    m = c.confidence_connected(img, seed_index=(8, 12, 12), multiplier=3.0, iterations=3)
    lo, hi = m.meta.extra["range"]
    assert np.all(img.array[m.array] >= lo) and np.all(img.array[m.array] <= hi)
    assert abs(int(m.array.sum()) - 700) <= 5
    assert not m.array[14:17, 22:26, 22:26].any()


def test_segment_classic_suv_threshold_40_percent():
    a = np.full((15, 20, 20), 1.0, np.float32)
    a[5:10, 5:10, 5:10] = 5.0  # lesion plateau
    a[7, 7, 7] = 10.0  # SUVmax
    a[6:9, 14:17, 14:17] = 9.0  # a second hot spot outside the search sphere
    pet = Image.from_array(a, spacing=(3.0, 2.0, 2.0), units=Units.SUVBW, modality="PT")
    m = c.suv_threshold(pet, fraction=0.4, seed_index=(7, 6, 6), search_radius_mm=6.0)
    assert m.meta.extra["suvmax"] == pytest.approx(10.0)
    assert m.array.sum() == 125  # 5*5*5 >= 4.0, connected to the max; the other spot is separate
    m50 = c.suv_threshold(pet, fraction=0.6, seed_index=(7, 6, 6), search_radius_mm=6.0)
    assert m50.array.sum() == 1
    with pytest.raises(InputError, match="background"):
        c.suv_threshold(pet, seed_index=(0, 0, 0), search_radius_mm=3.0)
    with pytest.raises(InputError, match="SUVbw"):
        c.suv_threshold(pet.with_meta(units=Units.HU), seed_index=(7, 7, 7))
    with pytest.raises(InputError, match="fraction"):
        c.suv_threshold(pet, fraction=40, seed_index=(7, 7, 7))


def test_segment_classic_empty_threshold_warns():
    img = _blob_image()
    with pytest.warns(c.EmptyResultWarning, match="empty"):
        m = c.threshold(img, lower=1e6, units="HU")
    assert not m.array.any()


def test_segment_classic_components_holes_morphology_mm():
    a = np.zeros((9, 20, 20), bool)
    a[2:7, 2:9, 2:9] = True
    a[4, 5, 5] = False  # a hole
    a[3:5, 14:16, 14:16] = True  # a small component
    m = Image.from_array(a, spacing=(3.0, 1.0, 1.0))
    lab = c.connected_components(m)
    assert lab.array.max() == 2 and (lab.array == 2).sum() == 8
    big = c.largest_component(m)
    assert big.array.sum() == 5 * 7 * 7 - 1
    assert c.fill_holes(big).array.sum() == 5 * 7 * 7
    # radius 1.2 mm: a 3x3 cross in-plane (diagonal 1.41 mm excluded), nothing across 3 mm slices
    st = c.ellipsoid_structure(m.spacing, 1.2)
    assert st.shape == (1, 3, 3) and st.sum() == 5
    assert c.ellipsoid_structure(m.spacing, 1.5).sum() == 9
    assert c.ellipsoid_structure(m.spacing, 3.0).shape == (3, 7, 7)
    opened = c.opening(m, radius_mm=1.2)
    assert not opened.array[3:5, 14:16, 14:16].any()  # a 2x2 square cannot hold the cross
    assert not (opened.array & ~m.array).any()  # opening never adds voxels
    assert opened.array[2:7, 3:8, 3:8].sum() > 0
    closed = c.closing(c.fill_holes(big), radius_mm=1.2)
    assert closed.array.sum() == 5 * 7 * 7
    with pytest.raises(InputError, match="radius_mm"):
        c.opening(m, radius_mm=0)
    with pytest.raises(InputError, match="boolean"):
        c.largest_component(m.astype(np.uint8))


def test_segment_classic_growth_confined_within_mask():
    img = _blob_image()
    box = np.zeros(img.shape, bool)
    box[:, :, :13] = True
    wm = img.with_array(box)
    m = c.region_grow(img, seed_index=(8, 12, 12), lower=50, upper=200, within=wm)
    assert m.array.sum() == 7 * 10 * 5 and not (m.array & ~box).any()
    cc = c.confidence_connected(img, seed_index=(8, 12, 12), multiplier=3.0, within=wm)
    assert not (cc.array & ~box).any() and cc.array.sum() > 300


@settings(max_examples=40, deadline=None)
@given(
    seed_values=st.integers(0, 2**31 - 1),
    tol=st.floats(0.0, 3.0),
    idx=st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 7)),
)
def test_segment_classic_region_grow_property(seed_values, tol, idx):
    from scipy import ndimage

    a = np.random.default_rng(seed_values).integers(0, 6, (6, 8, 8)).astype(np.float32)
    img = Image.from_array(a, spacing=(2.0, 1.0, 0.5))
    m = c.region_grow(img, seed_index=idx, tolerance=tol, max_fraction=1.0).array
    v = float(a[idx])
    # distances in float64, as the method's range [v - tol, v + tol]; in float32 a tol just below an integer
    # distance (1.9999999999999996) would round up to it
    dist = np.abs(a.astype(np.float64) - v)
    assert m[idx]  # holds the seed
    assert np.all(dist[m] <= tol)  # never leaves the tolerance range
    assert ndimage.label(m)[1] == 1  # one face-connected component
    # maximal: no in-range voxel touching the region was left out
    ring = ndimage.binary_dilation(m) & ~m
    assert not np.any(ring & (dist <= tol))


def test_segment_classic_import_does_not_load_torch():
    import subprocess
    import sys

    code = (
        "import sys, medlens.segment.classic, medlens.segment.metrics, medlens.segment.unet, medlens.segment.lungs; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_segment_classic_confidence_seed_in_background_is_an_error():
    img = _blob_image()
    with pytest.raises(ProcessingError, match="max_fraction"):
        c.confidence_connected(img, seed_index=(0, 0, 0))
    with pytest.raises(InputError, match="outside the image"):
        c.confidence_connected(img, seed_index=(0, -1, 0))
