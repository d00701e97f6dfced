"""Rigid, affine and B-spline (deformable) registration (SimpleITK ``ImageRegistrationMethod``) and applying transforms.

Transforms follow the ITK convention: they map points of the **fixed** image's space to the
**moving** image's space (LPS mm), which is what resampling the moving image onto the fixed grid
needs. ``RegistrationResult.save`` writes the transform as an ITK ``.tfm`` text file readable by
SimpleITK, ITK, 3D Slicer and ANTs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path
from medlens.core.errors import FormatError, InputError, MedlensWarning, ProcessingError
from medlens.core.image import Image, Units
from medlens.preprocess._validate import check_image

__all__ = [
    "MIN_ALIGNED_GAIN",
    "PETCT_INPUTS",
    "AlignmentDecision",
    "Initialisation",
    "Metric",
    "RegistrationResult",
    "RegistrationWarning",
    "TransformType",
    "apply_transform",
    "evaluate_metric",
    "load_transform",
    "register",
    "register_aligned",
    "transform_points",
]


#: The metric inputs measured for PET -> CT (docs/preprocess.md): CT soft-tissue window to [0, 1], CT blurred to the
#: PET's resolution (FWHM mm), PET as log(1 + SUV). Pass as ``register(ct, pet, **PETCT_INPUTS)``.
PETCT_INPUTS: dict[str, Any] = {"fixed_window_hu": (40.0, 400.0), "fixed_blur_fwhm_mm": 7.0, "moving_log1p": True}


class RegistrationWarning(MedlensWarning):
    """A registration stopped without converging; its result may be wrong."""


class TransformType(StrEnum):
    RIGID = "rigid"  #: 3 rotations + 3 translations (Euler3D)
    AFFINE = "affine"  #: 12 parameters (rotation, scaling, shear, translation)
    BSPLINE = "bspline"  #: cubic B-spline free-form deformation (deformable)


class Metric(StrEnum):
    MI = "mi"  #: Mattes mutual information: multimodal pairs (PET->CT, MR->CT)
    MS = "ms"  #: mean squares: same modality and same intensity scale


class Initialisation(StrEnum):
    GEOMETRY = "geometry"  #: align the centres of the two grids
    MOMENTS = "moments"  #: align the intensity centres of mass (needs non-negative intensities)
    NONE = "none"  #: start from the identity (images already share a frame of reference)


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register`.

    Attributes
    ----------
    transform
        ``SimpleITK.Transform`` mapping fixed-space LPS points (mm) to moving-space points.
    final_metric
        Metric value at the end (Mattes MI is reported negated by ITK: lower is better; mean squares
        in squared intensity units).
    iterations
        Optimizer iterations summed over the resolution levels.
    stop_condition
        The optimizer's own description of why it stopped (last level).
    converged
        False when the last level stopped at the iteration limit or the metric is not finite.
    metric, transform_type
        What was optimised.
    metric_history
        Metric value at every iteration (all levels).
    """

    transform: Any
    final_metric: float
    iterations: int
    stop_condition: str
    converged: bool
    metric: str
    transform_type: str
    metric_history: tuple[float, ...] = field(default=(), repr=False)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the transform as an ITK transform file (``.tfm`` text), atomically."""
        return save_transform(self.transform, path)

    def apply(self, image: Image, *, reference: Image, **kwargs: Any) -> Image:
        """Shortcut for :func:`apply_transform` with this result's transform."""
        return apply_transform(image, self.transform, reference=reference, **kwargs)

    def summary(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return (
            f"{self.transform_type} registration ({self.metric}) {state}: final metric {self.final_metric:.6g} "
            f"after {self.iterations} iterations; optimizer: {self.stop_condition}"
        )


def save_transform(transform: Any, path: str | os.PathLike[str]) -> Path:
    """Write a SimpleITK transform to ``path`` (``.tfm``/``.txt`` text or ``.h5``), atomically."""
    import SimpleITK as sitk

    p = Path(path)
    if p.suffix.lower() not in (".tfm", ".txt", ".h5", ".hdf5", ".mat"):
        raise InputError(f"{path}: a transform file must end in .tfm (ITK text), .txt, .h5 or .mat")
    with atomic_path(p) as tmp:
        sitk.WriteTransform(transform, str(tmp))
    return p


def load_transform(path: str | os.PathLike[str]) -> Any:
    """Read an ITK transform file written by :meth:`RegistrationResult.save` (or ITK/Slicer/ANTs)."""
    import SimpleITK as sitk

    if not Path(path).is_file():
        raise InputError(f"{path}: no such transform file")
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        raise FormatError(f"{path}: not a readable ITK transform file ({exc})") from exc


def transform_points(transform: Any, points_mm: np.ndarray) -> np.ndarray:
    """Apply a SimpleITK transform to LPS points ``(n, 3)`` in mm; returns ``(n, 3)``."""
    pts = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
    return np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in pts], dtype=np.float64)


