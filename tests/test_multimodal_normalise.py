"""MR intensity normalisation: z-score (zeros excluded), percentile and fat-reference scaling, worked values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image, Units
from medlens.preprocess.normalise import fat_normalise, percentile_normalise, zscore
from medlens.preprocess.recipe import Recipe


def _mr(values: list[float]) -> Image:
    arr = np.array(values, dtype=np.float32).reshape(1, 1, -1)
    return Image.from_array(arr, spacing=(1.0, 1.0, 1.0), modality="MR", units=Units.ARBITRARY)


def test_zscore_can_leave_the_zero_padding_out() -> None:
    img = _mr([0, 0, 2, 4, 6])
    # without the zeros: mean 4, population SD sqrt(8/3)
    out = zscore(img, exclude_zero=True)
    sd = np.sqrt(8.0 / 3.0)
    np.testing.assert_allclose(out.array.ravel(), [-4 / sd, -4 / sd, -2 / sd, 0.0, 2 / sd], rtol=1e-6)
    assert out.meta.units == Units.NORMALISED and out.meta.extra["normalised_from_units"] == Units.ARBITRARY
    # with them: mean 2.4
    assert float(zscore(img).array.ravel()[3]) == pytest.approx((4 - 2.4) / np.std([0, 0, 2, 4, 6]), rel=1e-6)


def test_percentile_normalise_worked_values() -> None:
    img = _mr([0, 10, 20, 30, 40])
    # P25 = 10, P75 = 30 (linear interpolation): x -> (x - 10) / 20, no clipping
    out = percentile_normalise(img, percentiles=(25, 75))
    np.testing.assert_allclose(out.array.ravel(), [-0.5, 0.0, 0.5, 1.0, 1.5], rtol=1e-6)
    assert "P25=10->0" in out.meta.history[-1] and out.meta.units == Units.NORMALISED
    # zeros excluded: P25 of [10, 20, 30, 40] = 17.5, P75 = 32.5
    out2 = percentile_normalise(img, percentiles=(25, 75), exclude_zero=True)
    np.testing.assert_allclose(out2.array.ravel()[2], (20 - 17.5) / 15.0, rtol=1e-6)
    with pytest.raises(ProcessingError, match="percentiles are equal"):
        percentile_normalise(_mr([5, 5, 5, 5]))
    with pytest.raises(InputError, match="percentiles must be"):
        percentile_normalise(img, percentiles=(50, 10))


def test_fat_normalise_worked_values() -> None:
    # 0 = padding; tissue 100..; fat 800, 820, 840 among the brightest; one artefact at 5000
    vals = [0, 0, 100, 120, 140, 160, 180, 200, 220, 240, 800, 820, 840, 5000]
    img = _mr(vals)
    body = np.array(vals[2:], dtype=float)  # zeros excluded
    lo, hi = np.percentile(body, [70, 95])
    ref = float(np.median(body[(body >= lo) & (body <= hi)]))
    out = fat_normalise(img, fat_percentiles=(70, 95))
    assert out.meta.extra["fat_reference"] == pytest.approx(ref)
    assert ref == pytest.approx(820.0)  # P70 = 296 and P95 = 2194: the fat voxels 800, 820, 840 -> median 820
    np.testing.assert_allclose(out.array.ravel(), np.array(vals) / 820.0, rtol=1e-6)
    # a drawn fat mask: voxels 800 and 840 -> reference 820 as well; voxel 100 alone -> 100
    m = np.zeros(img.shape, bool)
    m[0, 0, 2] = True
    out_m = fat_normalise(img, fat_mask=img.with_array(m, units=Units.MASK))
    assert out_m.meta.extra["fat_reference"] == 100.0 and "fat_mask" in out_m.meta.history[-1]
    with pytest.raises(ProcessingError, match="not positive"):
        fat_normalise(_mr([-5, -4, -3, -2]), fat_percentiles=(0, 100), exclude_zero=False)
    with pytest.raises(ProcessingError, match="no voxel lies between"):
        fat_normalise(_mr([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]), fat_percentiles=(90, 99))


def test_mr_recipe_steps_are_available() -> None:
    rec = Recipe.from_dict(
        {
            "steps": [
                {"fat_normalise": {"fat_percentiles": [50, 99]}},
                {"percentile_normalise": {"percentiles": [1, 99]}},
            ]
        }
    )
    out = rec.apply(_mr([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]))
    assert out.meta.units == Units.NORMALISED
    assert [h.split("(")[0] for h in out.meta.history] == ["fat_normalise", "percentile_normalise"]
    with pytest.raises(InputError, match="fat_mask"):
        Recipe.from_dict({"steps": [{"fat_normalise": {"fat_mask": "x"}}]})


@pytest.mark.needs_data
def test_fat_normalise_on_the_sts_mr(sts_dir: Path) -> None:
    import medlens

    mr = medlens.read_image(sts_dir / "STS_001" / "MR_T1" / "image")
    assert mr.meta.modality == "MR" and mr.meta.units == Units.ARBITRARY
    out = fat_normalise(mr)
    a = np.asarray(mr.array, dtype=np.float64)
    body = a[a != 0]
    lo, hi = np.percentile(body, [90, 99])
    ref = float(np.median(body[(body >= lo) & (body <= hi)]))
    assert out.meta.extra["fat_reference"] == pytest.approx(ref)
    # the IBSI already fat-normalised these series (to ~1000): the estimate must find that scale again
    assert 900.0 < ref < 1100.0
