"""DICOM image series: reading into an :class:`~medlens.core.image.Image`, and listing series.

Reading (:func:`read_dicom_series`)
    1. Collect the files (a folder is searched recursively; a list; one file). Files that are not
       DICOM, or are truncated, are skipped with a :class:`~medlens.core.errors.SkippedInputWarning`
       naming them; nothing usable left is an error.
    2. Group by SeriesInstanceUID. Non-image objects (RTSTRUCT, SEG, SR, RT plans/doses, ...) are
       ignored when picking the image series; several image series raise
       :class:`~medlens.core.errors.InputError` listing them (pass ``series_uid``).
    3. Slices (or the frames of an enhanced multi-frame object) are sorted along the slice normal
       (row cosines x column cosines of ImageOrientationPatient) and checked
       (:mod:`medlens.io.geometry_qa`); irregular stacks fail or are resampled (``on_irregular``).
    4. Pixels are decoded through pydicom's plugins, the modality rescale applied per slice
       (float32; CT in HU), PET converted to SUVbw (:mod:`medlens.io._dicom_pet`).

Geometry: axis 0 of the array follows the slice order; the affine's column 0 is the step vector
``(last position - first position) / (n - 1)``, columns 1 and 2 are the column cosines (second
IOP triplet, direction of increasing row index) x row spacing and the row cosines (first IOP
triplet, direction of increasing column index) x column spacing. This equals what SimpleITK's
``ImageSeriesReader`` builds for a regular stack.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from medlens.core.errors import (
    FormatError,
    GeometryError,
    GeometryWarning,
    InputError,
    MissingDependencyError,
    SkippedInputWarning,
)
from medlens.core.image import Image, ImageMeta, Units
from medlens.io._dicom_header import header
from medlens.io.geometry_qa import (
    GeometryFinding,
    check_slice_geometry,
    format_findings,
    resample_to_regular_grid,
    slice_normal,
)

__all__ = ["NON_IMAGE_MODALITIES", "SeriesInfo", "geometry_findings", "list_series", "read_dicom_series"]

PathLike = str | os.PathLike[str]

#: Modalities never read as images (masks, structure sets, reports, plans, dose grids, ...).
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "RTIMAGE", "SEG", "SR", "PR", "KO", "REG", "RWV", "DOC", "FID"}
)

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_NO_UID = "(no SeriesInstanceUID)"
_FORCE_LOCK = threading.Lock()

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


# ---------------------------------------------------------------------------------------------
# Files and headers
# ---------------------------------------------------------------------------------------------
def _collect_files(path: PathLike | Sequence[PathLike]) -> tuple[list[Path], str]:
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not files:
                raise InputError(f"{p}: the folder holds no files; expected DICOM files of one image series")
            return files, str(p)
        return [p], str(p)
    items = [Path(x) for x in path]
    if not items:
        raise InputError("the list of DICOM files is empty; give at least one file or a folder")
    found: list[Path] = []
    for it in items:
        if it.is_dir():
            found.extend(sorted(f for f in it.rglob("*") if f.is_file() and not f.name.startswith(".")))
        elif it.exists():
            found.append(it)
        else:
            raise InputError(f"{it}: no such file (in the list of DICOM files)")
    common = os.path.commonpath([str(f) for f in items])
    return found, f"{len(items)} files under {common}" if len(items) > 1 else str(items[0])


def _nframes(h: dict[str, Any]) -> int:
    try:
        return int(h["NumberOfFrames"] or 1)
    except (TypeError, ValueError):
        return 1


def _native_pixel_bytes(ds: Any) -> int | None:
    h = header(ds)
    try:
        rows, cols = int(h["Rows"]), int(h["Columns"])
        bits = int(h["BitsAllocated"])
        spp = int(h["SamplesPerPixel"] or 1)
        frames = _nframes(h)
    except (TypeError, ValueError):
        return None
    n = rows * cols * spp * frames
    if h["PhotometricInterpretation"] == "YBR_FULL_422":
        n = rows * cols * 2 * frames  # chroma subsampled horizontally
    return (n + 7) // 8 if bits == 1 else n * (bits // 8)


def _read_one(path: Path, *, pixels: bool) -> tuple[Path, Any, str | None]:
    """Read one file: (path, dataset or None, reason it was skipped or None)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
        except InvalidDicomError:
            # No preamble: only a raw dataset starting with group 0002 or 0008 (either byte order) is tried.
            with open(path, "rb") as fh:
                head = fh.read(2)
            if head not in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
                return path, None, "not a DICOM file"
            with _FORCE_LOCK, warnings.catch_warnings():  # catch_warnings is process-global: one thread at a time
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
            if "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
                return path, None, "not a DICOM file"
    except Exception as exc:  # pydicom raises many kinds on damaged input
        return path, None, f"truncated or unreadable DICOM ({type(exc).__name__}: {str(exc)[:80]})"
    if len(ds) == 0:
        return path, None, "truncated or damaged (no data element could be read)"
    media_sop = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
    if media_sop == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
        return path, None, "a DICOMDIR index, not an image"
    h = header(ds)
    if h["SeriesInstanceUID"] is None and h["Rows"] is None:
        return path, None, "no SeriesInstanceUID and no image (not a DICOM image object)"
    if pixels and "PixelData" in ds:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if ts is not None and not ts.is_compressed:
            expected = _native_pixel_bytes(ds)
            got = len(ds.PixelData)
            if expected is not None and got < expected:
                return path, None, f"truncated: pixel data holds {got} of the {expected} bytes expected"
    return path, ds, None