def _enum(cls: type[StrEnum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        raise InputError(f"{name} must be one of {[m.value for m in cls]}, got {value!r}") from None


def register(
    fixed: Image,
    moving: Image,
    *,
    transform: TransformType | str = TransformType.RIGID,
    metric: Metric | str = Metric.MI,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    init: Initialisation | str = Initialisation.GEOMETRY,
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas_mm: Sequence[float] = (2.0, 1.0, 0.0),
    iterations: int = 200,
    learning_rate_mm: float = 2.0,
    min_step_mm: float = 1e-3,
    sampling_fraction: float = 0.25,
    histogram_bins: int = 50,
    seed: int = 0,
    on_failure: str = "warn",
    fixed_window_hu: tuple[float, float] | Sequence[float] | None = None,
    fixed_blur_fwhm_mm: float = 0.0,
    moving_log1p: bool = False,
    bspline_grid_mm: float = 50.0,
    initial_transform: Any = None,
) -> RegistrationResult:
    """Register ``moving`` to ``fixed`` (3D), rigid, affine or deformable (B-spline), coarse to fine.

    Parameters
    ----------
    fixed, moving
        3D images; intensities in any units (they need not match with ``metric="mi"``).
    transform
        ``"rigid"`` (Euler3D), ``"affine"`` or ``"bspline"`` (cubic B-spline free-form deformation with
        control points every ``bspline_grid_mm``, optimised with L-BFGS-B; usually on top of a rigid or
        affine ``initial_transform``).
    metric
        ``"mi"``: Mattes mutual information (``histogram_bins`` bins), for different modalities;
        ``"ms"``: mean squares, same modality.
    fixed_mask
        Boolean mask on the fixed grid: only its voxels are sampled for the metric.
    moving_mask
        Boolean mask on the moving grid: samples whose mapped point falls outside it are ignored.
    init
        ``"geometry"`` (grid centres), ``"moments"`` (intensity centres of mass) or ``"none"``.
    shrink_factors, smoothing_sigmas_mm
        One entry per resolution level, coarse to fine (Gaussian sigma in mm).
    iterations
        Maximum optimizer iterations per level (regular-step gradient descent).
    learning_rate_mm, min_step_mm
        Largest and smallest optimizer step, expressed as a physical shift in mm (parameter
        scales are estimated from physical shifts, so rotations and translations are comparable).
    sampling_fraction
        Fraction of voxels sampled at random for the metric (``seed`` >= 0 makes it repeatable: the same
        call gives the same transform).
    on_failure
        What to do when the optimizer stops at the iteration limit: ``"warn"``
        (:class:`RegistrationWarning`, result returned with ``converged=False``) or ``"error"``
        (:class:`~medlens.core.errors.ProcessingError`). Never silent.
    fixed_window_hu
        ``(centre, width)`` in HU: the fixed image (CT) is clipped to ``centre +- width / 2`` and
        scaled to [0, 1] before the metric sees it (``(40, 400)``: soft tissue). None: raw values.
    fixed_blur_fwhm_mm
        Gaussian blur of the fixed image (FWHM in mm, after the window) so that a sharp CT matches a
        blurred PET (about 7 mm for these scanners); 0 = none.
    moving_log1p
        Map the moving image through ``log(1 + max(v, 0))`` before the metric (PET in SUV: the
        tumour's high values no longer take most of the histogram bins).
    bspline_grid_mm
        B-spline control-point spacing (mm) over the fixed grid's extent (``transform="bspline"``).
    initial_transform
        A fixed transform applied first (e.g. a rigid result's ``.transform``): the new stage is optimised
        on top of it, and the returned transform is their composite.

    The three intensity options change only what the metric compares; the returned transform
    applies to the original images. Recommended for PET -> CT (measured in ``docs/preprocess.md``):
    :data:`PETCT_INPUTS` (``fixed_window_hu=(40, 400), fixed_blur_fwhm_mm=7.0, moving_log1p=True``).

    Returns
    -------
    RegistrationResult
    """
    import SimpleITK as sitk

    check_image(fixed, what="fixed", ndims=(3,))
    check_image(moving, what="moving", ndims=(3,))
    ttype = _enum(TransformType, transform, "transform")
    met = _enum(Metric, metric, "metric")
    ini = _enum(Initialisation, init, "init")
    if on_failure not in ("warn", "error"):
        raise InputError(f"on_failure must be 'warn' or 'error', got {on_failure!r}")
    shrink = [int(v) for v in shrink_factors]
    sig = [float(v) for v in smoothing_sigmas_mm]
    if not shrink or len(shrink) != len(sig):
        raise InputError(
            "shrink_factors and smoothing_sigmas_mm need one entry per level and the same length; "
            f"got {shrink} and {sig}"
        )
    if any(v < 1 for v in shrink) or any(not np.isfinite(v) or v < 0 for v in sig):
        raise InputError(f"shrink factors must be >= 1 and smoothing sigmas >= 0 mm; got {shrink} and {sig}")
    if not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, got {iterations!r}")
    if not (learning_rate_mm > 0 and min_step_mm > 0 and min_step_mm < learning_rate_mm):
        raise InputError(
            f"need 0 < min_step_mm < learning_rate_mm, got min_step_mm={min_step_mm}, "
            f"learning_rate_mm={learning_rate_mm}"
        )
    if not (np.isfinite(bspline_grid_mm) and bspline_grid_mm > 0):
        raise InputError(f"bspline_grid_mm must be > 0 (control-point spacing in mm), got {bspline_grid_mm}")
    if initial_transform is not None and not isinstance(initial_transform, sitk.Transform):
        raise InputError(
            f"initial_transform must be a SimpleITK Transform (e.g. a rigid result's .transform), "
            f"got {type(initial_transform).__name__}"
        )
    f_s, m_s = _metric_images(
        fixed, moving, fixed_window_hu=fixed_window_hu, fixed_blur_fwhm_mm=fixed_blur_fwhm_mm, moving_log1p=moving_log1p
    )

    if ttype is TransformType.BSPLINE:
        # control points every bspline_grid_mm over the fixed grid's physical extent (at least 1 mesh cell)
        extent = np.asarray(f_s.GetSize(), dtype=np.float64) * np.asarray(f_s.GetSpacing())
        mesh = [max(1, int(np.ceil(e / float(bspline_grid_mm)))) for e in extent]
        initial = sitk.BSplineTransformInitializer(f_s, mesh, order=3)
    else:
        base = sitk.Euler3DTransform() if ttype is TransformType.RIGID else sitk.AffineTransform(3)
        if ini is Initialisation.NONE or initial_transform is not None:
            # rotate about the fixed grid's centre, not the LPS origin (which may lie a metre away)
            centre = fixed.index_to_world((np.asarray(fixed.shape, dtype=np.float64) - 1.0) / 2.0)
            base.SetCenter(tuple(float(v) for v in centre))
            initial = base
        else:
            mode = (
                sitk.CenteredTransformInitializerFilter.GEOMETRY
                if ini is Initialisation.GEOMETRY
                else sitk.CenteredTransformInitializerFilter.MOMENTS
            )
            initial = sitk.CenteredTransformInitializer(f_s, m_s, base, mode)

    reg = _method(
        fixed,
        moving,
        met=met,
        histogram_bins=histogram_bins,
        sampling_fraction=sampling_fraction,
        seed=seed,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
    )
    if ttype is TransformType.BSPLINE:
        # gradient descent with a line search and physical-shift scales: on a known deformation of an STS CT crop it
        # recovered the field better than L-BFGS-B (0.70 vs 1.35 mm mean error; L-BFGS-B stopped on its tolerance)
        reg.SetOptimizerAsGradientDescentLineSearch(
            learningRate=float(learning_rate_mm),
            numberOfIterations=int(iterations),
            convergenceMinimumValue=1e-6,
            convergenceWindowSize=5,
        )
    else:
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=float(learning_rate_mm),
            minStep=float(min_step_mm),
            numberOfIterations=int(iterations),
            relaxationFactor=0.5,
            gradientMagnitudeTolerance=1e-8,
        )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sig)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if initial_transform is not None:
        reg.SetMovingInitialTransform(initial_transform)
    reg.SetInitialTransform(initial, inPlace=True)

    history: list[float] = []
    reg.AddCommand(sitk.sitkIterationEvent, lambda: history.append(float(reg.GetMetricValue())))
    try:
        reg.Execute(f_s, m_s)
    except RuntimeError as exc:
        raise ProcessingError(
            f"{ttype.value} registration ({met.value}) failed after {len(history)} iterations: {exc}. "
            "Check that the images overlap in space (same frame of reference) or use init='moments'"
        ) from exc
    stop = reg.GetOptimizerStopConditionDescription()
    final = float(reg.GetMetricValue())
    limit_hit = "Maximum number of iterations" in stop or "Too many function evaluations" in stop
    converged = np.isfinite(final) and not limit_hit
    out_transform: Any = initial
    if initial_transform is not None:
        # ITK applies the composite's transforms last-added first: fixed point -> initial -> this stage's output
        out_transform = sitk.CompositeTransform([initial_transform, initial])
    res = RegistrationResult(
        transform=out_transform,
        final_metric=final,
        iterations=len(history),
        stop_condition=stop,
        converged=bool(converged),
        metric=met.value,
        transform_type=ttype.value,
        metric_history=tuple(history),
    )
    if not res.converged:
        msg = res.summary() + "; raise iterations or learning_rate_mm, check the overlap, or inspect the overlay"
        if on_failure == "error":
            raise ProcessingError(msg)
        warnings.warn(msg, RegistrationWarning, stacklevel=2)
    return res


