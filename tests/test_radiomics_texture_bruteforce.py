"""Texture matrices against straightforward loop implementations on small random ROIs (any distance/alpha)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from medlens.radiomics import texture as tx


def _roi(seed: int):
    rng = np.random.default_rng(seed)
    grey = rng.integers(1, 5, size=(4, 7, 6))
    roi = rng.random(grey.shape) < 0.8
    return np.where(roi, grey, 0), roi


def _inside(shape, p):
    return all(0 <= p[k] < shape[k] for k in range(3))


UNIT_3D = [d for d in itertools.product((-1, 0, 1), repeat=3) if d > tuple(-v for v in d)]
UNIT_2D = [d for d in UNIT_3D if d[0] == 0]


@pytest.mark.parametrize(("seed", "distance", "symmetric"), [(0, 1, True), (1, 2, False), (2, 3, True)])
def test_glcm_bruteforce(seed, distance, symmetric):
    grey, roi = _roi(seed)
    m = tx.glcm_matrices(grey, roi, n_levels=4, dims=("2D", "3D"), distance=distance, symmetric=symmetric)
    ref = np.zeros((len(UNIT_3D), 4, 4), dtype=np.int64)
    for k, d in enumerate(UNIT_3D):
        for p in zip(*np.nonzero(roi), strict=True):
            q = tuple(p[a] + distance * d[a] for a in range(3))
            if _inside(roi.shape, q) and roi[q]:
                ref[k, grey[p] - 1, grey[q] - 1] += 1
                if symmetric:
                    ref[k, grey[q] - 1, grey[p] - 1] += 1
    assert (m["3D"] == ref).all()
    in_plane = [UNIT_3D.index(d) for d in UNIT_2D]
    assert (m["2D"].sum(axis=0) == ref[in_plane]).all()


@pytest.mark.parametrize("seed", [3, 4])
def test_glrlm_bruteforce(seed):
    grey, roi = _roi(seed)
    m = tx.glrlm_matrices(grey, roi, n_levels=4, dims=("3D",))["3D"]
    for k, d in enumerate(UNIT_3D):
        ref = np.zeros((4, m.shape[-1] + 10), dtype=np.int64)
        for p in zip(*np.nonzero(roi), strict=True):
            prev = tuple(p[a] - d[a] for a in range(3))
            if _inside(roi.shape, prev) and roi[prev] and grey[prev] == grey[p]:
                continue  # not a run start
            n, q = 1, tuple(p[a] + d[a] for a in range(3))
            while _inside(roi.shape, q) and roi[q] and grey[q] == grey[p]:
                n, q = n + 1, tuple(q[a] + d[a] for a in range(3))
            ref[grey[p] - 1, n - 1] += 1
        assert (ref[:, : m.shape[-1]] == m[k]).all() and not ref[:, m.shape[-1] :].any()


@pytest.mark.parametrize("seed", [5, 6])
def test_zones_bruteforce(seed):
    grey, roi = _roi(seed)
    sz = tx.glszm_matrices(grey, roi, n_levels=4, dims=("2D", "3D"))
    dz = tx.gldzm_matrices(grey, roi, roi, n_levels=4, dims=("2D", "3D"))
    for three_d in (False, True):
        st = np.ones((3, 3, 3), dtype=bool)
        cross = ndimage.generate_binary_structure(3, 1)
        if not three_d:
            st[0] = st[2] = False
            cross[0] = cross[2] = False
        # IBSI distance map: erode the padded mask repeatedly (4-/6-connected), adding 1 per surviving step
        dist = np.zeros(roi.shape, dtype=np.int64)
        cur = np.pad(roi, 1)
        while cur.any():
            dist += cur[1:-1, 1:-1, 1:-1]
            cur = ndimage.binary_erosion(cur, structure=cross)
        size_ref = np.zeros((4, 200), dtype=np.int64)
        dist_ref = np.zeros((4, 200), dtype=np.int64)
        per_slice = np.zeros((roi.shape[0], 4, 200), dtype=np.int64)
        for lev in range(1, 5):
            lab, n = ndimage.label(grey == lev, structure=st)
            for z in range(1, n + 1):
                zone = lab == z
                size_ref[lev - 1, zone.sum() - 1] += 1
                dist_ref[lev - 1, dist[zone].min() - 1] += 1
                per_slice[np.nonzero(zone)[0][0], lev - 1, zone.sum() - 1] += 1
        if three_d:
            assert (sz["3D"] == size_ref[:, : sz["3D"].shape[1]]).all() and size_ref.sum() == sz["3D"].sum()
            assert (dz["3D"] == dist_ref[:, : dz["3D"].shape[1]]).all() and dist_ref.sum() == dz["3D"].sum()
        else:
            assert (sz["2D"] == per_slice[:, :, : sz["2D"].shape[2]]).all() and per_slice.sum() == sz["2D"].sum()
            assert (dz["2D"].sum(axis=0) == dist_ref[:, : dz["2D"].shape[2]]).all()


@pytest.mark.parametrize(("seed", "distance", "alpha"), [(7, 1, 0), (8, 2, 1)])
def test_neighbourhood_matrices_bruteforce(seed, distance, alpha):
    grey, roi = _roi(seed)
    ngt = tx.ngtdm_matrices(grey, roi, n_levels=4, dims=("3D",), distance=distance)["3D"]
    ngl = tx.ngldm_matrices(grey, roi, n_levels=4, dims=("3D",), distance=distance, alpha=alpha)["3D"]
    n_ref = np.zeros(4)
    s_ref = np.zeros(4)
    dep_ref = np.zeros((4, 200), dtype=np.int64)
    r = range(-distance, distance + 1)
    for p in zip(*np.nonzero(roi), strict=True):
        vals = [grey[q] for m in itertools.product(r, r, r) if m != (0, 0, 0)
                for q in [tuple(p[a] + m[a] for a in range(3))] if _inside(roi.shape, q) and roi[q]]  # fmt: skip
        i = grey[p]
        if vals:
            n_ref[i - 1] += 1
            s_ref[i - 1] += abs(i - np.mean(vals))
        dep_ref[i - 1, sum(abs(v - i) <= alpha for v in vals)] += 1
    assert (ngt[:, 0] == n_ref).all()
    assert ngt[:, 1] == pytest.approx(s_ref, abs=1e-9)
    assert (ngl == dep_ref[:, : ngl.shape[1]]).all() and dep_ref.sum() == ngl.sum()
