"""Starting a federation: Flower's Simulation Engine, or real SuperLink / SuperNode processes.

* :func:`simulate` runs :func:`~medlens.learn.federated.apps.make_server_app` and one
  :func:`~medlens.learn.federated.apps.make_client_app` per site with ``flwr.simulation.run_simulation``
  (Ray backend, 1 CPU per client).
* :func:`serve` starts ``flower-superlink --insecure`` on ``server.host:server.port`` (127.0.0.1 by
  default), writes a minimal Flower App (``pyproject.toml`` naming the apps of this package) into the
  run's output folder and submits it with ``flwr run``; the ServerApp then waits for ``min_sites``
  sites. The SuperLink is stopped when the run ends.
* :func:`site_command` is the ``flower-supernode`` command line of one site (``medlens fl site``).

``FLWR_HOME`` defaults to ``<output>/flwr-home`` so that nothing is written to the user's home folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError, ProcessingError
from medlens.learn.federated.config import FLConfig

__all__ = ["serve", "simulate", "site_command"]


def _bin(name: str) -> str:
    """A Flower console script beside this interpreter (the venv's bin), else on PATH."""
    cand = Path(sys.executable).parent / name
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise InputError(f"{name} not found; install the federated extra: pip install 'medlens[fl]'")
    return found


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    env.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="medlens-ray-"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    src = str(Path(__file__).resolve().parents[3])  # the folder holding the medlens package
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def simulate(
    config: FLConfig,
    *,
    n_sites: int | None = None,
    log: Callable[[str], None] = print,
    wire_log: Callable[[str, Any], None] | None = None,
    ray_tmp: str | None = None,
) -> dict[str, Any]:
    """Run the federation with Flower's Simulation Engine; returns the run's result (also in ``result.json``).

    ``n_sites`` takes the first N of ``config["sites"]`` (all by default).
    """
    import logging

    from flwr.simulation import run_simulation

    from medlens.learn.federated.apps import make_client_app, make_server_app

    sites = list(config["sites"])
    if n_sites is not None:
        if n_sites < 1 or n_sites > len(sites):
            raise InputError(f"--sites must be between 1 and the {len(sites)} sites of {config.source}, got {n_sites}")
        sites = sites[:n_sites]
    if not sites:
        raise InputError(f"{config.source}: `medlens fl simulate` needs a sites list (id, data) in the config")
    work = config.out_dir / "site-work"
    site_map = {
        i: {
            **s,
            "data": str(config.path(s["data"])),
            "work": str(work / s["id"]),
            **({"settings": str(config.path(s["settings"]))} if s.get("settings") else {}),
        }
        for i, s in enumerate(sites)
    }
    for s in site_map.values():
        if not Path(s["data"]).is_dir():
            raise InputError(f"{config.source}: site {s['id']} data folder {s['data']} does not exist")
    os.environ.setdefault("FLWR_HOME", str(config.out_dir / "flwr-home"))
    os.environ["RAY_TMPDIR"] = ray_tmp or os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="medlens-ray-")
    result: dict[str, Any] = {}
    server = make_server_app(config, log=log, wire_log=wire_log, result=result)
    client = make_client_app(site_map)
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": min(len(sites), os.cpu_count() or 1),
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        },
    }
    run_simulation(server_app=server, client_app=client, num_supernodes=len(sites), backend_config=backend)  # type: ignore[arg-type]
    if not result:
        raise ProcessingError("the simulated federation ended without a result; see the log above")
    return result


def _wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen[Any], what: str) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ProcessingError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    raise ProcessingError(f"{what} did not listen on {host}:{port} within {timeout_s:.0f} s")


