"""The compiled morphology kernels against plain-numpy definitions of the same quantities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlens.radiomics.morphology import _mvee, _ombb


def _mvee_numpy(points: np.ndarray, tol: float = 1e-4, max_iter: int = 20000) -> np.ndarray:
    """Khachiyan with drop steps, X^-1 solved from scratch every iteration (the reference)."""
    n, d = points.shape
    q = np.vstack([points.T, np.ones(n)])
    u = np.full(n, 1.0 / n)
    p = d + 1.0
    for _ in range(max_iter):
        m = np.einsum("ij,ji->i", q.T, np.linalg.solve(q @ (u[:, None] * q.T), q))
        j = int(m.argmax())
        k = int(np.where(u > 0, m, np.inf).argmin())
        up, down = (m[j] - p) / p, (p - m[k]) / p
        if max(up, down) < tol:
            break
        if up >= down:
            step = (m[j] - p) / (p * (m[j] - 1.0))
            u *= 1.0 - step
            u[j] += step
        else:
            step = min((p - m[k]) / (p * (m[k] - 1.0)), u[k] / (1.0 - u[k]))
            u *= 1.0 + step
            u[k] = max(u[k] - step, 0.0)
    c = points.T @ u
    a = np.linalg.inv(points.T @ (u[:, None] * points) - np.outer(c, c)) / d
    r = points - c
    return a / max(1.0, float(np.max(np.einsum("ij,jk,ik->i", r, a, r))))


@pytest.mark.parametrize("seed", range(4))
def test_mvee_kernel_matches_the_numpy_iteration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(200, 3)) * np.array([5.0, 2.0, 1.0]) + 10.0
    res = _mvee(pts)
    assert res is not None
    a, c = res
    ref = _mvee_numpy(pts)
    # the same ellipsoid (volume ~ det(A)^-1/2) within the stopping tolerance
    assert np.linalg.det(a) ** -0.5 == pytest.approx(np.linalg.det(ref) ** -0.5, rel=1e-6)
    r = pts - c
    assert np.max(np.einsum("ij,jk,ik->i", r, a, r)) <= 1.0 + 1e-9  # encloses every point


def test_mvee_of_a_box_is_its_circumscribed_ellipsoid() -> None:
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-2, 2) for z in (-3, 3)], float)
    res = _mvee(corners)
    assert res is not None
    a, c = res
    np.testing.assert_allclose(c, 0.0, atol=1e-6)
    # the minimum ellipsoid around a box has semi-axes sqrt(3) times the half edges
    np.testing.assert_allclose(
        np.sort(1.0 / np.sqrt(np.linalg.eigvalsh(a))), np.sqrt(3) * np.array([1, 2, 3]), rtol=1e-3
    )


def test_mvee_of_too_few_or_flat_points_is_none() -> None:
    assert _mvee(np.zeros((3, 3))) is None
    flat = np.c_[np.random.default_rng(0).normal(size=(20, 2)), np.zeros(20)]
    assert _mvee(flat) is None


def _ombb_numpy(points: np.ndarray, normals: np.ndarray) -> float:
    """Face-flush box volume by brute force: for each normal, minimum-area rectangle over all hull-edge angles."""
    from scipy.spatial import ConvexHull

    best = math.inf
    centred = points - points.mean(axis=0)
    for n in normals:
        n = n / np.linalg.norm(n)
        a = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        u = np.cross(n, a)
        u /= np.linalg.norm(u)
        w = np.cross(n, u)
        h = centred @ n
        p2 = np.stack([centred @ u, centred @ w], axis=1)
        ring = p2[ConvexHull(p2).vertices]
        for e in np.roll(ring, -1, axis=0) - ring:
            d = e / np.linalg.norm(e)
            pd, pp = ring @ d, ring @ np.array([-d[1], d[0]])
            best = min(best, float(np.ptp(pd) * np.ptp(pp) * np.ptp(h)))
    return best


@pytest.mark.parametrize("seed", range(3))
def test_ombb_kernel_matches_brute_force(seed: int) -> None:
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3))
    hull = ConvexHull(pts)
    hv = pts[hull.vertices]
    tri = pts[hull.simplices]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    edges = _ombb(hv, hull.equations[:, :3], areas, max_normals=10**6)
    assert edges is not None
    ref = _ombb_numpy(hv, hull.equations[:, :3])
    # _ombb also tries the PCA and axis-aligned boxes, so it is never larger than the face-flush minimum
    # (up to its normals being rounded to 6 decimals to merge coplanar faces)
    assert float(np.prod(edges)) <= ref * (1 + 1e-5)
    # and every point fits in a box of that volume only if the volume is at least the hull volume
    assert float(np.prod(edges)) >= hull.volume


def test_ombb_of_a_rotated_box_is_the_box() -> None:
    from scipy.spatial import ConvexHull
    from scipy.spatial.transform import Rotation

    corners = np.array([[x, y, z] for x in (0, 4) for y in (0, 2) for z in (0, 1)], float)
    pts = Rotation.from_euler("zyx", [30, 20, 10], degrees=True).apply(corners)
    hull = ConvexHull(pts)
    tri = pts[hull.simplices]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    edges = _ombb(pts, hull.equations[:, :3], areas)
    assert edges is not None
    assert sorted(edges) == pytest.approx([1.0, 2.0, 4.0], rel=1e-9)


def test_mask_moments_match_numpy() -> None:
    from medlens.radiomics._kernels import mask_moments

    rng = np.random.default_rng(11)
    morph = rng.random((6, 7, 8)) > 0.5
    inten = morph & (rng.random(morph.shape) > 0.3)
    img = rng.normal(size=morph.shape) * 100.0 + 1000.0
    sp = np.array([2.5, 0.7, 0.9])
    n_m, mean_m, cov_m, n_i, v_sum, vp = mask_moments(img, morph, inten, sp)
    pos_m = np.argwhere(morph) * sp
    pos_i = np.argwhere(inten) * sp
    vals = img[inten]
    assert n_m == morph.sum() and n_i == inten.sum()
    np.testing.assert_allclose(mean_m, pos_m.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov_m, np.cov(pos_m.T), rtol=1e-10)
    assert v_sum == pytest.approx(vals.sum(), rel=1e-12)
    np.testing.assert_allclose(vp, (pos_i * vals[:, None]).sum(axis=0), rtol=1e-12)
    # one voxel: mean defined, covariance undefined
    one = np.zeros((2, 2, 2), bool)
    one[1, 0, 1] = True
    n1, m1, c1, *_ = mask_moments(img[:2, :2, :2].copy(), one, one, sp)
    assert n1 == 1 and np.allclose(m1, [2.5, 0.0, 0.9]) and np.isnan(c1).all()


def test_warm_up_runs_every_family_once() -> None:
    import medlens.radiomics

    seconds = medlens.radiomics.warm_up()
    assert math.isfinite(seconds) and seconds > 0.0
