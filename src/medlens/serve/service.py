"""One ``medlens serve`` process: the DICOM node and the REST API together, stopped gracefully.

Wiring::

    PACS --C-STORE--> DicomNode --> StudyStore --(quiet period)--> auto_jobs --> JobManager
                                        ^                                             |
    browser/client --HTTP--> REST API --+  <---- results (SEG, SR) --C-STORE--> send_results_to

``Service.start()`` runs both servers in background threads (tests, embedding); ``Service.run()``
is the command line's foreground loop, stopping on SIGINT/SIGTERM: the REST API stops accepting,
the DICOM node closes, running jobs are asked to stop, the catalog is flushed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError, require

__all__ = ["Service"]

log = logging.getLogger("medlens.serve")


class Service:
    """The DICOM node, the REST API, the job manager and the study store of one configuration.

    Parameters
    ----------
    settings
        :class:`~medlens.serve.settings.ServiceSettings`.
    job_workers
        Jobs run at once (each single-threaded).

    Attributes
    ----------
    store, jobs, node, app
        The :class:`~medlens.serve.store.StudyStore`, :class:`~medlens.serve.jobs.JobManager`,
        :class:`~medlens.serve.dicom.node.DicomNode` and the FastAPI application.
    auto_submitted
        ``(study_uid, kind, job_id)`` of every job submitted because a study completed.
    sent
        :class:`~medlens.serve.dicom.scu.SendReport` of every result delivery, in order.
    """

    def __init__(self, settings: Any, *, job_workers: int = 1) -> None:
        require("uvicorn", extra="serve", purpose="the REST API server")
        from medlens.core.audit import AuditLog
        from medlens.serve.api import create_app
        from medlens.serve.dicom.node import DicomNode
        from medlens.serve.jobs import JOB_KINDS, JobManager
        from medlens.serve.store import StudyStore

        unknown = [k for k in settings.auto_jobs if k not in JOB_KINDS]
        if unknown:
            raise InputError(
                f"settings: auto_jobs names unknown job kind(s) {', '.join(map(repr, unknown))}; "
                f"known kinds: {', '.join(sorted(JOB_KINDS))}"
            )
        self.settings = settings
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(settings.audit_log, actor="medlens-serve")
        self.store = StudyStore(settings.data_dir, quiet_period_s=settings.quiet_period_s, audit_log=self.audit)
        self.jobs: Any = JobManager(
            self.store, settings, max_workers=job_workers, audit=self.audit, on_done=self._deliver_results
        )
        self.node = DicomNode(
            self.store, ae_title=settings.ae_title, host=settings.host, port=settings.dicom_port, audit=self.audit
        )
        self.app = create_app(settings, self.store, self.jobs)
        self.auto_submitted: list[tuple[str, str, str]] = []
        self.sent: list[Any] = []
        self._delivery_lock = threading.Lock()
        self.store.on_study_complete(self._study_complete)
        self._http: Any = None
        self._http_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._started = False

    # ------------------------------------------------------------------------------- hooks

    def _study_complete(self, study_uid: str) -> None:
        for kind in self.settings.auto_jobs:
            try:
                job_id = self.jobs.submit(kind, study_uid, {}, actor="auto")
            except Exception as exc:  # one kind failing to submit must not stop the others
                log.error("auto job %s for study %s not submitted: %s", kind, study_uid, exc)
                self.audit.append(
                    action="serve.auto_job.refused",
                    details={"study_uid": study_uid, "kind": kind, "error": f"{type(exc).__name__}: {exc}"},
                )
                continue
            self.auto_submitted.append((study_uid, kind, job_id))
            log.info("study %s complete: %s job %s submitted", study_uid, kind, job_id)

    def _deliver_results(self, record: Any) -> None:
        """JobManager hook: C-STORE a finished job's DICOM results to ``send_results_to``."""
        from medlens.serve.dicom.scu import send_to_peer

        peer = self.settings.result_peer
        if peer is None:
            return
        files = [p for p in self.jobs.results(record.id) if p.suffix.lower() == ".dcm"]
        if not files:
            return
        with self._delivery_lock:  # one association at a time to the PACS
            try:
                report = send_to_peer(files, peer, calling_ae=self.settings.ae_title, audit=self.audit)
            except Exception as exc:
                self.audit.append(
                    action="dicom.send.failed",
                    details={"job": record.id, "peer": self.settings.send_results_to, "error": str(exc)},
                )
                raise
            self.sent.append(report)
        if not report.ok:
            raise InputError(
                f"results of job {record.id} not all accepted by {report.peer}: "
                + "; ".join(f"{p.name}: {why}" for p, why in report.failed)
            )

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Start the DICOM node and the REST API in background threads; return when both listen."""
        import uvicorn

        if self._started:
            return
        self.node.start()
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.http_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._http = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._http.run, name="medlens-http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._http.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                self.node.stop()
                raise InputError(
                    f"REST API: could not listen on {self.settings.host}:{self.settings.http_port} within "
                    f"{timeout_s:.0f} s (port in use?); choose another http_port"
                )
            time.sleep(0.02)
        self._started = True
        self.audit.append(
            action="serve.start",
            details={
                "host": self.settings.host,
                "http_port": self.settings.http_port,
                "dicom_port": self.settings.dicom_port,
                "ae_title": self.settings.ae_title,
                "auto_jobs": list(self.settings.auto_jobs),
                "send_results_to": self.settings.send_results_to,
            },
        )
        log.info(
            "medlens serve: REST http://%s:%d, DICOM %s@%s:%d",
            self.settings.host,
            self.settings.http_port,
            self.settings.ae_title,
            self.settings.host,
            self.settings.dicom_port,
        )

    def stop(self, *, timeout_s: float = 30.0) -> None:
        """Stop everything, in the order that loses nothing; idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._http is not None:
            self._http.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(timeout=timeout_s)
        self.node.stop()
        self.jobs.shutdown(wait=True)
        self.store.close()
        if self._started:
            self.audit.append(action="serve.stop", details={"dicom_port": self.settings.dicom_port})
        log.info("medlens serve stopped")

    def run(self) -> None:
        """Start and serve until SIGINT or SIGTERM, then stop gracefully (the command line's loop)."""
        stop = threading.Event()

        def _handler(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        previous = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while not stop.wait(0.5):
                if self._http_thread is not None and not self._http_thread.is_alive():
                    log.error("the REST API server ended unexpectedly; stopping")
                    break
        finally:
            self.stop()
            for s, h in previous.items():
                signal.signal(s, h)

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
