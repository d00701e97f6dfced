"""The cold-start path of the radiomics engine: ahead-of-time kernels, the exact lattice hull, no scipy/numba.

What a fresh ``medlens features`` process relies on (``benchmarks/cold_start_features.py`` times it):
- the AOT module built by ``medlens warm-up`` serves every kernel call of an extraction, only for arguments
  of exactly the compiled types (anything else goes to numba's JIT and gives the same numbers);
- the convex hull of the mesh comes from exact integer arithmetic and equals Qhull's;
- numpy replacements of scipy (FFT lengths, DCT-I, Legendre polynomials) equal scipy's;
- the NRRD fast reader equals pynrrd on every encoding it takes and hands the rest to pynrrd.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medlens.radiomics import morphology as M
from medlens.radiomics._jit import jit_only

SRC = Path(__file__).resolve().parents[1] / "src"


def _masks(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for trial in range(n):
        shape = tuple(int(x) for x in rng.integers(1, 14, 3))
        if trial % 3 == 0:  # ellipsoids: many coplanar and collinear mesh vertices
            zz, yy, xx = np.indices(shape)
            c = np.array(shape) / 2.0
            m = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 / 2.0 + (xx - c[2]) ** 2 < (max(shape) / 2.0) ** 2
        else:
            m = rng.random(shape) > rng.uniform(0.2, 0.95)
        if m.any():
            yield m, (float(rng.uniform(0.5, 3.0)), 0.8, 0.7)


def test_lattice_hull_equals_qhull():
    """Same extreme points, volume and area as scipy's Qhull on 40 random and ellipsoidal masks."""
    n = 0
    with jit_only():
        for mask, spacing in _masks(60):
            verts, _, verts_idx = M._mesh(mask, spacing)
            ours, ref = M._convex_hull(verts, verts_idx), M._qhull(verts)
            assert ours is not None and ref is not None
            assert set(ours.vertices.tolist()) == set(ref.vertices.tolist())
            assert ours.volume == pytest.approx(ref.volume, rel=1e-12)
            assert ours.area == pytest.approx(ref.area, rel=1e-12)
            assert float(ours.face_areas.sum()) == pytest.approx(ref.area, rel=1e-12)
            # outward unit normals: every hull vertex lies on or beneath every face plane
            tri = verts[ours.simplices]
            height = (
                np.einsum("fj,vj->fv", ours.normals, verts[ours.vertices])
                - np.einsum("fj,fj->f", ours.normals, tri[:, 0])[:, None]
            )
            assert height.max() <= 1e-9
            n += 1
    assert n >= 40


def test_lattice_hull_degenerate_and_off_lattice_inputs():
    from medlens.radiomics._kernels import lattice_hull

    with jit_only():
        flat = np.array([[0, 0, 0], [2, 0, 0], [0, 2, 0], [2, 2, 0], [1, 1, 0]], np.int64)
        faces, corner, status = lattice_hull(flat, np.arange(5, dtype=np.int64))
        assert status == 1 and faces.shape == (0, 3) and not corner.any()
        cube = np.array([[x, y, z] for x in (0, 2) for y in (0, 2) for z in (0, 2)] + [[1, 1, 1], [1, 1, 0]], np.int64)
        faces, corner, status = lattice_hull(cube, np.arange(10, dtype=np.int64)[::-1].copy())
        assert status == 0
        assert corner.tolist() == [True] * 8 + [False, False]  # the centre and a face point are not corners
        assert faces.shape == (12, 3)  # 6 squares, 2 triangles each
    # mesh vertices off the half-voxel lattice: no exact hull (the caller falls back to Qhull)
    assert M._convex_hull(np.zeros((4, 3)), np.array([[0.25, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])) is None


def test_plane_extremes_keeps_exactly_each_planes_hull_vertices():
    from medlens.radiomics._kernels import plane_extremes

    rng = np.random.default_rng(3)
    pts = rng.integers(0, 6, (300, 3)).astype(np.int64)
    pts = np.unique(pts, axis=0)
    with jit_only():
        keep = plane_extremes(np.ascontiguousarray(pts), 0)
    for z in np.unique(pts[:, 0]):
        idx = np.flatnonzero(pts[:, 0] == z)
        p2 = pts[idx][:, 1:]
        for i, q in zip(idx, p2, strict=True):
            # q is a strict vertex of the plane's hull iff some direction has q as the unique maximiser
            dirs = np.array([[math.cos(t), math.sin(t)] for t in np.linspace(0, 2 * math.pi, 3600, endpoint=False)])
            proj = p2 @ dirs.T
            unique_max = (proj.max(axis=0) - proj[(p2 == q).all(axis=1)][0] < 1e-12) & (
                (np.abs(proj - proj.max(axis=0)) < 1e-12).sum(axis=0) == 1
            )
            assert bool(keep[i]) == bool(unique_max.any()), (z, q)


def test_numpy_replacements_equal_scipy():
    import scipy.fft as sfft
    import scipy.special as special

    for n in range(2, 400):
        want = sfft.next_fast_len(n, real=True)
        while want % 2:
            want = sfft.next_fast_len(want + 1, real=True)
        assert M._next_even_5_smooth(n) == want, n
    x = np.random.default_rng(0).random((5, 7, 4)).astype(np.float32)
    got = x
    for ax in range(3):
        got = M._dct1(got, ax)
    np.testing.assert_allclose(got, sfft.dctn(x, type=1), rtol=2e-5, atol=1e-4)
    for nu in range(21):
        for t in (1.0, 1.2, 3.5, 17.0):
            assert M._legendre(nu, t) == pytest.approx(float(special.eval_legendre(nu, t)), rel=1e-12)


def test_aot_matcher_sends_only_exact_types_to_the_compiled_code():
    """Another dtype, layout or a read-only array for a writable parameter never reaches the AOT code."""
    from medlens.radiomics import _aot

    check = _aot._matcher(
        [
            {"kind": "array", "dtype": "float64", "ndim": 2, "layout": "C", "readonly": False},
            {"kind": "scalar", "dtype": "int64"},
            {"kind": "scalar", "dtype": "bool"},
        ]
    )
    a = np.zeros((3, 3))
    assert check((a, 3, True)) and check((a, np.int64(3), np.bool_(False)))
    ro = a.copy()
    ro.flags.writeable = False
    for bad in (
        (a.astype(np.float32), 3, True),
        (np.asfortranarray(np.zeros((3, 4))), 3, True),
        (a[:, ::2], 3, True),
        (ro, 3, True),
        (a, 3.0, True),
        (a, True, True),  # bool is not int64 for numba
        (a, 3, 1),
        (a, 3),
        (a.tolist(), 3, True),
    ):
        assert not check(bad), bad


def _run_child(code: str, **env: str) -> str:
    full = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **env}
    proc = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


