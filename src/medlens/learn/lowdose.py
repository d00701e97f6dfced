"""Low-dose CT simulation from a real CT (physics model) and image-quality metrics against full dose.

The model (per axial slice, parallel-beam geometry, monoenergetic):

1. HU to linear attenuation: ``mu = MU_WATER_PER_MM * (1 + HU / 1000)``, HU clipped at -1000 (air, mu = 0);
   ``MU_WATER_PER_MM = 0.0192 /mm`` is water at about 70 keV (the effective energy of a 120 kVp beam).
2. Forward projection: line integrals ``p = radon(mu) * pixel_mm`` (:func:`skimage.transform.radon`,
   ``n_views`` angles over 180 degrees; the slice is zero-padded to a square so nothing falls outside).
3. Transmitted counts: ``N ~ Poisson(I0 * dose * exp(-p))`` with ``I0`` incident photons per detector
   ray at full dose (default 1e5, the usual value of low-dose simulation studies) and ``dose`` the
   fraction (0.10, 0.25, ...). No electronic noise, scatter or beam hardening.
4. Log: ``p_hat = -log(max(N, 0.5) / (I0 * dose))`` (0.5 photons stands in for a zero count).
5. Filtered back-projection (:func:`skimage.transform.iradon`, ramp filter) and back to HU.

The noise-free sinogram reconstructs the real CT within a few HU (discretisation of radon/iradon),
so the full-dose reference is the real CT itself; low-dose images differ from it by the simulated
quantum noise (variance of ``p_hat`` = ``1 / (I0 * dose * exp(-p))`` to first order) and the small
FBP discretisation error common to all doses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.learn._torch import keeps_torch_state

__all__ = [
    "DEFAULT_DENOISER",
    "DEFAULT_DIFFUSION_PRIOR",
    "HU_SCALE",
    "MU_WATER_PER_MM",
    "LowDoseModel",
    "apply_denoise_cnn",
    "apply_diffusion_prior",
    "denoise_ct",
    "fbp",
    "feature_iccs",
    "forward_project",
    "hu_bias",
    "hu_to_mu",
    "icc_absolute",
    "mu_to_hu",
    "noisy_line_integrals",
    "psnr_hu",
    "simulate_low_dose",
    "simulate_low_dose_slice",
    "ssim_hu",
    "train_denoise_cnn",
]

#: Linear attenuation coefficient of water at about 70 keV, per mm.
MU_WATER_PER_MM = 0.0192


@dataclass(frozen=True)
class LowDoseModel:
    """Parameters of the low-dose simulation (see the module docstring).

    Attributes
    ----------
    i0_full
        Incident photons per detector ray at full dose.
    n_views
        Projection angles over 180 degrees.
    mu_water_per_mm
        Attenuation of water (HU 0), per mm.
    """

    i0_full: float = 1e5
    n_views: int = 360
    mu_water_per_mm: float = MU_WATER_PER_MM

    def __post_init__(self) -> None:
        if not (np.isfinite(self.i0_full) and self.i0_full > 0):
            raise InputError(f"i0_full must be a positive photon count per ray, got {self.i0_full}")
        if int(self.n_views) < 2:
            raise InputError(f"n_views must be at least 2, got {self.n_views}")
        if not self.mu_water_per_mm > 0:
            raise InputError(f"mu_water_per_mm must be positive, got {self.mu_water_per_mm}")


def hu_to_mu(hu: np.ndarray, *, mu_water_per_mm: float = MU_WATER_PER_MM) -> np.ndarray:
    """Linear attenuation (1/mm) from HU: ``mu_w * (1 + HU/1000)``, HU below -1000 treated as air."""
    return (mu_water_per_mm * (1.0 + np.maximum(np.asarray(hu, np.float64), -1000.0) / 1000.0)).astype(np.float64)


def mu_to_hu(mu: np.ndarray, *, mu_water_per_mm: float = MU_WATER_PER_MM) -> np.ndarray:
    """HU from linear attenuation (1/mm): ``1000 * (mu / mu_w - 1)``."""
    return 1000.0 * (np.asarray(mu, np.float64) / mu_water_per_mm - 1.0)


def _angles(n_views: int) -> np.ndarray:
    return np.linspace(0.0, 180.0, int(n_views), endpoint=False)


def _square(mu: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    n = max(mu.shape)
    py, px = n - mu.shape[0], n - mu.shape[1]
    pads = ((py // 2, py - py // 2), (px // 2, px - px // 2))
    crop = (slice(pads[0][0], pads[0][0] + mu.shape[0]), slice(pads[1][0], pads[1][0] + mu.shape[1]))
    return np.pad(mu, pads), crop


def forward_project(mu: np.ndarray, *, pixel_mm: float, n_views: int = 360) -> np.ndarray:
    """Line integrals of ``mu`` (1/mm) over ``n_views`` parallel-beam angles (dimensionless).

    ``mu`` must be square (see :func:`simulate_low_dose_slice`); returns ``(n_detectors, n_views)``.
    """
    from skimage.transform import radon

    if mu.ndim != 2 or mu.shape[0] != mu.shape[1]:
        raise InputError(f"forward_project needs a square 2D array, got shape {mu.shape}")
    return radon(mu, _angles(n_views), circle=False) * float(pixel_mm)


def fbp(line_integrals: np.ndarray, *, pixel_mm: float, size: int, filter_name: str = "ramp") -> np.ndarray:
    """Filtered back-projection of line integrals to ``mu`` (1/mm) on a ``size x size`` grid."""
    from skimage.transform import iradon

    n_views = line_integrals.shape[1]
    rec = iradon(
        line_integrals / float(pixel_mm), _angles(n_views), output_size=int(size), circle=False, filter_name=filter_name
    )
    return np.asarray(rec, np.float64)


def noisy_line_integrals(line_integrals: np.ndarray, *, photons_per_ray: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson transmission noise: ``-log(max(N, 0.5) / I)`` with ``N ~ Poisson(I exp(-p))``.

    ``photons_per_ray`` is the incident count ``I`` (``I0 * dose``).
    """
    if not (np.isfinite(photons_per_ray) and photons_per_ray > 0):
        raise InputError(f"photons_per_ray must be positive, got {photons_per_ray}")
    expected = photons_per_ray * np.exp(-np.asarray(line_integrals, np.float64))
    counts = rng.poisson(expected).astype(np.float64)
    return -np.log(np.maximum(counts, 0.5) / photons_per_ray)


