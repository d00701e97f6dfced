"""The service's study store: received DICOM instances on disk, catalogued in DuckDB.

Layout under ``root``::

    dicom/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    catalog.duckdb            # medlens.catalog, updated by incremental scans of the changed studies
    .incoming/                # temporary files (same file system), never seen by the catalog

An instance is written to ``.incoming`` (and fsync'ed), then hard-linked to its final name, which
fails if the name exists: a reader or a catalog scan never sees a half file, and two writers of the
same SOP Instance UID cannot both win. A second copy with the same bytes is idempotent; one with
different bytes is refused (:class:`DuplicateInstanceError`) and the stored copy is kept.

Catalog updates are batched: writes mark their study dirty and :meth:`StudyStore.flush` (called by
every query method, by the completion tracker and at least every ``flush_interval_s``) scans the
dirty study folders with :func:`medlens.catalog.scan`, which reads only new or changed files.

The store is thread-safe: the DICOM node's association threads and the REST API (STOW-RS) write
through the same instance.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core.errors import FormatError, InputError

__all__ = [
    "SUPPORTED_SOP_CLASSES",
    "DuplicateInstanceError",
    "NotInStoreError",
    "StudyStore",
    "UnsupportedSOPClassError",
]

log = logging.getLogger("medlens.serve.store")

#: Storage SOP classes MedLens handles, by UID (PS3.4 Annex B.5), with a readable name.
SUPPORTED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
}

# PS3.5 9.1: UIDs are dot-separated digit components, at most 64 characters. They become file
# and folder names, so anything else is refused rather than sanitised.
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


class UnsupportedSOPClassError(InputError):
    """The instance's SOP class is not one MedLens handles (:data:`SUPPORTED_SOP_CLASSES`)."""


class DuplicateInstanceError(InputError):
    """An instance with this SOP Instance UID is stored already, with different content."""


