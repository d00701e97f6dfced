"""De-identifying a DICOM collection with the PS3.15 Basic Application Level Confidentiality Profile."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_path
from medlens.core.errors import InputError, MedlensWarning
from medlens.core.parallel import BatchMapper, map_batches
from medlens.io.deid.pixels import CLEAN_PIXEL_CODE, PixelRegion, blank_regions, parse_regions
from medlens.io.deid.profile import BASIC_CODE, OPTION_CODES, Option, action_for, row_for

__all__ = ["DeidReport", "Deidentifier", "deidentify"]

STATE_NAME = ".medlens-deid.json"
_STANDARD_UID_ROOT = "1.2.840.10008."
_DUMMY = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "CS": "ANONYMIZED",
    "AE": "ANONYMIZED",
    "PN": "ANONYMIZED",
}
_NUMERIC_VR = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_BYTES_VR = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}
#: Labels of regions that the 2026c Basic Profile blanks but that the source table (2020) gives no
#: option column for; MedLens keeps them, cleaned, under the Clean Descriptors option because a
#: radiomics study must find its "GTV" (a MedLens choice, documented in docs/data.md).
_DESCRIPTOR_EXTRAS = frozenset({0x30060026, 0x30060028, 0x30060002, 0x30060004, 0x00620005, 0x00620006})
_TEXT_VR = {"LO", "SH", "LT", "ST", "UT", "UC", "PN", "CS", "AE"}


class BurnedInAnnotationWarning(MedlensWarning):
    """An instance says its pixels carry burned-in text (BurnedInAnnotation = YES)."""


@dataclass
class DeidReport:
    """What a de-identification run did."""

    input_dir: str
    output_dir: str
    map_path: str
    options: list[str]
    n_files: int = 0
    n_written: int = 0
    n_resumed: int = 0
    n_duplicates: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    burned_in: list[str] = field(default_factory=list)
    pixels_cleaned: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"de-identified {self.input_dir} -> {self.output_dir}: {self.n_written} written, {self.n_resumed} already "
            f"complete, {self.n_duplicates} duplicate SOP instances, {len(self.skipped)} skipped (not DICOM or "
            f"unreadable), {len(self.pixels_cleaned)} with pixel regions blanked, {len(self.burned_in)} with "
            f"BurnedInAnnotation=YES left as they are; options "
            f"{', '.join(self.options) or 'none'}; pseudonym map {self.map_path} ({self.seconds:.1f} s)"
        )


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


class Deidentifier:
    """Apply the Basic Profile to datasets, consistently across a collection.

    Parameters
    ----------
    key
        Secret key (bytes) for the HMAC-SHA256 pseudonyms: the same key maps the same UID, patient
        or date offset to the same value in every file and every run, so references between objects
        (RTSTRUCT/SEG -> images) survive. Without the key, the mapping cannot be inverted or repeated.
    options
        Selected profile options.
    private_creators
        Private creator strings whose blocks are kept (allow-list); all other private tags are removed.
    max_shift_days
        Date shifts are a per-patient whole number of days in ``[1, max_shift_days]`` into the past.
    """

    def __init__(
        self,
        key: bytes,
        *,
        options: Iterable[Option | str] = (),
        private_creators: Iterable[str] = (),
        max_shift_days: int = 3650,
    ) -> None:
        if len(key) < 16:
            raise InputError(f"de-identification key must be at least 16 bytes, got {len(key)}")
        self.key = key
        self.options = frozenset(_parse_options(options))
        self.private_creators = frozenset(private_creators)
        self.max_shift_days = max_shift_days
        self.patients: dict[str, dict[str, Any]] = {}
        self.uids: dict[str, tuple[str, str]] = {}  # original -> (new, kind) for study/series UIDs

    # ----------------------------------------------------------------- pseudonyms
    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def uid(self, uid: str) -> str:
        """New UID of ``uid`` (``2.25.<128-bit integer>``, PS3.5 B.2); standard UIDs are kept."""
        uid = uid.strip().rstrip("\x00")
        if not uid or uid.startswith(_STANDARD_UID_ROOT):
            return uid
        return "2.25." + str(int.from_bytes(self._mac("uid", uid)[:16], "big"))

    def patient_pseudonym(self, patient_id: str) -> str:
        return "ML" + self._mac("patient", patient_id).hex()[:12].upper()

    def shift_days(self, patient_id: str) -> int:
        return 1 + int.from_bytes(self._mac("date", patient_id)[:4], "big") % self.max_shift_days

    def _shift_da(self, value: str, days: int) -> str:
        v = value.strip()
        try:
            d = dt.date(int(v[:4]), int(v[4:6]), int(v[6:8]))
        except (ValueError, IndexError):
            return _DUMMY["DA"]
        return (d - dt.timedelta(days=days)).strftime("%Y%m%d") + v[8:]

    # ----------------------------------------------------------------- datasets
    def deidentify(self, ds: Any) -> Any:
        """De-identify a pydicom Dataset in place (and return it); pixels and geometry are untouched."""
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        pid = str(ds.get("PatientID", "") or "")
        pseudo = self.patient_pseudonym(pid)
        days = self.shift_days(pid)
        pat = self.patients.setdefault(
            pid,
            {
                "patient_id": pid,
                "patient_name": str(ds.get("PatientName", "") or ""),
                "pseudonym": pseudo,
                "shift_days": days if Option.DATES in self.options else "",
            },
        )
        for kw, kind in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series")):
            if kw in ds:
                self.uids[str(ds[kw].value)] = (self.uid(str(ds[kw].value)), f"{kind} of {pat['pseudonym']}")
        self._walk(ds, days)
        ds.PatientID = pseudo
        ds.PatientName = pseudo
        ds.PatientIdentityRemoved = "YES"
        codes = [BASIC_CODE, *sorted(OPTION_CODES[o] for o in self.options)]
        ds.DeidentificationMethod = "MedLens PS3.15 E.1-1 " + "+".join(c for c, _ in codes)
        items = []
        for code, meaning in codes:
            it = Dataset()
            it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = code, "DCM", meaning
            items.append(it)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if Option.DATES in self.options else "REMOVED"
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "MEDLENS_DEID"
        return ds

    def _walk(self, ds: Any, days: int) -> None:
        creators_kept: set[int] = set()
        for elem in list(ds):
            tag = int(elem.tag)
            group, el = tag >> 16, tag & 0xFFFF
            if el == 0 and group != 0x0002:  # group lengths are retired and would be stale
                del ds[elem.tag]
                continue
            if group % 2 == 1:
                if 0x10 <= el <= 0xFF and str(elem.value).strip() in self.private_creators:
                    creators_kept.add(el)
                    continue
                if el > 0xFF and (el >> 8) in creators_kept:
                    if elem.VR == "SQ":
                        for item in elem.value:
                            self._walk(item, days)
                    continue
                del ds[elem.tag]
                continue
            row = row_for(tag)
            act = action_for(row, self.options) if row is not None else None
            if tag in _DESCRIPTOR_EXTRAS and Option.DESCRIPTORS in self.options:
                act = "C"
            vr = elem.VR
            if act == "X":
                del ds[elem.tag]
                continue
            if vr == "SQ":
                if act == "Z":
                    elem.value = []
                else:  # K, C, D, U and unlisted sequences: de-identify the items
                    for item in elem.value:
                        self._walk(item, days)
                continue
            if vr == "UI":
                elem.value = self._map_uids(elem.value)
                continue
            if act is None:
                if vr in ("DA", "DT"):  # unlisted dates: never let an original date through
                    elem.value = self._date(elem.value, vr, days, keep=Option.DATES in self.options)
                continue
            if act == "K":
                continue
            if act == "Z":
                elem.value = b"" if vr in _BYTES_VR else None
            elif act == "D":
                elem.value = self._dummy(vr)
            elif act == "U":
                elem.value = self._map_uids(elem.value)
            elif act == "C":
                if vr in ("DA", "DT"):
                    elem.value = self._date(elem.value, vr, days, keep=Option.DATES in self.options)
                elif vr == "TM":
                    pass  # whole-day shifts leave times of day as they are
                elif vr in _TEXT_VR and Option.DESCRIPTORS in self.options:
                    elem.value = self._clean_text(elem.value, ds)
                # other C actions (patient characteristics such as ethnic group): kept as the option says

    def _map_uids(self, value: Any) -> Any:
        if value is None:
            return value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            return [self.uid(str(v)) for v in value]
        return self.uid(str(value))

    def _date(self, value: Any, vr: str, days: int, *, keep: bool) -> Any:
        if value in (None, ""):
            return value
        vals = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        out = []
        for v in vals:
            s = str(v)
            if not keep or not s.strip():
                out.append(_DUMMY[vr] if s.strip() else s)
            else:
                out.append(self._shift_da(s, days))
        return out if len(out) > 1 else out[0]

    @staticmethod
    def _dummy(vr: str) -> Any:
        if vr in _NUMERIC_VR:
            return 0
        if vr in _BYTES_VR:
            return b"\x00\x00"
        if vr == "UR":
            return "http://example.invalid"
        return _DUMMY.get(vr, "ANONYMIZED")

    @staticmethod
    def _clean_text(value: Any, ds: Any) -> Any:
        """Clean Descriptors: drop date-like numbers and the patient's name/ID tokens from free text."""
        s = str(value)
        for kw in ("PatientID", "PatientName", "OtherPatientIDs"):
            v = str(ds.get(kw, "") or "")
            for tok in {t for t in re.split(r"[\^\s,]+", v) if len(t) >= 3}:
                s = re.sub(re.escape(tok), "X", s, flags=re.IGNORECASE)
        return re.sub(r"\b(19|20)\d{2}[-/.]?\d{2}[-/.]?\d{2}\b", "X", s)


