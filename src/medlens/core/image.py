"""The :class:`Image`: a read-only array with its geometry and provenance.

Conventions (the only ones used inside MedLens; readers and writers convert at the edge):

* The array is indexed ``(z, y, x)`` for volumes and ``(y, x)`` (row, column) for 2D images.
* ``affine`` is a 4x4 matrix mapping an array index to patient coordinates in the DICOM
  LPS frame, in millimetres: ``world = affine @ (i, j, k, 1)`` where ``i`` indexes axis 0.
  Column ``a`` of ``affine[:3, :3]`` is the step in mm taken when index ``a`` grows by one.
* For a 2D image the index is ``(i, j)`` and ``affine @ (i, j, 0, 1)`` gives the position;
  the third column holds the unit slice normal scaled by the slice thickness (1 mm when
  unknown), so a 2D image still knows its plane in space.
* ``spacing`` is given in array axis order, like the array: ``(dz, dy, dx)`` or ``(dy, dx)``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.core.errors import GeometryError, InputError

__all__ = ["UNIT_DTYPE_KINDS", "Image", "ImageMeta", "Units", "affine_from_geometry"]


class Units:
    """Names of intensity units written into :attr:`ImageMeta.units`.

    Plain strings so that files and JSON carry them unchanged; use these names, not free text.
    """

    HU = "HU"  #: CT Hounsfield units (after rescale slope/intercept)
    SUVBW = "SUVbw"  #: PET standardised uptake value, body weight (g/ml)
    SUVLBM = "SUVlbm"  #: PET SUV normalised by lean body mass, SUL (g/ml)
    SUVBSA = "SUVbsa"  #: PET SUV normalised by body surface area (cm^2/ml)
    BQML = "BQML"  #: PET activity concentration, Bq/ml
    ARBITRARY = "arbitrary"  #: MR signal, stored values without a physical unit
    NORMALISED = "normalised"  #: dimensionless after an intensity normalisation
    LABEL = "label"  #: integer labels (segmentations)
    MASK = "mask"  #: boolean mask
    UNKNOWN = "unknown"


#: Which array dtype kinds each unit allows (numpy ``dtype.kind``: b bool, i/u integer, f float).
#: Units not listed (``arbitrary``, ``unknown``) allow any of ``biuf``. A mismatch is an
#: :class:`~medlens.core.errors.InputError` when an Image is made.
UNIT_DTYPE_KINDS: Mapping[str, str] = types.MappingProxyType(
    {
        Units.MASK: "b",
        Units.LABEL: "iu",
        Units.HU: "iuf",
        Units.SUVBW: "iuf",
        Units.SUVLBM: "iuf",
        Units.SUVBSA: "iuf",
        Units.BQML: "iuf",
        Units.NORMALISED: "f",
    }
)
_KIND_NAMES = {"b": "boolean", "i": "signed integer", "u": "unsigned integer", "f": "float"}


def units_allow(units: str, dtype: np.dtype[Any]) -> bool:
    """True when an array of ``dtype`` may carry ``units`` (see :data:`UNIT_DTYPE_KINDS`)."""
    return dtype.kind in UNIT_DTYPE_KINDS.get(units, "biuf")


def _derived_units(units: str, dtype: np.dtype[Any]) -> str:
    """Units of an array derived from an image in ``units`` whose dtype no longer fits them.

    A boolean array made from any image is a mask; integers made from a mask are labels;
    anything else that leaves its unit's dtype kinds loses the unit (``unknown``).
    """
    if dtype.kind == "b":
        return Units.MASK
    if units == Units.MASK and dtype.kind in "iu":
        return Units.LABEL
    return Units.UNKNOWN


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class ImageMeta:
    """Provenance of an :class:`Image`.

    Attributes
    ----------
    modality
        DICOM modality (``"CT"``, ``"PT"``, ``"MR"``, ``"CR"``, ``"SEG"``, ...) or ``""`` if unknown.
    units
        Intensity units, one of the :class:`Units` names.
    study_uid, series_uid, frame_of_reference_uid
        DICOM Study/Series Instance UID and Frame of Reference UID of the source (``""`` if none).
    sop_instance_uids
        SOP Instance UIDs of the source slices, in array order along axis 0 (one per slice for
        single-frame series, one entry for a multi-frame object).
    patient_id
        Source Patient ID (``""`` if none); de-identification replaces it.
    source
        Where the pixels came from (a path or description), for messages and lineage.
    extra
        Further facts (``"patient_age_years"``, ``"patient_sex"``, ``"patient_weight_kg"``,
        ``"manufacturer"``, ``"convolution_kernel"``, ...). Read-only mapping.
    history
        Names of the operations applied since reading, oldest first.
    """

    modality: str = ""
    units: str = Units.UNKNOWN
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_instance_uids: tuple[str, ...] = ()
    patient_id: str = ""
    source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    history: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra", _freeze_mapping(self.extra))
        object.__setattr__(self, "sop_instance_uids", tuple(self.sop_instance_uids))
        object.__setattr__(self, "history", tuple(self.history))

    def replace(self, **changes: Any) -> ImageMeta:
        """Return a copy with some fields changed (``extra`` is merged, not replaced)."""
        if "extra" in changes:
            merged = dict(self.extra)
            merged.update(changes["extra"])
            changes["extra"] = merged
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary."""
        d = dataclasses.asdict(self)
        d["extra"] = dict(self.extra)
        d["sop_instance_uids"] = list(self.sop_instance_uids)
        d["history"] = list(self.history)
        return d


