"""Compiled kernels of the morphology family (see :mod:`medlens.radiomics._jit`).

Imported lazily by :mod:`medlens.radiomics.morphology`; every kernel has a plain-numpy definition
of the same quantity in the tests.
"""

from __future__ import annotations

import numpy as np

from medlens.radiomics._jit import njit

__all__ = ["face_flush_boxes", "mvee_weights", "spectral_forms"]


@njit
def spectral_forms(kernel_octant: np.ndarray, fa: np.ndarray, fb: np.ndarray, n0: int, n1: int) -> tuple[float, float]:
    """Pair sums ``(sum_ij w_ij a_i a_j, sum_ij w_ij a_i b_j)`` from half spectra, by Parseval.

    ``kernel_octant`` holds the real spectrum of an even kernel ``w`` for frequencies ``0..n/2`` on
    every axis; frequencies ``f`` and ``n - f`` share a value on the first two axes. ``fa`` and ``fb``
    are ``rfftn`` spectra (last axis halved, ``n2`` even) of two real arrays on the ``(n0, n1, n2)``
    grid. Returns the sums multiplied by ``n0 * n1 * n2``; accumulates in float64.
    """
    h = fa.shape[2]
    aa = 0.0
    ab = 0.0
    for i in range(n0):
        mi = min(i, n0 - i)
        for j in range(n1):
            mj = min(j, n1 - j)
            for k in range(h):
                kv = np.float64(kernel_octant[mi, mj, k])
                if 0 < k < h - 1:
                    kv *= 2.0  # stands for frequency k and its mirror n2 - k
                a = fa[i, j, k]
                b = fb[i, j, k]
                ar = np.float64(a.real)
                ai = np.float64(a.imag)
                aa += kv * (ar * ar + ai * ai)
                ab += kv * (ar * np.float64(b.real) + ai * np.float64(b.imag))
    return aa, ab


@njit
def _mvee_exact(q: np.ndarray, u: np.ndarray, g: np.ndarray, m: np.ndarray) -> bool:
    """``g = X^-1`` and ``m_i = q_i^T g q_i`` for ``X = sum u_i q_i q_i^T``, from scratch; False if singular."""
    n, p = q.shape
    x = np.zeros((p, p))
    for i in range(n):
        ui = u[i]
        if ui == 0.0:
            continue
        for r in range(p):
            qr = ui * q[i, r]
            for c in range(r, p):
                x[r, c] += qr * q[i, c]
    for r in range(p):
        for c in range(r):
            x[r, c] = x[c, r]
    if not abs(np.linalg.det(x)) > 1e-300:
        return False
    g[:, :] = np.linalg.inv(x)
    for i in range(n):
        s = 0.0
        for r in range(p):
            t = 0.0
            for c in range(p):
                t += g[r, c] * q[i, c]
            s += q[i, r] * t
        m[i] = s
    return True


@njit
def mvee_weights(points: np.ndarray, tol: float, max_iter: int) -> tuple[np.ndarray, int]:
    """Weights ``u`` of the minimum-volume enclosing ellipsoid of ``points`` (n, d), and the iterations used.

    Khachiyan's algorithm with Todd-Yildirim drop steps: each iteration moves weight towards the point
    furthest outside the current ellipsoid or away from the supported point furthest inside it, until
    both excesses ``|m - (d + 1)| / (d + 1)`` are below ``tol``. The ellipsoid is
    ``(x - c)^T A (x - c) <= 1`` with ``c = sum u_i x_i`` and ``A = cov_u(x)^-1 / d``.

    The iterations run over the lifted points ``q_i = (x_i, 1)`` with ``m_i = q_i^T X^-1 q_i`` and
    ``X = sum u_i q_i q_i^T``. A step changes ``X`` by a scaling plus a rank-one term, so ``X^-1`` and
    all ``m_i`` are updated by Sherman-Morrison in O(n d) (recomputed exactly every 64 iterations to
    keep rounding from accumulating). Returns iterations = -1 when ``X`` became singular.
    """
    n, d = points.shape
    p = d + 1
    q = np.ones((n, p))
    q[:, :d] = points
    u = np.full(n, 1.0 / n)
    m = np.empty(n)
    g = np.empty((p, p))
    v = np.empty(p)
    it = 0
    for it in range(max_iter):
        if it % 64 == 0 and not _mvee_exact(q, u, g, m):
            return u, -1
        j = 0
        k = -1
        for i in range(n):
            if m[i] > m[j]:
                j = i
            if u[i] > 0.0 and (k < 0 or m[i] < m[k]):
                k = i
        up = (m[j] - p) / p
        down = (p - m[k]) / p
        if max(up, down) < tol:
            break
        if up >= down:
            step = (m[j] - p) / (p * (m[j] - 1.0))
            for i in range(n):
                u[i] *= 1.0 - step
            u[j] += step
            alpha, beta, c = 1.0 - step, step, j
        else:
            step = min((p - m[k]) / (p * (m[k] - 1.0)), u[k] / (1.0 - u[k]))
            for i in range(n):
                u[i] *= 1.0 + step
            u[k] -= step
            if u[k] < 0.0:
                u[k] = 0.0
            alpha, beta, c = 1.0 + step, -step, k
        # X' = alpha X + beta q_c q_c^T  =>  X'^-1 = (G - gamma v v^T) / alpha with v = G q_c
        ratio = beta / alpha
        denom = 1.0 + ratio * m[c]
        if not denom > 1e-12:  # ill-conditioned update: start from scratch
            if not _mvee_exact(q, u, g, m):
                return u, -1
            continue
        gamma = ratio / denom
        for r in range(p):
            t = 0.0
            for cc in range(p):
                t += g[r, cc] * q[c, cc]
            v[r] = t
        for i in range(n):
            t = 0.0
            for r in range(p):
                t += q[i, r] * v[r]
            m[i] = (m[i] - gamma * t * t) / alpha
        for r in range(p):
            for cc in range(p):
                g[r, cc] = (g[r, cc] - gamma * v[r] * v[cc]) / alpha
    return u, it + 1


