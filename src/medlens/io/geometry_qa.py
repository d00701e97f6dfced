"""Geometry checks of a stack of DICOM slices (works from headers only).

:func:`check_slice_geometry` takes the per-slice ImagePositionPatient / ImageOrientationPatient
(and optionally pixel spacing and matrix size) and reports what is irregular, never hiding it:

==============================  ========================================================  ==========
code                            meaning                                                   resampling
==============================  ========================================================  ==========
``duplicate_position``          two or more slices at the same position along the normal  no
``inconsistent_orientation``    ImageOrientationPatient differs between slices            no
``inconsistent_pixel_spacing``  PixelSpacing differs between slices                       no
``inconsistent_shape``          Rows/Columns differ between slices                        no
``missing_slices``              a gap of about k times the regular step (k >= 2)          yes
``nonuniform_spacing``          steps differ from the regular step beyond the tolerance   yes
``gantry_tilt``                 slices are not stacked along the IOP normal (tilt/shear)  yes
==============================  ========================================================  ==========

The readers use the findings to fail (default) or resample onto a regular grid
(:func:`resample_to_regular_grid`, linear interpolation between neighbouring slices in world space).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "RESAMPLEABLE_CODES",
    "GeometryFinding",
    "check_slice_geometry",
    "format_findings",
    "resample_to_regular_grid",
    "slice_normal",
    "sort_slices",
]

#: Findings that resampling onto a regular grid can repair.
RESAMPLEABLE_CODES = frozenset({"missing_slices", "nonuniform_spacing", "gantry_tilt"})

#: Default tolerances.
POSITION_TOL_MM = 0.01  # two slices closer than this along the normal are duplicates
ORIENTATION_TOL = 1e-4  # direction cosines that differ by more are inconsistent
SPACING_REL_TOL = 0.01  # step differences above max(SPACING_ABS_TOL_MM, 1 % of the regular step)
SPACING_ABS_TOL_MM = 0.01
TILT_TOL_DEG = 0.01  # angle between the stacking direction and the IOP normal


@dataclass(frozen=True)
class GeometryFinding:
    """One irregularity of a slice stack.

    Attributes
    ----------
    code
        Machine-readable name (see the module table).
    severity
        ``"error"`` (the stack is not a regular grid) or ``"warning"`` (reported only).
    message
        A sentence saying what was found and where.
    """

    code: str
    severity: str
    message: str

    @property
    def resampleable(self) -> bool:
        """True when resampling onto a regular grid can repair this finding."""
        return self.code in RESAMPLEABLE_CODES

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def slice_normal(orientation: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Unit normal of a slice from its ImageOrientationPatient (row cosines x column cosines)."""
    iop = np.asarray(orientation, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:6])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        return np.array([0.0, 0.0, 1.0])
    return n / norm


