"""Pixels of the chosen slices: decoding (pydicom plugins, or straight from the bytes) and modality rescale.

Only the records handed in are decoded; the series reader hands in the chosen series only, so the
pixel data of other series in the same folder are never read from disk (their headers were read
with the pixel data deferred, :func:`medlens.io.dicom.headers.read_dicom_file`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from medlens.core.errors import FormatError, MissingDependencyError
from medlens.io.dicom.geometry import Slice
from medlens.io.dicom.headers import header, nframes

__all__ = ["decode", "pixels", "workers"]

#: pip package providing a decoder for each compressed transfer syntax family.
_CODEC_PACKAGES = {
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg pylibjpeg-libjpeg)",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom also has its own decoder)
}


def workers(n: int) -> int:
    """Threads for ``n`` files (decoding releases the GIL)."""
    return max(1, min(8, n, os.cpu_count() or 1))


def _check_codec(ds: Any, name: str) -> None:
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not ts.is_compressed:
        return
    from pydicom.pixels import get_decoder

    try:
        dec = get_decoder(ts)
    except NotImplementedError as exc:
        raise FormatError(
            f"{name}: transfer syntax {ts.name} ({ts}) cannot be decoded by pydicom's pixel decoders; "
            "convert the file to an uncompressed transfer syntax (e.g. dcmdjpeg/dcmdrle, gdcmconv --raw)"
        ) from exc
    if not dec.is_available:
        pkg = _CODEC_PACKAGES.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pyjpegls")
        raise MissingDependencyError(
            f"{name}: pixel data is compressed as {ts.name} ({ts}) and no decoder for it is installed; "
            f"install one with: pip install {pkg}"
        )


_JPEG_LS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")


def _preferred_plugin(ts: str) -> str:
    """pydicom decoding plugin to use: pyjpegls (CharLS) decodes JPEG-LS ~4x faster than libjpeg."""
    if ts not in _JPEG_LS:
        return ""
    from pydicom.pixels import get_decoder

    try:
        return "pyjpegls" if "pyjpegls" in get_decoder(ts).available_plugins else ""
    except NotImplementedError:
        return ""


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _fast_native(ds: Any) -> npt.NDArray[Any] | None:
    """Pixels of a plain little-endian single-frame grayscale slice straight from the bytes, else None.

    pydicom's general path costs ~0.5 ms per slice in bookkeeping; this covers most CT/MR/PET files.
    The result equals pydicom's ``pixel_array`` (bits above BitsStored masked, sign extended).
    """
    try:
        ts = str(ds.file_meta.TransferSyntaxUID)
        if ts not in _NATIVE_LE or "PixelData" not in ds:
            return None
        h = header(ds)
        if int(h["SamplesPerPixel"] or 1) != 1 or nframes(h) != 1:
            return None
        ba, bs = int(h["BitsAllocated"]), int(h["BitsStored"])
        signed = int(h["PixelRepresentation"]) == 1
        rows, cols = int(h["Rows"]), int(h["Columns"])
    except (AttributeError, TypeError, ValueError):
        return None
    if ba not in (8, 16, 32) or not 0 < bs <= ba:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{ba // 8}")
    raw = ds.PixelData
    if len(raw) < rows * cols * dtype.itemsize:
        return None
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(rows, cols)
    if bs < ba:
        shift = ba - bs
        arr = (arr << shift) >> shift if signed else arr & np.array((1 << bs) - 1, dtype=dtype)
    return arr


def decode(ds: Any, name: str) -> npt.NDArray[Any]:
    """The stored pixel values of one dataset (all frames), read from disk now if they were deferred."""
    fast = _fast_native(ds)
    if fast is not None:
        return fast
    _check_codec(ds, name)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise FormatError(
            f"{name}: colour image (SamplesPerPixel {spp}, PhotometricInterpretation "
            f"{ds.get('PhotometricInterpretation', '?')}); MedLens reads grayscale images only"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise FormatError(f"{name}: the file has no pixel data")
    try:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        plugin = _preferred_plugin(str(ts)) if ts is not None and ts.is_compressed else ""
        if plugin:
            from pydicom.pixels import pixel_array

            return np.asarray(pixel_array(ds, decoding_plugin=plugin))
        return np.asarray(ds.pixel_array)
    except MissingDependencyError:
        raise
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        tsn = getattr(ts, "name", "unknown transfer syntax")
        raise FormatError(f"{name}: cannot decode the pixel data ({tsn}): {type(exc).__name__}: {exc}") from exc


def pixels(records: list[Slice]) -> npt.NDArray[np.float32]:
    """Decoded, rescaled pixels ``(n, rows, cols)`` float32 in the order of ``records``."""
    cache: dict[int, npt.NDArray[Any]] = {}
    multi_ds = [r.ds for r in records if r.frame is not None]
    if multi_ds:
        ds = multi_ds[0]
        cache[id(ds)] = decode(ds, records[0].name.split(" frame ")[0])

    def one(rec: Slice) -> npt.NDArray[np.float32]:
        if rec.frame is not None:
            arr = cache[id(rec.ds)][rec.frame]
        else:
            arr = decode(rec.ds, rec.name)
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
        if arr.shape != rec.shape:
            raise FormatError(f"{rec.name}: decoded pixels have shape {arr.shape}, header says {rec.shape}")
        out = arr.astype(np.float32)
        if rec.slope != 1.0:
            out *= np.float32(rec.slope)
        if rec.intercept != 0.0:
            out += np.float32(rec.intercept)
        return out

    if len(records) > 4 and not multi_ds:
        with ThreadPoolExecutor(max_workers=workers(len(records))) as ex:
            planes = list(ex.map(one, records))
    else:
        planes = [one(r) for r in records]
    return np.stack(planes, axis=0)
