"""medlens.segment.segment: one dispatch by method name (used by the CLI and the pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.segment import METHODS, classic, method_options, postprocess_mask, segment


@pytest.fixture()
def blob() -> Image:
    a = np.zeros((12, 20, 20), np.float32)
    a[3:8, 5:12, 5:12] = 100.0
    a[10, 1, 1] = 100.0  # a stray voxel, away from the blob
    return Image.from_array(a, spacing=(2.0, 1.0, 1.0), modality="CT", units=Units.HU)


def test_methods_are_listed() -> None:
    assert METHODS == ("otsu", "multi-otsu", "threshold", "region-grow", "confidence", "suv-threshold", "lungs", "unet")


def test_dispatch_gives_the_same_mask_as_the_function(blob: Image) -> None:
    np.testing.assert_array_equal(segment(blob, method="otsu").array, classic.otsu(blob).array)
    got = segment(blob, method="threshold", lower=50.0, units="HU")
    np.testing.assert_array_equal(got.array, classic.threshold(blob, lower=50.0, units="HU").array)
    assert int(got.array.sum()) == 5 * 7 * 7 + 1
    grown = segment(blob, method="region-grow", seed_index=(5, 8, 8), lower=50.0)
    assert int(grown.array.sum()) == 5 * 7 * 7  # the stray voxel is not connected to the seed
    labels = segment(blob, method="multi-otsu", classes=2)
    np.testing.assert_array_equal(labels.array, classic.multi_otsu(blob, classes=2).array)


def test_unknown_method_lists_the_allowed_ones(blob: Image) -> None:
    with pytest.raises(InputError, match=r"unknown segmentation method 'watershed'; use one of: otsu, multi-otsu, "):
        segment(blob, method="watershed")


def test_unknown_option_lists_the_methods_options(blob: Image) -> None:
    with pytest.raises(InputError, match=r"'threshold' has no option 'low'; its options are: lower, upper, units"):
        segment(blob, method="threshold", low=3.0)
    with pytest.raises(InputError, match=r"'otsu' has no option 'classes'; its options are: within"):
        segment(blob, method="otsu", classes=3)


def test_method_options_follow_the_implementing_function() -> None:
    assert method_options("multi-otsu") == ("classes",)
    assert "model_dir" in method_options("unet") and "threshold_hu" in method_options("lungs")


def test_postprocess_keeps_largest_and_leaves_labels_alone(blob: Image) -> None:
    m = segment(blob, method="threshold", lower=50.0)
    assert int(postprocess_mask(m, largest=True).array.sum()) == 5 * 7 * 7
    labels = segment(blob, method="multi-otsu", classes=2)
    assert postprocess_mask(labels, largest=True) is labels
