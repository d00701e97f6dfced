"""Library calls leave process-wide state alone; compiled kernels are cached outside the package.

- the numba cache of MedLens's kernels is under the user cache dir (``$NUMBA_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/medlens/numba``), never next to the module (site-packages or the source tree);
- U-Net inference and training restore torch's thread count and global random state;
- ``medlens.cli.main`` restores ``warnings.formatwarning``;
- Dask workers of a cohort run are single-threaded (BLAS/OpenMP, numba, ITK) and starting them
  leaves the caller's environment unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import medlens
from medlens.core.image import Image

PKG_DIR = Path(medlens.__file__).resolve().parent


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medlens.radiomics._jit import cache_dir

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "medlens" / "numba"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "medlens" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "nb"))
    assert cache_dir() == tmp_path / "nb"


def test_kernels_cached_in_user_dir_not_next_to_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medlens.radiomics import _kernels
    from medlens.radiomics._jit import njit

    # the shipped kernels: their cache folder is not inside the installed package
    disp = _kernels.mvee_weights.jit_dispatcher()
    cache_path = Path(disp._cache.cache_path).resolve()
    assert PKG_DIR not in cache_path.parents
    # a kernel compiled now lands in $XDG_CACHE_HOME/medlens/numba and nothing is written beside its module
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src_dir = tmp_path / "pkg"
    src_dir.mkdir()
    (src_dir / "tiny_kernel.py").write_text("def add_one(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("tiny_kernel", src_dir / "tiny_kernel.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    fn = njit(mod.add_one)
    assert fn(41) == 42
    written = sorted(p.name for p in (tmp_path / "xdg" / "medlens" / "numba").rglob("*") if p.is_file())
    assert any(n.startswith("tiny_kernel.add_one-1.py") and n.endswith(".nbi") for n in written), written
    assert any(n.endswith(".nbc") for n in written), written
    assert not any(p.suffix in (".nbi", ".nbc") for p in src_dir.rglob("*"))


def test_cli_main_restores_formatwarning() -> None:
    from medlens.cli import main

    before = warnings.formatwarning
    assert main(["--version"]) == 0
    assert warnings.formatwarning is before


def _pet(shape: tuple[int, int, int] = (3, 64, 64)) -> Image:
    arr = np.zeros(shape, np.float32)
    arr[1, 28:36, 28:36] = 8.0  # a bright "lesion" in SUV
    return Image.from_array(arr, spacing=(3.0, 4.0, 4.0), modality="PT", units="SUVbw")


@pytest.mark.slow
def test_unet_inference_leaves_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")  # an optional extra ([dl]), not a MedLens module
    from medlens.segment.unet.infer import segment_unet

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = segment_unet(_pet(), threads=1)
        assert out.shape == (3, 64, 64)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_unet_training_leaves_threads_and_global_rng() -> None:
    torch = pytest.importorskip("torch")
    from medlens.segment.unet import UNetConfig
    from medlens.segment.unet.data import Case
    from medlens.segment.unet.train import train

    img = _pet()
    case = Case("p1", img, img.with_array(img.array > 4.0))
    torch.manual_seed(1234)
    state = torch.random.get_rng_state().clone()
    threads = torch.get_num_threads()
    res1 = train([case], UNetConfig(), epochs=1, seed=7, threads=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    # the seed still makes training reproducible (the forked generator is seeded)
    res2 = train([case], UNetConfig(), epochs=1, seed=7, threads=1)
    assert res1.losses == res2.losses


def _worker_threads() -> dict:
    import SimpleITK as sitk
    import threadpoolctl

    blas = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    return {
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")},
        "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
        "blas": blas,
    }


@pytest.mark.slow
def test_dask_workers_single_threaded_and_parent_env_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    from distributed import Client

    from medlens.pipeline.run import local_cluster

    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    env_before = dict(os.environ)
    cluster = local_cluster(1, memory_limit="1GB")
    try:
        assert dict(os.environ) == env_before  # distributed's pre-spawn variables were put back
        with Client(cluster) as client:
            got = client.submit(_worker_threads, pure=False).result(timeout=60)
    finally:
        cluster.close()
    assert got["env"] == {"OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    assert got["itk"] == 1
    assert got["blas"] and all(n == 1 for n in got["blas"])


def test_learn_calls_leave_threads_and_global_rng() -> None:
    """Training and applying the learnt models (here: the low-dose denoiser) seed torch and set its threads
    inside the call only (``medlens.learn._torch.keeps_torch_state``)."""
    torch = pytest.importorskip("torch")
    from medlens.core.image import ImageMeta, Units
    from medlens.learn import lowdose as ld

    rng = np.random.default_rng(0)
    full = rng.normal(0.0, 50.0, (24, 24))
    pairs = [(full + rng.normal(0.0, 30.0, full.shape), full) for _ in range(2)]
    ct = Image.from_array(
        np.stack([full, full]).astype(np.float32),
        spacing=(1.0, 1.0, 1.0),
        meta=ImageMeta(modality="CT", units=Units.HU, source="side-effects.nii"),
    )
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    state = torch.random.get_rng_state().clone()
    _, losses1 = ld.train_denoise_cnn(pairs, width=4, depth=3, patch=16, steps=3, batch_size=2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    out = ld.denoise_ct(ct, threads=2)
    assert out.array.shape == ct.array.shape
    assert torch.get_num_threads() == 1 and torch.equal(torch.random.get_rng_state(), state)
    # the seed still makes training reproducible (the forked generator is seeded inside the call)
    _, losses2 = ld.train_denoise_cnn(pairs, width=4, depth=3, patch=16, steps=3, batch_size=2, seed=5)
    assert losses1 == losses2
