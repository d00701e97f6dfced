"""Lung fields on chest CT with simple methods: threshold, components and morphology.

Steps (all distances in mm, intensities in HU):

1. Air-like voxels: ``HU < threshold_hu`` (default -400).
2. Outside air removed: on each axial slice, air components touching the slice border are the air
   around the patient (and the table) and are dropped (``remove_border_air``). On an image cropped
   through the lung this would also drop the lung: pass ``remove_border_air=False`` there.
3. Airways: the trachea is found on the most superior slices as a small, roundish air component
   (``trachea_area_mm2``) and grown in 3D over ``HU < airway_hu`` (default -950: airway lumen is almost
   pure air, lung parenchyma is denser). If the growth leaks into the lungs (it exceeds
   ``max_airway_ml``) the threshold is lowered by 20 HU and the growth repeated. The airways, dilated by
   ``airway_margin_mm``, are removed. Segmental bronchi inside the lungs stay (a simple method cannot
   separate them).
4. Lungs: components larger than ``min_lung_ml``; the two largest are the lungs, assigned right/left by
   the LPS x of their centroids (+x is the patient's left). When the lungs touch (one component), the
   component is split by the sagittal plane through its centroid.
5. Each lung is closed (``closing_mm``) and its holes (vessels) filled slice by slice.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from medlens.core.errors import InputError
from medlens.core.image import Image, Units
from medlens.segment.classic import EmptyResultWarning, ellipsoid_structure

__all__ = ["LEFT_LUNG", "RIGHT_LUNG", "lung_mask", "segment_lungs"]

RIGHT_LUNG = 1
LEFT_LUNG = 2


def _axis_of(image: Image, lps: int) -> int:
    return int(np.argmax(np.abs(image.direction[lps, : image.ndim])))


def _remove_border_air(air: np.ndarray) -> np.ndarray:
    out = air.copy()
    for z in range(air.shape[0]):
        lab, n = ndimage.label(air[z])
        if n == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        out[z][np.isin(lab, border[border > 0])] = False
    return out


def _find_airways(
    ct: np.ndarray,
    air: np.ndarray,
    image: Image,
    *,
    airway_hu: float,
    trachea_area_mm2: tuple[float, float],
    max_airway_ml: float,
) -> np.ndarray:
    z_axis = _axis_of(image, 2)
    if z_axis != 0:
        return np.zeros(ct.shape, bool)
    superior_first = image.direction[2, 0] < 0  # index 0 is the most superior slice
    order = range(ct.shape[0]) if superior_first else range(ct.shape[0] - 1, -1, -1)
    px_mm2 = image.spacing[1] * image.spacing[2]
    vox_ml = image.voxel_volume_mm3 / 1000.0
    centre_x = ct.shape[2] / 2.0
    seed = None
    for k, z in enumerate(order):
        if k > max(3, ct.shape[0] // 5):
            break
        lab, _n = ndimage.label(air[z])
        best = None
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            area = float((lab[sl] == i).sum()) * px_mm2
            if not trachea_area_mm2[0] <= area <= trachea_area_mm2[1]:
                continue
            cy, cx = ndimage.center_of_mass(lab == i)
            dist = abs(cx - centre_x)
            if best is None or dist < best[0]:
                best = (dist, (z, round(cy), round(cx)))
        if best is not None:
            seed = best[1]
            break
    if seed is None:
        return np.zeros(ct.shape, bool)
    thr = airway_hu
    for _ in range(6):
        cand = air & (ct < thr)
        if not cand[seed]:
            thr += 20.0
            continue
        lab, _ = ndimage.label(cand)
        grown = lab == lab[seed]
        if grown.sum() * vox_ml <= max_airway_ml:
            return grown
        thr -= 20.0
    return np.zeros(ct.shape, bool)


def segment_lungs(
    ct: Image,
    *,
    threshold_hu: float = -400.0,
    airway_hu: float = -950.0,
    remove_border_air: bool = True,
    exclude_airways: bool = True,
    trachea_area_mm2: tuple[float, float] = (30.0, 1000.0),
    max_airway_ml: float = 120.0,
    airway_margin_mm: float = 2.0,
    min_lung_ml: float = 20.0,
    closing_mm: float = 3.0,
) -> Image:
    """Label image of the lungs: 0 background, 1 (``RIGHT_LUNG``), 2 (``LEFT_LUNG``).

    ``ct`` must be a 3D CT in HU (``meta.units == "HU"``). Found airways are stored in
    ``meta.extra["airway_ml"]``. An empty result warns (:class:`EmptyResultWarning`).
    """
    if not isinstance(ct, Image) or ct.ndim != 3:
        raise InputError("segment_lungs needs a 3D CT Image")
    if ct.meta.units not in (Units.HU, Units.UNKNOWN, ""):
        raise InputError(f"segment_lungs needs CT in HU; the image is in {ct.meta.units}")
    if ct.meta.modality not in ("CT", ""):
        raise InputError(f"segment_lungs needs a CT; the image's modality is {ct.meta.modality}")
    a = np.asarray(ct.array, dtype=np.float32)
    air = a < threshold_hu
    if remove_border_air:
        air = _remove_border_air(air)
    airway = np.zeros(a.shape, bool)
    if exclude_airways and air.any():
        airway = _find_airways(
            a, air, ct, airway_hu=airway_hu, trachea_area_mm2=trachea_area_mm2, max_airway_ml=max_airway_ml
        )
        if airway.any():
            grown = ndimage.binary_dilation(airway, structure=ellipsoid_structure(ct.spacing, airway_margin_mm))
            air &= ~grown
    vox_ml = ct.voxel_volume_mm3 / 1000.0
    lab, n = ndimage.label(air)
    sizes = np.bincount(lab.ravel())[1:] * vox_ml if n else np.array([])
    keep = [i + 1 for i in np.argsort(-sizes)[:2] if sizes[i] >= min_lung_ml]
    x_axis = _axis_of(ct, 0)
    out = np.zeros(a.shape, np.uint8)
    parts: list[np.ndarray] = []
    if len(keep) == 2:
        parts = [lab == keep[0], lab == keep[1]]
    elif len(keep) == 1:
        comp = lab == keep[0]
        c = round(ndimage.center_of_mass(comp)[x_axis])
        idx = np.arange(a.shape[x_axis]).reshape([-1 if ax == x_axis else 1 for ax in range(3)])
        parts = [comp & (idx < c), comp & (idx >= c)]
    xs = []
    for p in parts:
        cm = np.asarray(ndimage.center_of_mass(p))
        xs.append(float(ct.index_to_world(cm)[0]))
    closing_st = ellipsoid_structure(ct.spacing, closing_mm)
    for p, x in sorted(zip(parts, xs, strict=True), key=lambda t: t[1]):
        label = RIGHT_LUNG if x == min(xs) else LEFT_LUNG
        if len(parts) == 1:
            label = RIGHT_LUNG if x < 0 else LEFT_LUNG
        pad = [(h // 2, h // 2) for h in closing_st.shape]
        closed = ndimage.binary_closing(np.pad(p, pad), structure=closing_st)
        closed = closed[tuple(slice(q, q + s) for (q, _), s in zip(pad, p.shape, strict=True))]
        filled = np.stack([ndimage.binary_fill_holes(s) for s in closed])
        out[filled & (out == 0)] = label
    if exclude_airways and airway.any():
        out[airway] = 0
    if not out.any():
        warnings.warn(
            f"segment_lungs: no lung found in {ct.meta.source or 'the image'} (threshold {threshold_hu} HU); is it a "
            "chest CT?",
            EmptyResultWarning,
            stacklevel=2,
        )
    return ct.with_array(out, op="segment_lungs", units=Units.LABEL).with_meta(
        extra={"airway_ml": float(airway.sum() * vox_ml)}
    )


def lung_mask(ct: Image, **options) -> Image:
    """Both lungs as one boolean mask (see :func:`segment_lungs` for the options)."""
    lab = segment_lungs(ct, **options)
    return lab.with_array(lab.array > 0, op="lung_mask", units=Units.MASK)