def _workers(n: int) -> int:
    return max(1, min(8, n, os.cpu_count() or 1))


def _read_all(files: list[Path], *, pixels: bool) -> list[tuple[Path, Any]]:
    if len(files) > 4:
        with ThreadPoolExecutor(max_workers=_workers(len(files))) as ex:
            results = list(ex.map(lambda f: _read_one(f, pixels=pixels), files))
    else:
        results = [_read_one(f, pixels=pixels) for f in files]
    good = [(p, ds) for p, ds, why in results if ds is not None]
    skipped = [(p, why) for p, ds, why in results if ds is None]
    quiet = {"a DICOMDIR index, not an image"}
    loud = [(p, why) for p, why in skipped if why not in quiet]
    if loud:
        shown = "; ".join(f"{p} ({why})" for p, why in loud[:10])
        more = f"; and {len(loud) - 10} more" if len(loud) > 10 else ""
        warnings.warn(f"skipped {len(loud)} file(s) that are not usable DICOM: {shown}{more}", SkippedInputWarning, 3)
    if not good:
        listed = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        raise FormatError(
            f"no usable DICOM file among {len(files)} file(s): {listed}"
            + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        )
    return good


def _is_image(ds: Any) -> bool:
    h = header(ds)
    if str(h["Modality"] or "").upper() in NON_IMAGE_MODALITIES:
        return False
    return h["Rows"] is not None and h["Columns"] is not None


def _group(items: list[tuple[Path, Any]]) -> dict[str, list[tuple[Path, Any]]]:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    for p, ds in items:
        groups.setdefault(header(ds)["SeriesInstanceUID"] or _NO_UID, []).append((p, ds))
    return groups


def _describe(uid: str, members: list[tuple[Path, Any]]) -> str:
    ds = members[0][1]
    desc = str(ds.get("SeriesDescription", "") or "")
    return f"{uid} ({ds.get('Modality', '?')}, {desc!r}, {len(members)} file(s))"


# ---------------------------------------------------------------------------------------------
# Slice records (headers only)
# ---------------------------------------------------------------------------------------------
@dataclass
class _Slice:
    name: str
    ds: Any  # header dataset the slice belongs to
    frame: int | None  # frame index in a multi-frame object
    position: npt.NDArray[np.float64] | None
    orientation: npt.NDArray[np.float64] | None
    pixel_spacing: tuple[float, float] | None
    shape: tuple[int, int]
    slope: float
    intercept: float
    thickness: float | None


def _floats(value: Any, n: int) -> npt.NDArray[np.float64] | None:
    if value is None:
        return None
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.size == n and np.all(np.isfinite(arr)) else None