def _metric_images(
    fixed: Image,
    moving: Image,
    *,
    fixed_window_hu: tuple[float, float] | Sequence[float] | None,
    fixed_blur_fwhm_mm: float,
    moving_log1p: bool,
) -> tuple[Any, Any]:
    """The float32 SimpleITK images the metric compares (window / blur of the fixed, log of the moving)."""
    from medlens.core.sitk_bridge import to_sitk

    # single precision throughout (what ITK receives anyway): a 512x512x300 CT stays a 300 MB copy
    f_arr = np.asarray(fixed.array, dtype=np.float32)
    if fixed_window_hu is not None:
        win = [float(v) for v in fixed_window_hu]
        if len(win) != 2 or not all(np.isfinite(win)) or win[1] <= 0:
            raise InputError(f"fixed_window_hu must be (centre, width) in HU with width > 0, got {fixed_window_hu!r}")
        f_arr = np.clip((f_arr - np.float32(win[0] - win[1] / 2.0)) / np.float32(win[1]), 0.0, 1.0)
    if not (np.isfinite(fixed_blur_fwhm_mm) and fixed_blur_fwhm_mm >= 0):
        raise InputError(f"fixed_blur_fwhm_mm must be >= 0 (mm), got {fixed_blur_fwhm_mm}")
    if fixed_blur_fwhm_mm > 0:
        from scipy import ndimage

        sigma_vox = fixed_blur_fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / np.asarray(fixed.spacing)
        f_arr = ndimage.gaussian_filter(f_arr, sigma_vox, mode="nearest")
    m_arr = np.asarray(moving.array, dtype=np.float32)
    if moving_log1p:
        m_arr = np.log1p(np.clip(m_arr, 0.0, None))
    f_s = to_sitk(fixed.with_array(f_arr.astype(np.float32, copy=False)))
    m_s = to_sitk(moving.with_array(m_arr.astype(np.float32, copy=False)))
    return f_s, m_s