def simulate_low_dose_slice(
    hu: np.ndarray,
    *,
    pixel_mm: float,
    dose_fraction: float | None,
    model: LowDoseModel | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One 2D slice (HU) through projection, Poisson noise at ``dose_fraction`` and FBP; returns HU.

    ``dose_fraction=None`` skips the noise (noise-free sinogram, to measure the FBP error alone).
    """
    m = model or LowDoseModel()
    a = np.asarray(hu, np.float64)
    if a.ndim != 2:
        raise InputError(f"simulate_low_dose_slice needs a 2D slice, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("the CT slice contains NaN or infinite values")
    if dose_fraction is not None and not (0 < dose_fraction <= 1):
        raise InputError(f"dose_fraction must be in (0, 1] (e.g. 0.1 for 10 % dose), got {dose_fraction}")
    if not (np.isfinite(pixel_mm) and pixel_mm > 0):
        raise InputError(f"pixel_mm must be a positive pixel size in mm, got {pixel_mm}")
    mu, crop = _square(hu_to_mu(a, mu_water_per_mm=m.mu_water_per_mm))
    p = forward_project(mu, pixel_mm=pixel_mm, n_views=m.n_views)
    if dose_fraction is not None:
        p = noisy_line_integrals(
            p, photons_per_ray=m.i0_full * dose_fraction, rng=rng if rng is not None else np.random.default_rng(0)
        )
    rec = fbp(p, pixel_mm=pixel_mm, size=mu.shape[0])
    return mu_to_hu(rec[crop], mu_water_per_mm=m.mu_water_per_mm)


def simulate_low_dose(
    image: Image,
    *,
    dose_fraction: float,
    model: LowDoseModel | None = None,
    seed: int = 0,
    slices: Sequence[int] | None = None,
) -> Image:
    """Simulated low-dose CT (HU) of a real CT, slice by slice (see the module docstring).

    Parameters
    ----------
    image
        CT in HU, 2D ``(y, x)`` or 3D ``(z, y, x)`` with square in-plane pixels.
    dose_fraction
        Fraction of the full dose, in (0, 1].
    model
        Physics parameters (:class:`LowDoseModel`).
    seed
        Seed of the Poisson noise (one generator for the whole volume, slices in order).
    slices
        Only these axial slices (the others are copied unchanged); default all.
    """
    if image.meta.modality and image.meta.modality != "CT":
        raise InputError(
            f"{image.meta.source or 'image'}: low-dose simulation needs a CT in HU, "
            f"got modality {image.meta.modality!r}"
        )
    if image.meta.units not in ("", Units.UNKNOWN, Units.HU):
        raise InputError(f"{image.meta.source or 'image'}: the CT must be in HU, found units {image.meta.units!r}")
    sp = image.spacing
    if abs(sp[-1] - sp[-2]) > 1e-3 * sp[-1]:
        raise InputError(f"the in-plane pixels must be square for the projector, got spacing {sp[-2:]} mm")
    m = model or LowDoseModel()
    rng = np.random.default_rng(seed)
    arr = np.asarray(image.array, np.float64)
    if arr.ndim == 2:
        out = simulate_low_dose_slice(arr, pixel_mm=sp[-1], dose_fraction=dose_fraction, model=m, rng=rng)
    else:
        out = arr.copy()
        for z in range(arr.shape[0]) if slices is None else slices:
            out[z] = simulate_low_dose_slice(arr[z], pixel_mm=sp[-1], dose_fraction=dose_fraction, model=m, rng=rng)
    op = f"simulate_low_dose(dose={dose_fraction},i0={m.i0_full:g},views={m.n_views},seed={seed})"
    return image.with_array(out.astype(np.float32), op=op)


# ---- metrics ---------------------------------------------------------------------------------------


def _window(a: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    return np.clip(np.asarray(a, np.float64), window_hu[0], window_hu[1])


def psnr_hu(test: np.ndarray, reference: np.ndarray, *, window_hu: tuple[float, float] = (-1000.0, 1000.0)) -> float:
    """PSNR in dB of HU images clipped to ``window_hu`` (peak = window width)."""
    t, r = _window(test, window_hu), _window(reference, window_hu)
    mse = float(np.mean((t - r) ** 2))
    peak = window_hu[1] - window_hu[0]
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def ssim_hu(test: np.ndarray, reference: np.ndarray, *, window_hu: tuple[float, float] = (-1000.0, 1000.0)) -> float:
    """Mean SSIM (scikit-image, Gaussian weights as Wang et al. 2004) of HU images clipped to ``window_hu``."""
    from skimage.metrics import structural_similarity

    t, r = _window(test, window_hu), _window(reference, window_hu)
    return float(
        structural_similarity(
            t, r, data_range=window_hu[1] - window_hu[0], gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )


def hu_bias(test: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean HU difference ``test - reference`` inside the boolean ``region``."""
    region = np.asarray(region, bool)
    if not region.any():
        raise InputError("hu_bias: the region is empty")
    return float(np.mean(np.asarray(test, np.float64)[region] - np.asarray(reference, np.float64)[region]))


def icc_absolute(values: np.ndarray) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979).

    ``values`` is ``(n_subjects, k_raters)`` (e.g. patients x {full dose, low dose}).
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise InputError(f"icc_absolute needs an (n_subjects >= 2, k_raters >= 2) array, got {x.shape}")
    n, k = x.shape
    grand = x.mean()
    ss_r = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_c = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_e = np.sum((x - grand) ** 2) - ss_r - ss_c
    msr, msc, mse = ss_r / (n - 1), ss_c / (k - 1), ss_e / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / den) if den > 0 else float("nan")


