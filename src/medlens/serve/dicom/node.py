"""The DICOM node of ``medlens serve`` (pynetdicom): C-ECHO, C-STORE and C-FIND SCP, C-STORE SCU.

Conformance in short:

* **Verification SCP** (C-ECHO).
* **Storage SCP**: every storage SOP class pynetdicom knows is accepted at association time, in
  any transfer syntax, so that a refusal can say *why*: instances of a class outside
  :data:`medlens.serve.store.SUPPORTED_SOP_CLASSES` are answered ``0x0122`` (SOP class not
  supported), data sets that do not parse or lack their UIDs ``0xC000`` (cannot understand), a
  SOP Instance UID stored with other bytes ``0xA900``; the ``ErrorComment`` carries the reason.
  Nothing of a refused instance is stored. Instances are stored as received (no re-encoding)
  through :class:`~medlens.serve.store.StudyStore` (atomic, idempotent).
* **Query SCP** (C-FIND), Patient Root and Study Root, from the catalog (:mod:`.find`).
* The called AE title must be ours.

Every association (opened, released, aborted, rejected) and every instance (stored, refused) is
appended to the audit log. When an association is aborted mid-transfer, the instances it
delivered in full stay stored (their C-STORE was acknowledged), but their studies are marked
interrupted and do not count as complete until a new instance of them arrives.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from medlens.core.errors import FormatError, InputError, require
from medlens.serve.dicom.find import PATIENT_ROOT_FIND, STUDY_ROOT_FIND, find
from medlens.serve.dicom.scu import SendReport, echo_peer, send_to_peer
from medlens.serve.store import DuplicateInstanceError, UnsupportedSOPClassError

__all__ = ["DicomNode", "SendReport", "echo_peer", "send_to_peer"]

log = logging.getLogger("medlens.serve.dicom")

# C-STORE failure statuses (PS3.4 B.2.3, PS3.7 C.4.2).
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATASET_MISMATCH = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700
# C-FIND
STATUS_PENDING = 0xFF00
STATUS_FIND_UNABLE = 0xC000  # "unable to process"
STATUS_FIND_IDENTIFIER = 0xA900  # identifier does not match SOP class


@dataclass
class _AssocStats:
    calling_ae: str
    address: str
    stored: int = 0
    refused: int = 0
    studies: set[str] = field(default_factory=set)


def _status(code: int, comment: str) -> Any:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    # ErrorComment is LO: at most 64 characters (PS3.7 C.4.2.1.2); the full text is in the audit log.
    ds.ErrorComment = comment[:64]
    return ds


class DicomNode:
    """The SCP, bound to a :class:`~medlens.serve.store.StudyStore`.

    Parameters
    ----------
    store
        Where received instances go; C-FIND reads its catalog.
    ae_title
        Our AE title; associations calling another title are rejected.
    host, port
        Address to listen on (``127.0.0.1`` keeps it to this machine).
    audit
        :class:`~medlens.core.audit.AuditLog` for associations (instances are audited by the store).
    max_associations
        Concurrent associations accepted.

    Examples
    --------
    >>> node = DicomNode(store, ae_title="MEDLENS", host="127.0.0.1", port=11112)  # doctest: +SKIP
    >>> node.start(); ...; node.stop()                                            # doctest: +SKIP
    """

    def __init__(
        self,
        store: Any,
        *,
        ae_title: str = "MEDLENS",
        host: str = "127.0.0.1",
        port: int = 11112,
        audit: Any = None,
        max_associations: int = 16,
        timeout_s: float = 60.0,
    ) -> None:
        require("pynetdicom", extra="serve", purpose="the DICOM node")
        self.store = store
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.audit = audit
        self.max_associations = max_associations
        self.timeout_s = timeout_s
        self._server: Any = None
        self._stats: dict[int, _AssocStats] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------- lifecycle

    def _make_ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import (  # type: ignore[attr-defined]
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            Verification,
        )

        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.maximum_associations = self.max_associations
        ae.acse_timeout = 30
        ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        """Start listening (in background threads); returns once the port is bound."""
        from pynetdicom import evt

        if self._server is not None:
            return
        handlers = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        try:
            self._server = self._make_ae().start_server((self.host, self.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            raise InputError(
                f"DICOM node: cannot listen on {self.host}:{self.port} ({exc}); the port is in use or not allowed — "
                "choose another dicom_port"
            ) from exc
        log.info("DICOM node %s listening on %s:%d", self.ae_title, self.host, self.port)
        if self.audit is not None:
            self.audit.append(
                action="dicom.node.start", details={"ae_title": self.ae_title, "host": self.host, "port": self.port}
            )

    def stop(self) -> None:
        """Stop listening and close open associations (their finished instances stay stored)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server = None
        if self.audit is not None:
            self.audit.append(action="dicom.node.stop", details={"ae_title": self.ae_title, "port": self.port})

    def __enter__(self) -> DicomNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active_associations(self) -> int:
        return 0 if self._server is None else len(self._server.active_associations)

    # ---------------------------------------------------------------------------- associations

    @staticmethod
    def _who(assoc: Any) -> tuple[str, str]:
        req = assoc.requestor
        return str(req.ae_title).strip(), f"{req.address}:{req.port}"

    def _stats_of(self, assoc: Any) -> _AssocStats:
        with self._lock:
            st = self._stats.get(id(assoc))
            if st is None:
                ae, addr = self._who(assoc)
                st = self._stats[id(assoc)] = _AssocStats(ae, addr)
            return st

    def _on_established(self, event: Any) -> None:
        st = self._stats_of(event.assoc)
        rejected = sorted({str(c.abstract_syntax) for c in event.assoc.rejected_contexts})
        log.info("association from %s (%s) established", st.calling_ae, st.address)
        if self.audit is not None:
            self.audit.append(
                action="dicom.association.open",
                details={
                    "calling_ae": st.calling_ae,
                    "address": st.address,
                    "called_ae": self.ae_title,
                    "n_accepted_contexts": len(event.assoc.accepted_contexts),
                    "rejected_abstract_syntaxes": rejected,
                },
            )

    def _close(self, event: Any, how: str) -> _AssocStats:
        with self._lock:
            st = self._stats.pop(id(event.assoc), None)
        if st is None:
            ae, addr = self._who(event.assoc)
            st = _AssocStats(ae, addr)
        if self.audit is not None:
            self.audit.append(
                action=f"dicom.association.{how}",
                details={
                    "calling_ae": st.calling_ae,
                    "address": st.address,
                    "n_stored": st.stored,
                    "n_refused": st.refused,
                    "studies": sorted(st.studies),
                },
            )
        return st

    def _on_released(self, event: Any) -> None:
        st = self._close(event, "released")
        log.info("association from %s released: %d stored, %d refused", st.calling_ae, st.stored, st.refused)

    def _on_aborted(self, event: Any) -> None:
        st = self._close(event, "aborted")
        if st.studies:
            self.store.mark_interrupted(st.studies)
        log.warning(
            "association from %s (%s) aborted after %d stored instance(s); studies %s wait for a resend",
            st.calling_ae,
            st.address,
            st.stored,
            ", ".join(sorted(st.studies)) or "(none)",
        )

    def _on_rejected(self, event: Any) -> None:
        ae, addr = self._who(event.assoc)
        log.warning("association from %s (%s) rejected", ae, addr)
        if self.audit is not None:
            self.audit.append(
                action="dicom.association.rejected",
                details={"calling_ae": ae, "address": addr, "called_ae": self.ae_title},
            )

    # -------------------------------------------------------------------------------- services

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_store(self, event: Any) -> Any:
        st = self._stats_of(event.assoc)
        source = f"C-STORE from {st.calling_ae}@{st.address}"
        try:
            data = event.encoded_dataset(include_meta=True)
            path = self.store.add_bytes(data, source=source)
        except UnsupportedSOPClassError:
            st.refused += 1
            return _status(
                STATUS_SOP_CLASS_NOT_SUPPORTED, f"SOP class not supported: {event.request.AffectedSOPClassUID}"
            )
        except DuplicateInstanceError:
            st.refused += 1
            return _status(STATUS_DATASET_MISMATCH, "SOP Instance UID stored already with different content")
        except FormatError as exc:
            st.refused += 1
            return _status(STATUS_CANNOT_UNDERSTAND, f"not a valid DICOM data set: {exc}".replace(source + ": ", ""))
        except InputError as exc:
            st.refused += 1
            return _status(STATUS_CANNOT_UNDERSTAND, str(exc).replace(source + ": ", ""))
        except OSError as exc:  # disk full, permissions: the sender should retry later
            st.refused += 1
            log.error("%s: cannot write the instance: %s", source, exc)
            return _status(STATUS_OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
        st.stored += 1
        st.studies.add(path.parent.parent.name)
        return 0x0000

    def _on_find(self, event: Any) -> Any:
        model = str(event.request.AffectedSOPClassUID)
        ae, addr = self._who(event.assoc)
        try:
            identifier = event.identifier
            matches = list(find(self.store, identifier, model=model))
        except InputError as exc:
            log.warning("C-FIND from %s refused: %s", ae, exc)
            if self.audit is not None:
                self.audit.append(
                    action="dicom.find.refused", details={"calling_ae": ae, "address": addr, "error": str(exc)}
                )
            yield _status(STATUS_FIND_IDENTIFIER, str(exc).removeprefix("C-FIND: ")), None
            return
        except Exception as exc:  # a catalog problem must not kill the association thread
            log.exception("C-FIND from %s failed", ae)
            yield _status(STATUS_FIND_UNABLE, f"{type(exc).__name__}: {exc}"), None
            return
        if self.audit is not None:
            self.audit.append(
                action="dicom.find",
                details={
                    "calling_ae": ae,
                    "address": addr,
                    "model": "patient"
                    if model == PATIENT_ROOT_FIND
                    else "study"
                    if model == STUDY_ROOT_FIND
                    else model,
                    "level": str(identifier.get("QueryRetrieveLevel", "")),
                    "n_matches": len(matches),
                },
            )
        for ds in matches:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield STATUS_PENDING, ds