def _method(
    fixed: Image,
    moving: Image,
    *,
    met: Metric,
    histogram_bins: int,
    sampling_fraction: float,
    seed: int,
    fixed_mask: Image | None,
    moving_mask: Image | None,
) -> Any:
    """An ``ImageRegistrationMethod`` with the metric, its sampling, the masks and linear interpolation set."""
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import to_sitk

    if not 0 < sampling_fraction <= 1:
        raise InputError(f"sampling_fraction must be in (0, 1], got {sampling_fraction}")
    if int(seed) < 0:
        raise InputError(f"seed must be an integer >= 0 (it fixes the metric's random samples), got {seed}")
    reg = sitk.ImageRegistrationMethod()
    if met is Metric.MI:
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    else:
        reg.SetMetricAsMeanSquares()
    if sampling_fraction < 1:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        # ITK reads seed 0 as "seed from the wall clock" (a different sample set on every run): shift by one so
        # that every seed, 0 included, is a fixed seed and the same call gives the same transform
        reg.SetMetricSamplingPercentage(float(sampling_fraction), int(seed) + 1)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    if fixed_mask is not None:
        if not isinstance(fixed_mask, Image) or not fixed_mask.is_mask:
            raise InputError("fixed_mask must be a boolean medlens.Image on the fixed grid")
        fixed.require_same_grid(fixed_mask, what="fixed_mask")
        if not fixed_mask.array.any():
            raise InputError("fixed_mask is empty (no voxel set); it must select the voxels to sample")
        reg.SetMetricFixedMask(to_sitk(fixed_mask))
    if moving_mask is not None:
        if not isinstance(moving_mask, Image) or not moving_mask.is_mask:
            raise InputError("moving_mask must be a boolean medlens.Image on the moving grid")
        moving.require_same_grid(moving_mask, what="moving_mask")
        if not moving_mask.array.any():
            raise InputError("moving_mask is empty (no voxel set); it must select where samples may land")
        reg.SetMetricMovingMask(to_sitk(moving_mask))
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def evaluate_metric(
    fixed: Image,
    moving: Image,
    transform: Any = None,
    *,
    metric: Metric | str = Metric.MI,
    fixed_mask: Image | None = None,
    moving_mask: Image | None = None,
    histogram_bins: int = 50,
    fixed_window_hu: tuple[float, float] | Sequence[float] | None = None,
    fixed_blur_fwhm_mm: float = 0.0,
    moving_log1p: bool = False,
) -> float:
    """The registration metric of ``moving`` mapped through ``transform`` onto ``fixed`` (every voxel sampled).

    Same metric inputs as :func:`register` (window, blur, log); ``transform`` None is the identity (the
    scanner's alignment for a pair in one frame of reference). Mattes MI is negated as in ITK (lower is
    better); mean squares in squared intensity units. Full sampling, so two calls on the same inputs agree.
    """
    import SimpleITK as sitk

    check_image(fixed, what="fixed", ndims=(3,))
    check_image(moving, what="moving", ndims=(3,))
    met = _enum(Metric, metric, "metric")
    if isinstance(transform, RegistrationResult):
        transform = transform.transform
    if transform is None:
        transform = sitk.Transform(3, sitk.sitkIdentity)
    f_s, m_s = _metric_images(
        fixed, moving, fixed_window_hu=fixed_window_hu, fixed_blur_fwhm_mm=fixed_blur_fwhm_mm, moving_log1p=moving_log1p
    )
    reg = _method(
        fixed,
        moving,
        met=met,
        histogram_bins=histogram_bins,
        sampling_fraction=1.0,
        seed=0,
        fixed_mask=fixed_mask,
        moving_mask=moving_mask,
    )
    reg.SetMovingInitialTransform(transform)
    reg.SetInitialTransform(sitk.Transform(3, sitk.sitkIdentity))
    try:
        return float(reg.MetricEvaluate(f_s, m_s))
    except RuntimeError as exc:
        raise ProcessingError(f"the {met.value} metric could not be evaluated: {exc}") from exc


