"""Compiled single-pass kernels behind the texture matrices (numba, via :func:`medlens.radiomics._jit.njit`).

Imported lazily by the family modules (inside their functions), so ``import medlens.radiomics`` does not import
numba. Every matrix kernel takes ``gp``, the grey array cropped to the ROI and zero-padded by ``pad`` voxels on
every side, as a C-contiguous int64 (z, y, x) array with 0 outside the ROI and levels 1..Ng inside (the callers
check the range: the kernels do not bounds-check their output indices). The padding must be at least the
neighbourhood reach of the kernel (1 for runs and zones, the distance for GLCM / NGTDM / NGLDM), so neighbours
are addressed by flat offsets without bounds checks. Slice indices in the outputs are those of the unpadded
array.

Floating-point sums (NGTDM ``s_i``) are accumulated in raster order, the order in which the previous vectorised
implementation (``np.bincount`` with weights) added the same terms, so the results are bit-identical.
"""

from __future__ import annotations

import numpy as np

from medlens.radiomics._jit import njit

__all__ = [
    "border_distance_2d",
    "border_distance_3d",
    "glcm_counts",
    "glrlm_counts",
    "glrlm_max_run",
    "label_zones_kernel",
    "ngldm_counts",
    "ngtdm_sums",
    "zone_min_distance",
]