def _parse_options(options: Iterable[Option | str]) -> list[Option]:
    out = []
    valid = [o.value for o in Option]
    for o in options:
        try:
            out.append(Option(o))
        except ValueError:
            raise InputError(f"unknown --retain option {o!r}; choose from {', '.join(valid)}") from None
    return out


def _load_key(key_file: Path, *, create: bool) -> bytes:
    if key_file.exists():
        key = key_file.read_bytes().strip()
        if len(key) < 32:
            raise InputError(f"key file {key_file} holds {len(key)} bytes; at least 32 (hex of 16 bytes) expected")
        return key
    if not create:
        raise InputError(f"key file {key_file} does not exist")
    key = secrets.token_hex(32).encode()
    _write_private(key_file, key.decode() + "\n")
    return key


def _write_private(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:  # mkstemp creates the file with mode 0600
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)


def _target(out: Path, ds: Any, deid: Deidentifier) -> Path:
    pseudo = deid.patient_pseudonym(str(ds.get("PatientID", "") or ""))
    study = deid.uid(str(ds.get("StudyInstanceUID", "")))
    series = deid.uid(str(ds.get("SeriesInstanceUID", "")))
    sop = deid.uid(str(ds.get("SOPInstanceUID", "")))
    mod = re.sub(r"[^A-Za-z0-9]", "", str(ds.get("Modality", "") or "OT")) or "OT"
    short = lambda u: hashlib.sha256(u.encode()).hexdigest()[:10]  # noqa: E731
    return out / pseudo / f"study-{short(study)}" / f"{mod}-{short(series)}" / f"{short(sop)}.dcm"


