"""Texture matrices and features on the IBSI 1 digital phantom (matrices typed from the IBSI manual, chapter 6)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from medlens.radiomics import texture as tx

TEXTURE_PREFIXES = ("cm", "rlm", "szm", "dzm", "ngt", "ngl")

# Matrices of IBSI 1, "Digital phantom texture matrices" (chapter 6), typed as (row, column, value) triplets.
# GLCM/GLRLM/GLSZM/GLDZM/NGLDM: (grey level, j, count); NGTDM: (grey level, s_i, n_i). 2D tables: one per slice,
# slices in array order; "dirs" tables: one per direction (compared as a multiset, the order of directions being a
# convention).
EXPECTED = {
    "cm_2d_dirs": [
        [(1, 1, 10), (1, 4, 4), (4, 1, 4), (4, 4, 6), (4, 6, 1), (6, 4, 1), (6, 6, 4)],
        [(1, 1, 16), (1, 4, 2), (3, 6, 2), (4, 1, 2), (4, 6, 1), (6, 3, 2), (6, 4, 1)],
        [(1, 1, 18), (1, 4, 2), (4, 1, 2)],
        [(1, 1, 20), (1, 4, 2), (1, 6, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 2), (1, 4, 4), (1, 6, 3), (4, 1, 4), (4, 4, 4), (4, 6, 2), (6, 1, 3), (6, 4, 2)],
        [(1, 1, 6), (1, 3, 1), (1, 4, 3), (1, 6, 3), (3, 1, 1), (3, 4, 1), (4, 1, 3), (4, 3, 1), (6, 1, 3)],
        [(1, 1, 10), (1, 4, 2), (1, 6, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 14), (1, 4, 2), (1, 6, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 4), (1, 4, 6), (1, 6, 2), (4, 1, 6), (4, 4, 4), (4, 6, 4), (6, 1, 2), (6, 4, 4)],
        [(1, 1, 10), (1, 3, 2), (1, 4, 2), (1, 6, 3), (3, 1, 2), (4, 1, 2), (4, 4, 4), (4, 6, 1), (6, 1, 3), (6, 4, 1)],
        [(1, 1, 16), (1, 4, 1), (1, 6, 2), (4, 1, 1), (4, 4, 2), (6, 1, 2)],
        [(1, 1, 20), (1, 4, 1), (1, 6, 2), (4, 1, 1), (4, 4, 2), (6, 1, 2)],
        [(1, 1, 6), (1, 4, 3), (1, 6, 1), (4, 1, 3), (4, 4, 2), (4, 6, 4), (6, 1, 1), (6, 4, 4)],
        [(1, 1, 10), (1, 3, 2), (1, 4, 1), (1, 6, 2), (3, 1, 2), (4, 1, 1), (4, 6, 1), (6, 1, 2), (6, 4, 1)],
        [(1, 1, 12), (1, 4, 2), (1, 6, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 16), (1, 4, 2), (1, 6, 1), (4, 1, 2), (6, 1, 1)],
    ],
    "cm_2d_merged": [
        [(1, 1, 22), (1, 4, 17), (1, 6, 6), (4, 1, 17), (4, 4, 16), (4, 6, 11), (6, 1, 6), (6, 4, 11), (6, 6, 4)],
        [
            (1, 1, 42),
            (1, 3, 5),
            (1, 4, 8),
            (1, 6, 8),
            (3, 1, 5),
            (3, 4, 1),
            (3, 6, 2),
            (4, 1, 8),
            (4, 3, 1),
            (4, 4, 4),
            (4, 6, 3),
            (6, 1, 8),
            (6, 3, 2),
            (6, 4, 3),
        ],
        [(1, 1, 56), (1, 4, 7), (1, 6, 4), (4, 1, 7), (4, 4, 2), (6, 1, 4)],
        [(1, 1, 70), (1, 4, 7), (1, 6, 5), (4, 1, 7), (4, 4, 2), (6, 1, 5)],
    ],
    "cm_3d_dirs": [
        [(1, 1, 66), (1, 4, 5), (1, 6, 1), (3, 6, 1), (4, 1, 5), (4, 4, 16), (6, 1, 1), (6, 3, 1), (6, 6, 8)],
        [
            (1, 1, 42),
            (1, 3, 1),
            (1, 4, 9),
            (1, 6, 1),
            (3, 1, 1),
            (3, 6, 1),
            (4, 1, 9),
            (4, 4, 2),
            (4, 6, 2),
            (6, 1, 1),
            (6, 3, 1),
            (6, 4, 2),
            (6, 6, 2),
        ],
        [
            (1, 1, 64),
            (1, 4, 10),
            (1, 6, 1),
            (3, 6, 2),
            (4, 1, 10),
            (4, 4, 6),
            (4, 6, 2),
            (6, 1, 1),
            (6, 3, 2),
            (6, 4, 2),
            (6, 6, 4),
        ],
        [(1, 1, 52), (1, 4, 8), (3, 6, 2), (4, 1, 8), (4, 4, 2), (4, 6, 1), (6, 3, 2), (6, 4, 1), (6, 6, 2)],
        [(1, 1, 30), (1, 3, 2), (1, 4, 7), (1, 6, 5), (3, 1, 2), (4, 1, 7), (4, 6, 2), (6, 1, 5), (6, 4, 2)],
        [
            (1, 1, 32),
            (1, 3, 1),
            (1, 4, 11),
            (1, 6, 8),
            (3, 1, 1),
            (3, 4, 1),
            (4, 1, 11),
            (4, 3, 1),
            (4, 4, 4),
            (4, 6, 2),
            (6, 1, 8),
            (6, 4, 2),
        ],
        [
            (1, 1, 20),
            (1, 3, 1),
            (1, 4, 10),
            (1, 6, 6),
            (3, 1, 1),
            (3, 4, 1),
            (4, 1, 10),
            (4, 3, 1),
            (4, 4, 2),
            (6, 1, 6),
        ],
        [
            (1, 1, 38),
            (1, 3, 1),
            (1, 4, 7),
            (1, 6, 8),
            (3, 1, 1),
            (3, 4, 1),
            (4, 1, 7),
            (4, 3, 1),
            (4, 4, 8),
            (4, 6, 2),
            (6, 1, 8),
            (6, 4, 2),
        ],
        [
            (1, 1, 50),
            (1, 3, 2),
            (1, 4, 10),
            (1, 6, 9),
            (3, 1, 2),
            (4, 1, 10),
            (4, 4, 12),
            (4, 6, 5),
            (6, 1, 9),
            (6, 4, 5),
        ],
        [(1, 1, 34), (1, 3, 2), (1, 4, 8), (1, 6, 7), (3, 1, 2), (4, 1, 8), (4, 4, 8), (4, 6, 3), (6, 1, 7), (6, 4, 3)],
        [
            (1, 1, 32),
            (1, 3, 1),
            (1, 4, 6),
            (1, 6, 4),
            (3, 1, 1),
            (3, 4, 1),
            (4, 1, 6),
            (4, 3, 1),
            (4, 6, 3),
            (6, 1, 4),
            (6, 4, 3),
        ],
        [(1, 1, 44), (1, 3, 2), (1, 4, 8), (1, 6, 5), (3, 1, 2), (4, 1, 8), (4, 4, 2), (4, 6, 5), (6, 1, 5), (6, 4, 5)],
        [
            (1, 1, 32),
            (1, 3, 1),
            (1, 4, 6),
            (1, 6, 6),
            (3, 1, 1),
            (3, 4, 1),
            (4, 1, 6),
            (4, 3, 1),
            (4, 4, 2),
            (4, 6, 1),
            (6, 1, 6),
            (6, 4, 1),
        ],
    ],
    "cm_3d_merged": [
        [
            (1, 1, 536),
            (1, 3, 14),
            (1, 4, 105),
            (1, 6, 61),
            (3, 1, 14),
            (3, 4, 5),
            (3, 6, 6),
            (4, 1, 105),
            (4, 3, 5),
            (4, 4, 64),
            (4, 6, 28),
            (6, 1, 61),
            (6, 3, 6),
            (6, 4, 28),
            (6, 6, 16),
        ],
    ],
    "rlm_2d_dirs": [
        [(1, 1, 1), (1, 2, 2), (1, 4, 1), (4, 1, 2), (4, 2, 3), (6, 3, 1)],
        [(1, 2, 2), (1, 4, 2), (3, 1, 1), (4, 1, 4), (6, 1, 2)],
        [(1, 1, 1), (1, 3, 3), (1, 4, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 2, 1), (1, 3, 3), (1, 4, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 7), (1, 2, 1), (4, 1, 5), (4, 3, 1), (6, 1, 3)],
        [(1, 1, 6), (1, 2, 3), (3, 1, 1), (4, 1, 4), (6, 1, 2)],
        [(1, 1, 5), (1, 2, 3), (1, 3, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 3), (1, 2, 3), (1, 3, 2), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 5), (1, 2, 2), (4, 1, 4), (4, 2, 2), (6, 1, 3)],
        [(1, 1, 2), (1, 2, 5), (3, 1, 1), (4, 2, 2), (6, 1, 2)],
        [(1, 1, 1), (1, 2, 4), (1, 5, 1), (4, 2, 1), (6, 1, 1)],
        [(1, 1, 1), (1, 2, 2), (1, 5, 2), (4, 2, 1), (6, 1, 1)],
        [(1, 1, 3), (1, 2, 3), (4, 1, 6), (4, 2, 1), (6, 1, 3)],
        [(1, 1, 2), (1, 2, 5), (3, 1, 1), (4, 1, 4), (6, 1, 2)],
        [(1, 1, 3), (1, 2, 4), (1, 3, 1), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 2), (1, 2, 3), (1, 3, 1), (1, 4, 1), (4, 1, 2), (6, 1, 1)],
    ],
    "rlm_2d_merged": [
        [(1, 1, 16), (1, 2, 8), (1, 4, 1), (4, 1, 17), (4, 2, 6), (4, 3, 1), (6, 1, 9), (6, 3, 1)],
        [(1, 1, 10), (1, 2, 15), (1, 4, 2), (3, 1, 4), (4, 1, 12), (4, 2, 2), (6, 1, 8)],
        [(1, 1, 10), (1, 2, 11), (1, 3, 5), (1, 4, 1), (1, 5, 1), (4, 1, 6), (4, 2, 1), (6, 1, 4)],
        [(1, 1, 6), (1, 2, 9), (1, 3, 6), (1, 4, 2), (1, 5, 2), (4, 1, 6), (4, 2, 1), (6, 1, 4)],
    ],
    "rlm_3d_dirs": [
        [
            (1, 1, 1),
            (1, 2, 6),
            (1, 3, 3),
            (1, 4, 7),
            (3, 1, 1),
            (4, 1, 4),
            (4, 2, 2),
            (4, 4, 2),
            (6, 1, 1),
            (6, 2, 1),
            (6, 4, 1),
        ],
        [(1, 1, 11), (1, 2, 15), (1, 3, 3), (3, 1, 1), (4, 1, 14), (4, 2, 1), (6, 1, 5), (6, 2, 1)],
        [(1, 1, 2), (1, 2, 5), (1, 3, 6), (1, 4, 5), (3, 1, 1), (4, 1, 10), (4, 2, 3), (6, 1, 4), (6, 3, 1)],
        [(1, 1, 10), (1, 2, 5), (1, 3, 6), (1, 4, 3), (3, 1, 1), (4, 1, 14), (4, 2, 1), (6, 1, 5), (6, 2, 1)],
        [(1, 1, 22), (1, 2, 11), (1, 3, 2), (3, 1, 1), (4, 1, 16), (6, 1, 7)],
        [(1, 1, 21), (1, 2, 10), (1, 3, 3), (3, 1, 1), (4, 1, 13), (4, 3, 1), (6, 1, 7)],
        [(1, 1, 30), (1, 2, 10), (3, 1, 1), (4, 1, 14), (4, 2, 1), (6, 1, 7)],
        [(1, 1, 16), (1, 2, 12), (1, 3, 2), (1, 4, 1), (3, 1, 1), (4, 1, 8), (4, 2, 4), (6, 1, 7)],
        [(1, 1, 9), (1, 2, 13), (1, 5, 3), (3, 1, 1), (4, 1, 4), (4, 2, 6), (6, 1, 7)],
        [(1, 1, 19), (1, 2, 12), (1, 3, 1), (1, 4, 1), (3, 1, 1), (4, 1, 8), (4, 2, 4), (6, 1, 7)],
        [(1, 1, 20), (1, 2, 12), (1, 3, 2), (3, 1, 1), (4, 1, 16), (6, 1, 7)],
        [(1, 1, 10), (1, 2, 15), (1, 3, 2), (1, 4, 1), (3, 1, 1), (4, 1, 14), (4, 2, 1), (6, 1, 7)],
        [(1, 1, 19), (1, 2, 14), (1, 3, 1), (3, 1, 1), (4, 1, 14), (4, 2, 1), (6, 1, 7)],
    ],
    "rlm_3d_merged": [
        [
            (1, 1, 190),
            (1, 2, 140),
            (1, 3, 31),
            (1, 4, 18),
            (1, 5, 3),
            (3, 1, 13),
            (4, 1, 149),
            (4, 2, 24),
            (4, 3, 1),
            (4, 4, 2),
            (6, 1, 78),
            (6, 2, 3),
            (6, 3, 1),
            (6, 4, 1),
        ],
    ],
    "szm_2d": [
        [(1, 3, 1), (1, 6, 1), (4, 2, 1), (4, 6, 1), (6, 3, 1)],
        [(1, 4, 1), (1, 8, 1), (3, 1, 1), (4, 2, 2), (6, 1, 2)],
        [(1, 14, 1), (4, 2, 1), (6, 1, 1)],
        [(1, 15, 1), (4, 2, 1), (6, 1, 1)],
    ],
    "szm_3d": [
        [(1, 50, 1), (3, 1, 1), (4, 2, 1), (4, 14, 1), (6, 7, 1)],
    ],
    "dzm_2d": [
        [(1, 1, 2), (4, 1, 2), (6, 1, 1)],
        [(1, 1, 2), (3, 2, 1), (4, 1, 2), (6, 1, 1), (6, 2, 1)],
        [(1, 1, 1), (4, 1, 1), (6, 1, 1)],
        [(1, 1, 1), (4, 1, 1), (6, 1, 1)],
    ],
    "dzm_3d": [
        [(1, 1, 1), (3, 1, 1), (4, 1, 2), (6, 1, 1)],
    ],
    "ngt_2d": [
        [(1, 14.575, 9), (4, 5.775, 8), (6, 7.325, 3)],
        [(1, 11.928571, 12), (3, 0.375, 1), (4, 4.8, 4), (6, 8, 2)],
        [(1, 7.985714, 14), (4, 4.65, 2), (6, 5, 1)],
        [(1, 7.582143, 15), (4, 4.65, 2), (6, 5, 1)],
    ],
    "ngt_3d": [
        [(1, 39.946954, 50), (3, 0.2, 1), (4, 20.825401, 16), (6, 24.127005, 7)],
    ],
    "ngl_2d": [
        [(1, 2, 3), (1, 3, 1), (1, 4, 3), (1, 5, 2), (4, 2, 2), (4, 3, 4), (4, 4, 2), (6, 2, 2), (6, 3, 1)],
        [(1, 3, 2), (1, 4, 6), (1, 6, 4), (3, 1, 1), (4, 2, 4), (6, 1, 2)],
        [(1, 3, 1), (1, 4, 5), (1, 5, 3), (1, 6, 3), (1, 7, 2), (4, 2, 2), (6, 1, 1)],
        [(1, 3, 1), (1, 4, 3), (1, 5, 3), (1, 6, 4), (1, 7, 1), (1, 8, 3), (4, 2, 2), (6, 1, 1)],
    ],
    "ngl_3d": [
        [
            (1, 5, 2),
            (1, 6, 2),
            (1, 7, 1),
            (1, 8, 6),
            (1, 9, 4),
            (1, 10, 6),
            (1, 11, 5),
            (1, 12, 5),
            (1, 13, 3),
            (1, 14, 2),
            (1, 15, 5),
            (1, 16, 3),
            (1, 17, 3),
            (1, 18, 2),
            (1, 21, 1),
            (3, 1, 1),
            (4, 2, 2),
            (4, 4, 2),
            (4, 5, 6),
            (4, 6, 4),
            (4, 7, 2),
            (6, 2, 1),
            (6, 3, 4),
            (6, 4, 1),
            (6, 5, 1),
        ],
    ],
}


@pytest.fixture(scope="module")
def phantom(digital_phantom_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    img = from_sitk(sitk.ReadImage(str(digital_phantom_dir / "nifti" / "image" / "phantom.nii.gz")))
    msk = from_sitk(sitk.ReadImage(str(digital_phantom_dir / "nifti" / "mask" / "mask.nii.gz")))
    grey = np.asarray(img.array).astype(np.int64)
    roi = np.asarray(msk.array) > 0
    # the phantom's intensities already are grey levels 1..6 (no discretisation, IBSI chapter 5)
    assert set(np.unique(grey[roi])) <= set(range(1, 7))
    return grey, roi


def _triplets(m: np.ndarray) -> list[tuple[int, int, int]]:
    return sorted((int(i) + 1, int(j) + 1, int(m[i, j])) for i, j in zip(*np.nonzero(m), strict=True))


def _expected(key: str) -> list[list[tuple[int, int, int]]]:
    return [sorted(t) for t in EXPECTED[key]]


def _same_multiset(mine: list[np.ndarray], key: str) -> None:
    got = sorted(_triplets(m) for m in mine)
    assert got == sorted(_expected(key))


def test_glcm_matrices_match_ibsi_manual(phantom):
    grey, roi = phantom
    m = tx.glcm_matrices(grey, roi, n_levels=6, dims=("2D", "3D"))
    assert m["2D"].shape == (4, 4, 6, 6)
    assert [_triplets(s.sum(axis=0)) for s in m["2D"]] == _expected("cm_2d_merged")
    _same_multiset(list(m["2D"].reshape(-1, 6, 6)), "cm_2d_dirs")
    assert m["3D"].shape == (13, 6, 6)
    _same_multiset(list(m["3D"]), "cm_3d_dirs")
    assert [_triplets(m["3D"].sum(axis=0))] == _expected("cm_3d_merged")


def test_glrlm_matrices_match_ibsi_manual(phantom):
    grey, roi = phantom
    m = tx.glrlm_matrices(grey, roi, n_levels=6, dims=("2D", "3D"))
    assert [_triplets(s.sum(axis=0)) for s in m["2D"]] == _expected("rlm_2d_merged")
    _same_multiset(list(m["2D"].reshape(-1, *m["2D"].shape[2:])), "rlm_2d_dirs")
    _same_multiset(list(m["3D"]), "rlm_3d_dirs")
    assert [_triplets(m["3D"].sum(axis=0))] == _expected("rlm_3d_merged")


def test_zone_matrices_match_ibsi_manual(phantom):
    grey, roi = phantom
    sz = tx.glszm_matrices(grey, roi, n_levels=6, dims=("2D", "3D"))
    assert [_triplets(s) for s in sz["2D"]] == _expected("szm_2d")
    assert [_triplets(sz["3D"])] == _expected("szm_3d")
    dz = tx.gldzm_matrices(grey, roi, roi, n_levels=6, dims=("2D", "3D"))
    assert [_triplets(s) for s in dz["2D"]] == _expected("dzm_2d")
    assert [_triplets(dz["3D"])] == _expected("dzm_3d")


def test_ngldm_matrices_match_ibsi_manual(phantom):
    grey, roi = phantom
    m = tx.ngldm_matrices(grey, roi, n_levels=6, dims=("2D", "3D"))
    assert [_triplets(s) for s in m["2D"]] == _expected("ngl_2d")
    assert [_triplets(m["3D"])] == _expected("ngl_3d")


def test_ngtdm_matrices_match_ibsi_manual(phantom):
    grey, roi = phantom
    m = tx.ngtdm_matrices(grey, roi, n_levels=6, dims=("2D", "3D"))
    for mine, table in zip([*m["2D"], m["3D"]], EXPECTED["ngt_2d"] + EXPECTED["ngt_3d"], strict=True):
        rows = sorted(table)
        present = np.nonzero(mine[:, 0])[0]
        assert [int(i) + 1 for i in present] == [int(r[0]) for r in rows]
        for i, (_, s_i, n_i) in zip(present, rows, strict=True):
            assert mine[i, 0] == n_i
            assert mine[i, 1] == pytest.approx(s_i, abs=1e-5)  # the manual prints s_i with 6 decimals


def _round3(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, -math.floor(math.log10(abs(x))) + 2)


def test_every_texture_tag_of_the_digital_phantom(phantom, reference_values_dir):
    grey, roi = phantom
    settings = {"dims": ("2D", "2_5D", "3D"), "gldzm_distance_metric": "manhattan"}
    feats = tx.compute_texture_features(
        grey, roi=roi, morph_roi=roi, spacing_mm=(2.0, 2.0, 2.0), n_levels=6, settings=settings
    )
    rows = list(csv.reader(open(reference_values_dir / "ibsi_1_dig_phantom.csv"), delimiter=";"))[1:]
    rows = [r for r in rows if r[2].split("_")[0] in TEXTURE_PREFIXES]
    assert len(rows) == 408
    failures = []
    for ref, tol, tag in rows:
        got = _round3(feats.get(tag, float("nan")))
        if not abs(got - float(ref)) <= float(tol) + 1e-9 * abs(float(ref)):
            failures.append((tag, float(ref), got))
    assert not failures
    assert set(feats) == {r[2] for r in rows}  # no tag beyond the IBSI ones


@pytest.fixture(scope="module")
def ct_phantom(ct_phantom_dir: Path):
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    img = from_sitk(sitk.ReadImage(str(ct_phantom_dir / "nifti" / "image" / "phantom.nii.gz")))
    msk = from_sitk(sitk.ReadImage(str(ct_phantom_dir / "nifti" / "mask" / "mask.nii.gz")))
    return img, msk.with_array(np.asarray(msk.array) > 0)


@pytest.mark.parametrize("cfg", ["a", "b", "c", "d", "e"])
def test_ct_phantom_texture_tags(ct_phantom, reference_values_dir, cfg):
    """Every texture tag of CT phantom configuration A-E through the full pipeline (``extract`` + preset)."""
    import warnings

    from medlens.radiomics import extract

    img, msk = ct_phantom
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = extract(img, msk, f"ibsi-{cfg}")
    with open(reference_values_dir / f"ibsi_1_chest_config_{cfg}.csv") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter=";") if r["tag"].split("_")[0] in TEXTURE_PREFIXES]
    assert len(rows) == (272 if cfg in "ab" else 136)
    failures = []
    for r in rows:
        ref, tol = float(r["reference value"]), float(r["tolerance"])
        got = feats.get(r["tag"], float("nan"))
        if not (math.isfinite(got) and abs(_round3(got) - ref) <= tol + 1e-9 * max(1.0, abs(ref))):
            failures.append((r["tag"], ref, tol, got))
    assert not failures