def _float(value: Any, default: float | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first(values: list[float] | None, default: float | None) -> float | None:
    return float(values[0]) if values else default


def _group_attr(groups: Sequence[Any], seq_name: str, attr: str) -> Any:
    for g in groups:
        if g is None:
            continue
        seq = g.get(seq_name)
        if seq:
            v = seq[0].get(attr)
            if v is not None:
                return v
    return None


def _slice_records(members: list[tuple[Path, Any]]) -> list[_Slice]:
    """One record per 2D slice (per file, or per frame of an enhanced multi-frame object)."""
    out: list[_Slice] = []
    multi = [(p, ds) for p, ds in members if _nframes(header(ds)) > 1]
    if multi and len(members) > 1:
        raise FormatError(
            f"series {members[0][1].get('SeriesInstanceUID', '')} mixes {len(multi)} multi-frame object(s) with "
            f"{len(members)} files in all; MedLens reads one multi-frame object or a set of single-frame files: "
            "pass one file"
        )
    for p, ds in members:
        nframes = _nframes(header(ds))
        shape = (int(header(ds)["Rows"]), int(header(ds)["Columns"]))
        top_ps = ds.get("PixelSpacing")
        if nframes > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            shared_seq = ds.get("SharedFunctionalGroupsSequence")
            shared = shared_seq[0] if shared_seq else None
            per = ds.get("PerFrameFunctionalGroupsSequence")
            if not per or len(per) != nframes:
                if nframes == 1:
                    per = [None]
                else:
                    raise FormatError(
                        f"{p}: multi-frame object ({nframes} frames, modality {ds.get('Modality', '?')}) without "
                        "per-frame plane positions (PerFrameFunctionalGroupsSequence/PlanePositionSequence); "
                        "cine, ultrasound or NM frames are not a volume MedLens can place in space"
                    )
            for i in range(nframes):
                groups = [per[i], shared]
                pos = _floats(_group_attr(groups, "PlanePositionSequence", "ImagePositionPatient"), 3)
                iop = _floats(_group_attr(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
                ps = _floats(_group_attr(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
                th = _float(_group_attr(groups, "PixelMeasuresSequence", "SliceThickness"), None)
                slope = _group_attr(groups, "PixelValueTransformationSequence", "RescaleSlope")
                icpt = _group_attr(groups, "PixelValueTransformationSequence", "RescaleIntercept")
                if pos is None and nframes == 1:
                    pos = _floats(ds.get("ImagePositionPatient"), 3)
                if iop is None:
                    iop = _floats(ds.get("ImageOrientationPatient"), 6)
                if ps is None:
                    ps = _floats(top_ps, 2)
                if pos is None and nframes > 1:
                    raise FormatError(f"{p}: frame {i + 1} of {nframes} has no PlanePositionSequence position")
                out.append(
                    _Slice(
                        name=f"{p} frame {i + 1}" if nframes > 1 else str(p),
                        ds=ds,
                        frame=i if nframes > 1 else None,
                        position=pos,
                        orientation=iop,
                        pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
                        shape=shape,
                        slope=_float(slope if slope is not None else ds.get("RescaleSlope"), 1.0) or 1.0,
                        intercept=_float(icpt if icpt is not None else ds.get("RescaleIntercept"), 0.0) or 0.0,
                        thickness=th if th is not None else _float(ds.get("SliceThickness"), None),
                    )
                )
        else:
            h = header(ds)
            ps = _floats(h["PixelSpacing"], 2)
            out.append(
                _Slice(
                    name=str(p),
                    ds=ds,
                    frame=None,
                    position=_floats(h["ImagePositionPatient"], 3),
                    orientation=_floats(h["ImageOrientationPatient"], 6),
                    pixel_spacing=(float(ps[0]), float(ps[1])) if ps is not None else None,
                    shape=shape,
                    slope=_first(h["RescaleSlope"], 1.0) or 1.0,
                    intercept=_first(h["RescaleIntercept"], 0.0) or 0.0,
                    thickness=_first(h["SliceThickness"], None),
                )
            )
    return out


def _qa(records: list[_Slice]) -> list[GeometryFinding]:
    if len(records) < 2:
        return []
    missing = [r.name for r in records if r.position is None or r.orientation is None]
    if missing:
        return [
            GeometryFinding(
                "missing_position",
                "error",
                f"{len(missing)} of {len(records)} slices lack ImagePositionPatient/ImageOrientationPatient, so the "
                "slices cannot be placed in space: " + ", ".join(missing[:5]),
            )
        ]
    return check_slice_geometry(
        np.array([r.position for r in records]),
        np.array([r.orientation for r in records]),
        pixel_spacings=np.array([r.pixel_spacing or (0.0, 0.0) for r in records]),
        shapes=[r.shape for r in records],
        files=[r.name for r in records],
    )


def geometry_findings(datasets: Sequence[Any], names: Sequence[str] | None = None) -> list[GeometryFinding]:
    """Geometry QA of one series from its headers (pydicom datasets, pixels not needed).

    For a catalog that already holds the headers (e.g. read with ``stop_before_pixels=True``).
    ``names`` (one per dataset, default ``"file i"``) are used in the messages.
    """
    labels = list(names) if names is not None else [f"file {i}" for i in range(len(datasets))]
    if len(labels) != len(datasets):
        raise InputError(f"names has {len(labels)} entries for {len(datasets)} datasets; give one name per dataset")
    return _qa(_slice_records([(Path(n), ds) for n, ds in zip(labels, datasets, strict=True)]))


def _sorted_records(records: list[_Slice]) -> list[_Slice]:
    if len(records) < 2:
        return records
    normal = slice_normal(records[0].orientation)  # type: ignore[arg-type]
    proj = np.array([float(r.position @ normal) for r in records])  # type: ignore[operator]
    return [records[i] for i in np.argsort(proj, kind="stable")]


def _plane_vectors(rec: _Slice, source: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float, float]:
    """(row cosines, column cosines, row spacing dy, column spacing dx) of a slice."""
    if rec.orientation is not None:
        row_dir, col_dir = rec.orientation[:3], rec.orientation[3:6]
    else:
        row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    if rec.pixel_spacing is not None and min(rec.pixel_spacing) > 0:
        dy, dx = rec.pixel_spacing
    else:
        ips = _floats(rec.ds.get("ImagerPixelSpacing"), 2)
        if ips is None:
            ips = _floats(rec.ds.get("NominalScannedPixelSpacing"), 2)
        if ips is not None and min(ips) > 0:
            dy, dx = float(ips[0]), float(ips[1])
        else:
            warnings.warn(
                f"{source}: no PixelSpacing or ImagerPixelSpacing; pixel spacing set to 1 mm", GeometryWarning, 4
            )
            dy, dx = 1.0, 1.0
    return row_dir, col_dir, dy, dx


def _affine(records: list[_Slice], source: str) -> npt.NDArray[np.float64]:
    rec0 = records[0]
    row_dir, col_dir, dy, dx = _plane_vectors(rec0, source)
    aff = np.eye(4)
    if len(records) == 1:
        normal = np.cross(row_dir, col_dir)
        th = rec0.thickness if rec0.thickness and rec0.thickness > 0 else 1.0
        aff[:3, 0] = col_dir * dy
        aff[:3, 1] = row_dir * dx
        aff[:3, 2] = normal / max(float(np.linalg.norm(normal)), 1e-12) * th
        aff[:3, 3] = rec0.position if rec0.position is not None else 0.0
        return aff
    first, last = records[0].position, records[-1].position
    aff[:3, 0] = (last - first) / (len(records) - 1)  # type: ignore[operator]
    aff[:3, 1] = col_dir * dy
    aff[:3, 2] = row_dir * dx
    aff[:3, 3] = first  # type: ignore[assignment]
    return aff


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------
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
        if int(h["SamplesPerPixel"] or 1) != 1 or _nframes(h) != 1:
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


def _decode(ds: Any, name: str) -> npt.NDArray[Any]:
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


def _pixels(records: list[_Slice]) -> npt.NDArray[np.float32]:
    """Decoded, rescaled pixels ``(n, rows, cols)`` float32 in the order of ``records``."""
    cache: dict[int, npt.NDArray[Any]] = {}
    multi_ds = [r.ds for r in records if r.frame is not None]
    if multi_ds:
        ds = multi_ds[0]
        cache[id(ds)] = _decode(ds, records[0].name.split(" frame ")[0])

    def one(rec: _Slice) -> npt.NDArray[np.float32]:
        if rec.frame is not None:
            arr = cache[id(rec.ds)][rec.frame]
        else:
            arr = _decode(rec.ds, rec.name)
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
        with ThreadPoolExecutor(max_workers=_workers(len(records))) as ex:
            planes = list(ex.map(one, records))
    else:
        planes = [one(r) for r in records]
    return np.stack(planes, axis=0)


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------
def _age_years(value: Any) -> float | None:
    s = str(value or "").strip().upper()
    if len(s) < 2 or not s[:-1].isdigit():
        return None
    n = float(s[:-1])
    return {"Y": n, "M": n / 12.0, "W": n / 52.1775, "D": n / 365.25}.get(s[-1])


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _extra(ds: Any, rec: _Slice) -> dict[str, Any]:
    return {
        "patient_age_years": _age_years(ds.get("PatientAge")),
        "patient_sex": _text(ds.get("PatientSex")),
        "patient_weight_kg": _float(ds.get("PatientWeight"), None),
        "patient_size_m": _float(ds.get("PatientSize"), None),
        "manufacturer": _text(ds.get("Manufacturer")),
        "convolution_kernel": _text(ds.get("ConvolutionKernel")),
        "slice_thickness_mm": rec.thickness,
        "kvp": _float(ds.get("KVP"), None),
        "body_part": _text(ds.get("BodyPartExamined")),
        "series_description": _text(ds.get("SeriesDescription")),
        "study_date": _text(ds.get("StudyDate")),
    }


def _units_and_factors(records: list[_Slice], source: str) -> tuple[str, list[float] | None]:
    ds = records[0].ds
    mod = str(ds.get("Modality", "") or "").upper()
    if mod == "CT":
        return Units.HU, None
    if mod == "PT":
        from medlens.io._dicom_pet import suv_factors

        factors, units = suv_factors([r.ds for r in records], source)
        return units, factors
    if str(ds.get("RescaleType", "") or "").upper() == "HU":
        return Units.HU, None
    return Units.ARBITRARY, None


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def _is_localizer(ds: Any) -> bool:
    return any(v.upper() == "LOCALIZER" for v in header(ds)["ImageType"] or [])


def _drop_localizers(members: list[tuple[Path, Any]], source: str) -> list[tuple[Path, Any]]:
    """Scout/localizer images stored in the series of the axial slices are left out, with a warning."""
    scouts = [p for p, ds in members if _is_localizer(ds)]
    if not scouts or len(scouts) == len(members):
        return members
    warnings.warn(
        f"{source}: left out {len(scouts)} localizer image(s) (ImageType LOCALIZER) of the series: "
        + ", ".join(str(p) for p in scouts[:5]),
        SkippedInputWarning,
        3,
    )
    return [(p, ds) for p, ds in members if not _is_localizer(ds)]


_STACK_KEYS = ("EchoNumbers", "AcquisitionNumber", "TemporalPositionIdentifier", "DiffusionBValue", "ImageType")


def _stack_hint(members: list[tuple[Path, Any]]) -> str:
    """Name the header attributes that tell mixed stacks apart (echoes, time points, acquisitions)."""
    parts = []
    for key in _STACK_KEYS:
        values = {_text(ds.get(key)) or "absent" for _, ds in members}
        if len(values) > 1:
            shown = ", ".join(sorted(str(v) for v in values)[:6])
            parts.append(f"{key} ({shown})")
    return f" (the files differ in {'; '.join(parts)})" if parts else ""


def _select(
    groups: dict[str, list[tuple[Path, Any]]], series_uid: str | None, source: str
) -> tuple[str, list[tuple[Path, Any]]]:
    if series_uid is not None:
        if series_uid not in groups:
            listed = "; ".join(_describe(u, m) for u, m in groups.items())
            raise InputError(f"{source}: no series with SeriesInstanceUID {series_uid}; found: {listed}")
        members = groups[series_uid]
        if not _is_image(members[0][1]):
            mod = members[0][1].get("Modality", "?")
            raise InputError(
                f"{source}: series {series_uid} is a {mod} object, not an image; read masks with medlens.read_mask"
            )
        return series_uid, members
    images = {u: m for u, m in groups.items() if _is_image(m[0][1])}
    if not images:
        listed = "; ".join(_describe(u, m) for u, m in groups.items())
        raise FormatError(f"{source}: no image series found, only non-image objects: {listed}")
    if len(images) > 1:
        listed = "\n  ".join(_describe(u, m) for u, m in images.items())
        raise InputError(
            f"{source}: {len(images)} image series found; pass series_uid= (CLI: --series UID) to choose one:\n  "
            + listed
        )
    uid = next(iter(images))
    return uid, images[uid]


def read_dicom_series(
    path: PathLike | Sequence[PathLike],
    *,
    series_uid: str | None = None,
    on_irregular: Literal["error", "resample"] = "error",
) -> Image:
    """Read one DICOM image series (single-frame files or an enhanced multi-frame object).

    Parameters
    ----------
    path
        A folder (searched recursively), a list of files, or one file.
    series_uid
        SeriesInstanceUID to read when the input holds several image series.
    on_irregular
        ``"error"``: raise :class:`~medlens.core.errors.GeometryError` listing the geometry findings;
        ``"resample"``: resample missing slices, non-uniform spacing or gantry tilt onto a regular grid
        along the slice normal (linear interpolation) with a :class:`~medlens.core.errors.GeometryWarning`.
        Duplicate positions and inconsistent orientation/spacing/size always raise.

    Returns
    -------
    Image
        float32 pixels, ``(z, y, x)`` (several slices or frames) or ``(y, x)`` (one slice, CR/DX).
        Units: HU for CT, SUVbw for PET (BQML converted with the decay-corrected dose, GML kept), else
        ``arbitrary`` (or BQML/unknown with a warning when SUV cannot be computed).
    """
    if on_irregular not in ("error", "resample"):
        raise InputError(f"on_irregular must be 'error' or 'resample', got {on_irregular!r}")
    files, source = _collect_files(path)
    items = _read_all(files, pixels=True)
    groups = _group(items)
    uid, members = _select(groups, series_uid, source)
    members = _drop_localizers(members, source)
    records = _slice_records(members)
    findings = _qa(records)
    blocking = [f for f in findings if f.severity == "error"]
    resample = False
    if blocking:
        fixable = all(f.resampleable for f in blocking)
        if on_irregular == "error" or not fixable:
            hint = (
                "pass on_irregular='resample' (CLI: --resample-irregular) to resample onto a regular grid"
                if fixable
                else "resampling cannot repair "
                + ", ".join(sorted({f.code for f in blocking if not f.resampleable}))
                + "; select the files of one acquisition"
                + _stack_hint(members)
            )
            raise GeometryError(
                f"{source}: series {uid} has irregular geometry ({len(blocking)} finding(s)): "
                f"{format_findings(blocking)}. {hint}"
            )
        resample = True
    records = _sorted_records(records)
    units, factors = _units_and_factors(records, source)
    pixels = _pixels(records)
    if factors is not None:
        pixels *= np.asarray(factors, dtype=np.float32)[:, None, None]
    history: tuple[str, ...] = ()
    if resample:
        first = records[0]
        pixels, aff = resample_to_regular_grid(
            pixels,
            np.array([r.position for r in records]),
            first.orientation,  # type: ignore[arg-type]
            first.pixel_spacing or (1.0, 1.0),
        )
        warnings.warn(
            f"{source}: series {uid} resampled onto a regular grid of {pixels.shape[0]} slices "
            f"({aff[:3, 0].tolist()} mm step) because: {format_findings(blocking)}",
            GeometryWarning,
            2,
        )
        history = ("resample_irregular_slices",)
    elif len(records) == 1:
        aff = _affine(records, source)
        pixels = pixels[0]
    else:
        aff = _affine(records, source)
    ds0 = records[0].ds
    sops: list[str] = []
    for r in records:
        s = header(r.ds)["SOPInstanceUID"] or ""
        if not sops or r.frame is None:
            sops.append(s)
    meta = ImageMeta(
        modality=str(ds0.get("Modality", "") or ""),
        units=units,
        study_uid=str(ds0.get("StudyInstanceUID", "") or ""),
        series_uid="" if uid == _NO_UID else uid,
        frame_of_reference_uid=str(ds0.get("FrameOfReferenceUID", "") or ""),
        sop_instance_uids=tuple(sops) if not resample else (),
        patient_id=str(ds0.get("PatientID", "") or ""),
        source=source,
        extra=_extra(ds0, records[0]),
        history=history,
    )
    return Image(pixels, aff, meta)


# ---------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------
@dataclass
class SeriesInfo:
    """What a DICOM series is, read from headers only.

    Attributes
    ----------
    series_uid, study_uid, patient_id, modality, description, frame_of_reference_uid
        From the DICOM headers.
    n_files, files
        The files of the series (paths as strings).
    is_image
        True for an image series that :func:`read_dicom_series` can read.
    shape, spacing_mm, origin_mm, direction, units
        Geometry and intensity units of the image as it would be read (image series with a regular
        grid only; None otherwise).
    qa
        Geometry findings (``GeometryFinding.to_dict()``), empty for a regular stack.
    rois
        ROI names (RTSTRUCT StructureSetROISequence) or segment labels (SEG SegmentSequence).
    referenced_series_uid
        The image series an RTSTRUCT/SEG refers to (``""`` if none is recorded).
    """

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    description: str
    n_files: int
    files: list[str]
    frame_of_reference_uid: str
    is_image: bool
    qa: list[dict[str, Any]] = field(default_factory=list)
    rois: list[str] = field(default_factory=list)
    referenced_series_uid: str = ""
    shape: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None
    origin_mm: tuple[float, float, float] | None = None
    direction: list[list[float]] | None = None
    units: str | None = None

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        d["spacing_mm"] = list(self.spacing_mm) if self.spacing_mm is not None else None
        d["origin_mm"] = list(self.origin_mm) if self.origin_mm is not None else None
        return d


def _referenced_series(ds: Any) -> str:
    for rfor in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        for st in rfor.get("RTReferencedStudySequence", []) or []:
            for se in st.get("RTReferencedSeriesSequence", []) or []:
                if se.get("SeriesInstanceUID"):
                    return str(se.SeriesInstanceUID)
    for se in ds.get("ReferencedSeriesSequence", []) or []:
        if se.get("SeriesInstanceUID"):
            return str(se.SeriesInstanceUID)
    return ""


def _rois(ds: Any) -> list[str]:
    names: list[str] = []
    for item in ds.get("StructureSetROISequence", []) or []:
        names.append(str(item.get("ROIName", "") or ""))
    for item in ds.get("SegmentSequence", []) or []:
        names.append(str(item.get("SegmentLabel", "") or ""))
    return names


def list_series(path: PathLike | Sequence[PathLike]) -> list[SeriesInfo]:
    """Describe every DICOM series under ``path`` from the headers (pixels are not decoded).

    Image series get their geometry QA findings, and, for a regular grid, the shape, spacing,
    origin, direction and units :func:`read_dicom_series` would return; RTSTRUCT and SEG objects
    get their ROI names / segment labels and the series they refer to.
    """
    files, source = _collect_files(path)
    items = _read_all(files, pixels=False)
    out: list[SeriesInfo] = []
    for uid, members in _group(items).items():
        ds = members[0][1]
        info = SeriesInfo(
            series_uid="" if uid == _NO_UID else uid,
            study_uid=str(ds.get("StudyInstanceUID", "") or ""),
            patient_id=str(ds.get("PatientID", "") or ""),
            modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""),
            n_files=len(members),
            files=[str(p) for p, _ in members],
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
            is_image=_is_image(ds),
        )
        if not info.is_image:
            for _, d in members:
                info.rois.extend(_rois(d))
                info.referenced_series_uid = info.referenced_series_uid or _referenced_series(d)
                if not info.frame_of_reference_uid:
                    for rfor in d.get("ReferencedFrameOfReferenceSequence", []) or []:
                        info.frame_of_reference_uid = str(rfor.get("FrameOfReferenceUID", "") or "")
                        break
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SkippedInputWarning)
                    members = _drop_localizers(members, source)
                records = _slice_records(members)
                findings = _qa(records)
                info.qa = [f.to_dict() for f in findings]
                if not any(f.severity == "error" for f in findings):
                    records = _sorted_records(records)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        aff = _affine(records, source)
                        info.units, _ = _units_and_factors(records, source)
                    ndim = 2 if len(records) == 1 else 3
                    img = Image(np.zeros((1,) * ndim, dtype=np.uint8), aff)
                    info.shape = (len(records), *records[0].shape) if ndim == 3 else records[0].shape
                    info.spacing_mm = img.spacing
                    info.origin_mm = img.origin
                    info.direction = img.direction.tolist()
            except (FormatError, GeometryError) as exc:
                info.qa.append({"code": "unreadable", "severity": "error", "message": str(exc)})
        out.append(info)
    return out