#: Smallest relative metric improvement over the scanner alignment for which :func:`register_aligned` moves a
#: pair that shares a frame of reference. Set between what was measured on the 20 STS PET/CT pairs
#: (docs/multimodal.md): the MI optimum of the aligned pairs gains 0.5-14.2 %, the same pairs moved by a known
#: 18 mm motion gain 25.9-213 % when registered back.
MIN_ALIGNED_GAIN = 0.20


@dataclass(frozen=True)
class AlignmentDecision:
    """What :func:`register_aligned` decided for a pair that may already be aligned.

    Attributes
    ----------
    result
        The registration that was tried (its transform is the candidate).
    accepted
        True: the registration is used; False: the pair is kept as it is (``transform`` is the identity).
    transform
        The transform to apply: ``result.transform`` when accepted, else the identity.
    metric_identity, metric_registered
        The metric at the identity (scanner alignment) and at the registration's transform, both with every
        voxel sampled (lower is better).
    gain
        Relative improvement ``(metric_identity - metric_registered) / |metric_identity|``.
    same_frame
        Both images carry the same Frame of Reference UID.
    reason
        One line for the user.
    """

    result: RegistrationResult
    accepted: bool
    transform: Any
    metric_identity: float
    metric_registered: float
    gain: float
    same_frame: bool
    reason: str


