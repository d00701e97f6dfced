"""A real Orthanc (Debian package) for tests: started by hand on loopback ports, stopped after.

Use the fixture from a test module::

    # tests/conftest.py loads this module as a plugin: the fixture is just there.
    def test_x(orthanc):
        orthanc.add_modality("medlens", "MEDLENS", 11100)
        orthanc.post("/modalities/medlens/store", {...})

Orthanc 1.10 has no bind-address option: it listens on every interface, so the configuration
closes it instead: HTTP only from loopback clients (``RemoteAccessAllowed: false``), DICOM only
from the modalities listed (``DicomAlwaysAllow*: false``, ``DicomCheckModalityHost: true``), all
of which are on 127.0.0.1. Ports come from 11300-11399 (each xdist worker its own pair).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ORTHANC_BIN = os.environ.get("MEDLENS_ORTHANC", "/usr/sbin/Orthanc")
PORT_BASE = 11300
PORT_MAX = 11399


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(lo: int, hi: int, *, skip: tuple[int, ...] = ()) -> int:
    """A free TCP port on 127.0.0.1 in ``lo..hi``, starting at an offset per xdist worker."""
    span = hi - lo + 1
    start = _worker_offset() % span
    for i in range(span):
        port = lo + (start + i) % span
        if port not in skip and _port_free(port):
            return port
    raise RuntimeError(f"no free port in {lo}-{hi}")


def free_port_pair(offset: int = 0) -> tuple[int, int]:
    """Two free ports in 11300-11399 (``offset`` separates xdist workers)."""
    port = PORT_BASE + offset
    while port + 1 <= PORT_MAX:
        if _port_free(port) and _port_free(port + 1):
            return port, port + 1
        port += 2
    raise RuntimeError("no free port pair in 11300-11399 for Orthanc")


class Orthanc:
    """A running Orthanc: ``dicom_port``, ``http_port``, ``aet``; REST helpers on 127.0.0.1."""

    def __init__(self, workdir: Path, *, dicom_port: int, http_port: int, aet: str = "ORTHANC") -> None:
        self.workdir = workdir
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.aet = aet
        self.url = f"http://127.0.0.1:{http_port}"
        self.modalities: dict[str, list[Any]] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "medlens-test",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowMove": False,
            "DicomAlwaysAllowGet": False,
            "DicomModalities": self.modalities,
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 20,
            "DicomAssociationCloseDelay": 0,
            "SaveJobs": False,
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
            "DicomThreadsCount": 4,
            "StorageCompression": False,
            "OverwriteInstances": False,
        }

    def add_modality(self, name: str, aet: str, port: int) -> None:
        """Register a peer on 127.0.0.1 (restart needed: call before :meth:`start`, or use REST)."""
        self.modalities[name] = [aet, "127.0.0.1", port]
        if self.proc is not None:
            self.put(f"/modalities/{name}", {"AET": aet, "Host": "127.0.0.1", "Port": port})

    def start(self, *, timeout_s: float = 30.0) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        logf = open(self.log_path, "wb")  # kept open for the process' lifetime
        self.proc = subprocess.Popen(
            [ORTHANC_BIN, f"--logdir={self.workdir}", str(cfg)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout_s} s: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        texts = []
        for p in [self.log_path, *self.workdir.glob("Orthanc*.log*")]:
            if p.is_file():
                texts.append(p.read_text(errors="replace")[-n:])
        return "\n".join(texts)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    # -- REST --------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, *, timeout_s: float = 60.0) -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
        ctype = resp.headers.get("Content-Type", "")
        return json.loads(raw) if "json" in ctype and raw else raw

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any, *, timeout_s: float = 120.0) -> Any:
        return self._request("POST", path, body, timeout_s=timeout_s)

    def put(self, path: str, body: Any) -> Any:
        return self._request("PUT", path, body)

    def upload(self, files: list[Path]) -> list[str]:
        """POST /instances each file (Orthanc's own import, no DICOM network); Orthanc instance ids."""
        return [self.post("/instances", f.read_bytes())["ID"] for f in files]

    def instances(self) -> list[dict[str, Any]]:
        """Every stored instance with its main DICOM tags (``MainDicomTags``)."""
        out = []
        for iid in self.get("/instances"):
            info = self.get(f"/instances/{iid}")
            tags = self.get(f"/instances/{iid}/simplified-tags")
            out.append({"id": iid, **info, "tags": tags})
        return out


def _worker_offset() -> int:
    wid = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    try:
        return 20 * int(wid.removeprefix("gw"))
    except ValueError:
        return 0


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A fresh Orthanc (empty storage), not started yet: register modalities, then ``.start()``."""
    if not Path(ORTHANC_BIN).is_file() and shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc; .ci/run installs it)")
    dicom_port, http_port = free_port_pair(_worker_offset())
    o = Orthanc(tmp_path / "orthanc", dicom_port=dicom_port, http_port=http_port)
    o.workdir.mkdir(parents=True)
    try:
        yield o
    finally:
        o.stop()
