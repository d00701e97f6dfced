"""Fast access to the few header values the series reader needs.

pydicom converts an element on first access (validating DS/IS strings), which costs ~20 us per
element; with ~20 values per slice that was a third of the reading time of an uncompressed CT.
Here the raw bytes of those elements are parsed once per dataset and cached on it; anything
unusual (already converted, odd bytes) falls back to pydicom's own conversion.
"""

from __future__ import annotations

from typing import Any

from pydicom.datadict import tag_for_keyword

_US = frozenset({"Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel"})
_DS = frozenset(
    {
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "RescaleSlope",
        "RescaleIntercept",
        "SliceThickness",
    }
)
_MULTI = frozenset({"ImageType"})
_STR = frozenset({"SeriesInstanceUID", "SOPInstanceUID", "Modality", "PhotometricInterpretation", "NumberOfFrames"})
KEYWORDS = tuple(sorted(_US | _DS | _MULTI | _STR))
_TAGS = {kw: tag_for_keyword(kw) for kw in KEYWORDS}
_ATTR = "_medlens_header"


def _normalise(kw: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if kw in _US:
        return int(value)
    if kw in _DS:
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        return [float(v) for v in items]
    if kw in _MULTI:
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        return [str(v) for v in items]
    return str(value)


def _parse(ds: Any, kw: str) -> Any:
    try:
        elem = ds.get_item(_TAGS[kw])
    except KeyError:
        return None
    if elem is None:
        return None
    if not getattr(elem, "is_raw", False):
        return _normalise(kw, elem.value)
    raw = elem.value
    if not raw:
        return None
    if kw in _US:
        if len(raw) != 2:
            raise ValueError(f"{kw}: {len(raw)} bytes")
        return int.from_bytes(raw, "little" if elem.is_little_endian else "big")
    text = raw.decode("latin-1").strip(" \x00")
    if not text:
        return None
    if kw in _DS:
        return [float(v) for v in text.split("\\")]
    if kw in _MULTI:
        return [v.strip(" \x00") for v in text.split("\\")]
    return text


def header(ds: Any) -> dict[str, Any]:
    """The reader's header values of ``ds`` (keyword -> int, list of float, list of str or str; None if absent)."""
    cached = getattr(ds, _ATTR, None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    out: dict[str, Any] = {}
    for kw in KEYWORDS:
        try:
            out[kw] = _parse(ds, kw)
        except (ValueError, TypeError, UnicodeDecodeError):
            try:
                out[kw] = _normalise(kw, ds.get(kw))
            except (ValueError, TypeError):
                out[kw] = None
    object.__setattr__(ds, _ATTR, out)
    return out