def register_aligned(
    fixed: Image,
    moving: Image,
    *,
    min_gain: float = MIN_ALIGNED_GAIN,
    force: bool = False,
    **options: Any,
) -> AlignmentDecision:
    """Register, but keep a pair that shares a frame of reference unless the metric clearly improves.

    For two series with the same Frame of Reference UID (a PET/CT, or an MR already registered into it)
    the scanner's alignment is the starting point (``init="none"``), and a registration is accepted only
    if its metric, evaluated on every voxel with the same inputs, improves on the identity's by at least
    ``min_gain`` (relative). On the STS cohort the MI optimum of an aligned PET/CT lies 3-13 mm from the
    scanner alignment for a small gain, while the expert contours (copied across the series) cannot say
    which is right; a known 18 mm motion gives a far larger gain (docs/multimodal.md). Pairs in different
    frames, or ``force=True``, are registered as :func:`register` does.

    Parameters
    ----------
    fixed, moving
        3D images.
    min_gain
        Relative metric improvement needed to move an aligned pair (``0.2`` = 20 %, :data:`MIN_ALIGNED_GAIN`).
    force
        Accept the registration whatever the gain.
    **options
        Passed to :func:`register` (and the metric options to :func:`evaluate_metric`).
    """
    if not (np.isfinite(min_gain) and min_gain >= 0):
        raise InputError(f"min_gain must be >= 0 (a relative metric improvement), got {min_gain}")
    import SimpleITK as sitk

    f_uid, m_uid = fixed.meta.frame_of_reference_uid, moving.meta.frame_of_reference_uid
    same = bool(f_uid) and f_uid == m_uid
    opts = dict(options)
    if same and "init" not in opts:
        opts["init"] = Initialisation.NONE
    res = register(fixed, moving, **opts)
    keys = ("metric", "fixed_mask", "moving_mask", "histogram_bins", "fixed_window_hu", "fixed_blur_fwhm_mm")
    ev = {k: opts[k] for k in (*keys, "moving_log1p") if k in opts}
    m_id = evaluate_metric(fixed, moving, None, **ev)
    m_reg = evaluate_metric(fixed, moving, res.transform, **ev)
    gain = (m_id - m_reg) / abs(m_id) if m_id != 0 else (float("inf") if m_reg < m_id else 0.0)
    if force:
        accepted, why = True, "forced"
    elif not same:
        accepted, why = True, "different frames of reference: the registration is used"
    elif gain >= min_gain:
        accepted, why = True, f"aligned pair moved: the metric improves by {100 * gain:.1f} % >= {100 * min_gain:g} %"
    else:
        accepted, why = (
            False,
            f"aligned pair kept (same frame of reference): the metric improves by only {100 * gain:.1f} % "
            f"< {100 * min_gain:g} %; pass force=True (--force) to move it anyway",
        )
    return AlignmentDecision(
        result=res,
        accepted=accepted,
        transform=res.transform if accepted else sitk.Transform(3, sitk.sitkIdentity),
        metric_identity=m_id,
        metric_registered=m_reg,
        gain=float(gain),
        same_frame=same,
        reason=why,
    )