def write_flower_app(folder: Path, config_path: Path, overrides: dict[str, Any] | None = None) -> Path:
    """A minimal Flower App project whose components are this package's ServerApp and ClientApp."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "medlens_fl_app").mkdir(exist_ok=True)
    atomic_write_text(folder / "medlens_fl_app" / "__init__.py", '"""MedLens federation (generated)."""\n')
    over = json.dumps(overrides or {}).replace("\\", "\\\\").replace('"', '\\"')
    text = f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "medlens-fl-app"
version = "1.0.0"
description = "MedLens federation (generated by medlens fl server)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "medlens"

[tool.flwr.app.components]
serverapp = "medlens.learn.federated.deploy:server_app"
clientapp = "medlens.learn.federated.deploy:client_app"

[tool.flwr.app.config]
config-path = "{config_path.resolve()}"
overrides = "{over}"
"""
    atomic_write_text(folder / "pyproject.toml", text)
    return folder


def serve(
    config: FLConfig,
    *,
    log: Callable[[str], None] = print,
    timeout_s: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start a SuperLink, submit the federation as a Flower run, stream its log, return ``result.json``."""
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    home = Path(os.environ.get("FLWR_HOME") or out / "flwr-home")
    home.mkdir(parents=True, exist_ok=True)
    host, port = str(config["server"]["host"]), int(config["server"]["port"])
    atomic_write_text(
        home / "config.toml",
        f'[superlink]\ndefault = "medlens"\n\n[superlink.medlens]\naddress = "{host}:{port}"\ninsecure = true\n',
    )
    env = _env(home)
    (out / "result.json").unlink(missing_ok=True)
    link_log = open(out / "superlink.log", "ab")
    link = subprocess.Popen(
        [_bin("flower-superlink"), "--insecure", "--host", host, "--port", str(port), "--database", ":flwr-in-memory:"],
        env=env,
        stdout=link_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_port(host, port, 60, link, "flower-superlink")
        log(f"SuperLink listening on {host}:{port}; sites connect with: medlens fl site --superlink {host}:{port} ...")
        app = write_flower_app(out / "flower-app", Path(config.source), overrides)
        run = subprocess.Popen(
            [_bin("flwr"), "run", str(app), "medlens", "--stream"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert run.stdout is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for line in run.stdout:
            log(line.rstrip())
            if (out / "result.json").is_file():
                break
            if deadline is not None and time.monotonic() > deadline:
                break
        run.terminate()
        run.wait(10)
        if not (out / "result.json").is_file():
            raise ProcessingError(f"the federated run ended without a result; see {out / 'superlink.log'}")
        return dict(json.loads((out / "result.json").read_text()))
    finally:
        os.killpg(link.pid, signal.SIGTERM)
        try:
            link.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(link.pid, signal.SIGKILL)
        link_log.close()


def site_command(
    *,
    data_dir: str | os.PathLike[str],
    site_id: str,
    superlink: str,
    port: int,
    work_dir: str | os.PathLike[str] | None = None,
    radiomics_settings: str | None = None,
    architecture: dict[str, Any] | None = None,
) -> list[str]:
    """The ``flower-supernode`` command of one site (its ClientApp API on 127.0.0.1:``port``)."""
    data = Path(data_dir).resolve()
    if not data.is_dir():
        raise InputError(f"--data {data}: not a folder; give this site's DICOM folder")
    node = [f'data-dir="{data}"', f'site-id="{site_id}"']
    if work_dir is not None:
        node.append(f'work-dir="{Path(work_dir).resolve()}"')
    if radiomics_settings:
        node.append(f'radiomics-settings="{Path(radiomics_settings).resolve()}"')
    if architecture:
        node.append("unet-architecture=" + json.dumps(json.dumps(architecture)))
    return [
        _bin("flower-supernode"),
        "--insecure",
        "--superlink",
        superlink,
        "--port",
        str(port),
        "--node-config",
        " ".join(node),
    ]


def run_site(command: list[str], *, flwr_home: Path) -> int:
    """Run a SuperNode in the foreground until it exits (Ctrl-C stops it)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command, env=_env(flwr_home))
    # a stopped site command stops its SuperNode too (no orphaned node keeping its port)
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