@njit
def _hull_2d(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Indices of the convex hull of 2D points, counter-clockwise, collinear points dropped (monotone chain)."""
    n = px.shape[0]
    order = np.argsort(px)
    # lexicographic order: sort runs of equal x by y (insertion sort; ties are rare)
    for i in range(1, n):
        cur = order[i]
        j = i - 1
        while j >= 0 and px[order[j]] == px[cur] and py[order[j]] > py[cur]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = cur
    hull = np.empty(2 * n + 1, np.int64)
    h = 0
    for step in range(2):
        start = h
        for t in range(n):
            i = order[t] if step == 0 else order[n - 1 - t]
            while h >= start + 2:
                a = hull[h - 2]
                b = hull[h - 1]
                cross = (px[b] - px[a]) * (py[i] - py[a]) - (py[b] - py[a]) * (px[i] - px[a])
                if cross > 0.0:
                    break
                h -= 1
            hull[h] = i
            h += 1
        h -= 1  # the last point of each chain starts the other one
    return hull[: max(h, 1)]


@njit
def face_flush_boxes(centred: np.ndarray, normals: np.ndarray) -> tuple[float, float, float, float]:
    """Smallest box with one face orthogonal to one of ``normals`` (unit, (k, 3)) around ``centred`` (n, 3).

    For every normal ``n``: the height is the extent along ``n``; the other two edges are those of the
    minimum-area rectangle of the points projected on the plane orthogonal to ``n``, found by rotating
    calipers (one side flush with an edge of the projected 2D hull). Returns ``(volume, e1, e2, height)``
    of the smallest such box (volume ``inf`` when no normal gave a 2D hull with an edge).
    """
    n = centred.shape[0]
    best = (np.inf, 0.0, 0.0, 0.0)
    px = np.empty(n)
    py = np.empty(n)
    for q in range(normals.shape[0]):
        nx, ny, nz = normals[q, 0], normals[q, 1], normals[q, 2]
        # a basis (u, w) of the plane orthogonal to n
        if abs(nx) < 0.9:
            ax, ay, az = 1.0, 0.0, 0.0
        else:
            ax, ay, az = 0.0, 1.0, 0.0
        ux, uy, uz = ny * az - nz * ay, nz * ax - nx * az, nx * ay - ny * ax
        ln = np.sqrt(ux * ux + uy * uy + uz * uz)
        ux, uy, uz = ux / ln, uy / ln, uz / ln
        wx, wy, wz = ny * uz - nz * uy, nz * ux - nx * uz, nx * uy - ny * ux
        hmin = np.inf
        hmax = -np.inf
        for i in range(n):
            x, y, z = centred[i, 0], centred[i, 1], centred[i, 2]
            hv = x * nx + y * ny + z * nz
            hmin = min(hmin, hv)
            hmax = max(hmax, hv)
            px[i] = x * ux + y * uy + z * uz
            py[i] = x * wx + y * wy + z * wz
        height = hmax - hmin
        ring = _hull_2d(px, py)
        h = ring.shape[0]
        if h < 3:
            continue
        for e in range(h):
            a = ring[e]
            b = ring[(e + 1) % h]
            dx = px[b] - px[a]
            dy = py[b] - py[a]
            length = np.sqrt(dx * dx + dy * dy)
            if length == 0.0:
                continue
            dx /= length
            dy /= length
            dmin = np.inf
            dmax = -np.inf
            pmin = np.inf
            pmax = -np.inf
            for t in range(h):
                r = ring[t]
                sd = px[r] * dx + py[r] * dy
                sp = -px[r] * dy + py[r] * dx
                dmin = min(dmin, sd)
                dmax = max(dmax, sd)
                pmin = min(pmin, sp)
                pmax = max(pmax, sp)
            vol = (dmax - dmin) * (pmax - pmin) * height
            if vol < best[0]:
                best = (vol, dmax - dmin, pmax - pmin, height)
    return best


@njit
def mask_moments(
    image: np.ndarray, morph_mask: np.ndarray, int_mask: np.ndarray, spacing: np.ndarray
) -> tuple[int, np.ndarray, np.ndarray, int, float, np.ndarray]:
    """One pass over a 3D box: voxel-position moments of the morphological mask and intensity moments.

    Returns ``(n_morph, mean_pos (3,), cov_pos (3, 3) with ddof 1, n_int, sum of intensities,
    intensity-weighted position sum (3,))``; positions are voxel centres in mm (index times spacing).
    Sums are taken about the first voxel found (shifted data) so the covariance keeps its precision.
    """
    nz, ny, nx = morph_mask.shape
    n_m = 0
    ref = np.zeros(3)
    s1 = np.zeros(3)
    s2 = np.zeros((3, 3))
    n_i = 0
    v_sum = 0.0
    vp = np.zeros(3)
    pos = np.empty(3)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                inm = morph_mask[z, y, x]
                ini = int_mask[z, y, x]
                if not (inm or ini):
                    continue
                pos[0] = z * spacing[0]
                pos[1] = y * spacing[1]
                pos[2] = x * spacing[2]
                if inm:
                    if n_m == 0:
                        ref[:] = pos
                    n_m += 1
                    for a in range(3):
                        da = pos[a] - ref[a]
                        s1[a] += da
                        for b in range(a, 3):
                            s2[a, b] += da * (pos[b] - ref[b])
                if ini:
                    v = image[z, y, x]
                    n_i += 1
                    v_sum += v
                    for a in range(3):
                        vp[a] += v * pos[a]
    mean = np.zeros(3)
    cov = np.full((3, 3), np.nan)
    if n_m > 0:
        for a in range(3):
            mean[a] = ref[a] + s1[a] / n_m
    if n_m > 1:
        for a in range(3):
            for b in range(a, 3):
                c = (s2[a, b] - s1[a] * s1[b] / n_m) / (n_m - 1)
                cov[a, b] = c
                cov[b, a] = c
    return n_m, mean, cov, n_i, v_sum, vp


@njit
def sphere_means(image: np.ndarray, mask: np.ndarray, half_x: np.ndarray) -> np.ndarray:
    """Mean of the image over a sphere around every ``mask`` voxel (C order), counting only existing voxels.

    The sphere is given row by row: ``half_x[dz + hz, dy + hy]`` is the half-width in x of its row at
    offset ``(dz, dy)`` (-1: no row there). Each row sum is a difference of x prefix sums, so the cost
    per voxel is the number of rows, not of sphere voxels.
    """
    nz, ny, nx = image.shape
    kz, ky = half_x.shape
    hz = kz // 2
    hy = ky // 2
    prefix = np.zeros((nz, ny, nx + 1))
    for z in range(nz):
        for y in range(ny):
            acc = 0.0
            for x in range(nx):
                acc += image[z, y, x]
                prefix[z, y, x + 1] = acc
    out = np.empty(int(mask.sum()))
    k = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                total = 0.0
                count = 0
                for a in range(kz):
                    zz = z + a - hz
                    if zz < 0 or zz >= nz:
                        continue
                    for b in range(ky):
                        h = half_x[a, b]
                        yy = y + b - hy
                        if h < 0 or yy < 0 or yy >= ny:
                            continue
                        x0 = max(x - h, 0)
                        x1 = min(x + h, nx - 1)
                        total += prefix[zz, yy, x1 + 1] - prefix[zz, yy, x0]
                        count += x1 - x0 + 1
                out[k] = total / count
                k += 1
    return out