def deidentify(
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    profile: str = "basic",
    retain: Iterable[str] = (),
    map_path: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    private_creators: Iterable[str] = (),
    overwrite: bool = False,
    workers: int | None = 1,
    audit_log: str | os.PathLike[str] | None = None,
    clean_pixels: Iterable[str | PixelRegion] = (),
    mapper: BatchMapper | None = None,
) -> DeidReport:
    """De-identify every DICOM file under ``input_dir`` into ``output_dir``.

    Parameters
    ----------
    input_dir
        Folder tree of DICOM files (never modified). Non-DICOM and unreadable files are skipped and
        listed; DICOMDIR files are skipped (their references would be stale).
    output_dir
        New folder, not inside ``input_dir``. Files are written atomically as
        ``<pseudonym>/study-<h>/<modality>-<h>/<h>.dcm`` (names hashed from the new UIDs, so they carry
        nothing of the input's names). An interrupted run is resumed: files already written are
        skipped; an existing output of another or a finished run is refused unless ``overwrite``.
    profile
        Only ``"basic"`` (PS3.15 Basic Application Level Confidentiality Profile).
    retain
        Options: ``"dates"`` (longitudinal temporal information, dates shifted per patient),
        ``"patient-chars"`` (age, sex, size, weight, ...), ``"device"`` (device identity),
        ``"descriptors"`` (descriptions kept after cleaning).
    map_path
        Pseudonym map CSV (original <-> pseudonym, date shift; mode 0600). Default:
        ``<output_dir>.pseudonyms.csv`` beside the output. Must not be inside the output or input.
    key_file
        Secret HMAC key; default ``<map_path>.key`` (created, mode 0600, when absent). Reuse the same
        key for every batch of a collection so UIDs and pseudonyms stay consistent across batches.
    private_creators
        Private creator strings whose private blocks are kept.
    overwrite
        Allow writing into an existing output that is not an interrupted run with the same settings.
    workers
        Processes over partitions of the file list; ``None``: the number of CPU cores; ``1``
        (default): in this process.
    audit_log
        Optional audit log to which the run is appended.
    clean_pixels
        Clean Pixel Data: rectangles to blank in every frame of the images they match
        (:class:`~medlens.io.deid.pixels.PixelRegion` or its text form ``"US:640x480:0,0,640,60"``; see
        :mod:`medlens.io.deid.pixels`). Cleaned images are written uncompressed and carry code 113101.
    mapper
        Who provides the workers (:class:`medlens.core.parallel.BatchMapper`); default a
        standard-library process pool; ``medlens deid`` passes Dask's.
    """

    t0 = time.perf_counter()
    if workers is not None and workers < 1:
        raise InputError(f"deid: workers must be >= 1, got {workers}")
    if profile != "basic":
        raise InputError(f"profile {profile!r} is not supported; use profile 'basic' (PS3.15 E.1-1)")
    opts = sorted(set(_parse_options(retain)))
    regions = parse_regions(clean_pixels)
    inp = Path(input_dir).resolve()
    out = Path(output_dir).resolve()
    if not inp.is_dir():
        raise InputError(f"de-identification input {input_dir} is not a folder")
    if _inside(out, inp):
        raise InputError(f"output {out} is inside the input {inp}; choose an output folder outside the input tree")
    if _inside(inp, out):
        raise InputError(f"input {inp} is inside the output {out}; choose a separate output folder")
    mp = Path(map_path).resolve() if map_path is not None else out.parent / f"{out.name}.pseudonyms.csv"
    if _inside(mp, out) or _inside(mp, inp):
        raise InputError(f"pseudonym map {mp} must not be inside the output ({out}) or the input ({inp})")
    kf = Path(key_file).resolve() if key_file is not None else mp.with_name(mp.name + ".key")
    if _inside(kf, out) or _inside(kf, inp):
        raise InputError(f"key file {kf} must not be inside the output ({out}) or the input ({inp})")

    settings = {
        "profile": profile,
        "options": [o.value for o in opts],
        "input_sha256": hashlib.sha256(str(inp).encode()).hexdigest(),
        "private_creators": sorted(private_creators),
        "clean_pixels": [r.spec() for r in regions],
    }
    state_path = out / STATE_NAME
    if out.exists() and any(out.iterdir()):
        state = json.loads(state_path.read_text()) if state_path.is_file() else None
        same = state is not None and state.get("settings") == settings
        if same and state.get("status") == "running":  # type: ignore[union-attr]
            pass  # an interrupted run with the same settings: resume
        elif not overwrite:
            why = "a finished run" if same else "files of another run or other files"
            raise InputError(
                f"output {out} already exists and holds {why}; pass --overwrite to write into it, "
                "or choose a new folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.rglob(".*.tmp*"):  # temporaries of an interrupted run: never complete
        stale.unlink()
    key = _load_key(kf, create=True)
    deid = Deidentifier(key, options=opts, private_creators=private_creators)
    from medlens.core.atomic import atomic_write_text

    atomic_write_text(state_path, json.dumps({"settings": settings, "status": "running"}, indent=1))

    rep = DeidReport(str(inp), str(out), str(mp), [o.value for o in opts])
    paths = _list_files(inp)
    rep.n_files = len(paths)
    nworkers = workers or os.cpu_count() or 1
    cfg = {
        "key": key,
        "options": [o.value for o in opts],
        "private_creators": sorted(private_creators),
        "out": str(out),
        "clean_pixels": [r.spec() for r in regions],
    }
    records = map_batches(partial(_process_batch, cfg=cfg), paths, workers=nworkers, min_items=64, mapper=mapper)
    done: dict[str, str] = {}
    for r in records:  # in input-path order, as the bag keeps partition order
        if r["status"] == "skipped":
            rep.skipped.append((r["path"], r["reason"]))
            continue
        if r.get("cleaned"):
            rep.pixels_cleaned.append(r["path"])
        elif r["burned_in"]:
            rep.burned_in.append(r["path"])
            warnings.warn(
                f"{r['path']}: BurnedInAnnotation=YES: the pixels may show identifying text, which the Basic "
                "Profile does not remove; review or clean the pixels before release",
                BurnedInAnnotationWarning,
                stacklevel=2,
            )
        for pid, info in r["patients"].items():
            deid.patients.setdefault(pid, info)
        deid.uids.update({k: tuple(v) for k, v in r["uids"].items()})
        if r["target"] in done:
            rep.n_duplicates += 1
            continue
        done[r["target"]] = r["status"]
    rep.n_written = sum(1 for v in done.values() if v == "written")
    rep.n_resumed = sum(1 for v in done.values() if v == "resumed")
    _write_map(mp, deid)
    atomic_write_text(state_path, json.dumps({"settings": settings, "status": "complete"}, indent=1))
    rep.seconds = time.perf_counter() - t0
    if audit_log is not None:
        from medlens.core.audit import AuditLog

        AuditLog(audit_log).append(
            action="deid",
            inputs={"input_dir": str(inp)},
            outputs={"output_dir": str(out)},
            details={
                "profile": profile,
                "options": rep.options,
                "written": rep.n_written,
                "resumed": rep.n_resumed,
                "skipped": len(rep.skipped),
                "burned_in": len(rep.burned_in),
            },
        )
    return rep


def _list_files(root: Path) -> list[str]:
    """Every file under ``root``, sorted, hidden ones included (the one lister of medlens.io, as the catalog)."""
    from medlens.io.dicom.files import list_files

    return [str(f) for f in list_files(root, include_hidden=True)]


def _read_dataset(path: str) -> Any:
    """The whole dataset through medlens.io's one robust reader; not DICOM raises InvalidDicomError."""
    from pydicom.errors import InvalidDicomError

    from medlens.core.errors import FormatError
    from medlens.io.dicom.headers import read_dicom_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom's value-validation chatter on input
        got = read_dicom_file(path, pixels="read")
    if got.status == "not_dicom":
        raise InvalidDicomError(got.reason or "not a DICOM file")
    if got.status == "dicomdir":
        raise _DicomDirError(path)
    if got.ds is None:
        raise FormatError(got.reason or "unreadable")
    ds = got.ds
    if "SOPClassUID" in ds and "MediaStorageSOPClassUID" not in getattr(ds, "file_meta", {}):
        # DICOM without preamble/meta (older files): give it the file meta a written file needs
        ds.ensure_file_meta()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        if "TransferSyntaxUID" not in ds.file_meta:
            from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

            implicit = ds.original_encoding[0]
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    return ds


class _DicomDirError(Exception):
    """The file is a DICOMDIR (a media index): never de-identified, its references would be stale."""


def _process_file(path: str, out: Path, deid: Deidentifier, regions: tuple[PixelRegion, ...] = ()) -> dict[str, Any]:
    """De-identify one file into ``out`` (atomically; an existing target is left as it is)."""
    from pydicom.errors import InvalidDicomError

    rec: dict[str, Any] = {
        "path": path,
        "status": "skipped",
        "reason": "",
        "target": "",
        "burned_in": False,
        "cleaned": False,
        "patients": {},
        "uids": {},
    }
    try:
        ds = _read_dataset(path)
    except InvalidDicomError:
        rec["reason"] = "not a DICOM file"
        return rec
    except _DicomDirError:
        rec["reason"] = "DICOMDIR (references would be stale; rebuild it from the output)"
        return rec
    except Exception as exc:
        rec["reason"] = f"unreadable: {type(exc).__name__}: {exc}"
        return rec
    if str(getattr(ds.file_meta, "MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10":
        rec["reason"] = "DICOMDIR (references would be stale; rebuild it from the output)"
        return rec
    if "SOPInstanceUID" not in ds:
        rec["reason"] = "no SOPInstanceUID"
        return rec
    rec["burned_in"] = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
    target = _target(out, ds, deid)
    rec["target"] = str(target)
    deid.patients.clear()
    deid.uids.clear()
    deid.deidentify(ds)  # records the patient and study/series UIDs for the map
    rec["patients"], rec["uids"] = dict(deid.patients), dict(deid.uids)
    if target.exists():
        rec["status"] = "resumed"
        rec["cleaned"] = any(r.applies(ds) for r in regions)
        return rec
    try:
        cleaned = blank_regions(ds, regions, path)
    except InputError as exc:
        rec["reason"] = f"pixel cleaning failed: {exc}"
        rec["target"] = ""
        return rec
    if cleaned:
        from pydicom.dataset import Dataset

        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_CODE[0], "DCM", CLEAN_PIXEL_CODE[1]
        ds.DeidentificationMethodCodeSequence.append(item)
        ds.DeidentificationMethod = f"{ds.DeidentificationMethod}+{CLEAN_PIXEL_CODE[0]}"
        rec["cleaned"] = True
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with atomic_path(target, suffix=".dcm") as tmp:
        tmp.write_bytes(buf.getvalue())
    rec["status"] = "written"
    return rec


def _process_batch(paths: list[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`_process_file` over a batch (one Dask partition); ``cfg`` holds the key and options."""
    deid = Deidentifier(cfg["key"], options=cfg["options"], private_creators=cfg["private_creators"])
    out = Path(cfg["out"])
    regions = parse_regions(cfg.get("clean_pixels", ()))
    return [_process_file(p, out, deid, regions) for p in paths]


def _write_map(path: Path, deid: Deidentifier) -> None:
    """Merge this run's pseudonyms into the map CSV (mode 0600)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    cols = ["kind", "original", "pseudonym", "patient_name", "shift_days"]
    if path.is_file():
        for r in csv.DictReader(path.read_text(encoding="utf-8").splitlines()):
            rows[(r["kind"], r["original"])] = r
    for p in deid.patients.values():
        rows[("patient", p["patient_id"])] = {
            "kind": "patient",
            "original": p["patient_id"],
            "pseudonym": p["pseudonym"],
            "patient_name": p["patient_name"],
            "shift_days": str(p["shift_days"]),
        }
    for orig, (new, kind) in deid.uids.items():
        rows[("uid", orig)] = {
            "kind": "uid",
            "original": orig,
            "pseudonym": new,
            "patient_name": kind,
            "shift_days": "",
        }
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, lineterminator="\n")
    w.writeheader()
    for k in sorted(rows):
        w.writerow({c: rows[k].get(c, "") for c in cols})
    _write_private(path, buf.getvalue())
