"""Morphological features (IBSI 1, "Morphological features"), tags ``morph_*``.

Shape comes from the morphological mask: a triangle mesh from marching cubes (level 0.5) on the
zero-padded mask, in mm. Intensity-weighted features (centre-of-mass shift, integrated
intensity, Moran's I, Geary's C) read the intensity mask.

Moran's I and Geary's C are exact: their double sums over voxel pairs with inverse-distance
weights are bilinear forms of the ROI with a ``1/distance`` kernel, evaluated by Parseval from
three zero-padded FFTs over the bounding box (O(M log M) instead of O(N^2)). The minimum-volume
enclosing ellipsoid is iterated to convergence (Khachiyan with drop steps, compiled).

The oriented minimum bounding box (``morph_*_dens_ombb``) is APPROXIMATED: the smallest of the
principal-axes box and the boxes with one face flush with a convex-hull face (minimum-area
rectangle of the projection by rotating calipers). This is an upper bound of the true minimal box
volume (exact minimal boxes need O'Rourke's algorithm); IBSI publishes no reference value for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medlens.radiomics.texture._common import bbox

__all__ = ["MORPH_TAGS", "moran_geary", "morphology_features"]

MORPH_TAGS = (
    "morph_volume morph_vol_approx morph_area_mesh morph_av morph_comp_1 morph_comp_2 morph_sph_dispr "
    "morph_sphericity morph_asphericity morph_com morph_diam morph_pca_maj_axis morph_pca_min_axis "
    "morph_pca_least_axis morph_pca_elongation morph_pca_flatness morph_vol_dens_aabb morph_area_dens_aabb "
    "morph_vol_dens_ombb morph_area_dens_ombb morph_vol_dens_aee morph_area_dens_aee morph_vol_dens_mvee "
    "morph_area_dens_mvee morph_vol_dens_conv_hull morph_area_dens_conv_hull morph_integ_int morph_moran_i "
    "morph_geary_c"
).split()


def _div(a: float, b: float) -> float:
    return float(a / b) if b != 0 and np.isfinite(b) else math.nan


def _mesh(mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching-cubes mesh (level 0.5) of the zero-padded mask: vertices in mm, faces, vertices in crop index units.

    The index-unit vertices lie on edge midpoints of the padded crop (multiples of 0.5), which the exact
    convex hull (:func:`_convex_hull`) relies on; the mm vertices are those times the spacing plus the origin.
    """
    from skimage.measure import marching_cubes

    idx = np.nonzero(mask)
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    padded = np.pad(crop.astype(np.float64), 1)
    verts_idx, faces, _, _ = marching_cubes(padded, level=0.5)
    # the same product marching_cubes forms when given the spacing, so the mm mesh is unchanged
    verts = verts_idx * np.r_[tuple(float(s) for s in spacing)]
    verts = verts + (np.asarray(lo, np.float64) - 1.0) * np.asarray(spacing)
    return verts, faces, verts_idx