def affine_from_geometry(
    spacing: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Build a 4x4 index-to-LPS affine from spacing, origin and direction.

    Parameters
    ----------
    spacing
        Voxel size in mm in array axis order (``(dz, dy, dx)`` or ``(dy, dx)``).
    origin
        LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
    direction
        3x3 matrix whose column ``a`` is the unit LPS direction of array axis ``a``
        (for 2D: columns 0 and 1 are the row and column axes, column 2 the slice normal).
        Defaults to the axial orientation: axis 0 along +S (z), axis 1 along +P (y),
        axis 2 along +L (x) for volumes; rows along +P and columns along +L for 2D.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.ndim != 1 or sp.size not in (2, 3):
        raise InputError(f"spacing must have 2 or 3 values (array axis order), got {list(np.atleast_1d(sp))}")
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"spacing must be positive finite millimetres, got {sp.tolist()}")
    if direction is None:
        if sp.size == 3:
            d = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
        else:
            d = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    else:
        d = np.asarray(direction, dtype=np.float64)
        if d.shape != (3, 3):
            raise InputError(f"direction must be a 3x3 matrix, got shape {d.shape}")
    o = np.asarray(origin, dtype=np.float64)
    if o.shape != (3,):
        raise InputError(f"origin must be an LPS point with 3 coordinates, got {o.tolist()}")
    full_sp = np.ones(3)
    full_sp[: sp.size] = sp
    aff = np.eye(4)
    aff[:3, :3] = d * full_sp[np.newaxis, :]
    aff[:3, 3] = o
    return aff


def _check_ndim(arr: np.ndarray) -> None:
    if arr.ndim not in (2, 3):
        raise InputError(
            f"an Image holds a 2D (y, x) or 3D (z, y, x) array; got {arr.ndim} dimensions with shape {arr.shape}"
        )


def _exclusively_read_only(a: np.ndarray) -> bool:
    """True when neither ``a`` nor any array it views can be written through."""
    x: Any = a
    while isinstance(x, np.ndarray):
        if x.flags.writeable:
            return False
        x = x.base
    return True