class NotInStoreError(InputError, KeyError):
    """A study, series or instance UID that the store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class StoredInstance:
    """Identity of one stored instance (the in-memory index entry)."""

    sop_instance_uid: str
    sop_class_uid: str  # empty for entries rebuilt from the files of an earlier run
    series_uid: str
    study_uid: str
    path: Path
    dataset_sha256: str  # of the data set after the file meta (the sender's meta differs per sender)


def _check_uid(value: Any, *, name: str, source: str) -> str:
    uid = str(value or "").strip().rstrip("\x00")
    if not uid:
        raise FormatError(f"{source}: {name} is missing; a storable DICOM instance needs it")
    if len(uid) > 64 or not _UID_RE.match(uid):
        raise FormatError(f"{source}: {name} {uid!r} is not a valid DICOM UID (PS3.5 9.1: digits and dots, <= 64)")
    return uid


def parse_instance(data: bytes, *, source: str = "instance") -> tuple[Any, dict[str, str]]:
    """Parse and check a DICOM Part 10 byte string.

    Parameters
    ----------
    data
        The whole file: 128-byte preamble, ``DICM``, file meta information, data set.
    source
        Named in error messages (file path, ``"C-STORE from AE@host"``, ``"STOW-RS part 3"``).

    Returns
    -------
    (Dataset, dict)
        The fully parsed data set and its ``sop_class_uid``, ``sop_instance_uid``,
        ``series_uid``, ``study_uid``.

    Raises
    ------
    FormatError
        Not DICOM Part 10, a data set that does not parse to its end, or missing/invalid UIDs.
    UnsupportedSOPClassError
        A SOP class outside :data:`SUPPORTED_SOP_CLASSES`.
    """
    import pydicom

    if len(data) < 132 or data[128:132] != b"DICM":
        raise FormatError(
            f"{source}: not a DICOM Part 10 file (no 'DICM' marker after the 128-byte preamble; "
            f"{len(data)} bytes); send DICOM instances only"
        )
    try:
        # dcmread walks every element's tag and length to the end of the data set, so garbage
        # after a valid header fails here (raw elements: values are not converted, no VR warnings).
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
        n_elements = sum(1 for _ in ds.elements())
    except Exception as exc:  # pydicom raises many types on garbage (InvalidDicomError, struct, ...)
        raise FormatError(f"{source}: the DICOM data set cannot be parsed ({type(exc).__name__}: {exc})") from exc
    if n_elements == 0:
        raise FormatError(f"{source}: no data element could be read (empty or truncated data set); send the whole file")
    _check_pixels(ds, source=source)
    sop_class = _check_uid(ds.get("SOPClassUID"), name="SOPClassUID", source=source)
    meta_class = str(getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID", "") or "").strip("\x00 ")
    if meta_class and meta_class != sop_class:
        raise FormatError(
            f"{source}: the file meta says SOP class {meta_class} but the data set says {sop_class}; "
            "the instance is inconsistent"
        )
    if sop_class not in SUPPORTED_SOP_CLASSES:
        raise UnsupportedSOPClassError(
            f"{source}: SOP class {sop_class} ({_sop_class_name(sop_class)}) is not one MedLens handles; "
            f"supported: CT, MR, PET (and enhanced), RTSTRUCT, SEG, SR, secondary capture"
        )
    ids = {
        "sop_class_uid": sop_class,
        "sop_instance_uid": _check_uid(ds.get("SOPInstanceUID"), name="SOPInstanceUID", source=source),
        "series_uid": _check_uid(ds.get("SeriesInstanceUID"), name="SeriesInstanceUID", source=source),
        "study_uid": _check_uid(ds.get("StudyInstanceUID"), name="StudyInstanceUID", source=source),
    }
    return ds, ids


_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _check_pixels(ds: Any, *, source: str) -> None:
    """An image (it has Rows) must carry its whole pixel data: a truncated file loses it at the end."""
    if 0x00280010 not in ds:
        return
    present = [t for t in _PIXEL_TAGS if t in ds]
    if not present:
        raise FormatError(
            f"{source}: the data set has Rows but no pixel data; the file is truncated or incomplete — send it again"
        )
    raw = ds.get_item(present[0])
    length = getattr(raw, "length", None)
    value = getattr(raw, "value", None)
    if isinstance(value, bytes | bytearray) and length not in (None, 0xFFFFFFFF) and len(value) < length:
        raise FormatError(f"{source}: pixel data is truncated ({len(value)} of {length} bytes)")
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if present[0] == 0x7FE00010 and ts is not None and not ts.is_compressed and isinstance(value, bytes | bytearray):
        try:
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
            bits = int(ds.BitsAllocated)
        except (AttributeError, TypeError, ValueError) as exc:
            raise FormatError(f"{source}: image attributes needed to check the pixel data are invalid ({exc})") from exc
        expected_bytes = (expected * bits + 7) // 8
        if len(value) < expected_bytes:
            raise FormatError(
                f"{source}: pixel data has {len(value)} bytes, {expected_bytes} expected from Rows x Columns x "
                "SamplesPerPixel x NumberOfFrames x BitsAllocated; the file is truncated"
            )


def dataset_digest(data: bytes) -> str:
    """SHA-256 of a Part 10 file's data set, without preamble and file meta (PS3.10 7.1).

    The file meta names the sending implementation and AE, so the same instance sent by two
    peers differs there; its data set does not.
    """
    import struct

    # (0002,0000) UL FileMetaInformationGroupLength comes first, explicit VR LE: tag, 'UL', 2-byte length, value.
    if len(data) >= 144 and data[132:138] == b"\x02\x00\x00\x00UL":
        (group_len,) = struct.unpack("<I", data[140:144])
        return hashlib.sha256(data[144 + group_len :]).hexdigest()
    return hashlib.sha256(data).hexdigest()


def _sop_class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else "unknown SOP class"


def _dataset_bytes(ds: Any) -> bytes:
    """Part 10 bytes of a pydicom Dataset (file meta completed from the data set where missing)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = ds.copy()
        ds.file_meta = meta
    if "MediaStorageSOPClassUID" not in ds.file_meta and "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in ds.file_meta and "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class StudyStore:
    """Received DICOM instances under ``root``, catalogued in ``root/catalog.duckdb``.

    Parameters
    ----------
    root
        The store's folder (created if missing); the service uses ``settings.data_dir``.
    quiet_period_s
        A study is complete when no instance of it arrived for this many seconds
        (see :meth:`on_study_complete`).
    audit_log
        Optional :class:`medlens.core.audit.AuditLog` (or its path): every stored and every
        refused instance is appended.
    flush_interval_s
        The catalog is brought up to date at least this often while writes arrive.
    fsync
        Flush each instance to stable storage before it is acknowledged (default on: a C-STORE
        success promises the instance is kept).

    Examples
    --------
    >>> store = StudyStore("/srv/medlens", quiet_period_s=5)      # doctest: +SKIP
    >>> store.on_study_complete(lambda uid: print("complete", uid))  # doctest: +SKIP
    >>> store.add_file("ct/slice001.dcm")                          # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        quiet_period_s: float = 10.0,
        audit_log: Any = None,
        flush_interval_s: float = 1.0,
        fsync: bool = True,
    ) -> None:
        from medlens.core.audit import AuditLog

        if not quiet_period_s > 0:
            raise InputError(f"StudyStore: quiet_period_s must be > 0 seconds, got {quiet_period_s}")
        self.root = Path(root)
        self.dicom_dir = self.root / "dicom"
        self.catalog_path = self.root / "catalog.duckdb"
        self._incoming = self.root / ".incoming"
        self.quiet_period_s = float(quiet_period_s)
        self.flush_interval_s = float(flush_interval_s)
        self.fsync = fsync
        self.audit: AuditLog | None = (
            audit_log if isinstance(audit_log, AuditLog) or audit_log is None else AuditLog(audit_log)
        )
        self.dicom_dir.mkdir(parents=True, exist_ok=True)
        self._incoming.mkdir(parents=True, exist_ok=True)
        for leftover in self._incoming.iterdir():  # temp files of a process that died mid-write
            with contextlib.suppress(OSError):
                leftover.unlink()

        self._lock = threading.RLock()  # index, dirty set, arrival times
        self._db_lock = threading.RLock()  # one DuckDB user at a time in this process
        self._index: dict[str, StoredInstance] = {}
        self._dirty: set[str] = set()
        self._last_arrival: dict[str, float] = {}  # study uid -> monotonic time of its last instance
        self._held: dict[str, int] = {}  # study uid -> number of open holds (see hold_study)
        self._interrupted: set[str] = set()
        self._callbacks: list[Callable[[str], Any]] = []
        self._last_flush = time.monotonic()
        self._con: Any = None
        self._stop = threading.Event()
        self._rebuild_index()
        self.flush(all_studies=True)
        self._thread = threading.Thread(target=self._tracker, name="medlens-store-tracker", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------- writing

    def add_dataset(self, ds: Any, *, source: str = "dataset") -> Path:
        """Store a pydicom Dataset (its ``file_meta`` transfer syntax is kept; default explicit VR LE).

        Returns the stored file's path. See :meth:`add_bytes` for the checks and errors.
        """
        try:
            data = _dataset_bytes(ds)
        except Exception as exc:
            self._refused(source, exc)
            raise FormatError(f"{source}: the data set cannot be encoded as DICOM ({exc})") from exc
        return self.add_bytes(data, source=source)

    def add_file(self, path: str | os.PathLike[str], *, source: str | None = None) -> Path:
        """Store a copy of the DICOM file ``path`` (never modified). Returns the stored path."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p} does not exist or is not a file; give a DICOM file")
        return self.add_bytes(p.read_bytes(), source=source or str(p))

    def add_bytes(self, data: bytes, *, source: str = "instance") -> Path:
        """Store one DICOM Part 10 file given as bytes; return its path in the store.

        Raises
        ------
        FormatError
            Not DICOM, unparsable, or missing/invalid Study/Series/SOP Instance UIDs.
        UnsupportedSOPClassError
            SOP class outside :data:`SUPPORTED_SOP_CLASSES`.
        DuplicateInstanceError
            The SOP Instance UID is stored with different bytes (the stored copy is kept).

        Nothing is written when an error is raised; every outcome is in the audit log.
        """
        try:
            _ds, ids = parse_instance(data, source=source)
        except (InputError, FormatError) as exc:
            self._refused(source, exc)
            raise
        sop, series, study = ids["sop_instance_uid"], ids["series_uid"], ids["study_uid"]
        digest = dataset_digest(data)
        target = self.dicom_dir / study / series / f"{sop}.dcm"
        with self._lock:
            known = self._index.get(sop)
        if known is not None:
            return self._duplicate(known, digest, data, source=source)
        tmp = self._incoming / f"{uuid.uuid4().hex}.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                known = self._index.get(sop)
                if known is None:
                    try:
                        os.link(tmp, target)  # atomic and never overwrites
                    except FileExistsError:
                        known = self._index_file(target)
                    else:
                        entry = StoredInstance(sop, ids["sop_class_uid"], series, study, target, digest)
                        self._index[sop] = entry
                        self._dirty.add(study)
                        self._last_arrival[study] = time.monotonic()
                        self._interrupted.discard(study)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        if known is not None:
            return self._duplicate(known, digest, data, source=source)
        if self.audit is not None:
            self.audit.append(
                action="serve.instance.stored",
                inputs={"source": source},
                outputs=[str(target)],
                details={**ids, "dataset_sha256": digest, "bytes": len(data)},
            )
        log.debug("stored %s from %s", target, source)
        return target

    def _duplicate(self, known: StoredInstance, digest: str, data: bytes, *, source: str) -> Path:
        identical = (known.dataset_sha256 or dataset_digest(known.path.read_bytes())) == digest
        if not identical:
            # Same content in another transfer syntax or element encoding is still the same instance.
            import pydicom

            try:
                identical = pydicom.dcmread(io.BytesIO(data)) == pydicom.dcmread(known.path)
            except Exception:
                identical = False
        if identical:
            if self.audit is not None:
                self.audit.append(
                    action="serve.instance.duplicate",
                    inputs={"source": source},
                    details={"sop_instance_uid": known.sop_instance_uid, "identical": True, "path": str(known.path)},
                )
            return known.path
        exc = DuplicateInstanceError(
            f"{source}: SOP Instance UID {known.sop_instance_uid} is stored already ({known.path}) with different "
            "content; the stored copy is kept. A changed object needs a new SOP Instance UID"
        )
        self._refused(source, exc, sop_instance_uid=known.sop_instance_uid)
        raise exc

    def _refused(self, source: str, exc: Exception, **details: Any) -> None:
        log.warning("refused %s", exc)
        if self.audit is not None:
            self.audit.append(
                action="serve.instance.refused",
                inputs={"source": source},
                details={"error": type(exc).__name__, "message": str(exc), **details},
            )

    # ------------------------------------------------------------------------------- the index

    def _index_file(self, path: Path, *, lazy: bool = False) -> StoredInstance:
        """Index entry of a stored file; ``lazy``: from its path only (hash read when a duplicate needs it)."""
        study, series, sop = path.parent.parent.name, path.parent.name, path.stem
        digest = "" if lazy else dataset_digest(path.read_bytes())
        entry = StoredInstance(sop, "", series, study, path, digest)
        with self._lock:
            self._index[sop] = entry
        return entry

    def _rebuild_index(self) -> None:
        """Index what an earlier run stored (from the file names; hashes on demand)."""
        for study_dir in self.dicom_dir.iterdir():
            if not study_dir.is_dir():
                continue
            for series_dir in study_dir.iterdir():
                if not series_dir.is_dir():
                    continue
                for f in series_dir.glob("*.dcm"):
                    self._index_file(f, lazy=True)

    def path(self, sop_instance_uid: str) -> Path:
        """Path of a stored instance; :class:`NotInStoreError` when unknown."""
        with self._lock:
            entry = self._index.get(sop_instance_uid)
        if entry is None:
            raise NotInStoreError(f"SOP Instance UID {sop_instance_uid} is not in the store {self.root}")
        return entry.path

    def study_folder(self, study_uid: str) -> Path:
        """Folder of a study's series (``root/dicom/<study>``); :class:`NotInStoreError` when unknown."""
        folder = self.dicom_dir / study_uid
        if not _UID_RE.match(study_uid) or not folder.is_dir():
            raise NotInStoreError(f"study {study_uid} is not in the store {self.root}")
        return folder

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, sop_instance_uid: object) -> bool:
        with self._lock:
            return sop_instance_uid in self._index

    def sop_instance_uids(self, study_uid: str | None = None) -> set[str]:
        """SOP Instance UIDs held (of one study, or all), from the in-memory index (no catalog query)."""
        with self._lock:
            return {k for k, v in self._index.items() if study_uid is None or v.study_uid == study_uid}

    # ---------------------------------------------------------------------------------- catalog

    def flush(self, *, all_studies: bool = False) -> None:
        """Bring the catalog up to date with the instances written so far (incremental scans)."""
        from medlens.catalog import scan

        with self._db_lock:
            with self._lock:
                dirty, self._dirty = set(self._dirty), set()
                self._last_flush = time.monotonic()
            roots = [self.dicom_dir] if all_studies else [self.dicom_dir / s for s in sorted(dirty)]
            try:
                for r in roots:
                    if r.is_dir():
                        scan(r, self.catalog_path, workers=1)
            except BaseException:
                with self._lock:
                    self._dirty |= dirty
                raise

    @contextlib.contextmanager
    def catalog(self) -> Iterator[Any]:
        """The up-to-date catalog as a read-only :class:`medlens.catalog.Catalog`.

        The store's catalog lock is held inside the ``with`` block (DuckDB allows one writer per
        file), so keep it short.
        """
        from medlens.catalog import Catalog

        with self._db_lock:
            self.flush()
            self._close_connection()  # DuckDB refuses a read-only connection beside a read-write one
            with Catalog(self.catalog_path) as cat:
                yield cat

    def _connection(self) -> Any:
        """The store's query connection, kept open (connecting costs tens of ms per query).

        It has the default (read-write) configuration, as :func:`medlens.catalog.scan` has, so
        DuckDB shares one database instance between them within this process.
        """
        import duckdb

        if self._con is None:
            self._con = duckdb.connect(str(self.catalog_path.resolve()))
        return self._con

    def _close_connection(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL on the up-to-date catalog; rows as dictionaries (SQL NULL becomes ``None``).

        Reads only by convention: the connection is the store's own, so do not write with it.
        """
        with self._db_lock:
            self.flush()
            cur = self._connection().execute(sql, params or [])
            cols = [d[0] for d in cur.description or []]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    def studies(self) -> list[dict[str, Any]]:
        """Stored studies: ``study_uid``, patient, date, description, accession, modalities, counts."""
        return self.query(
            """SELECT study_uid, any_value(patient_id) AS patient_id, any_value(patient_name) AS patient_name,
                      any_value(study_date) AS study_date, any_value(study_description) AS study_description,
                      any_value(accession_number) AS accession_number,
                      list(DISTINCT modality ORDER BY modality) AS modalities,
                      count(DISTINCT series_uid) AS n_series, count(*) AS n_instances
               FROM instances GROUP BY study_uid ORDER BY patient_id, study_uid"""
        )

    def series(self, study_uid: str) -> list[dict[str, Any]]:
        """Series of a study: ``series_uid``, modality, number, description, ``n_instances``."""
        rows = self.query(
            """SELECT series_uid, any_value(study_uid) AS study_uid, any_value(modality) AS modality,
                      any_value(series_number) AS series_number, any_value(series_description) AS series_description,
                      any_value(frame_of_reference_uid) AS frame_of_reference_uid, count(*) AS n_instances
               FROM instances WHERE study_uid = ? GROUP BY series_uid ORDER BY series_number, series_uid""",
            [study_uid],
        )
        if not rows:
            raise NotInStoreError(f"study {study_uid} is not in the store {self.root}")
        return rows

    def instances(self, series_uid: str) -> list[dict[str, Any]]:
        """Instances of a series, by instance number: ``sop_instance_uid``, class, number, ``path``."""
        rows = self.query(
            """SELECT sop_instance_uid, sop_class_uid, instance_number, series_uid, study_uid, path,
                      transfer_syntax_uid, rows, columns, n_frames
               FROM instances WHERE series_uid = ? ORDER BY instance_number, sop_instance_uid""",
            [series_uid],
        )
        if not rows:
            raise NotInStoreError(f"series {series_uid} is not in the store {self.root}")
        return rows

    # ------------------------------------------------------------------------ study completion

    def on_study_complete(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(study_uid)`` once a study got no new instance for ``quiet_period_s``.

        The catalog is flushed first, so the callback sees the whole study. A study that gets
        more instances later completes again. Callbacks run on the store's tracker thread;
        exceptions are logged, never propagated.
        """
        with self._lock:
            self._callbacks.append(callback)

    @contextlib.contextmanager
    def hold_study(self, study_uid: str) -> Iterator[None]:
        """Keep ``study_uid`` from completing inside the ``with`` block (e.g. while a job writes into it)."""
        with self._lock:
            self._held[study_uid] = self._held.get(study_uid, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._held[study_uid] -= 1
                if not self._held[study_uid]:
                    del self._held[study_uid]

    def mark_interrupted(self, study_uids: set[str] | list[str]) -> None:
        """Studies whose sender aborted mid-transfer: they do not complete until a new instance arrives."""
        with self._lock:
            for uid in study_uids:
                if uid in self._last_arrival:
                    self._interrupted.add(uid)

    def pending_studies(self) -> dict[str, float]:
        """Studies waiting for their quiet period: ``{study_uid: seconds since the last instance}``."""
        now = time.monotonic()
        with self._lock:
            return {k: now - v for k, v in self._last_arrival.items()}

    def _tracker(self) -> None:
        tick = min(0.25, self.quiet_period_s / 4)
        while not self._stop.wait(tick):
            try:
                self._tick()
            except Exception:  # the tracker must survive a failing scan or callback
                log.exception("study store tracker")

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                uid
                for uid, t in self._last_arrival.items()
                if now - t >= self.quiet_period_s and uid not in self._held and uid not in self._interrupted
            ]
            flush_due = bool(self._dirty) and now - self._last_flush >= self.flush_interval_s
            callbacks = list(self._callbacks)
        if due or flush_due:
            self.flush()
        for uid in due:
            with self._lock:
                # An instance may have arrived since `due` was computed: then it is not complete yet.
                t = self._last_arrival.get(uid)
                if t is None or time.monotonic() - t < self.quiet_period_s:
                    continue
                del self._last_arrival[uid]
            log.info("study %s complete (quiet for %.1f s)", uid, self.quiet_period_s)
            if self.audit is not None:
                self.audit.append(
                    action="serve.study.complete",
                    details={"study_uid": uid, "n_instances": len(self.sop_instance_uids(uid))},
                )
            for cb in callbacks:
                try:
                    cb(uid)
                except Exception:
                    log.exception("study-complete callback %r failed for %s", cb, uid)

    # ---------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop the tracker thread and flush the catalog (pending studies do not complete)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        with self._db_lock:
            self.flush()
            self._close_connection()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
