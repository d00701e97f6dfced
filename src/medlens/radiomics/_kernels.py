"""Compiled kernels of the morphology family (see :mod:`medlens.radiomics._jit`).

Imported lazily by :mod:`medlens.radiomics.morphology`; every kernel has a plain-numpy definition
of the same quantity in the tests.
"""

from __future__ import annotations

import numpy as np

from medlens.radiomics._jit import njit

__all__ = [
    "face_flush_boxes",
    "lattice_hull",
    "mask_moments",
    "max_sq_distance",
    "mvee_weights",
    "plane_extremes",
    "spectral_forms",
    "sphere_means",
]


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
def _invert(x: np.ndarray, g: np.ndarray) -> bool:
    """``g = x^-1`` for a small square matrix by Gauss-Jordan elimination with partial pivoting.

    Returns False (``g`` undefined) when ``|det x| <= 1e-300``. Written out instead of ``np.linalg.inv`` so
    that the compiled code needs no LAPACK (numba takes LAPACK from scipy, a ~0.3 s import in a fresh process).
    ``x`` is overwritten.
    """
    p = x.shape[0]
    for r in range(p):
        for c in range(p):
            g[r, c] = 1.0 if r == c else 0.0
    det = 1.0
    for col in range(p):
        piv = col
        for r in range(col + 1, p):
            if abs(x[r, col]) > abs(x[piv, col]):
                piv = r
        if piv != col:
            det = -det
            for c in range(p):
                x[col, c], x[piv, c] = x[piv, c], x[col, c]
                g[col, c], g[piv, c] = g[piv, c], g[col, c]
        d = x[col, col]
        det *= d
        if d == 0.0:
            return False
        inv_d = 1.0 / d
        for c in range(p):
            x[col, c] *= inv_d
            g[col, c] *= inv_d
        for r in range(p):
            if r != col:
                f = x[r, col]
                if f != 0.0:
                    for c in range(p):
                        x[r, c] -= f * x[col, c]
                        g[r, c] -= f * g[col, c]
    return abs(det) > 1e-300


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
    if not _invert(x, g):
        return False
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


@njit
def _parallel(ax: int, ay: int, az: int, bx: int, by: int, bz: int) -> bool:
    return ay * bz - az * by == 0 and az * bx - ax * bz == 0 and ax * by - ay * bx == 0