@njit
def _flat_offsets(gp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Flat index offsets of (K, 3) voxel offsets in ``gp``."""
    _, ny, nx = gp.shape
    out = np.empty(offsets.shape[0], dtype=np.int64)
    for k in range(offsets.shape[0]):
        out[k] = (offsets[k, 0] * ny + offsets[k, 1]) * nx + offsets[k, 2]
    return out


@njit
def glcm_counts(
    gp: np.ndarray,
    pad: int,
    offsets: np.ndarray,
    plane_index: np.ndarray,
    m2: np.ndarray,
    m3: np.ndarray,
    symmetric: bool,
) -> None:
    """Add co-occurrence counts of all ``offsets`` (K, 3) in one pass over the ROI voxels (``pad`` >= reach).

    ``m3`` (K, Ng, Ng) receives the counts of offset k (leave it with zero rows to skip); ``m2`` (nz, P, Ng, Ng)
    the per-slice counts of the in-plane offsets, offset k going to direction ``plane_index[k]`` (-1: not
    in-plane; leave ``m2`` with zero slices to skip); both must be zero on entry. With ``symmetric`` each pair
    counts in both orders (counted once, then each matrix gets its transpose added).
    """
    nz, ny, nx = gp.shape
    f = gp.ravel()
    off = _flat_offsets(gp, offsets)
    want2 = m2.shape[0] > 0
    want3 = m3.shape[0] > 0
    ng = m3.shape[1] if want3 else m2.shape[2]
    ng2 = ng * ng
    f3 = m3.ravel()
    f2 = m2.ravel()
    n_plane = m2.shape[1]
    length = nx - 2 * pad
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            s = (z * ny + y) * nx + pad
            cur = f[s : s + length]
            for k in range(off.size):
                nb = f[s + off[k] : s + off[k] + length]  # row views: no wrap-around tests
                q = plane_index[k]
                base3 = k * ng2 - ng - 1  # the -ng - 1 turns levels 1..Ng into indices 0..Ng-1
                base2 = ((z - pad) * n_plane + q) * ng2 - ng - 1
                for x in range(length):
                    a = cur[x]
                    b = nb[x]
                    if a <= 0 or b <= 0:
                        continue
                    if want3:
                        f3[np.uint64(base3 + a * ng + b)] += 1
                    if want2 and q >= 0:
                        f2[np.uint64(base2 + a * ng + b)] += 1
    if symmetric:  # each pair in both orders: add the transpose of every matrix
        _add_transpose(m3.reshape(-1, ng, ng))
        _add_transpose(m2.reshape(-1, ng, ng))


@njit
def _add_transpose(m: np.ndarray) -> None:
    """In place, for a stack (k, n, n): m[i] <- m[i] + m[i].T."""
    for t in range(m.shape[0]):
        for a in range(m.shape[1]):
            for b in range(a, m.shape[2]):
                s = m[t, a, b] + m[t, b, a]
                m[t, a, b] = s
                m[t, b, a] = s


@njit
def _run_pass(
    gp: np.ndarray, pad: int, o: int, run: np.ndarray, h2: np.ndarray, q2: int, h3: np.ndarray, k: int
) -> None:
    """One raster pass along flat offset ``o`` > 0: run length so far at every ROI voxel, histogrammed.

    ``run[i]`` becomes the length of the run of equal levels along ``o`` that ends at voxel i, so far (1 more
    than at the predecessor i - o when that has the same level, else 1). Every voxel inside the padding is
    written (runs of 0 outside the ROI too, never counted), in raster order, so the predecessor's value is always
    from this pass: ``run`` must start as zeros (the padding keeps them) and needs no clearing between directions.
    Every ROI voxel of level v with run length n adds 1 to ``h3[k, v-1, n-1]`` (when ``k >= 0``) and
    ``h2[z, q2, v-1, n-1]`` (when ``q2 >= 0``): the number of runs at least n long.
    """
    nz, ny, nx = gp.shape
    f = gp.ravel()
    length = nx - 2 * pad
    h3f = h3.ravel()
    h2f = h2.ravel()
    w3 = h3.shape[2]
    w2 = h2.shape[3]
    base3 = k * h3.shape[1] * w3 - 1
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            s = (z * ny + y) * nx + pad
            cur = f[s : s + length]  # row views indexed by the loop counter (no wrap-around tests)
            prev = f[s - o : s - o + length]
            rcur = run[s : s + length]
            rprev = run[s - o : s - o + length]
            for x in range(length):  # branch-free: zero runs outside the ROI are counted too, and never used
                rcur[x] = rprev[x] + 1 if prev[x] == cur[x] else 1
            if k >= 0:
                for x in range(length):
                    v = cur[x]
                    if v > 0:
                        h3f[np.uint64(base3 + (v - 1) * w3 + rcur[x])] += 1  # unsigned: no wrap-around test
            if q2 >= 0:
                base2 = ((z - pad) * h2.shape[1] + q2) * h2.shape[2] * w2 - 1
                for x in range(length):
                    v = cur[x]
                    if v > 0:
                        h2f[np.uint64(base2 + (v - 1) * w2 + rcur[x])] += 1


@njit
def glrlm_max_run(gp: np.ndarray, pad: int, dirs: np.ndarray) -> int:
    """Longest run of equal levels along any of the unit directions ``dirs`` (K, 3) (``pad`` >= 1); 0 if none."""
    f = gp.ravel()
    off = _flat_offsets(gp, dirs)
    run = np.zeros(f.size, dtype=np.int32)
    h2 = np.zeros((0, 1, 1, 1), dtype=np.int64)
    h3 = np.zeros((0, 1, 1), dtype=np.int64)
    best = 0
    for k in range(off.size):
        _run_pass(gp, pad, off[k], run, h2, -1, h3, -1)
        for i in range(f.size):
            if f[i] > 0 and run[i] > best:
                best = run[i]
    return best


@njit
def _runs_from_at_least(h: np.ndarray) -> int:
    """In place: counts of runs at least n long (last axis) -> exactly n long; returns the longest n (0: none)."""
    w = h.shape[-1]
    flat = h.reshape(-1, w)
    best = 0
    for r in range(flat.shape[0]):
        for j in range(w - 1):
            flat[r, j] -= flat[r, j + 1]
        for j in range(w - 1, best - 1, -1):
            if flat[r, j] != 0:
                best = j + 1
                break
    return best


@njit
def glrlm_counts(
    gp: np.ndarray, pad: int, dirs: np.ndarray, plane_index: np.ndarray, m2: np.ndarray, m3: np.ndarray
) -> int:
    """Add run-length counts along the unit directions ``dirs`` (K, 3) (``pad`` >= 1); returns the longest run.

    A run of level v and length n along direction k adds 1 to ``m3[k, v-1, n-1]`` (unless ``m3`` has zero rows)
    and, for an in-plane direction (``plane_index[k] >= 0``), to ``m2[z, plane_index[k], v-1, n-1]`` (unless
    ``m2`` has zero slices). ``m2`` and ``m3`` must be zero on entry and their run-length axes must hold the
    longest run (:func:`glrlm_max_run`, or the longest line through the array). One raster pass per direction:
    a run at least n long has exactly one voxel at which the run so far is n long, so the histogram of those
    lengths, differenced along n, counts the runs of each length (no run-end test, no branch per run).
    """
    f = gp.ravel()
    off = _flat_offsets(gp, dirs)
    want2 = m2.shape[0] > 0
    want3 = m3.shape[0] > 0
    run = np.zeros(f.size, dtype=np.int32)
    for k in range(off.size):
        _run_pass(gp, pad, off[k], run, m2, plane_index[k] if want2 else -1, m3, k if want3 else -1)
    best = 0
    if want3:
        best = max(best, _runs_from_at_least(m3))
    if want2:
        best = max(best, _runs_from_at_least(m2))
    return best


@njit
def _find(parent: np.ndarray, i: int) -> int:
    """Root of i, with full path compression. Indices are cast to unsigned: no wrap-around test."""
    r = i
    p = parent[np.uint64(r)]
    while p != r:
        r = p
        p = parent[np.uint64(r)]
    while i != r:
        p = parent[np.uint64(i)]
        parent[np.uint64(i)] = r
        i = p
    return r


@njit
def _backward_neighbours(ny: int, nx: int, three_d: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flat offsets o > 0 of the already visited neighbours (13 in 3D, 4 in-plane) and their adjacency bit masks,
    the neighbours adjacent to the most others first."""
    cells = []
    for dz in range(-1, 1) if three_d else range(0, 1):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                if (dz * ny + dy) * nx + dx < 0:
                    cells.append((dz, dy, dx))
    n = len(cells)
    deg = np.zeros(n, dtype=np.int64)
    for a in range(n):
        for b in range(n):
            if (
                a != b
                and max(abs(cells[a][0] - cells[b][0]), abs(cells[a][1] - cells[b][1]), abs(cells[a][2] - cells[b][2]))
                <= 1
            ):
                deg[a] += 1
    order = np.argsort(-deg, kind="mergesort")
    off = np.empty(n, dtype=np.int64)
    adj = np.zeros(n, dtype=np.int64)
    for ka in range(n):
        ca = cells[order[ka]]
        off[ka] = -((ca[0] * ny + ca[1]) * nx + ca[2])
        for kb in range(n):
            cb = cells[order[kb]]
            if ka != kb and max(abs(ca[0] - cb[0]), abs(ca[1] - cb[1]), abs(ca[2] - cb[2])) <= 1:
                adj[ka] |= 1 << kb
    return off, adj


@njit
def label_zones_kernel(
    gp: np.ndarray, pad: int, three_d: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Connected zones of equal level, all levels in one union-find pass (``pad`` >= 1).

    Zones are 26-connected (``three_d``) or 8-connected within a slice, and numbered 1..n in raster order of
    their first voxel. Each ROI voxel is joined with its already visited neighbours of the same level (13 in 3D,
    4 in-plane), a zone's root being its first voxel; a second raster pass numbers the roots. Returns (labels,
    shaped like ``gp``, 0 outside the ROI; level; size; flat index in ``gp`` of the first voxel), the last three
    of length n + 1 with entry 0 unused (0).
    """
    nz, ny, nx = gp.shape
    f = gp.ravel()
    off, adj = _backward_neighbours(ny, nx, three_d)
    parent = np.empty(f.size, dtype=np.int64)
    length = nx - 2 * pad
    n_vox = 0
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            s = (z * ny + y) * nx + pad
            cur = f[s : s + length]
            for x in range(length):
                v = cur[x]
                if v <= 0:
                    continue
                i = s + x
                n_vox += 1
                parent[np.uint64(i)] = i
                ri = i  # the root of i's tree, kept up to date
                joined = 0  # bit k: neighbour k has level v (so it is in i's zone now)
                for k in range(off.size):
                    if adj[k] & joined:
                        continue  # adjacent to a joined neighbour: if it has level v it is in that zone already
                    q = i - off[k]
                    if f[np.uint64(q)] != v:
                        continue
                    joined |= 1 << k
                    rq = _find(parent, q)
                    if rq < ri:
                        parent[np.uint64(ri)] = rq
                        ri = rq
                    elif ri < rq:
                        parent[np.uint64(rq)] = ri
    lab = np.zeros(f.size, dtype=np.int64)
    level = np.zeros(n_vox + 1, dtype=np.int64)
    size = np.zeros(n_vox + 1, dtype=np.int64)
    first = np.zeros(n_vox + 1, dtype=np.int64)
    n = 0
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            s = (z * ny + y) * nx + pad
            cur = f[s : s + length]
            for x in range(length):
                if cur[x] <= 0:
                    continue
                i = s + x
                r = _find(parent, i)
                if r == i:
                    n += 1
                    lab[np.uint64(i)] = n
                    level[n] = cur[x]
                    first[n] = i
                    size[n] += 1
                else:
                    lr = lab[np.uint64(r)]
                    lab[np.uint64(i)] = lr
                    size[np.uint64(lr)] += 1
    return lab.reshape(gp.shape), level[: n + 1].copy(), size[: n + 1].copy(), first[: n + 1].copy()


@njit
def zone_min_distance(labels_p: np.ndarray, pad: int, dist: np.ndarray, n: int) -> np.ndarray:
    """Per zone (length n + 1, entry 0 = 0) the smallest positive ``dist`` over its voxels; 1 when it has none.

    ``labels_p`` is ``dist``'s grid zero-padded by ``pad``.
    """
    big = np.iinfo(np.int64).max
    out = np.full(n + 1, big, dtype=np.int64)
    nz, ny, nx = dist.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                d = dist[z, y, x]
                lab = labels_p[z + pad, y + pad, x + pad]
                if lab > 0 and d > 0 and d < out[lab]:
                    out[lab] = d
    out[0] = 0
    for i in range(1, n + 1):
        if out[i] == big:
            out[i] = 1
    return out


@njit
def _row_sums(f: np.ndarray, start: int, length: int, nx: int, ny: int, d: int, planes: bool, tot, cnt) -> None:
    """Add, for each voxel of the row ``f[start:start+length]``, the sum and count (value > 0) of its Chebyshev
    ``d`` neighbours: in-plane ones (centre excluded) unless ``planes``, else those of the other slices."""
    for dz in range(-d, d + 1) if planes else range(0, 1):
        if planes and dz == 0:
            continue
        for dy in range(-d, d + 1):
            for dx in range(-d, d + 1):
                if not planes and dy == 0 and dx == 0:
                    continue
                s0 = start + (dz * ny + dy) * nx + dx
                nb = f[s0 : s0 + length]  # views indexed by the loop counter: no wrap-around test, vectorised
                for x in range(length):
                    b = nb[x]
                    tot[x] += b  # 0 outside the ROI
                    cnt[x] += 1 if b > 0 else 0


@njit
def ngtdm_sums(gp: np.ndarray, pad: int, distance: int, m2: np.ndarray, m3: np.ndarray) -> None:
    """Add NGTDM (n_i, s_i) of every ROI voxel with at least one ROI neighbour within Chebyshev ``distance``.

    ``m2`` (nz, Ng, 2): in-plane neighbourhoods per slice; ``m3`` (Ng, 2): 3D neighbourhoods (leave either with
    zero rows to skip it). ``s_i`` adds |level - mean of the neighbours| in raster order. ``pad`` >= distance.
    Neighbour sums are accumulated a row at a time (contiguous, vectorisable loops).
    """
    nz, ny, nx = gp.shape
    f = gp.ravel()
    want2 = m2.shape[0] > 0
    want3 = m3.shape[0] > 0
    length = nx - 2 * pad
    tot = np.zeros(length, dtype=np.int64)
    cnt = np.zeros(length, dtype=np.int64)
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            start = (z * ny + y) * nx + pad
            any_roi = False
            for x in range(length):
                if f[start + x] > 0:
                    any_roi = True
                    break
            if not any_roi:
                continue
            tot[:] = 0
            cnt[:] = 0
            _row_sums(f, start, length, nx, ny, distance, False, tot, cnt)
            if want2:
                for x in range(length):
                    v = f[start + x]
                    if v > 0 and cnt[x] > 0:
                        m2[z - pad, v - 1, 0] += 1.0
                        m2[z - pad, v - 1, 1] += abs(v - tot[x] / cnt[x])
            if want3:
                _row_sums(f, start, length, nx, ny, distance, True, tot, cnt)
                for x in range(length):
                    v = f[start + x]
                    if v > 0 and cnt[x] > 0:
                        m3[v - 1, 0] += 1.0
                        m3[v - 1, 1] += abs(v - tot[x] / cnt[x])


@njit
def _row_deps(f: np.ndarray, start: int, length: int, nx: int, ny: int, d: int, alpha: int, planes: bool, dep) -> None:
    """Add, for each voxel of the row, its Chebyshev ``d`` ROI neighbours within ``alpha`` levels (in-plane ones,
    centre excluded, unless ``planes``, else those of the other slices)."""
    cen = f[start : start + length]
    for dz in range(-d, d + 1) if planes else range(0, 1):
        if planes and dz == 0:
            continue
        for dy in range(-d, d + 1):
            for dx in range(-d, d + 1):
                if not planes and dy == 0 and dx == 0:
                    continue
                s0 = start + (dz * ny + dy) * nx + dx
                nb = f[s0 : s0 + length]  # views indexed by the loop counter: no wrap-around test, vectorised
                for x in range(length):
                    b = nb[x]
                    dep[x] += 1 if (b > 0 and abs(b - cen[x]) <= alpha) else 0


@njit
def ngldm_counts(
    gp: np.ndarray, pad: int, distance: int, alpha: int, m2: np.ndarray, m3: np.ndarray
) -> tuple[int, int]:
    """Add NGLDM dependence counts; returns the largest 2D and 3D dependence (0 when not computed).

    The dependence of a ROI voxel is 1 plus its ROI neighbours within Chebyshev ``distance`` whose level differs
    by at most ``alpha``: in-plane into ``m2[z, v-1, dep-1]`` (nz, Ng, (2d+1)^2), 3D into ``m3[v-1, dep-1]``
    (Ng, (2d+1)^3); leave either with zero rows to skip it. ``pad`` >= distance. Row at a time, as NGTDM.
    """
    nz, ny, nx = gp.shape
    f = gp.ravel()
    want2 = m2.shape[0] > 0
    want3 = m3.shape[0] > 0
    length = nx - 2 * pad
    dep = np.zeros(length, dtype=np.int64)
    max2 = 0
    max3 = 0
    for z in range(pad, nz - pad):
        for y in range(pad, ny - pad):
            start = (z * ny + y) * nx + pad
            any_roi = False
            for x in range(length):
                if f[start + x] > 0:
                    any_roi = True
                    break
            if not any_roi:
                continue
            dep[:] = 1
            _row_deps(f, start, length, nx, ny, distance, alpha, False, dep)
            if want2:
                for x in range(length):
                    v = f[start + x]
                    if v > 0:
                        m2[z - pad, v - 1, dep[x] - 1] += 1
                        max2 = max(max2, dep[x])
            if want3:
                _row_deps(f, start, length, nx, ny, distance, alpha, True, dep)
                for x in range(length):
                    v = f[start + x]
                    if v > 0:
                        m3[v - 1, dep[x] - 1] += 1
                        max3 = max(max3, dep[x])
    return max2, max3


@njit
def _chamfer_2d(mask: np.ndarray, out: np.ndarray, chebyshev: bool) -> None:
    """Exact city-block (or chessboard) distance of each mask pixel to the nearest non-mask pixel, in ``out``.

    Pixels beyond the array edge count as outside, so edge pixels of the mask get 1.
    """
    ny, nx = mask.shape
    big = ny + nx + 2
    for y in range(ny):
        for x in range(nx):
            if not mask[y, x]:
                continue
            if y == 0 or x == 0 or y == ny - 1 or x == nx - 1:
                out[y, x] = 1
                continue
            d = min(big, out[y - 1, x] + 1, out[y, x - 1] + 1)
            if chebyshev:
                d = min(d, out[y - 1, x - 1] + 1, out[y - 1, x + 1] + 1)
            out[y, x] = d
    for y in range(ny - 1, -1, -1):
        for x in range(nx - 1, -1, -1):
            d = out[y, x]
            if d <= 1:
                continue
            d = min(d, out[y + 1, x] + 1, out[y, x + 1] + 1)
            if chebyshev:
                d = min(d, out[y + 1, x + 1] + 1, out[y + 1, x - 1] + 1)
            out[y, x] = d


@njit
def border_distance_2d(mask: np.ndarray, chebyshev: bool) -> np.ndarray:
    """Per-slice distance (z, y, x) int64 of each mask voxel to the slice's mask border: 1 on the border."""
    out = np.zeros(mask.shape, dtype=np.int64)
    for z in range(mask.shape[0]):
        _chamfer_2d(mask[z], out[z], chebyshev)
    return out


@njit
def border_distance_3d(mask: np.ndarray, chebyshev: bool) -> np.ndarray:
    """Distance (z, y, x) int64 of each mask voxel to the mask border (6- or 26-connected steps), 1 on the border.

    Two raster passes (forward with the already visited neighbours, backward with the others): exact for the
    city-block and chessboard metrics.
    """
    nz, ny, nx = mask.shape
    out = np.zeros((nz, ny, nx), dtype=np.int64)
    big = nz + ny + nx + 3
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not mask[z, y, x]:
                    continue
                if z == 0 or y == 0 or x == 0 or z == nz - 1 or y == ny - 1 or x == nx - 1:
                    out[z, y, x] = 1
                    continue
                d = big
                if chebyshev:
                    for dz in range(-1, 1):
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                if dz == 0 and (dy > 0 or (dy == 0 and dx >= 0)):
                                    continue
                                d = min(d, out[z + dz, y + dy, x + dx] + 1)
                else:
                    d = min(d, out[z - 1, y, x] + 1, out[z, y - 1, x] + 1, out[z, y, x - 1] + 1)
                out[z, y, x] = d
    for z in range(nz - 1, -1, -1):
        for y in range(ny - 1, -1, -1):
            for x in range(nx - 1, -1, -1):
                d = out[z, y, x]
                if d <= 1:
                    continue
                if chebyshev:
                    for dz in range(0, 2):
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                if dz == 0 and (dy < 0 or (dy == 0 and dx <= 0)):
                                    continue
                                d = min(d, out[z + dz, y + dy, x + dx] + 1)
                else:
                    d = min(d, out[z + 1, y, x] + 1, out[z, y + 1, x] + 1, out[z, y, x + 1] + 1)
                out[z, y, x] = d
    return out
