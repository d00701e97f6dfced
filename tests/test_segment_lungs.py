"""Lung fields on a synthetic chest CT (body, two lungs, trachea and main bronchi, outside air)."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.segment import lungs
from medlens.segment.classic import EmptyResultWarning


def _chest() -> tuple[Image, np.ndarray, np.ndarray]:
    z, y, x = np.mgrid[0:40, 0:80, 0:100]
    ct = np.full(z.shape, -1000.0, np.float32)  # outside air
    body = ((y - 40) / 36.0) ** 2 + ((x - 50) / 48.0) ** 2 <= 1
    ct[body] = 40.0
    right = ((z - 18) / 14.0) ** 2 + ((y - 42) / 22.0) ** 2 + ((x - 28) / 14.0) ** 2 <= 1
    left = ((z - 18) / 14.0) ** 2 + ((y - 42) / 22.0) ** 2 + ((x - 72) / 14.0) ** 2 <= 1
    ct[right | left] = -850.0
    trachea = ((y - 30) ** 2 + (x - 50) ** 2 <= 16) & (z >= 24)
    bronchi = ((y - 30) ** 2 + (z - 24) ** 2 <= 4) & (np.abs(x - 50) <= 26)
    airway = (trachea | bronchi) & body
    ct[airway] = -1000.0
    img = Image.from_array(ct, spacing=(2.5, 1.5, 1.5), modality="CT", units=Units.HU)
    return img, right & ~airway, left & ~airway


def test_segment_lungs_left_right_and_airways_excluded():
    img, right, left = _chest()
    lab = lungs.segment_lungs(img, min_lung_ml=5.0).array
    # +x (higher column index here) is the patient's left in LPS
    r, lft = lab == lungs.RIGHT_LUNG, lab == lungs.LEFT_LUNG
    dice_r = 2 * (r & right).sum() / (r.sum() + right.sum())
    dice_l = 2 * (lft & left).sum() / (lft.sum() + left.sum())
    assert dice_r > 0.95 and dice_l > 0.95
    # the trachea above the lungs is not lung
    assert not lab[35:, 26:35, 46:55].any()
    # nothing outside the body
    assert not lab[:, :, :2].any() and not lab[:, :2, :].any()


def test_segment_lungs_touching_lungs_split_at_midline():
    img, _right, _left = _chest()
    a = np.array(img.array)
    a[10:20, 40:45, 40:61] = -850.0  # a bridge joining the lungs
    lab = lungs.segment_lungs(img.with_array(a), min_lung_ml=5.0, exclude_airways=False).array
    assert set(np.unique(lab)) == {0, 1, 2}
    assert (lab[:, :, :50] == lungs.LEFT_LUNG).sum() == 0
    assert (lab[:, :, 51:] == lungs.RIGHT_LUNG).sum() == 0


def test_segment_lungs_bad_input_and_empty():
    img, _, _ = _chest()
    with pytest.raises(InputError, match="HU"):
        lungs.segment_lungs(img.with_meta(units=Units.SUVBW))
    soft = img.with_array(np.full(img.shape, 40.0, np.float32))
    with pytest.warns(EmptyResultWarning, match="no lung"):
        out = lungs.segment_lungs(soft)
    assert not out.array.any()
    m = lungs.lung_mask(img, min_lung_ml=5.0)
    assert m.is_mask and m.array.any()