def apply_transform(
    image: Image,
    transform: Any,
    *,
    reference: Image,
    order: str = "linear",
    mask_rule: str = "ibsi",
    fill_value: float | None = None,
) -> Image:
    """Resample ``image`` (moving space) onto ``reference``'s grid through ``transform``.

    Parameters
    ----------
    image
        An intensity image or a boolean mask in the moving space.
    transform
        A ``SimpleITK.Transform`` (fixed -> moving points), a :class:`RegistrationResult` or a path
        to a ``.tfm`` file.
    reference
        The grid of the output (usually the fixed image).
    order
        Intensity images: ``"linear"``, ``"bspline"`` (cubic B-spline) or ``"nearest"``.
    mask_rule
        Masks: ``"ibsi"`` (interpolate the 0/1 mask linearly, keep values >= 0.5) or ``"nearest"``.
    fill_value
        Value outside the moving image (intensities); default the image's minimum (air for CT,
        0 for PET). Masks are filled with False.
    """
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk, to_sitk

    if not isinstance(image, Image):
        raise InputError(f"image must be a medlens.Image, got {type(image).__name__}")
    if image.ndim != 3 or not isinstance(reference, Image) or reference.ndim != 3:
        raise InputError("apply_transform needs a 3D image and a 3D reference Image")
    if isinstance(transform, RegistrationResult):
        transform = transform.transform
    elif isinstance(transform, (str, os.PathLike)):
        transform = load_transform(transform)
    if not isinstance(transform, sitk.Transform):
        raise InputError(
            "transform must be a SimpleITK Transform, a RegistrationResult or a .tfm path, "
            f"got {type(transform).__name__}"
        )
    ref_s = to_sitk(reference.with_array(np.zeros(reference.shape, np.float32)))
    if image.is_mask:
        if mask_rule not in ("ibsi", "nearest"):
            raise InputError(f"mask_rule must be 'ibsi' or 'nearest', got {mask_rule!r}")
        src = to_sitk(image.with_array(np.asarray(image.array, dtype=np.float32)))
        interp = sitk.sitkLinear if mask_rule == "ibsi" else sitk.sitkNearestNeighbor
        out = sitk.Resample(src, ref_s, transform, interp, 0.0, sitk.sitkFloat32)
        arr = np.round(from_sitk(out).array, 9) >= 0.5
        meta = image.meta.replace(units=Units.MASK, history=(*image.meta.history, f"apply_transform(mask,{mask_rule})"))
        return Image(arr, reference.affine, meta)
    interps = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline, "nearest": sitk.sitkNearestNeighbor}
    if order not in interps:
        raise InputError(f"order must be one of {sorted(interps)}, got {order!r}")
    fill = float(np.min(image.array)) if fill_value is None else float(fill_value)
    src = to_sitk(image.with_array(np.asarray(image.array, dtype=np.float32)))
    out = sitk.Resample(src, ref_s, transform, interps[order], fill, sitk.sitkFloat32)
    meta = image.meta.replace(history=(*image.meta.history, f"apply_transform({order})"))
    return Image(from_sitk(out).array, reference.affine, meta)