def _legendre(nu: int, t: float) -> float:
    """Legendre polynomial ``P_nu(t)`` by Bonnet's recurrence (any real ``t``; here ``t >= 1``)."""
    p_prev, p = 1.0, t
    if nu == 0:
        return p_prev
    for k in range(1, nu):
        p_prev, p = p, ((2 * k + 1) * t * p - k * p_prev) / (k + 1)
    return p


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Surface area of an ellipsoid with semi-axes ``a >= b >= c`` (Legendre series, 20 terms, IBSI)."""
    if a <= 0:
        return math.nan
    alpha = math.sqrt(max(0.0, 1.0 - (b / a) ** 2))
    beta = math.sqrt(max(0.0, 1.0 - (c / a) ** 2))
    ab = max(alpha * beta, 1e-12)
    t = (alpha**2 + beta**2) / (2.0 * ab)
    s = 0.0
    for nu in range(21):
        s += ab**nu / (1.0 - 4.0 * nu**2) * _legendre(nu, t)
    return 4.0 * math.pi * a * b * s


def _mvee(points: np.ndarray, tol: float = 1e-4, max_iter: int = 20000) -> tuple[np.ndarray, np.ndarray] | None:
    """Minimum-volume enclosing ellipsoid ``(x - c)^T A (x - c) <= 1`` (Khachiyan with Todd-Yildirim drop steps).

    The weights come from the compiled :func:`medlens.radiomics._kernels.mvee_weights`; stops when both
    excesses ``|m - d - 1| / (d + 1)`` are below ``tol`` or after ``max_iter`` iterations.
    """
    from medlens.radiomics._kernels import mvee_weights

    n, d = points.shape
    if n <= d:
        return None
    points = np.ascontiguousarray(points, dtype=np.float64)
    u, iterations = mvee_weights(points, float(tol), int(max_iter))
    if iterations < 0:
        return None
    c = points.T @ u
    cov = points.T @ (u[:, None] * points) - np.outer(c, c)
    try:
        a = np.linalg.inv(cov) / d
    except np.linalg.LinAlgError:
        return None
    # scale so that every point is enclosed exactly (removes the residual of the stopping rule)
    r = points - c
    a = a / max(1.0, float(np.max(np.einsum("ij,jk,ik->i", r, a, r))))
    return a, c


def _ombb(
    hull_points: np.ndarray, face_normals: np.ndarray, face_areas: np.ndarray, max_normals: int = 64
) -> tuple[float, float, float] | None:
    """Edge lengths of a small oriented bounding box of a convex point set.

    Candidates: the principal-axes box, the axis-aligned box, and for every distinct hull-face normal the box with one
    face on that hull face whose other two axes form the minimum-area rectangle of the projection
    (rotating calipers over the edges of the projected 2D hull). The smallest volume wins. This is
    the usual "face-flush" approximation of the minimal box (exact in 2D, an upper bound in 3D).
    Only the ``max_normals`` directions with the largest total hull-face area are tried, which
    bounds the cost on finely tessellated hulls.
    """
    centred = hull_points - hull_points.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov(centred.T))
    proj = centred @ vecs
    e = proj.max(axis=0) - proj.min(axis=0)
    best = (float(np.prod(e)), (float(e[0]), float(e[1]), float(e[2])))
    e = centred.max(axis=0) - centred.min(axis=0)  # the axis-aligned box is a candidate too
    if float(np.prod(e)) < best[0]:
        best = (float(np.prod(e)), (float(e[0]), float(e[1]), float(e[2])))
    unit = face_normals / np.linalg.norm(face_normals, axis=1, keepdims=True)
    # n and -n give the same box: keep one sign (first non-zero component positive)
    first = unit[np.arange(unit.shape[0]), np.argmax(np.abs(unit) > 1e-9, axis=1)]
    unit = unit * np.where(first < 0, -1.0, 1.0)[:, None]
    normals, inverse = np.unique(np.round(unit, 6), axis=0, return_inverse=True)
    area_per_normal = np.bincount(inverse.ravel(), weights=face_areas, minlength=normals.shape[0])
    normals = normals[np.argsort(-area_per_normal)[:max_normals]]
    from medlens.radiomics._kernels import face_flush_boxes

    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    vol, e1, e2, height = face_flush_boxes(np.ascontiguousarray(centred, dtype=np.float64), normals)
    if vol < best[0]:
        best = (float(vol), (float(e1), float(e2), float(height)))
    return best[1]


def _max_distance(points: np.ndarray) -> float:
    """Largest pairwise distance (compiled O(n^2) loop over the hull vertices, no n x n matrix)."""
    from medlens.radiomics._kernels import max_sq_distance

    return math.sqrt(max_sq_distance(np.ascontiguousarray(points, dtype=np.float64)))


@dataclass(frozen=True)
class _Hull:
    vertices: np.ndarray  # indices of the extreme points
    simplices: np.ndarray  # (m, 3) triangles
    normals: np.ndarray  # (m, 3) outward unit normals (mm space)
    face_areas: np.ndarray  # (m,) mm^2
    volume: float
    area: float


def _convex_hull(verts_mm: np.ndarray, verts_idx: np.ndarray) -> _Hull | None:
    """Exact convex hull of the mesh, from its half-integer index coordinates (None: use Qhull instead).

    The combinatorics come from :func:`medlens.radiomics._kernels.lattice_hull` on twice the index
    coordinates (integers, exact predicates: no tolerance, no merging of facets); volume, area and normals
    are then computed from the mm vertices. An anisotropic spacing is a positive diagonal scaling, which
    maps the hull of the index points onto the hull of the mm points.
    """
    from medlens.radiomics._kernels import lattice_hull, plane_extremes

    twice = np.asarray(verts_idx, dtype=np.float64) * 2.0
    pts = np.rint(twice)
    if pts.size == 0 or not np.array_equal(pts, twice) or float(np.abs(pts).max()) >= 2.0**20:
        return None
    pts = pts.astype(np.int64)
    # An extreme point of the set is extreme within any subset holding it, in particular within its own
    # axis-aligned plane: keep only the vertices of every plane's 2D hull, along each axis in turn.
    keep = np.arange(pts.shape[0], dtype=np.int64)
    for axis in (0, 1, 2):
        keep = keep[plane_extremes(np.ascontiguousarray(pts[keep]), axis)]
    sub = np.ascontiguousarray(pts[keep])
    order = np.random.default_rng(0).permutation(sub.shape[0]).astype(np.int64)
    faces, corner, status = lattice_hull(sub, order)
    if status != 0:
        return None
    simplices = keep[faces]
    tri = verts_mm[simplices]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    volume = abs(float(np.sum(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))))) / 6.0
    length = np.linalg.norm(normals, axis=1)
    area = float(np.sum(length)) / 2.0
    return _Hull(np.sort(keep[corner]), simplices, normals / length[:, None], 0.5 * length, volume, area)


def _qhull(verts: np.ndarray) -> _Hull | None:
    """The same hull from Qhull (scipy), for meshes whose vertices are not on the half-voxel lattice."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(verts)
    except QhullError:
        return None
    tri = verts[hull.simplices]
    face_areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return _Hull(
        np.asarray(hull.vertices),
        np.asarray(hull.simplices),
        np.asarray(hull.equations[:, :3]),
        face_areas,
        float(hull.volume),
        float(hull.area),
    )


