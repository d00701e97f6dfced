"""Clean Pixel Data: blank rectangles of the pixel data where burned-in text is known to be.

PS3.15 leaves it to the user to know where a device burns in identifying text (ultrasound headers,
secondary captures, screenshots); there is no reliable automatic detection here (no OCR). A
:class:`PixelRegion` names a rectangle and, optionally, the images it applies to (modality and
matrix size, the way vendors' layouts are fixed per device and size). Blanked images are written
uncompressed (Explicit VR Little Endian; colour as RGB), and their DeidentificationMethodCodeSequence
gains the Clean Pixel Data Option (113101). Images whose BurnedInAnnotation is YES but that no region
matched are reported, as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medlens.core.errors import InputError

__all__ = ["CLEAN_PIXEL_CODE", "PixelRegion", "blank_regions", "parse_regions"]

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")

_SPEC = re.compile(r"^(?:(?P<mod>[A-Za-z*]{1,16}):(?:(?P<cols>\d+|\*)x(?P<rows>\d+|\*)|\*):)?(?P<box>[\d\s,]+)$")


@dataclass(frozen=True)
class PixelRegion:
    """The rectangle ``x0 <= column < x1``, ``y0 <= row < y1`` (pixels, origin top-left), blanked in every frame.

    ``modality``, ``columns`` and ``rows`` restrict it to matching images (None: any).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    modality: str | None = None
    columns: int | None = None
    rows: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.x0 < self.x1 and 0 <= self.y0 < self.y1):
            raise InputError(
                f"pixel region ({self.x0},{self.y0},{self.x1},{self.y1}) must have 0 <= x0 < x1 and 0 <= y0 < y1 "
                "(columns x, rows y, end exclusive)"
            )

    @classmethod
    def parse(cls, text: str) -> PixelRegion:
        """``"x0,y0,x1,y1"``, ``"US:x0,y0,x1,y1"`` or ``"US:640x480:x0,y0,x1,y1"`` (``*`` = any)."""
        m = _SPEC.match(text.strip())
        nums = [p.strip() for p in m.group("box").split(",")] if m else []
        if m is None or len(nums) != 4 or not all(n.isdigit() for n in nums):
            raise InputError(
                f"pixel region {text!r} is not MODALITY:COLUMNSxROWS:x0,y0,x1,y1 (e.g. 'US:640x480:0,0,640,60', "
                "'*:*:0,0,200,30' or just '0,0,200,30')"
            )
        mod = m.group("mod")
        cols, rows = m.group("cols"), m.group("rows")
        x0, y0, x1, y1 = (int(n) for n in nums)
        return cls(
            x0,
            y0,
            x1,
            y1,
            modality=None if mod in (None, "*") else mod.upper(),
            columns=None if cols in (None, "*") else int(cols),
            rows=None if rows in (None, "*") else int(rows),
        )

    def spec(self) -> str:
        """The text form accepted by :meth:`parse`."""
        size = f"{self.columns or '*'}x{self.rows or '*'}"
        return f"{self.modality or '*'}:{size}:{self.x0},{self.y0},{self.x1},{self.y1}"

    def applies(self, ds: Any) -> bool:
        """True when ``ds`` is an image with pixel data matching the modality and matrix size.

        Segmentations (Modality SEG, or 1-bit pixels) never match: they carry no burned-in text, and
        blanking their frames would change the segmentation.
        """
        if "PixelData" not in ds or str(ds.get("Modality", "")).upper() == "SEG":
            return False
        if int(ds.get("BitsAllocated", 16) or 16) == 1:
            return False
        if self.modality is not None and str(ds.get("Modality", "")).upper() != self.modality:
            return False
        if self.columns is not None and int(ds.get("Columns", -1)) != self.columns:
            return False
        return self.rows is None or int(ds.get("Rows", -1)) == self.rows


def parse_regions(specs: Iterable[str | PixelRegion]) -> tuple[PixelRegion, ...]:
    """Regions from their text forms (or already built)."""
    return tuple(s if isinstance(s, PixelRegion) else PixelRegion.parse(str(s)) for s in specs)


def blank_regions(ds: Any, regions: Iterable[PixelRegion], source: str) -> int:
    """Blank the matching regions of ``ds`` in place; returns how many applied (0: ``ds`` untouched).

    The fill is the darkest displayed value: the smallest stored value for MONOCHROME2 and colour
    (0), the largest for MONOCHROME1. The pixels are decoded (pydicom with its codec plugins) and stored
    back uncompressed, so a compressed source changes transfer syntax; colour becomes RGB.
    """
    from pydicom.uid import ExplicitVRLittleEndian

    use = [r for r in regions if r.applies(ds)]
    if not use:
        return 0
    try:
        arr = np.array(ds.pixel_array)  # a writable copy; colour decoded to RGB by pydicom
    except Exception as exc:
        raise InputError(
            f"{source}: cannot decode the pixel data to clean it ({type(exc).__name__}: {exc}); install the codec "
            "plugin pydicom names, or leave this file out"
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    fill = arr.max() if photometric == "MONOCHROME1" else (0 if samples > 1 else arr.min())
    view = arr if frames > 1 else arr[None]  # (frames, rows, columns[, samples])
    rows, cols = view.shape[1], view.shape[2]
    for r in use:
        if r.x0 >= cols or r.y0 >= rows:
            raise InputError(
                f"{source}: pixel region {r.spec()} starts outside the {cols}x{rows} image; check the region"
            )
        view[:, r.y0 : min(r.y1, rows), r.x0 : min(r.x1, cols)] = fill
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    if samples > 1:
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return len(use)