def sort_slices(
    positions: npt.ArrayLike, orientation: npt.ArrayLike
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Order of slices along the normal of ``orientation`` and their sorted projections (mm).

    The sort is stable, so slices at equal positions keep their input order.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    proj = pos @ slice_normal(orientation)
    order = np.argsort(proj, kind="stable")
    return order, proj[order]


def _name(files: Sequence[str] | None, i: int) -> str:
    if files is None:
        return f"slice {i}"
    return str(files[i])


def _short_list(items: list[str], limit: int = 6) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", ... ({len(items) - limit} more)"


def _on_multiples(steps: npt.NDArray[np.float64], base: float) -> bool:
    k = np.rint(steps / base)
    return bool(np.all(k >= 1) and np.all(np.abs(steps - k * base) <= max(SPACING_ABS_TOL_MM, 0.1 * base)))


def _base_step(steps: npt.NDArray[np.float64]) -> float:
    """The regular slice step of a stack: the median step, unless only the smallest step explains the gaps.

    With few slices the median can fall between the true step and a gap (steps 1, 2 -> 1.5 mm);
    then the steps near the smallest one give the base.
    """
    med = float(np.median(steps))
    if _on_multiples(steps, med):
        return float(np.median(steps[np.rint(steps / med) == 1]))
    smallest = float(steps.min())
    if _on_multiples(steps, smallest):
        return float(np.median(steps[np.rint(steps / smallest) == 1]))
    return med


def check_slice_geometry(
    positions: npt.ArrayLike,
    orientations: npt.ArrayLike,
    *,
    pixel_spacings: npt.ArrayLike | None = None,
    shapes: Sequence[tuple[int, int]] | None = None,
    files: Sequence[str] | None = None,
) -> list[GeometryFinding]:
    """Find irregularities in a stack of slices.

    Parameters
    ----------
    positions
        ``(n, 3)`` ImagePositionPatient of each slice (LPS mm), in any order.
    orientations
        ``(n, 6)`` ImageOrientationPatient of each slice, or one ``(6,)`` for all.
    pixel_spacings
        Optional ``(n, 2)`` PixelSpacing (row spacing, column spacing) in mm.
    shapes
        Optional ``(rows, columns)`` of each slice.
    files
        Optional name of each slice (file path), used in the messages.

    Returns
    -------
    list of GeometryFinding
        Empty when the stack is a regular grid along its slice normal.
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = pos.shape[0]
    iops = np.asarray(orientations, dtype=np.float64)
    if iops.ndim == 1:
        iops = np.broadcast_to(iops, (n, 6))
    findings: list[GeometryFinding] = []

    # Orientation consistency.
    dev = np.abs(iops - iops[0]).max(axis=1)
    bad = np.flatnonzero(dev > ORIENTATION_TOL)
    if bad.size:
        findings.append(
            GeometryFinding(
                "inconsistent_orientation",
                "error",
                f"{bad.size} of {n} slices have an ImageOrientationPatient different from the first slice's "
                f"{np.round(iops[0], 5).tolist()} (largest difference {dev.max():.3g}): "
                + _short_list([_name(files, int(i)) for i in bad]),
            )
        )
    if pixel_spacings is not None:
        ps = np.asarray(pixel_spacings, dtype=np.float64).reshape(-1, 2)
        dps = np.abs(ps - ps[0]).max(axis=1)
        badp = np.flatnonzero(dps > 1e-4)
        if badp.size:
            findings.append(
                GeometryFinding(
                    "inconsistent_pixel_spacing",
                    "error",
                    f"{badp.size} of {n} slices have a PixelSpacing different from the first slice's "
                    f"{ps[0].tolist()} mm: " + _short_list([f"{_name(files, int(i))} {ps[i].tolist()}" for i in badp]),
                )
            )
    if shapes is not None:
        sh = [tuple(int(v) for v in s) for s in shapes]
        bads = [i for i, s in enumerate(sh) if s != sh[0]]
        if bads:
            findings.append(
                GeometryFinding(
                    "inconsistent_shape",
                    "error",
                    f"{len(bads)} of {n} slices have Rows x Columns different from the first slice's {sh[0]}: "
                    + _short_list([f"{_name(files, i)} {sh[i]}" for i in bads]),
                )
            )
    if n < 2:
        return findings

    normal = slice_normal(iops[0])
    order, proj = sort_slices(pos, iops[0])
    steps = np.diff(proj)

    # Duplicates.
    dup = np.flatnonzero(steps < POSITION_TOL_MM)
    if dup.size:
        pairs = [
            f"{_name(files, int(order[k]))} and {_name(files, int(order[k + 1]))} at {proj[k]:.3f} mm" for k in dup
        ]
        findings.append(
            GeometryFinding(
                "duplicate_position",
                "error",
                f"{dup.size} pair(s) of slices share the same position along the slice normal (several acquisitions "
                "or echoes mixed in one series?): " + _short_list(pairs, 4),
            )
        )
    good_steps = steps[steps >= POSITION_TOL_MM]
    if good_steps.size == 0:
        return findings
    med = _base_step(good_steps)
    tol = max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * med)

    # Missing slices: a step close to k * regular step (k >= 2).
    ratio = steps / med
    k_int = np.rint(ratio)
    missing = np.flatnonzero((k_int >= 2) & (np.abs(steps - k_int * med) <= max(tol, 0.1 * med)))
    if missing.size:
        where = [
            f"{int(k_int[k]) - 1} between {_name(files, int(order[k]))} ({proj[k]:.3f} mm) and "
            f"{_name(files, int(order[k + 1]))} ({proj[k + 1]:.3f} mm)"
            for k in missing
        ]
        total = int(sum(k_int[k] - 1 for k in missing))
        findings.append(
            GeometryFinding(
                "missing_slices",
                "error",
                f"{total} slice(s) missing (gap of a whole multiple of the {med:.4g} mm slice step): "
                + _short_list(where, 4),
            )
        )
    rest = np.ones(steps.size, dtype=bool)
    rest[missing] = False
    rest[dup] = False
    irregular = np.flatnonzero(rest & (np.abs(steps - med) > tol))
    if irregular.size:
        findings.append(
            GeometryFinding(
                "nonuniform_spacing",
                "error",
                f"slice spacing is not uniform: regular step {med:.4g} mm, {irregular.size} step(s) differ by more "
                f"than {tol:.3g} mm (min {steps[rest].min():.4g}, max {steps[rest].max():.4g} mm)",
            )
        )

    # Tilt / shear: the stacking direction must be the IOP normal.
    spos = pos[order]
    along = spos - spos[0]
    lateral = along - np.outer(along @ normal, normal)
    span = float(proj[-1] - proj[0])
    lat = np.linalg.norm(lateral, axis=1)
    if span > 0:
        angle = float(np.degrees(np.arctan2(lat[-1], span)))
        worst = float(lat.max())
        if angle > TILT_TOL_DEG or worst > max(0.05, np.tan(np.radians(TILT_TOL_DEG)) * span + 0.01):
            findings.append(
                GeometryFinding(
                    "gantry_tilt",
                    "error",
                    f"slices are not stacked along the slice normal {np.round(normal, 5).tolist()}: the stack "
                    f"deviates by {angle:.3g} degrees (largest in-plane offset {worst:.3g} mm over {span:.4g} mm); "
                    "gantry tilt or a sheared stack",
                )
            )
    return findings


def format_findings(findings: Sequence[GeometryFinding]) -> str:
    """One line per finding, ``code: message``."""
    return "; ".join(f"[{f.code}] {f.message}" for f in findings)


def resample_to_regular_grid(
    slices: npt.NDArray[np.floating[Any]],
    positions: npt.ArrayLike,
    orientation: Sequence[float],
    pixel_spacing: Sequence[float],
    *,
    step_mm: float | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Resample a sorted, irregular stack onto a regular grid along the slice normal.

    Parameters
    ----------
    slices
        ``(n, rows, cols)`` pixels, sorted along the normal (as :func:`sort_slices` orders them).
    positions
        ``(n, 3)`` ImagePositionPatient of the sorted slices (LPS mm).
    orientation
        ImageOrientationPatient (6 values) shared by all slices.
    pixel_spacing
        (row spacing, column spacing) in mm.
    step_mm
        Slice step of the output; default the regular step of the input (the median step, or the
        smallest when the others are whole multiples of it).

    Returns
    -------
    array, affine
        ``(m, rows, cols)`` float32 pixels and the 4x4 index-to-LPS affine of a grid whose
        axis 0 is the slice normal (orthogonal even for a tilted input). Each output slice is a
        linear interpolation, in world space, of the two input slices around it.
    """
    from scipy import ndimage

    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    iop = np.asarray(orientation, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:6]
    normal = slice_normal(iop)
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    proj = pos @ normal
    if step_mm is None:
        st = np.diff(proj)
        step_mm = _base_step(st[st > POSITION_TOL_MM])
    m = int(np.floor((proj[-1] - proj[0]) / step_mm + 1e-6)) + 1
    targets = proj[0] + step_mm * np.arange(m)
    origin = pos[0]
    out = np.empty((m, *slices.shape[1:]), dtype=np.float32)

    def shifted(k: int, s: float) -> npt.NDArray[np.float64]:
        # The target plane point for index (0, 0) relative to source slice k, in source pixel units.
        target0 = origin + normal * (s - proj[0])
        d = target0 - pos[k]
        shift_rows = float(d @ col_dir) / dy
        shift_cols = float(d @ row_dir) / dx
        src = slices[k].astype(np.float64)
        if abs(shift_rows) < 1e-3 and abs(shift_cols) < 1e-3:
            return src
        # ndimage.shift moves content by +shift; we sample the source at index + offset.
        return ndimage.shift(src, (-shift_rows, -shift_cols), order=1, mode="nearest")

    for j, s in enumerate(targets):
        near = int(np.argmin(np.abs(proj - s)))
        if abs(proj[near] - s) < 1e-3:  # an input slice lies on the target plane (within 1 micrometre)
            out[j] = shifted(near, float(proj[near]))
            continue
        hi = int(np.searchsorted(proj, s, side="left"))
        hi = min(max(hi, 1), proj.size - 1)
        lo = hi - 1
        w = (s - proj[lo]) / (proj[hi] - proj[lo])
        out[j] = (1.0 - w) * shifted(lo, s) + w * shifted(hi, s)
    aff = np.eye(4)
    aff[:3, 0] = normal * step_mm
    aff[:3, 1] = col_dir * dy
    aff[:3, 2] = row_dir * dx
    aff[:3, 3] = origin
    return out, aff
