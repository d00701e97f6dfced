"""``medlens serve init`` / ``medlens serve CONFIG.yaml`` as a real process: serves, then stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from _orthanc import free_port
from conftest import REPO, need_tool

pytest.importorskip("pynetdicom")
pytest.importorskip("uvicorn")


_CLI = [sys.executable, "-c", "import sys; from medlens.cli import main; sys.exit(main())"]


def _medlens(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([*_CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_serve_init_writes_a_loadable_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    from medlens.serve.settings import load_settings

    cfg = tmp_path / "serve.yaml"
    r = _medlens("serve", "init", str(cfg), "--data-dir", "store", "--dicom-port", "11111", "--http-port", "11112")
    assert r.returncode == 0, r.stderr
    s = load_settings(cfg)
    assert (s.data_dir, s.dicom_port, s.http_port) == (tmp_path / "store", 11111, 11112)
    r = _medlens("serve", "init", str(cfg))
    assert r.returncode == 2 and "exists already" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: d\nhttp_port: 1\ndicom_port: 2\nquiet_period: 3\n", encoding="utf-8")
    r = _medlens("serve", str(bad))
    assert r.returncode == 2 and "unknown key(s) 'quiet_period'" in r.stderr


@pytest.mark.slow
def test_serve_process_answers_dicom_and_http_then_stops_gracefully(tmp_path: Path) -> None:
    dicom_port = free_port(11100, 11149)
    http_port = free_port(11100, 11149, skip=(dicom_port,))
    cfg = tmp_path / "serve.yaml"
    r = _medlens(
        "serve", "init", str(cfg), "--data-dir", "data", "--dicom-port", str(dicom_port), "--http-port", str(http_port)
    )
    assert r.returncode == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [*_CLI, "serve", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        end = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2) as resp:
                    assert json.loads(resp.read())["status"] == "ok"
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise AssertionError(f"medlens serve did not come up: {proc.communicate()[1][-2000:]}") from None
                time.sleep(0.2)
        echo = subprocess.run(
            [need_tool("echoscu"), "-aec", "MEDLENS", "127.0.0.1", str(dicom_port)], capture_output=True, timeout=30
        )
        assert echo.returncode == 0, echo.stderr
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    from medlens.core.audit import AuditLog

    log = AuditLog(tmp_path / "data" / "audit.jsonl")
    actions = [e["action"] for e in log.entries()]
    assert actions[0] == "dicom.node.start" and "serve.start" in actions
    assert actions[-2:] == ["dicom.node.stop", "serve.stop"]
    assert "dicom.association.released" in actions and log.verify().ok
