"""The SCU side of the node: C-ECHO and C-STORE to a configured peer (results back to the PACS)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError, ProcessingError

__all__ = ["SendReport", "echo_peer", "send_to_peer"]

log = logging.getLogger("medlens.serve.dicom")

#: A-ASSOCIATE-RQ carries at most 128 presentation contexts (PS3.8 9.3.2: odd IDs 1..255).
MAX_CONTEXTS = 128


@dataclass
class SendReport:
    """Outcome of :func:`send_to_peer`.

    Attributes
    ----------
    peer
        ``AE@host:port``.
    sent
        Paths the peer accepted (status 0x0000 or a warning 0xB...).
    failed
        ``(path, reason)`` for the others: refusal status with the peer's comment, or no
        presentation context accepted for its SOP class / transfer syntax.
    """

    peer: str
    sent: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _peer_fields(peer: Any) -> tuple[str, str, int]:
    try:
        return str(peer.ae_title), str(peer.host), int(peer.port)
    except AttributeError as exc:
        raise InputError(f"peer must have ae_title, host and port (a settings Peer), got {peer!r}") from exc


def echo_peer(peer: Any, *, calling_ae: str = "MEDLENS", timeout_s: float = 10.0) -> bool:
    """C-ECHO the peer; ``True`` when it answered with success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae_title, host, port = _peer_fields(peer)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=ae_title)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


def send_to_peer(
    paths: Sequence[str | os.PathLike[str]],
    peer: Any,
    *,
    calling_ae: str = "MEDLENS",
    timeout_s: float = 30.0,
    audit: Any = None,
) -> SendReport:
    """C-STORE DICOM files to a peer over one association (per 128 presentation contexts).

    Parameters
    ----------
    paths
        DICOM Part 10 files; each is sent as stored (no re-encoding), under a presentation
        context of its own SOP class and transfer syntax.
    peer
        A :class:`~medlens.serve.settings.Peer` (``ae_title``, ``host``, ``port``).
    calling_ae
        Our AE title (the peer may only accept known callers: configure it there).
    timeout_s
        ACSE/DIMSE/network timeouts, seconds.
    audit
        Optional :class:`~medlens.core.audit.AuditLog`: one ``dicom.send`` entry per call.

    Returns
    -------
    SendReport
        What was sent and what failed (with the peer's status and comment).

    Raises
    ------
    InputError
        A path that is not a readable DICOM file (checked before connecting: nothing is sent).
    ProcessingError
        The association could not be established (peer down, AE title refused, ...).
    """
    import pydicom
    from pynetdicom import AE

    ae_title, host, port = _peer_fields(peer)
    files = [Path(p) for p in paths]
    pairs: dict[tuple[str, str], list[Path]] = {}
    for f in files:
        try:
            meta = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
            key = (str(meta.SOPClassUID), str(meta.file_meta.TransferSyntaxUID))
        except Exception as exc:
            raise InputError(f"{f}: cannot be sent, it is not a readable DICOM file ({exc})") from exc
        pairs.setdefault(key, []).append(f)
    report = SendReport(peer=f"{ae_title}@{host}:{port}")
    keys = list(pairs)
    for start in range(0, len(keys), MAX_CONTEXTS):
        chunk = keys[start : start + MAX_CONTEXTS]
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        for sop_class, ts in chunk:
            ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate(host, port, ae_title=ae_title)
        if not assoc.is_established:
            raise ProcessingError(
                f"C-STORE to {report.peer}: the association was not established (peer down, or it refused our "
                f"AE title {calling_ae!r}); {len(report.sent)} of {len(files)} file(s) sent before. Check that the "
                "peer runs and knows this node"
            )
        try:
            accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
            for key in chunk:
                for f in pairs[key]:
                    if key not in accepted:
                        report.failed.append((f, f"the peer accepted no context for SOP class {key[0]} in {key[1]}"))
                        continue
                    status = assoc.send_c_store(f)
                    code = int(status.Status) if status and "Status" in status else None
                    if code is not None and (code == 0 or code & 0xF000 == 0xB000):
                        report.sent.append(f)
                    else:
                        comment = status.get("ErrorComment", "") if status else ""
                        why = "no response (timeout or abort)" if code is None else f"status 0x{code:04X} {comment}"
                        report.failed.append((f, why.strip()))
        finally:
            if assoc.is_established:
                assoc.release()
    log.info("C-STORE to %s: %d sent, %d failed", report.peer, len(report.sent), len(report.failed))
    if audit is not None:
        audit.append(
            action="dicom.send",
            outputs=[str(p) for p in report.sent],
            details={
                "peer": report.peer,
                "calling_ae": calling_ae,
                "n_sent": len(report.sent),
                "failed": [{"path": str(p), "reason": r} for p, r in report.failed],
            },
        )
    return report
