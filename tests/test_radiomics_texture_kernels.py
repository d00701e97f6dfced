"""Compiled texture kernels against the previous vectorised numpy implementation (kept here as the reference).

Every public matrix function must return exactly (bit for bit, same shape and dtype) what the numpy version
returned, on random ROIs of many kinds: 2D images, one voxel, ROIs touching the array border, non-contiguous and
Fortran-ordered inputs, thousands of grey levels, and the non-default distances and options.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from medlens.core.errors import InputError
from medlens.radiomics import texture as tx
from medlens.radiomics.texture import compute_texture_features

# ----------------------------------------------------------------------------------------------------------------
# reference: the numpy/scipy implementation the kernels replaced (same algorithms, condensed)


def _ref_3d(grey, roi):
    grey = np.asarray(grey)
    roi = np.asarray(roi, dtype=bool)
    return (grey[None], roi[None]) if grey.ndim == 2 else (grey, roi)


def _ref_bbox(mask):
    out = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def _ref_crop_pad(grey, roi, pad, *extra):
    sl = _ref_bbox(roi)
    g = np.where(roi[sl], np.asarray(grey)[sl], 0).astype(np.int64)
    return (np.pad(g, pad), *[np.pad(np.asarray(e)[sl], pad) for e in extra])


def _ref_dirs(three_d):
    cube = itertools.product((-1, 0, 1), repeat=3)
    return [d for d in cube if d != (0, 0, 0) and (three_d or d[0] == 0) and d > tuple(-v for v in d)]


def _ref_nbhd(distance, three_d):
    r = range(-distance, distance + 1)
    rz = r if three_d else range(0, 1)
    return [(a, b, c) for a in rz for b in r for c in r if (a, b, c) != (0, 0, 0)]


def _ref_pair_counts(g, offsets, n_levels, symmetric):
    nz, ny, nx = g.shape
    flat = g.ravel()
    idx = np.flatnonzero(flat)
    a = flat[idx] - 1
    z = idx // (ny * nx)
    ng2 = n_levels * n_levels
    out = np.zeros((nz, len(offsets), n_levels, n_levels), dtype=np.int64)
    for k, (dz, dy, dx) in enumerate(offsets):
        nb = flat[idx + (dz * ny + dy) * nx + dx]
        ok = nb > 0
        m = np.bincount(z[ok] * ng2 + a[ok] * n_levels + (nb[ok] - 1), minlength=nz * ng2).reshape(
            nz, n_levels, n_levels
        )
        out[:, k] = m + m.transpose(0, 2, 1) if symmetric else m
    return out


def ref_glcm_matrices(grey, roi, *, n_levels, dims, distance=1, symmetric=True):
    grey, roi = _ref_3d(grey, roi)
    g = _ref_crop_pad(grey, roi, distance)[0]
    d2 = [(distance * a, distance * b, distance * c) for a, b, c in _ref_dirs(False)]
    d3 = [(distance * a, distance * b, distance * c) for a, b, c in _ref_dirs(True)]
    in_plane = _ref_pair_counts(g, d2, n_levels, symmetric)
    out = {"2D": in_plane[distance:-distance] if distance else in_plane}
    if "3D" in dims:
        rest = [d for d in d3 if d[0] != 0]
        other = _ref_pair_counts(g, rest, n_levels, symmetric).sum(axis=0)
        m3 = np.zeros((len(d3), n_levels, n_levels), dtype=np.int64)
        plane_sum = in_plane.sum(axis=0)
        j = 0
        for k, d in enumerate(d3):
            if d[0] == 0:
                m3[k] = plane_sum[d2.index(d)]
            else:
                m3[k] = other[j]
                j += 1
        out["3D"] = m3
    return out


def _ref_runs(g, coords, lev, d):
    a = next(k for k in range(3) if d[k] != 0)
    others = [k for k in range(3) if k != a]
    ext = g.shape
    idx, dims = [], []
    for k in others:
        if d[k] == 1:
            idx.append(coords[k] - coords[a] + ext[a] - 1)
            dims.append(ext[k] + ext[a] - 1)
        elif d[k] == -1:
            idx.append(coords[k] + coords[a])
            dims.append(ext[k] + ext[a] - 1)
        else:
            idx.append(coords[k])
            dims.append(ext[k])
    tlen = ext[a] + 2
    sheared = np.zeros((dims[0], dims[1], tlen), dtype=np.int32)
    sheared[idx[0], idx[1], coords[a] + 1] = lev
    flat = sheared.ravel()
    pos = np.flatnonzero(flat)
    val = flat[pos]
    start = pos[flat[pos - 1] != val]
    end = pos[flat[pos + 1] != val]
    z = start // (dims[1] * tlen) if d[0] == 0 else np.zeros(start.size, dtype=np.int64)
    return flat[start].astype(np.int64), end - start + 1, z


def ref_glrlm_matrices(grey, roi, *, n_levels, dims):
    grey, roi = _ref_3d(grey, roi)
    g = _ref_crop_pad(grey, roi, 1)[0]
    nz = g.shape[0]
    dirs = _ref_dirs("3D" in dims)
    coords = np.nonzero(g)
    lev = g[coords]
    runs = [_ref_runs(g, coords, lev, d) for d in dirs]
    lmax = max([int(r[1].max()) for r in runs if r[1].size] or [1])
    d2 = [k for k, d in enumerate(dirs) if d[0] == 0]
    m2 = np.zeros((nz, len(d2), n_levels, lmax), dtype=np.int64)
    for q, k in enumerate(d2):
        lv, ln, z = runs[k]
        m2[:, q] = np.bincount((z * n_levels + lv - 1) * lmax + ln - 1, minlength=nz * n_levels * lmax).reshape(
            nz, n_levels, lmax
        )
    out = {"2D": m2[1:-1]}
    if "3D" in dims:
        m3 = np.zeros((len(dirs), n_levels, lmax), dtype=np.int64)
        for k, (lv, ln, _) in enumerate(runs):
            m3[k] = np.bincount((lv - 1) * lmax + ln - 1, minlength=n_levels * lmax).reshape(n_levels, lmax)
        out["3D"] = m3
    return out


def ref_label_zones(g, three_d):
    gp = np.pad(g, 1)
    _, ny, nx = gp.shape
    flat = gp.ravel()
    idx = np.flatnonzero(flat)
    lev = flat[idx]
    node = np.full(flat.size, -1, dtype=np.int64)
    node[idx] = np.arange(idx.size)
    rows, cols = [], []
    for dz, dy, dx in _ref_dirs(three_d):
        nb = idx + (dz * ny + dy) * nx + dx
        same = flat[nb] == lev
        rows.append(np.flatnonzero(same))
        cols.append(node[nb[same]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sparse.csr_matrix((np.ones(r.size, dtype=np.int8), (r, c)), shape=(idx.size, idx.size))
    n, comp = csgraph.connected_components(graph, directed=False)
    labels_p = np.zeros(flat.size, dtype=np.int64)
    labels_p[idx] = comp + 1
    levels = np.zeros(n + 1, dtype=np.int64)
    levels[comp + 1] = lev
    return labels_p.reshape(gp.shape)[1:-1, 1:-1, 1:-1], levels, np.bincount(comp + 1, minlength=n + 1)


def _ref_per_slice(labels, level, value, nz, n_levels, ncol):
    n = level.size - 1
    if n == 0:
        return np.zeros((nz, n_levels, ncol), dtype=np.int64)
    z = np.zeros(n + 1, dtype=np.int64)
    z[labels[labels > 0]] = np.nonzero(labels)[0]
    key = (z[1:] * n_levels + level[1:] - 1) * ncol + value[1:] - 1
    return np.bincount(key, minlength=nz * n_levels * ncol).reshape(nz, n_levels, ncol)


def ref_glszm_matrices(grey, roi, *, n_levels, dims, compact=False):
    grey, roi = _ref_3d(grey, roi)
    g = _ref_crop_pad(grey, roi, 0)[0]
    out = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        lab, lev, size = ref_label_zones(g, three_d)
        if compact:
            cols, inv = np.unique(size[1:], return_inverse=True)
            col = np.concatenate([[0], inv + 1])
            out[f"sizes_{name}"] = cols
            ncol = max(cols.size, 1)
        else:
            col = size
            ncol = int(size[1:].max()) if size.size > 1 else 1
        if name == "2D":
            out[name] = _ref_per_slice(lab, lev, col, g.shape[0], n_levels, ncol)
        else:
            out[name] = np.bincount((lev[1:] - 1) * ncol + col[1:] - 1, minlength=n_levels * ncol).reshape(
                n_levels, ncol
            )
    return out


def ref_border_distance(mask, three_d, metric):
    kind = {"manhattan": "taxicab", "chebyshev": "chessboard"}[metric]
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    if three_d:
        dist = ndimage.distance_transform_cdt(m, metric=kind)
    else:
        dist = np.zeros(m.shape, dtype=np.int64)
        for z in range(1, m.shape[0] - 1):
            if m[z].any():
                dist[z] = ndimage.distance_transform_cdt(m[z], metric=kind)
    return np.asarray(dist[1:-1, 1:-1, 1:-1], dtype=np.int64)


def ref_gldzm_matrices(grey, roi, morph_roi, *, n_levels, dims, metric="manhattan"):
    grey, roi = _ref_3d(grey, roi)
    morph = _ref_3d(np.zeros(np.shape(morph_roi)), morph_roi)[1]
    g, mm = _ref_crop_pad(np.where(roi, grey, 0), roi | morph, 0, morph)
    g = np.where(g > 0, g, 0)
    out = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        dist = ref_border_distance(mm, three_d, metric)
        lab, lev, _ = ref_label_zones(g, three_d)
        n = lev.size - 1
        zd = np.zeros(n + 1, dtype=np.int64)
        if n:
            d = np.where(dist > 0, dist, np.iinfo(np.int64).max // 4)
            zd[1:] = np.asarray(ndimage.minimum(d, lab, np.arange(1, n + 1)), dtype=np.int64)
            zd[zd > d.size] = 1
        ncol = int(zd.max()) if n else 1
        if name == "2D":
            out["2D"] = _ref_per_slice(lab, lev, zd, g.shape[0], n_levels, ncol)
        else:
            out["3D"] = np.bincount((lev[1:] - 1) * ncol + zd[1:] - 1, minlength=n_levels * ncol).reshape(
                n_levels, ncol
            )
    out["_n_voxels_2D"] = (g > 0).sum(axis=(1, 2))
    return out


def ref_ngtdm_matrices(grey, roi, *, n_levels, dims, distance=1):
    grey, roi = _ref_3d(grey, roi)
    g = _ref_crop_pad(grey, roi, distance)[0]
    nz, ny, nx = g.shape
    flat = g.ravel()
    idx = np.flatnonzero(flat)
    lev = flat[idx]
    z = idx // (ny * nx)
    out = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        tot = np.zeros(idx.size, dtype=np.float64)
        cnt = np.zeros(idx.size, dtype=np.int64)
        for dz, dy, dx in _ref_nbhd(distance, three_d):
            nb = flat[idx + (dz * ny + dy) * nx + dx]
            tot += nb
            cnt += nb > 0
        ok = cnt > 0
        with np.errstate(all="ignore"):
            s = np.abs(lev[ok] - tot[ok] / cnt[ok])
        nslice = nz - 2 * distance if name == "2D" else 1
        key = ((z[ok] - distance) if name == "2D" else 0) * n_levels + lev[ok] - 1
        n_i = np.bincount(key, minlength=nslice * n_levels).reshape(nslice, n_levels)
        s_i = np.bincount(key, weights=s, minlength=nslice * n_levels).reshape(nslice, n_levels)
        m = np.stack([n_i.astype(np.float64), s_i], axis=-1)
        out[name] = m if name == "2D" else m[0]
    return out


def ref_ngldm_matrices(grey, roi, *, n_levels, dims, distance=1, alpha=0):
    grey, roi = _ref_3d(grey, roi)
    g = _ref_crop_pad(grey, roi, distance)[0]
    nz, ny, nx = g.shape
    flat = g.ravel()
    idx = np.flatnonzero(flat)
    lev = flat[idx]
    z = idx // (ny * nx) - distance
    out = {}
    for name, three_d in (("2D", False), ("3D", True)):
        if (name == "2D" and not ("2D" in dims or "2_5D" in dims)) or (name == "3D" and "3D" not in dims):
            continue
        dep = np.ones(idx.size, dtype=np.int64)
        for dz, dy, dx in _ref_nbhd(distance, three_d):
            nb = flat[idx + (dz * ny + dy) * nx + dx]
            dep += (nb > 0) & (np.abs(nb - lev) <= alpha)
        ncol = int(dep.max()) if dep.size else 1
        if name == "2D":
            nsl = nz - 2 * distance
            key = (z * n_levels + lev - 1) * ncol + dep - 1
            out["2D"] = np.bincount(key, minlength=nsl * n_levels * ncol).reshape(nsl, n_levels, ncol)
        else:
            out["3D"] = np.bincount((lev - 1) * ncol + dep - 1, minlength=n_levels * ncol).reshape(n_levels, ncol)
    return out


# ----------------------------------------------------------------------------------------------------------------
# cases


def _case(kind: str, seed: int = 0):
    """(grey, roi, n_levels) for one kind of ROI."""
    rng = np.random.default_rng(seed)
    if kind == "blob":  # smooth levels (long runs, big zones), ROI inside the array
        shape = (7, 15, 13)
        grey = 1 + (ndimage.gaussian_filter(rng.random(shape), 1.5) * 40).astype(np.int64) % 6
        zz, yy, xx = np.indices(shape)
        roi = (zz - 3) ** 2 / 9 + (yy - 7) ** 2 / 40 + (xx - 6) ** 2 / 30 < 1
        return grey, roi, 6
    if kind == "noise":  # random levels, sparse ROI with holes
        grey = rng.integers(1, 5, size=(5, 9, 8))
        return grey, rng.random(grey.shape) < 0.7, 4
    if kind == "border":  # ROI touching every face of the array
        grey = rng.integers(1, 4, size=(4, 6, 7))
        roi = np.ones(grey.shape, dtype=bool)
        roi[1, 2:4, 3] = False
        return grey, roi, 3
    if kind == "one_voxel":
        grey = np.zeros((3, 4, 5), dtype=np.int64)
        roi = np.zeros(grey.shape, dtype=bool)
        roi[1, 2, 3] = True
        grey[1, 2, 3] = 2
        return grey, roi, 3
    if kind == "image_2d":
        grey = rng.integers(1, 6, size=(11, 12))
        roi = np.zeros(grey.shape, dtype=bool)
        roi[1:10, 2:12] = True
        return grey, roi, 5
    if kind == "fortran":  # Fortran-ordered int32 arrays, levels beyond the ROI's
        grey = np.asfortranarray(rng.integers(1, 7, size=(6, 8, 9)).astype(np.int32))
        return grey, np.asfortranarray(rng.random(grey.shape) < 0.8), 9
    if kind == "strided":  # non-contiguous views (every other voxel, reversed axis)
        grey = rng.integers(1, 5, size=(10, 18, 16))[::2, ::-2, 1::2]
        roi = (rng.random((10, 18, 16)) < 0.75)[::2, ::-2, 1::2]
        return grey, roi, 4
    if kind == "many_levels":  # thousands of bins (fixed bin size on CT)
        grey = rng.integers(1, 3001, size=(4, 10, 9))
        grey[:, :5, :4] = 2999  # some equal-level zones and runs among the noise
        return grey, rng.random(grey.shape) < 0.9, 3000
    if kind == "thin_slices":  # ROI slices with gaps (empty slices inside the bounding box)
        grey = rng.integers(1, 4, size=(6, 7, 7))
        roi = rng.random(grey.shape) < 0.6
        roi[2] = False
        roi[4] = False
        return grey, roi, 3
    raise ValueError(kind)


KINDS = ["blob", "noise", "border", "one_voxel", "image_2d", "fortran", "strided", "many_levels", "thin_slices"]


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape, (k, x.shape, y.shape)
        assert x.dtype == y.dtype, (k, x.dtype, y.dtype)
        assert np.array_equal(x, y), k  # exact: integer counts, and float sums added in the same order


@pytest.mark.parametrize("kind", KINDS)
def test_glcm_matches_numpy_reference(kind):
    grey, roi, ng = _case(kind)
    if kind == "many_levels":  # (slices, 4, Ng, Ng) per-slice matrices: keep them small
        grey, roi, ng = np.minimum(grey, 400)[:2], roi[:2], 400
    for dims, distance, symmetric in [(("2D", "3D"), 1, True), (("2D",), 1, False), (("3D",), 2, True)]:
        new = tx.glcm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance, symmetric=symmetric)
        ref = ref_glcm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance, symmetric=symmetric)
        _same(new, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_glrlm_matches_numpy_reference(kind):
    grey, roi, ng = _case(kind)
    for dims in [("2D", "3D"), ("2D",)]:
        _same(
            tx.glrlm_matrices(grey, roi, n_levels=ng, dims=dims), ref_glrlm_matrices(grey, roi, n_levels=ng, dims=dims)
        )


def test_glrlm_two_pass_path_matches(monkeypatch):
    """Above the memory bound the longest run is found first; the counts are the same."""
    from medlens.radiomics.texture import glrlm

    monkeypatch.setattr(glrlm, "_ONE_PASS_BYTES", 0)
    for kind in ("blob", "many_levels", "one_voxel"):
        grey, roi, ng = _case(kind)
        _same(
            tx.glrlm_matrices(grey, roi, n_levels=ng, dims=("2D", "3D")),
            ref_glrlm_matrices(grey, roi, n_levels=ng, dims=("2D", "3D")),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_zones_match_numpy_reference(kind):
    grey, roi, ng = _case(kind)
    g3 = _ref_3d(grey, roi)
    g = _ref_crop_pad(*g3, 0)[0]
    for three_d in (False, True):
        labels, level, size = tx.glszm.label_zones(g, ng, three_d)
        ref = ref_label_zones(g, three_d)
        for a, b in zip((labels, level, size), ref, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)  # same numbering too
    for dims, compact in [(("2D", "3D"), False), (("2_5D", "3D"), True)]:
        _same(
            tx.glszm_matrices(grey, roi, n_levels=ng, dims=dims, compact=compact),
            ref_glszm_matrices(grey, roi, n_levels=ng, dims=dims, compact=compact),
        )


@pytest.mark.parametrize("kind", KINDS)
def test_gldzm_matches_numpy_reference(kind):
    grey, roi, ng = _case(kind)
    rng = np.random.default_rng(1)
    morph_bigger = ndimage.binary_dilation(roi, iterations=1) | (rng.random(roi.shape) < 0.05)
    for morph, metric in [(roi, "manhattan"), (morph_bigger, "manhattan"), (morph_bigger, "chebyshev")]:
        new = tx.gldzm_matrices(grey, roi, morph, n_levels=ng, dims=("2D", "3D"), metric=metric)
        _same(new, ref_gldzm_matrices(grey, roi, morph, n_levels=ng, dims=("2D", "3D"), metric=metric))


@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("metric", ["manhattan", "chebyshev"])
def test_border_distance_matches_scipy(three_d, metric):
    rng = np.random.default_rng(3)
    for shape in [(1, 1, 1), (3, 9, 8), (6, 14, 15)]:
        mask = ndimage.binary_opening(rng.random(shape) < 0.8) | (rng.random(shape) < 0.3)
        for m in (mask, np.ones(shape, dtype=bool), np.zeros(shape, dtype=bool)):
            got = tx.gldzm.border_distance(m, three_d=three_d, metric=metric)
            assert got.dtype == np.int64 and np.array_equal(got, ref_border_distance(m, three_d, metric))
    img2d = rng.random((9, 9)) < 0.9
    assert np.array_equal(
        tx.gldzm.border_distance(img2d, three_d=False), ref_border_distance(img2d[None], False, "manhattan")[0]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_neighbourhood_families_match_numpy_reference(kind):
    grey, roi, ng = _case(kind)
    for distance, alpha in [(1, 0), (2, 1), (3, 0)]:
        for dims in [("2D", "3D"), ("3D",), ("2_5D",)]:
            _same(
                tx.ngtdm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance),
                ref_ngtdm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance),
            )
            _same(
                tx.ngldm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance, alpha=alpha),
                ref_ngldm_matrices(grey, roi, n_levels=ng, dims=dims, distance=distance, alpha=alpha),
            )


@pytest.mark.parametrize("kind", ["blob", "noise", "border", "image_2d", "strided", "thin_slices"])
def test_compute_texture_features_unchanged_by_shared_preparation(kind):
    """The one-copy path of compute_texture_features equals the per-family public functions."""
    grey, roi, ng = _case(kind)
    morph = ndimage.binary_dilation(roi, iterations=1)
    s = {"dims": ("2D", "2_5D", "3D"), "glcm_distance": 2, "ngldm_alpha": 1}
    with np.errstate(all="ignore"):
        got = compute_texture_features(grey, roi=roi, morph_roi=morph, n_levels=ng, settings=s)
        want = {
            **tx.glcm_features(grey, roi, n_levels=ng, dims=s["dims"], distance=2),
            **tx.glrlm_features(grey, roi, n_levels=ng, dims=s["dims"]),
            **tx.glszm_features(grey, roi, n_levels=ng, dims=s["dims"]),
            **tx.gldzm_features(grey, roi, morph, n_levels=ng, dims=s["dims"]),
            **tx.ngtdm_features(grey, roi, n_levels=ng, dims=s["dims"]),
            **tx.ngldm_features(grey, roi, n_levels=ng, dims=s["dims"], alpha=1),
        }
    assert got.keys() == want.keys()
    for k in got:
        assert got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])), k


def test_matrix_functions_reject_bad_levels_and_empty_rois():
    grey, roi, _ = _case("noise")
    with pytest.raises(InputError, match=r"glcm: grey levels inside the ROI must be 1\.\.3, found 4 \(above"):
        tx.glcm_matrices(grey, roi, n_levels=3)
    with pytest.raises(InputError, match=r"ngldm: grey levels inside the ROI must be 1\.\.4, found -4 \(negative\)"):
        tx.ngldm_matrices(np.where(roi, -grey, 0), roi, n_levels=4)
    with pytest.raises(InputError, match="glrlm: the ROI is empty"):
        tx.glrlm_matrices(grey, np.zeros_like(roi), n_levels=4)
    with pytest.raises(InputError, match="gldzm: the ROI is empty"):
        tx.gldzm_matrices(grey, np.zeros_like(roi), n_levels=4)
    with pytest.raises(InputError, match="gldzm: morph_roi shape"):
        tx.gldzm_matrices(grey, roi, roi[:, :-1], n_levels=4)
    with pytest.raises(InputError, match="n_levels must be >= 1"):
        tx.ngtdm_matrices(grey, roi, n_levels=0)
    with pytest.raises(InputError, match="label_zones needs a"):
        tx.glszm.label_zones(grey[0], 4, True)
    with pytest.raises(InputError, match="2D or 3D mask"):
        tx.gldzm.border_distance(roi[0, 0], three_d=False)
    with pytest.raises(InputError, match=r"grey must be 2D \(y, x\) or 3D"):
        compute_texture_features(grey[None], roi=roi[None], n_levels=4)
    with pytest.raises(InputError, match="NaN or infinite values inside the ROI"):
        compute_texture_features(np.where(roi, np.nan, 1.0), roi=roi, n_levels=4)
    with pytest.raises(InputError, match="glcm_distance must be >= 0 voxels, got -1"):
        compute_texture_features(grey, roi=roi, n_levels=4, settings={"glcm_distance": -1})
    with pytest.raises(InputError, match="ngtdm_distance must be >= 0"):
        tx.ngtdm_matrices(grey, roi, n_levels=4, distance=-2)


def test_glcm_cluster_features_equal_the_broadcast_formula():
    """Cluster tendency/shade/prominence from powers per level sum equal the element-wise formula exactly."""
    from medlens.radiomics.texture.glcm import GLCM_FEATURES, glcm_feature_batch

    rng = np.random.default_rng(5)
    for ng in (1, 3, 36, 130):
        c = rng.integers(0, 9, size=(7, ng, ng)) * (rng.random((7, ng, ng)) < 0.4)
        c = c + c.transpose(0, 2, 1)
        c[0] = 0  # an empty matrix: NaN
        got = glcm_feature_batch(c)
        with np.errstate(all="ignore"):
            p = c / np.where(c.sum(axis=(1, 2)) > 0, c.sum(axis=(1, 2)), 1)[:, None, None]
            lv = np.arange(1, ng + 1, dtype=np.float64)
            mu_i = (lv * p.sum(axis=2)).sum(axis=1)
            mu_j = (lv * p.sum(axis=1)).sum(axis=1)
            ct = lv[None, :, None] + lv[None, None, :] - mu_i[:, None, None] - mu_j[:, None, None]
        for power, name in ((2, "clust_tend"), (3, "clust_shade"), (4, "clust_prom")):
            want = (ct**power * p).sum(axis=(1, 2))
            want[c.sum(axis=(1, 2)) == 0] = np.nan
            assert np.array_equal(got[:, GLCM_FEATURES.index(name)], want, equal_nan=True), (ng, name)


@pytest.mark.parametrize("shape", [(9, 4, 3), (40, 22, 60), (5, 30, 700), (3, 1, 1)])
def test_zone_features_stack_equals_per_matrix_calls(shape):
    """The vectorised per-slice features are exactly those of one call per matrix (empty ones NaN)."""
    from medlens.radiomics.texture._common import zone_features, zone_features_stack
    from medlens.radiomics.texture.ngldm import NGL_NAMES

    rng = np.random.default_rng(shape[2])
    ms = rng.integers(0, 5, size=shape) * (rng.random(shape) < 0.3)
    ms[0] = 0
    nv = rng.integers(0, 500, size=shape[0]).astype(float)
    nv[-1] = 0  # no voxels: percentage NaN
    for j_values in (None, np.cumsum(rng.integers(1, 9, size=shape[2]))):
        got = zone_features_stack(ms, nv, NGL_NAMES, energy=True, j_values=j_values)
        want = [zone_features(m, v, NGL_NAMES, energy=True, j_values=j_values) for m, v in zip(ms, nv, strict=True)]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            assert all(g[k] == w[k] or (math.isnan(g[k]) and math.isnan(w[k])) for k in g), (g, w)


def test_read_only_inputs_reuse_the_compiled_kernels():
    """Read-only arrays (an Image's) give the same features and no second numba specialisation."""
    from medlens.radiomics._jit import jit_only
    from medlens.radiomics.texture import _kernels

    grey, roi, ng = _case("blob")
    s = {"dims": ("2D", "3D")}
    ro_grey, ro_roi = grey.copy(), roi.copy()
    ro_grey.flags.writeable = False
    ro_roi.flags.writeable = False
    with jit_only():  # numba's own specialisations (the AOT path is checked in test_radiomics_aot.py)
        want = compute_texture_features(grey, roi=roi, morph_roi=roi, n_levels=ng, settings=s)
        got = compute_texture_features(ro_grey, roi=ro_roi, morph_roi=ro_roi, n_levels=ng, settings=s)
    assert got == want or all(got[k] == want[k] or (math.isnan(got[k]) and math.isnan(want[k])) for k in want)
    for name in ("border_distance_2d", "border_distance_3d", "glcm_counts", "label_zones_kernel", "ngtdm_sums"):
        kernel = getattr(_kernels, name)
        if kernel.jit_dispatcher() is not kernel.py_func:  # not under NUMBA_DISABLE_JIT
            sigs = kernel.signatures
            assert len(sigs) == 1, (name, sigs)
