"""Radiomics settings: image processing and feature parameters, loaded from and saved to YAML.

One frozen dataclass per stage (interpolation, re-segmentation, discretisation, IVH, texture);
:class:`RadiomicsSettings` groups them. Unknown YAML keys are an error naming the key and the
allowed keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError

__all__ = [
    "DiscretisationSettings",
    "IVHSettings",
    "InterpolationSettings",
    "RadiomicsSettings",
    "ResegmentationSettings",
    "TextureSettings",
    "load_preset",
    "load_settings",
    "preset_names",
    "save_settings",
]

TEXTURE_FAMILIES = ("glcm", "glrlm", "glszm", "gldzm", "ngtdm", "ngldm")
NON_TEXTURE_FAMILIES = ("diag", "morph", "loc", "stat", "ih", "ivh")


@dataclass(frozen=True)
class InterpolationSettings:
    """Image and mask interpolation (IBSI 1, "Interpolation").

    Attributes
    ----------
    enabled
        Resample at all.
    spacing_mm
        New voxel size in mm, array axis order ``(dz, dy, dx)``. With ``in_plane_only`` the first
        value is ignored (the slice spacing is kept).
    in_plane_only
        2D (slice-wise) interpolation, for the 2D configurations.
    order
        Image interpolation: ``"nearest"``, ``"linear"``, ``"cubic"`` (cubic B-spline).
    round_intensities
        Round interpolated intensities to the nearest integer (CT HU).
    mask_order
        Mask interpolation (``"linear"`` per IBSI) before thresholding.
    mask_threshold
        Partial-volume threshold: a voxel belongs to the ROI if its interpolated value is ``>=`` this.
    """

    enabled: bool = False
    spacing_mm: tuple[float, ...] = (1.0, 1.0, 1.0)
    in_plane_only: bool = False
    order: str = "linear"
    round_intensities: bool = False
    mask_order: str = "linear"
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        for name in ("order", "mask_order"):
            if getattr(self, name) not in ("nearest", "linear", "cubic", "bspline"):
                raise InputError(
                    f"interpolation.{name} must be nearest|linear|cubic|bspline, got {getattr(self, name)!r}"
                )
        if not 0.0 < self.mask_threshold <= 1.0:
            raise InputError(f"interpolation.mask_threshold must be in (0, 1], got {self.mask_threshold}")


@dataclass(frozen=True)
class ResegmentationSettings:
    """Re-segmentation of the intensity mask (the morphological mask is not changed).

    Attributes
    ----------
    range_lo, range_hi
        Keep intensity-mask voxels with ``range_lo <= value <= range_hi`` (``None``: open end).
    outlier_sigma
        If set, also drop voxels outside ``mean +- outlier_sigma * sd`` (computed after the range).
    """

    range_lo: float | None = None
    range_hi: float | None = None
    outlier_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.range_lo is not None and self.range_hi is not None and self.range_lo > self.range_hi:
            raise InputError(f"resegmentation range_lo {self.range_lo} is above range_hi {self.range_hi}")
        if self.outlier_sigma is not None and self.outlier_sigma <= 0:
            raise InputError(f"resegmentation.outlier_sigma must be positive, got {self.outlier_sigma}")


@dataclass(frozen=True)
class DiscretisationSettings:
    """Discretisation for the intensity histogram and texture.

    Attributes
    ----------
    method
        ``"FBN"`` (fixed bin number), ``"FBS"`` (fixed bin size) or ``"none"`` (intensities are already
        integer levels 1..N, e.g. the IBSI digital phantom).
    n_bins
        Number of bins for FBN.
    bin_width
        Bin width (intensity units) for FBS.
    lower_bound
        FBS lower edge: ``"resegmentation"`` uses the re-segmentation ``range_lo`` when set (IBSI),
        else the ROI minimum; ``"roi_min"`` always uses the ROI minimum.
    """

    method: str = "FBN"
    n_bins: int = 32
    bin_width: float = 25.0
    lower_bound: str = "resegmentation"

    def __post_init__(self) -> None:
        if self.method not in ("FBN", "FBS", "none"):
            raise InputError(f"discretisation.method must be FBN, FBS or none, got {self.method!r}")
        if self.n_bins < 1:
            raise InputError(f"discretisation.n_bins must be >= 1, got {self.n_bins}")
        if self.bin_width <= 0:
            raise InputError(f"discretisation.bin_width must be positive, got {self.bin_width}")
        if self.lower_bound not in ("resegmentation", "roi_min"):
            raise InputError(f"discretisation.lower_bound must be resegmentation|roi_min, got {self.lower_bound!r}")


@dataclass(frozen=True)
class IVHSettings:
    """Intensity-volume histogram discretisation (IBSI 1, IVH).

    ``method``: ``"none"`` (discrete calibrated intensities such as CT HU, interval 1), ``"FBS"``
    (bin centres, ``bin_width``, e.g. PET SUV) or ``"FBN"`` (``n_bins`` levels, arbitrary units; the
    default, safe for any modality).
    """

    method: str = "FBN"
    n_bins: int = 1000
    bin_width: float = 2.5

    def __post_init__(self) -> None:
        if self.method not in ("FBN", "FBS", "none"):
            raise InputError(f"ivh.method must be FBN, FBS or none, got {self.method!r}")


@dataclass(frozen=True)
class TextureSettings:
    """Texture matrix parameters, shared with :mod:`medlens.radiomics.texture`.

    Attributes
    ----------
    dims
        Aggregation dimensionality, subset of ``("2D", "2_5D", "3D")``.
    glcm_distance, ngtdm_distance, ngldm_distance
        Chebyshev neighbourhood distance (voxels).
    glcm_symmetric
        Symmetric co-occurrence matrices.
    ngldm_alpha
        NGLDM coarseness parameter.
    gldzm_distance_metric
        Distance-to-border metric for GLDZM: ``"manhattan"`` (IBSI default, 4-/6-connected) or ``"chebyshev"``.
    families
        Texture families to compute, subset of ``glcm, glrlm, glszm, gldzm, ngtdm, ngldm``.
    """

    dims: tuple[str, ...] = ("3D",)
    glcm_distance: int = 1
    glcm_symmetric: bool = True
    ngtdm_distance: int = 1
    ngldm_distance: int = 1
    ngldm_alpha: int = 0
    gldzm_distance_metric: str = "manhattan"
    families: tuple[str, ...] = TEXTURE_FAMILIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        object.__setattr__(self, "families", tuple(self.families))
        bad = [d for d in self.dims if d not in ("2D", "2_5D", "3D")]
        if bad:
            raise InputError(f"texture.dims has {bad}; allowed: 2D, 2_5D, 3D")
        badf = [f for f in self.families if f not in TEXTURE_FAMILIES]
        if badf:
            raise InputError(f"texture.families has {badf}; allowed: {', '.join(TEXTURE_FAMILIES)}")


@dataclass(frozen=True)
class RadiomicsSettings:
    """All settings of one feature extraction.

    ``families`` lists the non-texture families to compute (``diag, morph, loc, stat, ih, ivh``);
    texture families are chosen in ``texture.families``.
    """

    name: str = "custom"
    interpolation: InterpolationSettings = field(default_factory=InterpolationSettings)
    resegmentation: ResegmentationSettings = field(default_factory=ResegmentationSettings)
    discretisation: DiscretisationSettings = field(default_factory=DiscretisationSettings)
    ivh: IVHSettings = field(default_factory=IVHSettings)
    texture: TextureSettings = field(default_factory=TextureSettings)
    families: tuple[str, ...] = NON_TEXTURE_FAMILIES
    local_intensity_volume_cm3: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        bad = [f for f in self.families if f not in NON_TEXTURE_FAMILIES]
        if bad:
            raise InputError(f"families has {bad}; allowed: {', '.join(NON_TEXTURE_FAMILIES)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (tuples become lists) for YAML/JSON."""

        def conv(v: Any) -> Any:
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        return conv(dataclasses.asdict(self))  # type: ignore[no-any-return]

    def settings_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical JSON of the settings (``name`` excluded)."""
        d = self.to_dict()
        d.pop("name", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "settings") -> RadiomicsSettings:
        """Build settings from a dictionary; unknown keys raise :class:`InputError`."""
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        sub = {
            "interpolation": InterpolationSettings,
            "resegmentation": ResegmentationSettings,
            "discretisation": DiscretisationSettings,
            "ivh": IVHSettings,
            "texture": TextureSettings,
        }
        kwargs: dict[str, Any] = {}
        top_allowed = [f.name for f in dataclasses.fields(cls)]
        for key, value in data.items():
            if key not in top_allowed:
                raise InputError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(top_allowed)}")
            if key in sub:
                kwargs[key] = _build(sub[key], value or {}, f"{source}: {key}")
            elif key == "families":
                kwargs[key] = tuple(value or ())
            else:
                kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - guarded by the key check
            raise InputError(f"{source}: {exc}") from exc


def _build(klass: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a mapping, got {type(value).__name__}")
    allowed = [f.name for f in dataclasses.fields(klass)]
    for key in value:
        if key not in allowed:
            raise InputError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
    conv = {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
    return klass(**conv)


def load_settings(path: str | Path) -> RadiomicsSettings:
    """Read settings from a YAML file (see :meth:`RadiomicsSettings.from_dict`)."""
    from medlens.core.config_file import read_config_file  # the one rule for config files

    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"settings file {p} not found; give a preset name ({', '.join(preset_names())}) or a YAML file"
        )
    return RadiomicsSettings.from_dict(read_config_file(p, what="radiomics settings"), source=str(p))


def save_settings(settings: RadiomicsSettings, path: str | Path) -> None:
    """Write settings as YAML (atomically)."""
    import yaml

    from medlens.core.atomic import atomic_path

    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_text(yaml.safe_dump(settings.to_dict(), sort_keys=False))


_PRESET_DIR = Path(__file__).with_name("presets")


def preset_names() -> list[str]:
    """Names of the bundled presets (``ibsi-dig``, ``ibsi-a`` ... ``ibsi-e``)."""
    return sorted(p.stem for p in _PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> RadiomicsSettings:
    """A bundled preset by name, or a YAML settings file by path."""
    s = str(name_or_path)
    cand = _PRESET_DIR / f"{s}.yaml"
    if cand.is_file():
        return load_settings(cand)
    if s.endswith((".yaml", ".yml")) or Path(s).exists():
        return load_settings(s)
    raise InputError(f"unknown preset {s!r}; bundled presets: {', '.join(preset_names())}, or give a YAML file path")