def _owned_read_only(a: np.ndarray) -> np.ndarray:
    """The array an Image keeps: ``a`` itself when nothing can write to it, else a read-only copy."""
    if not _exclusively_read_only(a):
        a = np.array(a, copy=True)
        a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Image:
    """A 2D or 3D image: read-only pixels, a 4x4 index-to-LPS affine and provenance.

    A mask is an ``Image`` whose array is boolean, on the grid of the image it belongs to.
    Operations never modify an ``Image``; they return new ones (see :meth:`with_array`).

    Parameters
    ----------
    array
        Pixel data, indexed ``(z, y, x)`` (3D) or ``(y, x)`` (2D). The Image keeps its own
        read-only copy: changing the caller's array afterwards never changes the Image. No copy
        is made when the array is already read-only all the way down (neither it nor any array
        it is a view of is writeable, e.g. another Image's array): then nothing can write to it
        through numpy. (An owner that sets ``writeable=True`` again on such an array breaks
        this contract; MedLens never does.)
    affine
        4x4 matrix from array index to LPS mm (see the module docstring).
    meta
        Provenance (:class:`ImageMeta`). ``meta.units`` must fit the dtype
        (:data:`UNIT_DTYPE_KINDS`: a mask is boolean, labels are integers, HU/SUV/BQML numeric,
        normalised values float), else :class:`~medlens.core.errors.InputError`.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: ImageMeta = field(default_factory=ImageMeta)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        _check_ndim(arr)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise InputError(f"Image array must be boolean, integer or float; got dtype {arr.dtype}")
        aff = np.array(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got shape {aff.shape}")
        if not np.all(np.isfinite(aff)):
            raise GeometryError("affine contains NaN or infinity")
        if not np.allclose(aff[3], [0.0, 0.0, 0.0, 1.0]):
            raise GeometryError(f"affine's last row must be (0, 0, 0, 1); got {aff[3].tolist()}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise GeometryError("affine is singular (a zero spacing or collinear axes)")
        aff.flags.writeable = False
        if not isinstance(self.meta, ImageMeta):
            raise InputError(f"meta must be an ImageMeta, got {type(self.meta).__name__}")
        if not units_allow(self.meta.units, arr.dtype):
            allowed = " or ".join(_KIND_NAMES[k] for k in UNIT_DTYPE_KINDS[self.meta.units])
            raise InputError(
                f"units {self.meta.units!r} need a {allowed} array, got dtype {arr.dtype}"
                f"{f' ({self.meta.source})' if self.meta.source else ''}; convert the array (e.g. mask > 0 for a "
                "mask, .astype(np.int32) for labels) or give the units it has (medlens.Units)"
            )
        object.__setattr__(self, "array", _owned_read_only(arr))
        object.__setattr__(self, "affine", aff)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_array(
        cls,
        array: npt.ArrayLike,
        *,
        spacing: Sequence[float] | None = None,
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: npt.ArrayLike | None = None,
        meta: ImageMeta | None = None,
        **meta_fields: Any,
    ) -> Image:
        """Make an Image from an array plus spacing (array axis order), origin and direction.

        ``meta_fields`` (``modality=``, ``units=``, ...) are a shortcut for an :class:`ImageMeta`.
        """
        arr = np.array(array, copy=True)  # our own copy: Image keeps it without a second one
        arr.flags.writeable = False
        _check_ndim(arr)
        if spacing is None:
            spacing = (1.0,) * arr.ndim
        if len(spacing) != arr.ndim:
            raise InputError(
                f"spacing has {len(spacing)} values but the array has {arr.ndim} dimensions {arr.shape}; "
                "give one spacing per array axis, in array order"
            )
        m = meta if meta is not None else ImageMeta()
        if meta_fields:
            m = m.replace(**meta_fields)
        return cls(arr, affine_from_geometry(spacing, origin, direction), m)

    # ---- geometry -----------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return int(self.array.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm, in array axis order."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(v) for v in norms[: self.ndim])

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position (mm) of the centre of the first voxel."""
        o = self.affine[:3, 3]
        return (float(o[0]), float(o[1]), float(o[2]))

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3x3 matrix; column ``a`` is the unit LPS direction of array axis ``a``."""
        m = self.affine[:3, :3]
        d = m / np.linalg.norm(m, axis=0)[np.newaxis, :]
        d.flags.writeable = False
        return d

    @property
    def is_mask(self) -> bool:
        return bool(self.array.dtype == np.bool_)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel (3D) or area of one pixel (2D)."""
        return float(np.prod(self.spacing))

    def index_to_world(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map array indices (``(..., ndim)``, fractional allowed) to LPS mm (``(..., 3)``)."""
        idx = np.asarray(index, dtype=np.float64)
        if idx.shape[-1] != self.ndim:
            raise InputError(f"index must end in {self.ndim} coordinates (array order), got shape {idx.shape}")
        full = np.zeros((*idx.shape[:-1], 3))
        full[..., : self.ndim] = idx
        return full @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Map LPS points (``(..., 3)``, mm) to fractional array indices (``(..., ndim)``).

        For a 2D image the out-of-plane component is dropped (points are projected on the plane).
        """
        pts = np.asarray(points, dtype=np.float64)
        if pts.shape[-1] != 3:
            raise InputError(f"points must end in 3 LPS coordinates, got shape {pts.shape}")
        inv = np.linalg.inv(self.affine)
        idx = (pts - self.affine[:3, 3]) @ inv[:3, :3].T
        return idx[..., : self.ndim]

    def same_grid(self, other: Image, *, atol_mm: float = 1e-3) -> bool:
        """True if ``other`` has the same shape and affine (within ``atol_mm``)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm, rtol=0))

    def require_same_grid(
        self, other: Image, *, what: str = "mask", atol_mm: float = 1e-3, source: str | None = None
    ) -> None:
        """Raise :class:`GeometryError` (exit 4) saying what differs if ``other`` is not on this grid.

        The one rule for off-grid masks (radiomics, segmentation metrics, :func:`medlens.io.read_mask`,
        preprocessing recipes, the pipeline): a mask must be on its image's grid (same shape, affine
        equal within ``atol_mm``); it is never resampled silently. ``source`` (a path) starts the message.
        """
        if self.same_grid(other, atol_mm=atol_mm):
            return
        diffs = []
        if self.shape != other.shape:
            diffs.append(f"shape {self.shape} vs {other.shape}")
        if not np.allclose(self.spacing, other.spacing, atol=atol_mm, rtol=0) or self.ndim != other.ndim:
            diffs.append(f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)} mm")
        if not np.allclose(self.origin, other.origin, atol=atol_mm, rtol=0):
            diffs.append(f"origin {_fmt(self.origin)} vs {_fmt(other.origin)} mm")
        if not np.allclose(self.direction, other.direction, atol=1e-4, rtol=0):
            diffs.append(f"direction {np.round(self.direction, 4).tolist()} vs {np.round(other.direction, 4).tolist()}")
        where = f"{source}: " if source else ""
        raise GeometryError(
            f"{where}the {what} is on a different grid from the image (image vs {what}): "
            + ("; ".join(diffs) or "affines differ")
            + f" (tolerance {atol_mm} mm). Resample the {what} onto the image "
            "(medlens.preprocess.resample_to_reference) or read it with reference=image"
        )

    def bounds_mm(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """LPS bounding box (min, max) of the voxel centres."""
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij")).reshape(self.ndim, -1).T
        w = self.index_to_world(corners)
        return w.min(axis=0), w.max(axis=0)

    # ---- derivation ---------------------------------------------------------------------
    def with_array(self, array: npt.ArrayLike, *, op: str | None = None, **meta_changes: Any) -> Image:
        """A new Image with the same geometry and ``array`` (same shape) as pixels.

        ``op`` is appended to ``meta.history``; ``meta_changes`` update the provenance
        (e.g. ``units=Units.NORMALISED`` when intensities change meaning). Without ``units=``,
        units that do not fit the new dtype are derived, by one rule: a boolean array is a
        ``mask``, integers made from a mask are ``label``, anything else becomes ``unknown``.
        """
        arr = np.asarray(array)
        if arr.shape != self.array.shape:
            raise InputError(
                f"with_array needs an array of the image's shape {self.shape}, got {arr.shape}; "
                "use Image(array, affine, meta) for a new grid"
            )
        meta = self.meta
        if "units" not in meta_changes and not units_allow(meta.units, arr.dtype):
            meta_changes["units"] = _derived_units(meta.units, arr.dtype)
        if op is not None:
            meta_changes["history"] = (*meta.history, op)
        if meta_changes:
            meta = meta.replace(**meta_changes)
        return Image(arr, self.affine, meta)

    def with_meta(self, **meta_changes: Any) -> Image:
        """A new Image with the same pixels and geometry and changed provenance."""
        return Image(self.array, self.affine, self.meta.replace(**meta_changes))

    def astype(self, dtype: npt.DTypeLike) -> Image:
        return self.with_array(self.array.astype(dtype))

    def slice2d(self, index: int, *, axis: int = 0) -> Image:
        """The 2D image of one slice of a volume along ``axis``, with its plane kept in space."""
        if self.ndim != 3:
            raise InputError(f"slice2d needs a 3D image, this one is {self.ndim}D")
        n = self.shape[axis]
        if not -n <= index < n:
            raise InputError(f"slice index {index} outside 0..{n - 1} along axis {axis}")
        index %= n
        keep = [a for a in range(3) if a != axis]
        aff = np.eye(4)
        aff[:3, 0] = self.affine[:3, keep[0]]
        aff[:3, 1] = self.affine[:3, keep[1]]
        aff[:3, 2] = self.affine[:3, axis]
        pos = np.zeros(3)
        pos[axis] = index
        aff[:3, 3] = self.affine[:3, :3] @ pos + self.affine[:3, 3]
        sop = self.meta.sop_instance_uids
        meta = self.meta
        if axis == 0 and len(sop) == n:
            meta = meta.replace(sop_instance_uids=(sop[index],))
        return Image(np.take(self.array, index, axis=axis), aff, meta)

    def __repr__(self) -> str:
        return (
            f"Image(shape={self.shape}, dtype={self.dtype}, spacing={_fmt(self.spacing)}, "
            f"origin={_fmt(self.origin)}, modality={self.meta.modality!r}, units={self.meta.units!r})"
        )


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