@njit
def lattice_hull(pts: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Convex hull of integer points, with exact integer predicates (incremental, beneath-beyond).

    Parameters
    ----------
    pts
        (n, 3) int64 points; coordinates of magnitude below ~2**20 (so every predicate fits in int64).
    order
        (n,) int64 insertion order (a random permutation gives the expected O(n log n) behaviour).

    Returns
    -------
    tuple
        ``(faces, corner, status)``: ``faces`` (m, 3) int64 triangles, counter-clockwise seen from outside
        (so ``(b - a) x (c - a)`` is the outward normal), a triangulation of the hull surface in which
        coplanar triangles may share a facet and a vertex may lie inside a facet or an edge; ``corner`` (n,)
        bool marks the extreme points (vertices where three non-parallel face planes meet, i.e. the vertices
        Qhull reports); ``status`` 0 = hull verified exactly (every point on or inside every face plane, a
        closed triangulated sphere), 1 = all points coplanar (no 3D hull), 2 = the verification failed.

    Notes
    -----
    A point is inserted when some face sees it strictly (``n . p > d``); then every face with ``n . p >= d``
    is removed, coplanar ones included, so the horizon never contains an edge collinear with the point and
    every new triangle has non-zero area.
    """
    n = pts.shape[0]
    corner = np.zeros(n, np.bool_)
    empty = np.zeros((0, 3), np.int64)
    if n < 4:
        return empty, corner, 1
    # initial tetrahedron: lexicographic minimum, farthest point, farthest from the line, farthest from the plane
    i0 = 0
    for i in range(1, n):
        if (pts[i, 0], pts[i, 1], pts[i, 2]) < (pts[i0, 0], pts[i0, 1], pts[i0, 2]):
            i0 = i
    x0, y0, z0 = pts[i0, 0], pts[i0, 1], pts[i0, 2]
    i1 = -1
    best = 0
    for i in range(n):
        dx, dy, dz = pts[i, 0] - x0, pts[i, 1] - y0, pts[i, 2] - z0
        d = dx * dx + dy * dy + dz * dz
        if d > best:
            best, i1 = d, i
    if i1 < 0:
        return empty, corner, 1
    ux, uy, uz = pts[i1, 0] - x0, pts[i1, 1] - y0, pts[i1, 2] - z0
    i2 = -1
    best = 0
    for i in range(n):
        vx, vy, vz = pts[i, 0] - x0, pts[i, 1] - y0, pts[i, 2] - z0
        cx, cy, cz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
        d = cx * cx + cy * cy + cz * cz
        if d > best:
            best, i2 = d, i
    if i2 < 0:
        return empty, corner, 1
    vx, vy, vz = pts[i2, 0] - x0, pts[i2, 1] - y0, pts[i2, 2] - z0
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx
    i3 = -1
    best = 0
    for i in range(n):
        d = abs(nx * (pts[i, 0] - x0) + ny * (pts[i, 1] - y0) + nz * (pts[i, 2] - z0))
        if d > best:
            best, i3 = d, i
    if i3 < 0:
        return empty, corner, 1

    cap = 8 * n + 16
    fv = np.empty((cap, 3), np.int64)
    fn = np.empty((cap, 3), np.int64)
    fd = np.empty(cap, np.int64)
    alive = np.zeros(cap, np.bool_)
    nf = 0
    tet = (i0, i1, i2, i3)
    for q in range(4):
        a, b, c = tet[(q + 1) % 4], tet[(q + 2) % 4], tet[(q + 3) % 4]
        w = tet[q]
        ex, ey, ez = pts[b, 0] - pts[a, 0], pts[b, 1] - pts[a, 1], pts[b, 2] - pts[a, 2]
        gx, gy, gz = pts[c, 0] - pts[a, 0], pts[c, 1] - pts[a, 1], pts[c, 2] - pts[a, 2]
        mx, my, mz = ey * gz - ez * gy, ez * gx - ex * gz, ex * gy - ey * gx
        if mx * (pts[w, 0] - pts[a, 0]) + my * (pts[w, 1] - pts[a, 1]) + mz * (pts[w, 2] - pts[a, 2]) > 0:
            b, c = c, b  # orient so that the fourth point is beneath
            mx, my, mz = -mx, -my, -mz
        fv[nf, 0], fv[nf, 1], fv[nf, 2] = a, b, c
        fn[nf, 0], fn[nf, 1], fn[nf, 2] = mx, my, mz
        fd[nf] = mx * pts[a, 0] + my * pts[a, 1] + mz * pts[a, 2]
        alive[nf] = True
        nf += 1

    vis = np.empty(cap, np.int64)
    n_alive = 4
    for t in range(n):
        p = order[t]
        if p == i0 or p == i1 or p == i2 or p == i3:
            continue
        px, py, pz = pts[p, 0], pts[p, 1], pts[p, 2]
        strict = False
        nv = 0
        for f in range(nf):
            if alive[f]:
                val = fn[f, 0] * px + fn[f, 1] * py + fn[f, 2] * pz - fd[f]
                if val >= 0:
                    if val > 0:
                        strict = True
                    vis[nv] = f
                    nv += 1
        if not strict:
            continue  # inside the hull or on its surface
        ne = 3 * nv
        keys = np.empty(ne, np.int64)
        for j in range(nv):
            f = vis[j]
            a, b, c = fv[f, 0], fv[f, 1], fv[f, 2]
            keys[3 * j] = a * n + b
            keys[3 * j + 1] = b * n + c
            keys[3 * j + 2] = c * n + a
            alive[f] = False
        n_alive -= nv
        sk = np.sort(keys)
        if nf + ne > cap:  # compact the dead faces away, then grow if still short
            m = 0
            for f in range(nf):
                if alive[f]:
                    fv[m], fn[m], fd[m] = fv[f], fn[f], fd[f]
                    alive[m] = True
                    m += 1
            alive[m:nf] = False
            nf = m
            if nf + ne > cap:
                cap = 2 * (nf + ne)
                fv2 = np.empty((cap, 3), np.int64)
                fn2 = np.empty((cap, 3), np.int64)
                fd2 = np.empty(cap, np.int64)
                alive2 = np.zeros(cap, np.bool_)
                fv2[:nf], fn2[:nf], fd2[:nf], alive2[:nf] = fv[:nf], fn[:nf], fd[:nf], alive[:nf]
                fv, fn, fd, alive = fv2, fn2, fd2, alive2
                vis = np.empty(cap, np.int64)
        for e in range(ne):
            a = keys[e] // n
            b = keys[e] % n
            rev = b * n + a
            pos = np.searchsorted(sk, rev)
            if pos < ne and sk[pos] == rev:
                continue  # an edge between two removed faces
            ex, ey, ez = pts[b, 0] - pts[a, 0], pts[b, 1] - pts[a, 1], pts[b, 2] - pts[a, 2]
            gx, gy, gz = px - pts[a, 0], py - pts[a, 1], pz - pts[a, 2]
            mx, my, mz = ey * gz - ez * gy, ez * gx - ex * gz, ex * gy - ey * gx
            fv[nf, 0], fv[nf, 1], fv[nf, 2] = a, b, p
            fn[nf, 0], fn[nf, 1], fn[nf, 2] = mx, my, mz
            fd[nf] = mx * pts[a, 0] + my * pts[a, 1] + mz * pts[a, 2]
            alive[nf] = True
            nf += 1
            n_alive += 1

    faces = np.empty((n_alive, 3), np.int64)
    normals = np.empty((n_alive, 3), np.int64)
    m = 0
    for f in range(nf):
        if alive[f]:
            faces[m] = fv[f]
            normals[m] = fn[f]
            m += 1
    # exact verification: non-degenerate faces, every point beneath or on every face plane, a closed surface
    # with Euler characteristic 2
    used = np.zeros(n, np.bool_)
    for f in range(m):
        if normals[f, 0] == 0 and normals[f, 1] == 0 and normals[f, 2] == 0:
            return faces, corner, 2
        a = faces[f, 0]
        d = normals[f, 0] * pts[a, 0] + normals[f, 1] * pts[a, 1] + normals[f, 2] * pts[a, 2]
        for i in range(n):
            if normals[f, 0] * pts[i, 0] + normals[f, 1] * pts[i, 1] + normals[f, 2] * pts[i, 2] > d:
                return faces, corner, 2
        for k in range(3):
            used[faces[f, k]] = True
    keys = np.empty(3 * m, np.int64)
    for f in range(m):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        keys[3 * f], keys[3 * f + 1], keys[3 * f + 2] = a * n + b, b * n + c, c * n + a
    sk = np.sort(keys)
    for e in range(3 * m):
        if e > 0 and sk[e] == sk[e - 1]:
            return faces, corner, 2
        rev = (sk[e] % n) * n + sk[e] // n
        pos = np.searchsorted(sk, rev)
        if pos >= 3 * m or sk[pos] != rev:
            return faces, corner, 2
    if m != 2 * int(used.sum()) - 4:
        return faces, corner, 2
    # corners: three pairwise non-parallel face normals meet there
    cnt = np.zeros(n, np.int64)
    d1 = np.zeros((n, 3), np.int64)
    d2 = np.zeros((n, 3), np.int64)
    for f in range(m):
        ax, ay, az = normals[f, 0], normals[f, 1], normals[f, 2]
        for k in range(3):
            v = faces[f, k]
            if cnt[v] == 0:
                d1[v, 0], d1[v, 1], d1[v, 2] = ax, ay, az
                cnt[v] = 1
            elif cnt[v] == 1:
                if not _parallel(ax, ay, az, d1[v, 0], d1[v, 1], d1[v, 2]):
                    d2[v, 0], d2[v, 1], d2[v, 2] = ax, ay, az
                    cnt[v] = 2
            elif cnt[v] == 2:
                if not _parallel(ax, ay, az, d1[v, 0], d1[v, 1], d1[v, 2]) and not _parallel(
                    ax, ay, az, d2[v, 0], d2[v, 1], d2[v, 2]
                ):
                    cnt[v] = 3
    for v in range(n):
        corner[v] = cnt[v] == 3
    return faces, corner, 0


@njit
def max_sq_distance(points: np.ndarray) -> float:
    """Largest squared Euclidean distance between two rows of ``points`` (n, 3) float64 (0 for n < 2)."""
    n = points.shape[0]
    best = 0.0
    for i in range(n):
        xi, yi, zi = points[i, 0], points[i, 1], points[i, 2]
        for j in range(i + 1, n):
            dx, dy, dz = points[j, 0] - xi, points[j, 1] - yi, points[j, 2] - zi
            d = dx * dx + dy * dy + dz * dz
            if d > best:
                best = d
    return best


@njit
def plane_extremes(pts: np.ndarray, axis: int) -> np.ndarray:
    """Mask of the points that are vertices of the 2D convex hull of their own plane ``pts[:, axis] == const``.

    ``pts`` (n, 3) int64, non-negative coordinates below 2**20. A point that is not extreme within its
    plane is not an extreme point of the whole set either, so dropping it leaves the 3D hull unchanged;
    collinear points on a hull edge are dropped too. Exact integer arithmetic (monotone chain per plane).
    """
    n = pts.shape[0]
    keep = np.zeros(n, np.bool_)
    if n == 0:
        return keep
    u_ax = 1 if axis == 0 else 0
    v_ax = 1 if axis == 2 else 2
    m = 1
    for i in range(n):
        for a in range(3):
            if pts[i, a] + 1 > m:
                m = pts[i, a] + 1
    key = np.empty(n, np.int64)
    for i in range(n):
        key[i] = (pts[i, axis] * m + pts[i, u_ax]) * m + pts[i, v_ax]
    order = np.argsort(key)
    hull = np.empty(2 * n + 2, np.int64)
    start = 0
    while start < n:
        stop = start + 1
        plane = pts[order[start], axis]
        while stop < n and pts[order[stop], axis] == plane:
            stop += 1
        cnt = stop - start
        if cnt <= 2:
            for t in range(start, stop):
                keep[order[t]] = True
        else:
            h = 0
            for sweep in range(2):  # lower chain left to right, then upper chain right to left
                base = h
                for t in range(cnt):
                    i = order[start + t] if sweep == 0 else order[stop - 1 - t]
                    while h >= base + 2:
                        a = hull[h - 2]
                        b = hull[h - 1]
                        cross = (pts[b, u_ax] - pts[a, u_ax]) * (pts[i, v_ax] - pts[a, v_ax]) - (
                            pts[b, v_ax] - pts[a, v_ax]
                        ) * (pts[i, u_ax] - pts[a, u_ax])
                        if cross > 0:
                            break
                        h -= 1
                    hull[h] = i
                    h += 1
                h -= 1  # the last point of a chain starts the other one
            for t in range(max(h, 1)):
                keep[hull[t]] = True
        start = stop
    return keep
