"""Lesion measurements for reports: Lung-RADS long/short axis, volume, CT composition, PET uptake, growth.

Diameters follow Lung-RADS v2022 ("measure both the long and short axis to one decimal point in mm, and
report mean nodule diameter to one decimal point"): on each axial slice of the mask the *long axis* is the
longest in-plane diameter and the *short axis* the longest chord perpendicular to it; the slice with the
longest long axis is reported. Distances are measured on the physical extent of the mask's pixels (their
corners), so a single 0.7 mm pixel measures 0.7 mm, not 0.

Composition from CT attenuation (documented defaults, all keyword options):

* a voxel is *solid* at ``>= solid_threshold_hu`` (default -300 HU). Published choices range from -160 HU
  (the conventional "high" threshold) to -400 HU (J.H. Lee et al., "High versus low attenuation thresholds
  to determine the solid component of ground-glass opacity nodules", PLoS ONE 2018;13:e0205490, which
  found -400 HU more accurate for invasive foci); -300 HU is the midpoint, between the lung-window
  ground-glass range (about -750 to -300 HU) and soft tissue. Lung-RADS itself defines composition visually.
* the *solid component* is the largest connected group of solid voxels inside the nodule;
* the nodule is *ground-glass* (non-solid) when its solid component is under ``min_solid_component_mm``
  (2 mm) mean diameter (smaller specks cannot be told from a vessel crossing the nodule on 1 mm sections),
  *solid* when the solid component's mean diameter is at least ``solid_min_diameter_ratio``
  (0.8) of the nodule's (a solid nodule loses about one pixel of partial volume at its rim), and
  *part-solid* otherwise.

PET (SUVbw): SUVmax, SUVmean, SUVpeak (highest mean SUV in a 1 cm^3 sphere, diameter 12.4 mm, centred on
a lesion voxel; PERCIST 1.0, Wahl et al., J Nucl Med 2009;50:122S) and total lesion glycolysis
(SUVmean x volume in ml).
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.core.image import Image, Units

__all__ = [
    "GROWTH_THRESHOLD_MM",
    "Diameters",
    "Growth",
    "LesionMeasurement",
    "axial_diameters",
    "growth",
    "measure_lesion",
    "round_tenth",
]

#: Lung-RADS v2022 growth: an increase in mean diameter of more than 1.5 mm within 12 months.
GROWTH_THRESHOLD_MM = 1.5
GROWTH_WINDOW_DAYS = 366  # "within a 12-month interval": up to one calendar year, leap day included
SUVPEAK_SPHERE_ML = 1.0


def round_tenth(value: float) -> float:
    """Round half up to 0.1 (Lung-RADS reports diameters to one decimal; Python's round() is half-even)."""
    return math.floor(value * 10.0 + 0.5 + 1e-9) / 10.0


@dataclass(frozen=True)
class Diameters:
    """Long and short axis on one axial slice.

    Attributes
    ----------
    long_axis_mm, short_axis_mm
        Unrounded lengths in mm.
    slice_index
        Axial slice (array axis 0) they were measured on.
    long_axis_ends, short_axis_ends
        End points as fractional ``(row, column)`` indices on that slice, for drawing.
    """

    long_axis_mm: float
    short_axis_mm: float
    slice_index: int
    long_axis_ends: tuple[tuple[float, float], tuple[float, float]]
    short_axis_ends: tuple[tuple[float, float], tuple[float, float]]

    @property
    def mean_diameter_mm(self) -> float:
        """Lung-RADS mean diameter: (long + short) / 2 of the axes rounded to 0.1 mm, rounded to 0.1 mm."""
        return round_tenth((round_tenth(self.long_axis_mm) + round_tenth(self.short_axis_mm)) / 2.0)


def _long_axis(m2: np.ndarray, col_r: np.ndarray, col_c: np.ndarray) -> tuple[float, Any]:
    """Longest in-plane diameter of a 2D mask: the farthest pair of pixel corners on their convex hull."""
    from scipy import ndimage
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist, squareform

    # only rim pixels can carry hull corners
    rr, cc = np.nonzero(m2 & ~ndimage.binary_erosion(m2))
    # corners of every pixel: the hull of the pixel squares (affine maps preserve convex hulls)
    corners = np.unique(
        np.concatenate([np.stack([rr + dr, cc + dc], axis=1) for dr in (-0.5, 0.5) for dc in (-0.5, 0.5)], axis=0),
        axis=0,
    ).astype(np.float64)
    try:
        hull = corners[ConvexHull(corners).vertices]
    except QhullError:  # pragma: no cover - four corners of a pixel always span a hull
        hull = corners
    mm = hull[:, :1] * col_r[None, :] + hull[:, 1:2] * col_c[None, :]
    d = squareform(pdist(mm))
    i, j = np.unravel_index(int(np.argmax(d)), d.shape)
    return float(d[i, j]), ((float(hull[i, 0]), float(hull[i, 1])), (float(hull[j, 0]), float(hull[j, 1])))


def _short_axis(m2: np.ndarray, col_r: np.ndarray, col_c: np.ndarray, long_ends: Any) -> tuple[float, Any]:
    """Longest chord perpendicular to the long axis.

    A line across the long axis at position ``t0`` passes through the pixels whose squares it meets
    (``|t - t0|`` up to half a pixel's extent along the long axis); its chord runs from the first to the
    last of them, plus the pixel's extent across. Lines are tried every quarter of the smaller pixel size.
    """
    rr, cc = np.nonzero(m2)
    p0 = np.asarray(long_ends[0]) @ np.stack([col_r, col_c])
    p1 = np.asarray(long_ends[1]) @ np.stack([col_r, col_c])
    u = (p1 - p0) / np.linalg.norm(p1 - p0)
    normal = np.cross(col_r, col_c)
    v = np.cross(normal / np.linalg.norm(normal), u)  # in plane, perpendicular to the long axis
    pmm = rr[:, None] * col_r[None, :] + cc[:, None] * col_c[None, :]
    t = pmm @ u
    s = pmm @ v
    half_u = 0.5 * (abs(float(col_r @ u)) + abs(float(col_c @ u))) + 1e-9
    ext_v = abs(float(col_r @ v)) + abs(float(col_c @ v))
    order = np.argsort(t, kind="stable")
    ts, ss = t[order], s[order]
    step = 0.25 * min(float(np.linalg.norm(col_r)), float(np.linalg.norm(col_c)))
    best, best_t0, best_lo, best_hi = -1.0, 0.0, 0.0, 0.0
    for t0 in np.arange(ts[0], ts[-1] + step / 2, step):
        a, b = (
            np.searchsorted(ts, [t0 - half_u, t0 + half_u], side="left")[0],
            np.searchsorted(ts, t0 + half_u, side="right"),
        )
        if b <= a:
            continue
        lo, hi = float(ss[a:b].min()), float(ss[a:b].max())
        if hi - lo + ext_v > best:
            best, best_t0, best_lo, best_hi = hi - lo + ext_v, float(t0), lo, hi
    # end points for drawing, back in (row, column) index space
    inv = np.linalg.pinv(np.stack([col_r, col_c], axis=1))
    ends = []
    for sv in (best_lo - ext_v / 2, best_hi + ext_v / 2):
        q = best_t0 * u + sv * v + normal * 0.0
        ends.append(tuple(float(x) for x in inv @ q))
    return best, (ends[0], ends[1])


def axial_diameters(mask: Image) -> Diameters:
    """Lung-RADS long and short axis of a 3D (or 2D) mask, on the axial slice with the longest long axis.

    Parameters
    ----------
    mask
        Boolean :class:`~medlens.core.image.Image`, ``(z, y, x)`` or ``(y, x)``; axis 0 of a volume is taken
        as the slice axis (the reader's axial stacking).

    Raises
    ------
    InputError
        If the mask is not boolean or is empty.
    """
    if not mask.is_mask:
        raise InputError(f"the mask ({mask.meta.source or 'input'}) must be boolean, got dtype {mask.dtype}")
    arr = np.asarray(mask.array)
    if not arr.any():
        raise InputError(f"the mask ({mask.meta.source or 'input'}) is empty: nothing to measure")
    if arr.ndim == 2:
        arr = arr[None]
        col_r, col_c = mask.affine[:3, 0], mask.affine[:3, 1]
    else:
        col_r, col_c = mask.affine[:3, 1], mask.affine[:3, 2]
    best: tuple[float, int, Any] = (-1.0, -1, None)
    for zi in np.nonzero(arr.reshape(arr.shape[0], -1).any(axis=1))[0]:
        long_mm, ends = _long_axis(arr[zi], col_r, col_c)
        if long_mm > best[0] + 1e-9:
            best = (long_mm, int(zi), ends)
    long_mm, z, long_ends = best
    short_mm, short_ends = _short_axis(arr[z], col_r, col_c, long_ends)
    return Diameters(long_mm, short_mm, z, long_ends, short_ends)


@dataclass(frozen=True)
class LesionMeasurement:
    """Measurements of one lesion (mm, mm^3; HU for CT, SUVbw for PET). ``None`` where not applicable."""

    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    slice_index: int
    modality: str
    units: str
    long_axis_ends: tuple[tuple[float, float], tuple[float, float]]
    short_axis_ends: tuple[tuple[float, float], tuple[float, float]]
    voxel_count: int
    mean_hu: float | None = None
    nodule_type: str | None = None
    solid_fraction: float | None = None
    solid_long_axis_mm: float | None = None
    solid_short_axis_mm: float | None = None
    solid_mean_diameter_mm: float | None = None
    solid_volume_mm3: float | None = None
    solid_threshold_hu: float | None = None
    suv_max: float | None = None
    suv_mean: float | None = None
    suv_peak: float | None = None
    tlg_g: float | None = None
    study_date: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _suv_peak(values: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Highest mean SUV within a 1 ml sphere centred on a lesion voxel (PERCIST)."""
    from scipy import ndimage

    radius_mm = (3.0 * SUVPEAK_SPHERE_ML * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [max(0, math.floor(radius_mm / s)) for s in spacing]
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)], indexing="ij")
    ball = sum(g**2 for g in grids) <= radius_mm**2
    kernel = ball.astype(np.float64) / ball.sum()
    # work in the lesion's bounding box plus the sphere radius, not the whole volume
    idx = np.nonzero(mask)
    lo = [max(0, int(i.min()) - h) for i, h in zip(idx, half, strict=True)]
    hi = [min(n, int(i.max()) + h + 1) for i, h, n in zip(idx, half, values.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    local = ndimage.convolve(values[box].astype(np.float64), kernel, mode="constant", cval=0.0)
    return float(local[mask[box]].max())


def measure_lesion(
    image: Image,
    mask: Image,
    *,
    solid_threshold_hu: float = -300.0,
    min_solid_component_mm: float = 2.0,
    solid_min_diameter_ratio: float = 0.8,
) -> LesionMeasurement:
    """Measure a lesion mask on its image: Lung-RADS diameters, volume, CT composition or PET uptake.

    Parameters
    ----------
    image
        CT (HU) or PET (SUVbw) volume, ``(z, y, x)``; other modalities get the size measurements only.
    mask
        Boolean mask on ``image``'s grid.
    solid_threshold_hu, min_solid_component_mm, solid_min_diameter_ratio
        Composition rules for CT (see the module docstring).

    Raises
    ------
    GeometryError
        If the mask is not on the image's grid.
    InputError
        If the mask is not boolean or empty, or an option is out of range.
    """
    image.require_same_grid(mask, what="mask")
    if not min_solid_component_mm >= 0.0:
        raise InputError(f"min_solid_component_mm must be >= 0 mm, got {min_solid_component_mm}")
    if not 0.0 < solid_min_diameter_ratio <= 1.0:
        raise InputError(f"solid_min_diameter_ratio must be in (0, 1], got {solid_min_diameter_ratio}")
    diam = axial_diameters(mask)
    m = np.asarray(mask.array, dtype=bool)
    values = np.asarray(image.array, dtype=np.float64)
    n = int(m.sum())
    vol = n * image.voxel_volume_mm3
    out: dict[str, Any] = {
        "long_axis_mm": round_tenth(diam.long_axis_mm),
        "short_axis_mm": round_tenth(diam.short_axis_mm),
        "mean_diameter_mm": diam.mean_diameter_mm,
        "volume_mm3": float(vol),
        "slice_index": diam.slice_index,
        "modality": image.meta.modality,
        "units": image.meta.units,
        "long_axis_ends": diam.long_axis_ends,
        "short_axis_ends": diam.short_axis_ends,
        "voxel_count": n,
        "study_date": str(image.meta.extra.get("study_date", "") or ""),
    }
    if image.meta.units == Units.HU:
        out.update(
            _composition(
                image,
                m,
                values,
                diam.mean_diameter_mm,
                solid_threshold_hu,
                min_solid_component_mm,
                solid_min_diameter_ratio,
            )
        )
        out["mean_hu"] = float(values[m].mean())
    elif image.meta.units == Units.SUVBW:
        v = values[m]
        if not np.all(np.isfinite(v)):
            raise ProcessingError(f"{image.meta.source or 'the PET'}: non-finite SUVs inside the lesion")
        out["suv_max"] = float(v.max())
        out["suv_mean"] = float(v.mean())
        out["suv_peak"] = _suv_peak(values, m, image.spacing)
        out["tlg_g"] = float(v.mean() * vol / 1000.0)
    return LesionMeasurement(**out)


def _composition(
    image: Image, m: np.ndarray, values: np.ndarray, total: float, thr: float, min_mm: float, ratio: float
) -> dict[str, Any]:
    from scipy import ndimage

    solid = m & (values >= thr)
    frac = float(solid.sum()) / float(m.sum())
    res: dict[str, Any] = {"solid_fraction": frac, "solid_threshold_hu": float(thr)}
    if solid.any():
        lab, _ = ndimage.label(solid)
        sizes = np.bincount(lab.ravel())[1:]
        comp = lab == (int(np.argmax(sizes)) + 1)
        d = axial_diameters(image.with_array(comp, units=Units.MASK))
        res.update(
            solid_long_axis_mm=round_tenth(d.long_axis_mm),
            solid_short_axis_mm=round_tenth(d.short_axis_mm),
            solid_mean_diameter_mm=d.mean_diameter_mm,
            solid_volume_mm3=float(comp.sum() * image.voxel_volume_mm3),
        )
    if "solid_mean_diameter_mm" not in res or res["solid_mean_diameter_mm"] < min_mm:
        res["nodule_type"] = "ground_glass"
    elif res["solid_mean_diameter_mm"] >= ratio * total:
        res["nodule_type"] = "solid"
    else:
        res["nodule_type"] = "part_solid"
    return res


@dataclass(frozen=True)
class Growth:
    """Change of one lesion between a prior and a current exam."""

    interval_days: int | None
    mean_diameter_change_mm: float
    mean_diameter_change_relative: float
    volume_change_mm3: float
    volume_change_relative: float
    volume_doubling_time_days: float | None
    growing: bool
    rule: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _parse_date(value: str | _dt.date | None, name: str) -> _dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, _dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return _dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise InputError(f"{name} must be a date as YYYYMMDD or YYYY-MM-DD, got {value!r}")


def growth(
    current: LesionMeasurement,
    prior: LesionMeasurement,
    *,
    current_date: str | _dt.date | None = None,
    prior_date: str | _dt.date | None = None,
) -> Growth:
    """Growth of the same lesion against a prior exam (Lung-RADS v2022 definition).

    "Growing" means an increase of the mean diameter of more than 1.5 mm within a 12-month interval.
    Dates default to each measurement's ``study_date``; without dates the interval is unknown and the
    12-month condition is not checked (said so in ``rule``). The volume doubling time is
    ``interval * ln 2 / ln(V / V_prior)`` when the volume increased.

    Raises
    ------
    InputError
        If the prior is later than the current exam or a date is malformed.
    """
    d1 = _parse_date(current_date if current_date is not None else current.study_date, "current_date")
    d0 = _parse_date(prior_date if prior_date is not None else prior.study_date, "prior_date")
    interval = None if d0 is None or d1 is None else (d1 - d0).days
    if interval is not None and interval < 0:
        raise InputError(f"the prior exam ({d0}) is after the current one ({d1}); pass them in the right order")
    dd = round_tenth(current.mean_diameter_mm - prior.mean_diameter_mm)
    dv = current.volume_mm3 - prior.volume_mm3
    rel_d = dd / prior.mean_diameter_mm if prior.mean_diameter_mm > 0 else math.inf
    rel_v = dv / prior.volume_mm3 if prior.volume_mm3 > 0 else math.inf
    vdt = None
    if interval and dv > 0 and prior.volume_mm3 > 0:
        vdt = interval * math.log(2.0) / math.log(current.volume_mm3 / prior.volume_mm3)
    increase = dd > GROWTH_THRESHOLD_MM
    if interval is None:
        growing = increase
        rule = f"mean diameter change {dd:+.1f} mm vs > {GROWTH_THRESHOLD_MM} mm (interval unknown, not checked)"
    elif interval <= GROWTH_WINDOW_DAYS:
        growing = increase
        rule = f"mean diameter change {dd:+.1f} mm in {interval} days vs > {GROWTH_THRESHOLD_MM} mm within 12 months"
    else:
        growing = False
        rule = (
            f"mean diameter change {dd:+.1f} mm over {interval} days (> 12 months): not 'growing' by the v2022 "
            "definition" + ("; consider slow growth over multiple exams (4B)" if increase else "")
        )
    return Growth(interval, dd, rel_d, dv, rel_v, vdt, growing, rule)