def feature_iccs(reference: Sequence[Mapping[str, float]], test: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """ICC(2,1) per feature between two lists of feature dicts (one per patient, same order)."""
    if len(reference) != len(test):
        raise InputError(f"feature_iccs: {len(reference)} reference rows but {len(test)} test rows")
    keys = sorted(set.intersection(*(set(d) for d in [*reference, *test])))
    out = {}
    for k in keys:
        v = np.array([[r[k], t[k]] for r, t in zip(reference, test, strict=True)], np.float64)
        if np.all(np.isfinite(v)) and np.ptp(v[:, 0]) > 0:
            out[k] = icc_absolute(v)
    return out


# ---- a small supervised CNN denoiser ------------------------------------------------------------------

#: CT intensities enter the denoising networks as HU / 1000 (air -1, water 0, dense bone ~ +1 to +2).
HU_SCALE = 1000.0


@keeps_torch_state
def train_denoise_cnn(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    width: int = 32,
    depth: int = 5,
    patch: int = 64,
    steps: int = 600,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    cosine: bool = False,
) -> tuple[Any, list[float]]:
    """Train the residual CNN of :func:`medlens.learn.encoders.build_denoise_cnn` on (low-dose, full-dose) HU slices.

    Random ``patch`` x ``patch`` crops (same place in both), random flips; L2 loss on the predicted noise
    (``low - full``) in units of HU / 1000; Adam at ``learning_rate`` (``cosine``: decayed to 0 over the
    steps by a cosine). Returns the network (eval mode) and the mean loss of every 50 steps.
    """
    import torch

    from medlens.learn.encoders import build_denoise_cnn

    if not pairs:
        raise InputError("train_denoise_cnn: no (low-dose, full-dose) pairs")
    for i, (lo, hi) in enumerate(pairs):
        if lo.shape != hi.shape or lo.ndim != 2 or min(lo.shape) < patch:
            raise InputError(
                f"pair {i}: need two 2D slices of one shape, at least {patch} px, got {lo.shape}, {hi.shape}"
            )
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_denoise_cnn(width=width, depth=depth)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cosine else None
    lows = [np.asarray(lo, np.float32) / HU_SCALE for lo, _ in pairs]
    highs = [np.asarray(hi, np.float32) / HU_SCALE for _, hi in pairs]
    losses, run = [], 0.0
    net.train()
    for step in range(steps):
        xb, yb = [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(lows)))
            y0 = int(rng.integers(lows[i].shape[0] - patch + 1))
            x0 = int(rng.integers(lows[i].shape[1] - patch + 1))
            lo = lows[i][y0 : y0 + patch, x0 : x0 + patch]
            hi = highs[i][y0 : y0 + patch, x0 : x0 + patch]
            if rng.random() < 0.5:
                lo, hi = lo[:, ::-1], hi[:, ::-1]
            if rng.random() < 0.5:
                lo, hi = lo[::-1], hi[::-1]
            xb.append(lo)
            yb.append(lo - hi)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xb)[:, None]))
        y = torch.from_numpy(np.ascontiguousarray(np.stack(yb)[:, None]))
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        run += float(loss.detach())
        if (step + 1) % 50 == 0:
            losses.append(run / 50)
            run = 0.0
    net.eval()
    return net, losses