_EXTRACT = """
import json, sys
import numpy as np
from medlens.core.image import Image
from medlens.radiomics import extract
from medlens.radiomics._jit import kernel_stats
from medlens.radiomics._aot import loaded_path
rng = np.random.default_rng(4)
zz, yy, xx = np.indices((14, 30, 28))
roi = (zz - 7) ** 2 / 16 + (yy - 15) ** 2 / 90 + (xx - 13) ** 2 / 60 < 1
arr = rng.normal(40.0, 25.0, roi.shape) + 30.0 * roi
img = Image.from_array(arr, spacing=(3.0, 0.9, 0.9), modality="CT")
feats = extract(img, img.with_array(roi))
print(json.dumps({"feats": {k: float(v) for k, v in feats.items()}, "stats": kernel_stats(),
                  "aot": str(loaded_path()), "numba": "numba" in sys.modules, "scipy": "scipy" in sys.modules}))
"""


@pytest.fixture(scope="module")
def aot_module() -> Path:
    """The AOT module of this checkout (``.ci/run``'s warm-up built it; built here when a bare checkout lacks it)."""
    import shutil

    from medlens.radiomics import _aot

    if not (_aot.aot_dir() / "manifest.json").is_file():
        if shutil.which("cc") is None:
            pytest.skip("no C compiler (cc) to build the ahead-of-time kernels; .ci/run installs gcc")
        out = _run_child("from medlens.radiomics.warmup import prepare_kernels; print(prepare_kernels()[1])")
        assert "error=None" in out, out
    return _aot.aot_dir()


@pytest.mark.slow
def test_fresh_process_extraction_runs_on_aot_code_without_numba_or_scipy(aot_module: Path):
    """After ``medlens warm-up``: every kernel call of an extraction is AOT, numba and scipy are never imported,
    and every feature equals the JIT run's (``MEDLENS_AOT=0``)."""
    aot = json.loads(_run_child(_EXTRACT))
    assert aot["aot"].startswith(str(aot_module)), aot["aot"]
    assert aot["stats"] and all(jit == 0 for _, jit in aot["stats"].values()), aot["stats"]
    assert not aot["numba"] and not aot["scipy"]
    jit = json.loads(_run_child(_EXTRACT, MEDLENS_AOT="0"))
    assert jit["aot"] == "None" and all(a == 0 for a, _ in jit["stats"].values()) and jit["numba"]
    assert aot["feats"].keys() == jit["feats"].keys() and len(aot["feats"]) > 250
    for k, v in jit["feats"].items():
        w = aot["feats"][k]
        assert (math.isnan(v) and math.isnan(w)) or w == pytest.approx(v, rel=1e-12, abs=1e-12), (k, w, v)


@pytest.mark.slow
def test_aot_call_with_other_types_falls_back_to_the_jit(aot_module: Path):
    """float32 or Fortran-ordered points go to numba's JIT (the AOT code was built for C float64) and agree."""
    out = _run_child(
        """
import numpy as np
from medlens.radiomics._kernels import max_sq_distance
from medlens.radiomics._aot import loaded_path
p = np.random.default_rng(0).random((50, 3))
want = float(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1).max())
a = max_sq_distance(p)
b = max_sq_distance(np.asfortranarray(p))
c = max_sq_distance(p.astype(np.float32))
print(loaded_path() is not None, max_sq_distance.aot_calls, max_sq_distance.jit_calls, a == want, b == want,
      abs(c - want) < 1e-5)
"""
    )
    assert out.split() == ["True", "1", "2", "True", "True", "True"], out


def test_nrrd_fast_reader_equals_pynrrd(tmp_path: Path):
    import nrrd

    import medlens

    rng = np.random.default_rng(0)
    arr = rng.normal(0, 100, (4, 5, 6)).astype(np.float32)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.5, 0.6, 2.0]),
        "space origin": np.array([1.0, 2.0, 3.0]),
    }
    ref = None
    for enc, endian in (("gzip", "little"), ("raw", "little"), ("raw", "big"), ("bzip2", "little")):
        p = tmp_path / f"{enc}_{endian}.nrrd"
        nrrd.write(str(p), arr, {**header, "encoding": enc, "endian": endian}, index_order="C")
        img = medlens.read_image(p)
        assert img.array.dtype == np.float32 and not img.array.flags.writeable
        np.testing.assert_array_equal(img.array, arr)
        if ref is None:
            ref = img
        np.testing.assert_array_equal(img.affine, ref.affine)
    detached = tmp_path / "detached.nhdr"
    nrrd.write(str(detached), arr, {**header, "encoding": "raw"}, detached_header=True, index_order="C")
    np.testing.assert_array_equal(medlens.read_image(detached).array, arr)