def _next_even_5_smooth(n: int) -> int:
    """Smallest even ``m >= n`` whose only prime factors are 2, 3 and 5 (a fast real-FFT length)."""
    best = 0
    p2 = 2
    while p2 < 2 * n:
        p3 = p2
        while p3 < 2 * n:
            m = p3
            while m < n:
                m *= 5
            if best == 0 or m < best:
                best = m
            p3 *= 3
        p2 *= 2
    return best if best else 2


def _dct1(x: np.ndarray, axis: int) -> np.ndarray:
    """Unnormalised DCT-I along ``axis`` (``scipy.fft.dct(type=1)``), as the real FFT of the even extension."""
    n = x.shape[axis]
    if n < 2:
        return x.copy()
    inner = np.flip(np.take(x, np.arange(1, n - 1), axis=axis), axis=axis)
    return np.ascontiguousarray(np.fft.rfft(np.concatenate([x, inner], axis=axis), axis=axis).real)


def moran_geary(values: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    """Exact Moran's I and Geary's C with weights ``1 / distance_mm`` over all voxel pairs of ``mask``.

    Parameters
    ----------
    values
        Intensities on the same grid as ``mask``.
    mask
        Intensity mask (bool).
    spacing
        Voxel size ``(dz, dy, dx)`` in mm.
    """
    n = int(mask.sum())
    if n < 2:
        return math.nan, math.nan
    sl = bbox(mask)
    msk = mask[sl]
    # only ROI voxels enter the sums: work on the vectors of ROI values (C order), not on box-sized copies
    yv = np.asarray(values[sl][msk], dtype=np.float64)
    yv = yv - float(yv.mean())
    shp = msk.shape
    # The kernel w(d) = 1/|d| is even in every axis, so a circular correlation of period L >= 2n-2
    # (even L) is exact: offsets d and d - L only coincide for d = n-1 = -(n-1) + L, where w is the
    # same. For an even kernel the DFT of its period-L even extension is real and equals the DCT-I of
    # one octant (offsets 0..L/2, zero beyond n-1): ~1/8 of the work of a full forward FFT of the
    # kernel, and a real (not complex) spectrum, which halves its memory.
    lengths = []
    for s_ in shp:
        n_fft = _next_even_5_smooth(max(2 * s_ - 2, 2))
        lengths.append(n_fft)
    size = tuple(lengths)
    # Single precision halves time and memory; the sums below are accumulated in float64 and the
    # result agrees with double precision to ~1e-7 relative on the IBSI phantom (far inside tolerance).
    octant = np.zeros(tuple(n_fft // 2 + 1 for n_fft in size), np.float32)
    k = octant[tuple(slice(0, s_) for s_ in shp)]
    for ax, (s_, sp) in enumerate(zip(shp, spacing)):
        g = ((np.arange(s_, dtype=np.float64) * sp) ** 2).astype(np.float32)
        k += g.reshape([-1 if a == ax else 1 for a in range(3)])
    k[0, 0, 0] = 1.0
    np.sqrt(k, out=k)
    np.divide(np.float32(1.0), k, out=k)
    k[0, 0, 0] = 0.0  # no self-pair
    kf_half = octant
    for ax in range(3):
        kf_half = _dct1(kf_half, ax)
    del octant, k
    # Only three sums over voxel pairs are needed, each a bilinear form <a, K * b> of ROI vectors. By
    # Parseval it equals sum_f K_f Re(conj(A_f) B_f) / L over the spectrum (K is real and even), so three
    # forward transforms and no inverse one give all of them; the compiled kernel reads K_f from the
    # octant (frequencies f and L - f share a value) and accumulates in float64.
    from medlens.radiomics._kernels import spectral_forms

    # Work buffers shared by the three transforms: fresh pages are costly (a page fault per 4 KiB on first
    # touch), and the two spectra that must coexist are the only full-size arrays.
    box = np.empty(shp, np.float32)
    lines_x = np.empty((shp[0], shp[1], size[2] // 2 + 1), np.complex64)
    lines_y = np.empty((shp[0], size[1], size[2] // 2 + 1), np.complex64)

    def spectrum(a: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
        """rfftn on the FFT grid of the ROI indicator (``a is None``) or of ROI values ``a`` (zero elsewhere).

        Axis by axis, transforming only the lines that can hold non-zero values (the box), with the
        zero padding implied by ``n``: about 60 % of the work of a transform of the padded array.
        """
        box.fill(0.0)
        box[msk] = 1.0 if a is None else a
        # (numpy's stubs type `out` as complex128; single precision is supported since numpy 2.0)
        np.fft.rfft(box, n=size[2], axis=2, out=lines_x)  # type: ignore[arg-type]
        np.fft.fft(lines_x, n=size[1], axis=1, out=lines_y)  # type: ignore[arg-type]
        if out is None:
            out = np.empty((size[0], size[1], size[2] // 2 + 1), np.complex64)
        return np.fft.fft(lines_y, n=size[0], axis=0, out=out)

    y2 = yv**2
    f_ind = spectrum(None)
    f_y2 = spectrum(y2)
    w_sum, sq = spectral_forms(kf_half, f_ind, f_y2, size[0], size[1])
    del f_y2
    f_val = spectrum(yv, out=f_ind)
    cross, _ = spectral_forms(kf_half, f_val, f_val, size[0], size[1])
    del f_val, f_ind
    norm = float(np.prod(size))
    w_sum, sq, cross = w_sum / norm, sq / norm, cross / norm
    ss = float(np.sum(y2))
    if ss <= 0 or w_sum <= 0:
        return math.nan, math.nan
    moran = n / w_sum * cross / ss
    geary_num = 2.0 * sq - 2.0 * cross
    geary = (n - 1) * geary_num / (2.0 * w_sum * ss)
    return float(moran), float(geary)


def morphology_features(
    image: np.ndarray, morph_mask: np.ndarray, int_mask: np.ndarray, spacing_mm: tuple[float, ...]
) -> dict[str, float]:
    """All ``morph_*`` features (3D). NaN where a feature is undefined (e.g. PCA of one voxel)."""
    out = {t: math.nan for t in MORPH_TAGS}
    if not morph_mask.any():
        return out
    sp = tuple(float(s) for s in spacing_mm)
    verts, faces, verts_idx = _mesh(morph_mask, sp)
    tri = verts[faces]
    cross = np.cross(tri[:, 1], tri[:, 2])
    vol = abs(float(np.sum(np.einsum("ij,ij->i", tri[:, 0], cross))) / 6.0)
    area = float(np.sum(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)) / 2.0)
    out["morph_volume"] = vol
    out["morph_vol_approx"] = float(morph_mask.sum()) * float(np.prod(sp))
    out["morph_area_mesh"] = area
    out["morph_av"] = _div(area, vol)
    out["morph_comp_1"] = _div(vol, math.sqrt(math.pi) * area**1.5)
    out["morph_comp_2"] = _div(36.0 * math.pi * vol**2, area**3)
    sph = (36.0 * math.pi * vol**2) ** (1.0 / 3.0)
    out["morph_sph_dispr"] = _div(area, sph)
    out["morph_sphericity"] = _div(sph, area)
    out["morph_asphericity"] = _div(area**3, 36.0 * math.pi * vol**2) ** (1.0 / 3.0) - 1.0

    from medlens.radiomics._kernels import mask_moments

    # bounding box of the morphological mask (the intensity mask lies inside it)
    box_t = bbox(morph_mask)
    # positions (mm) in the box frame: the centre-of-mass shift and the PCA do not depend on the origin
    n_m, mean_m, cov_m, n_i, v_sum, vp = mask_moments(
        np.ascontiguousarray(image[box_t], dtype=np.float64),
        np.ascontiguousarray(morph_mask[box_t]),
        np.ascontiguousarray(int_mask[box_t]),
        np.asarray(sp, dtype=np.float64),
    )
    if n_i and v_sum != 0:
        out["morph_com"] = float(np.linalg.norm(mean_m - vp / v_sum))
    if n_i:
        out["morph_integ_int"] = vol * v_sum / n_i

    # PCA of the morphological-mask voxel positions
    if n_m >= 2:
        lam = np.sort(np.linalg.eigvalsh(cov_m))[::-1]
        lam = np.clip(lam, 0.0, None)
        out["morph_pca_maj_axis"] = 4.0 * math.sqrt(lam[0])
        out["morph_pca_min_axis"] = 4.0 * math.sqrt(lam[1])
        out["morph_pca_least_axis"] = 4.0 * math.sqrt(lam[2])
        out["morph_pca_elongation"] = math.sqrt(_div(lam[1], lam[0])) if lam[0] > 0 else math.nan
        out["morph_pca_flatness"] = math.sqrt(_div(lam[2], lam[0])) if lam[0] > 0 else math.nan
        a, b, c = (2.0 * math.sqrt(v) for v in lam)
        if a > 0 and b > 0 and c > 0:
            out["morph_vol_dens_aee"] = _div(vol, 4.0 * math.pi * a * b * c / 3.0)
            out["morph_area_dens_aee"] = _div(area, _ellipsoid_area(a, b, c))

    ext = verts.max(axis=0) - verts.min(axis=0)
    out["morph_vol_dens_aabb"] = _div(vol, float(np.prod(ext)))
    out["morph_area_dens_aabb"] = _div(area, 2.0 * float(ext[0] * ext[1] + ext[0] * ext[2] + ext[1] * ext[2]))

    hull = _convex_hull(verts, verts_idx) or _qhull(verts)
    if hull is not None:
        hv = verts[hull.vertices]
        out["morph_vol_dens_conv_hull"] = _div(vol, hull.volume)
        out["morph_area_dens_conv_hull"] = _div(area, hull.area)
        out["morph_diam"] = _max_distance(hv)
        obox = _ombb(hv, hull.normals, hull.face_areas)
        e = np.asarray(obox) if obox is not None else np.full(3, np.nan)
        out["morph_vol_dens_ombb"] = _div(vol, float(np.prod(e)))
        out["morph_area_dens_ombb"] = _div(area, 2.0 * float(e[0] * e[1] + e[0] * e[2] + e[1] * e[2]))
        mv = _mvee(hv)
        if mv is not None:
            amat, _ = mv
            ev = np.sort(np.linalg.eigvalsh(amat))
            if np.all(ev > 0):
                semi = 1.0 / np.sqrt(ev)  # descending because ev ascending
                out["morph_vol_dens_mvee"] = _div(vol, 4.0 * math.pi * float(np.prod(semi)) / 3.0)
                out["morph_area_dens_mvee"] = _div(area, _ellipsoid_area(*(float(s) for s in semi)))

    mi, gc = moran_geary(image[box_t], int_mask[box_t], sp)
    out["morph_moran_i"] = mi
    out["morph_geary_c"] = gc
    return out