def apply_denoise_cnn(net: Any, hu: np.ndarray) -> np.ndarray:
    """Denoise a 2D HU slice (or a batch ``(n, y, x)``) with a residual CNN: ``x - net(x)``, in HU."""
    import torch

    a = np.asarray(hu, np.float32) / HU_SCALE
    batch = a[None, None] if a.ndim == 2 else a[:, None]
    with torch.inference_mode():
        out = batch - net(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
    out = out[0, 0] if a.ndim == 2 else out[:, 0]
    return out.astype(np.float64) * HU_SCALE


#: The shipped supervised denoiser: trained on simulated 10 % and 25 % dose STS CT (``scripts/learn_ship_denoiser.py``).
DEFAULT_DENOISER = Path(__file__).resolve().parent / "weights" / "sts_ct_denoise_cnn.pt"
#: The shipped DDPM prior of full-dose STS CT patches (``scripts/learn_ship_diffusion.py``).
DEFAULT_DIFFUSION_PRIOR = Path(__file__).resolve().parent / "weights" / "sts_ct_diffusion_prior.pt"
_METHODS = {"cnn": ("denoise-cnn", DEFAULT_DENOISER), "diffusion": ("diffusion-unet", DEFAULT_DIFFUSION_PRIOR)}


def apply_diffusion_prior(setup: Any, hu: np.ndarray, *, n_steps: int = 8) -> np.ndarray:
    """Denoise one 2D HU slice with a DDPM prior (:func:`medlens.learn.diffusion.ddim_denoise`), in HU.

    The noise level is the wavelet (finest diagonal band, MAD) estimate of the slice, as in the table of
    ``scripts/learn_lowdose.py``; the slice is reflect-padded to a multiple of the U-Net's down-sampling.
    """
    from medlens.learn.diffusion import ddim_denoise
    from medlens.preprocess.denoise import estimate_noise_sigma

    a = np.asarray(hu, np.float64)
    sigma = estimate_noise_sigma(Image.from_array(a.astype(np.float32), spacing=(1.0, 1.0))) / HU_SCALE
    if not sigma > 0:  # a noise-free (e.g. constant) slice: nothing to remove
        return a.copy()
    div = 2 ** (len(setup.architecture["channels"]) - 1)
    py, px = (-a.shape[0]) % div, (-a.shape[1]) % div
    x = np.pad(a / HU_SCALE, ((0, py), (0, px)), mode="reflect")
    den = ddim_denoise(setup, x[None, None], sigma=sigma, n_steps=n_steps)[0, 0][: a.shape[0], : a.shape[1]]
    return np.asarray(den, np.float64) * HU_SCALE


@keeps_torch_state
def denoise_ct(
    image: Image,
    *,
    method: str = "cnn",
    checkpoint: str | os.PathLike[str] | None = None,
    batch_slices: int = 4,
    threads: int = 1,
    engine: str = "torch",
    ddim_steps: int = 8,
) -> Image:
    """Denoise a (low-dose) CT in HU with a residual CNN or a DDPM prior, axial slice by axial slice.

    Parameters
    ----------
    image
        CT in HU, 2D ``(y, x)`` or 3D ``(z, y, x)``. Its modality must be CT (or unset) and its
        units HU (or unset/unknown, e.g. a NIfTI file); the input is not modified.
    method
        ``"cnn"`` (supervised residual CNN, ``denoise-cnn`` checkpoints) or ``"diffusion"`` (DDPM prior
        of full-dose patches, ``diffusion-unet`` checkpoints; the noise level is estimated per slice
        and ``ddim_steps`` deterministic DDIM steps are run; torch only, much slower).
    checkpoint
        A checkpoint of the method's kind (``.pt`` with its ``.json``); default :data:`DEFAULT_DENOISER`
        (STS CT, 0.98 mm pixels, simulated 10 % and 25 % dose; see docs/learn-denoise.md) or
        :data:`DEFAULT_DIFFUSION_PRIOR`.
    batch_slices
        Slices per network call (memory: about ``width x 4 bytes`` per pixel per slice).
    threads
        Intra-op threads (torch or ONNX Runtime).
    engine
        ``"torch"`` or ``"onnx"``: the checkpoint exported to ONNX and run in ONNX Runtime (2-3x
        faster on CPU here; equal to torch within 1e-4 HU/1000, tested). The export is kept in memory
        per checkpoint hash and thread count.

    Returns
    -------
    Image
        The denoised CT (float32 HU, same grid and metadata), with the step in its history.

    Raises
    ------
    InputError
        A non-CT modality, units other than HU, a non-finite or non-2D/3D array, or a checkpoint that
        is not of the method's kind / fails its hash or shape check.
    """
    import torch

    from medlens.learn.encoders import check_input, load_checkpoint, sha256_file

    if method not in _METHODS:
        raise InputError(f"method must be 'cnn' or 'diffusion', got {method!r}")
    kind, default = _METHODS[method]
    path = Path(checkpoint) if checkpoint is not None else default
    src = image.meta.source or "image"
    if image.meta.modality and image.meta.modality != "CT":
        raise InputError(
            f"{src}: denoise_ct needs a CT in HU, got modality {image.meta.modality!r}; "
            "the denoiser was trained on CT noise only"
        )
    if image.meta.units not in ("", Units.UNKNOWN, Units.HU):
        raise InputError(
            f"{src}: denoise_ct needs a CT in HU, found units {image.meta.units!r}; "
            "give the CT before any intensity normalisation"
        )
    ck = load_checkpoint(path, expect_kind=kind)
    check_input(image, ck.input, path=path)
    arr = np.asarray(image.array, np.float32)
    if arr.ndim not in (2, 3):
        raise InputError(f"{src}: denoise_ct needs a 2D or 3D CT, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{src}: the CT contains NaN or infinite values; fill them before denoising")
    if batch_slices < 1:
        raise InputError(f"batch_slices must be at least 1, got {batch_slices}")
    if engine not in ("torch", "onnx"):
        raise InputError(f"engine must be 'torch' or 'onnx', got {engine!r}")
    if method == "diffusion" and engine != "torch":
        raise InputError(f"method 'diffusion' runs with engine 'torch' only, got engine {engine!r}")
    if ddim_steps < 1:
        raise InputError(f"ddim_steps must be at least 1, got {ddim_steps}")
    digest = sha256_file(path)
    vol = arr[None] if arr.ndim == 2 else arr
    out = np.empty(vol.shape, np.float32)
    if method == "diffusion":
        from medlens.learn.diffusion import DiffusionSetup, make_scheduler

        torch.set_num_threads(max(1, int(threads)))
        sched = make_scheduler(int(ck.architecture.get("num_train_timesteps", 1000)))
        setup = DiffusionSetup(ck.net, sched, ck.architecture, [])
        for z in range(vol.shape[0]):
            out[z] = apply_diffusion_prior(setup, vol[z], n_steps=ddim_steps)
        res = out[0] if arr.ndim == 2 else out
        op = f"denoise_ct(method=diffusion,checkpoint={path.name},sha256={digest[:12]},ddim_steps={ddim_steps})"
        return image.with_array(res, op=op)
    if engine == "onnx":
        ort = _onnx_denoiser(path, digest, max(1, int(threads)))
        for z0 in range(0, vol.shape[0], batch_slices):
            x = vol[z0 : z0 + batch_slices, None] / np.float32(HU_SCALE)
            out[z0 : z0 + batch_slices] = ((x - ort(x))[:, 0] * HU_SCALE).astype(np.float32)
    else:
        torch.set_num_threads(max(1, int(threads)))
        for z0 in range(0, vol.shape[0], batch_slices):
            out[z0 : z0 + batch_slices] = apply_denoise_cnn(ck.net, vol[z0 : z0 + batch_slices])
    res = out[0] if arr.ndim == 2 else out
    op = f"denoise_ct(checkpoint={path.name},sha256={digest[:12]}" + (",engine=onnx)" if engine == "onnx" else ")")
    return image.with_array(res, op=op)


_ONNX_DENOISERS: dict[tuple[str, int], Any] = {}


def _onnx_denoiser(path: Path, digest: str, threads: int) -> Any:
    """An ONNX Runtime session of a denoise-cnn checkpoint (exported once per hash and thread count)."""
    import tempfile

    from medlens.learn.onnx_export import OnnxModel, export_checkpoint

    key = (digest, threads)
    if key not in _ONNX_DENOISERS:
        with tempfile.TemporaryDirectory() as tmp:  # the session holds the model once it is built
            _ONNX_DENOISERS[key] = OnnxModel(export_checkpoint(path, Path(tmp) / "denoise.onnx"), threads=threads)
    return _ONNX_DENOISERS[key]
