"""Settings of ``medlens serve``: one YAML file, checked key by key.

Example (``medlens serve init`` writes a commented one)::

    data_dir: /srv/medlens
    host: 127.0.0.1
    http_port: 11101
    dicom_port: 11100
    ae_title: MEDLENS
    peers:
      pacs: {ae_title: ORTHANC, host: 127.0.0.1, port: 11300}
    send_results_to: pacs
    quiet_period_s: 10
    max_upload_mb: 2048
    api_keys_file: /srv/medlens/api_keys.yaml
    audit_log: /srv/medlens/audit.jsonl
    auto_jobs: [segment]

Unknown keys and values of the wrong type are refused with the key named, so a typo never
silently falls back to a default. Relative paths are resolved against the folder of the YAML file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.core.errors import InputError

__all__ = ["Peer", "ServiceSettings", "load_settings", "sample_config"]

# DICOM PS3.5 6.2: AE titles are at most 16 characters of the default repertoire, no backslash
# and no control characters; leading/trailing spaces are not significant.
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def _check_ae_title(value: str, *, key: str) -> str:
    stripped = value.strip()
    if not stripped or not _AE_RE.match(stripped):
        raise InputError(
            f"settings: {key} must be a DICOM AE title (1-16 printable ASCII characters, no backslash), got {value!r}"
        )
    return stripped


def _check_port(value: int, *, key: str) -> int:
    if not 1 <= value <= 65535:
        raise InputError(f"settings: {key} must be a TCP port in 1..65535, got {value}")
    return value


@dataclass(frozen=True)
class Peer:
    """A remote DICOM application entity (PACS, modality, workstation).

    Attributes
    ----------
    ae_title
        Its AE title (1-16 characters).
    host
        Host name or IP address.
    port
        Its DICOM TCP port.
    """

    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", _check_ae_title(self.ae_title, key="peer ae_title"))
        _check_port(self.port, key="peer port")
        if not self.host:
            raise InputError("settings: peer host must not be empty")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``medlens serve`` needs; load it from YAML with :func:`load_settings`.

    Attributes
    ----------
    data_dir
        Where received studies (``dicom/<study>/<series>/<sop>.dcm``), the catalog
        (``catalog.duckdb``) and job outputs live. Created if missing.
    host
        Address both servers bind to (default ``127.0.0.1``: loopback only).
    http_port
        TCP port of the REST API and viewer.
    dicom_port
        TCP port of the DICOM node (C-ECHO, C-STORE, C-FIND).
    ae_title
        The node's own AE title (default ``MEDLENS``).
    peers
        Known remote AEs by name: ``{name: Peer}``.
    send_results_to
        Name of the peer (a key of ``peers``) that receives finished jobs' DICOM results (SEG, SR)
        by C-STORE; ``None``: results are kept only locally.
    quiet_period_s
        A study counts as complete when no instance of it arrived for this many seconds.
    max_upload_mb
        Largest accepted REST upload (STOW-RS body), in MiB.
    api_keys_file
        YAML/JSON file of API keys for the REST API (``None``: the REST layer decides).
    audit_log
        Hash-chained audit log (:class:`medlens.core.audit.AuditLog`); default
        ``data_dir/audit.jsonl``.
    auto_jobs
        Job kinds submitted automatically for each completed study (e.g. ``["segment"]``).
    """

    data_dir: Path
    http_port: int
    dicom_port: int
    host: str = "127.0.0.1"
    ae_title: str = "MEDLENS"
    peers: dict[str, Peer] = field(default_factory=dict)
    send_results_to: str | None = None
    quiet_period_s: float = 10.0
    max_upload_mb: float = 2048.0
    api_keys_file: Path | None = None
    audit_log: Path | None = None
    auto_jobs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "ae_title", _check_ae_title(self.ae_title, key="ae_title"))
        _check_port(self.http_port, key="http_port")
        _check_port(self.dicom_port, key="dicom_port")
        if self.http_port == self.dicom_port:
            raise InputError(f"settings: http_port and dicom_port must differ, both are {self.http_port}")
        if not self.host:
            raise InputError("settings: host must not be empty (use 127.0.0.1 for loopback only)")
        if self.send_results_to is not None and self.send_results_to not in self.peers:
            known = ", ".join(sorted(self.peers)) or "none defined"
            raise InputError(
                f"settings: send_results_to names the peer {self.send_results_to!r}, which is not under peers "
                f"({known}); add it to peers or set send_results_to: null"
            )
        if not self.quiet_period_s > 0:
            raise InputError(f"settings: quiet_period_s must be > 0 seconds, got {self.quiet_period_s}")
        if not self.max_upload_mb > 0:
            raise InputError(f"settings: max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.api_keys_file is not None:
            object.__setattr__(self, "api_keys_file", Path(self.api_keys_file))
        object.__setattr__(
            self, "audit_log", Path(self.audit_log) if self.audit_log is not None else self.data_dir / "audit.jsonl"
        )
        for kind in self.auto_jobs:
            if not isinstance(kind, str) or not kind:
                raise InputError(f"settings: auto_jobs must be a list of job kinds (strings), got {self.auto_jobs!r}")

    @property
    def result_peer(self) -> Peer | None:
        """The :class:`Peer` named by ``send_results_to`` (``None`` when unset)."""
        return None if self.send_results_to is None else self.peers[self.send_results_to]

    @property
    def dicom_dir(self) -> Path:
        """``data_dir/dicom``: received instances."""
        return self.data_dir / "dicom"

    @property
    def catalog_path(self) -> Path:
        """``data_dir/catalog.duckdb``."""
        return self.data_dir / "catalog.duckdb"


# (expected python types, YAML type name for messages)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "data_dir": ((str,), "a folder path (string)"),
    "host": ((str,), "a host name or address (string)"),
    "http_port": ((int,), "an integer TCP port"),
    "dicom_port": ((int,), "an integer TCP port"),
    "ae_title": ((str,), "an AE title (string)"),
    "peers": ((dict,), "a mapping {name: {ae_title, host, port}}"),
    "send_results_to": ((str, type(None)), "a peer name or null"),
    "quiet_period_s": ((int, float), "a number of seconds"),
    "max_upload_mb": ((int, float), "a number of MiB"),
    "api_keys_file": ((str, type(None)), "a file path or null"),
    "audit_log": ((str, type(None)), "a file path or null"),
    "auto_jobs": ((list,), "a list of job kinds"),
}
_REQUIRED = ("data_dir", "http_port", "dicom_port")
_PEER_TYPES: dict[str, tuple[type, str]] = {
    "ae_title": (str, "an AE title (string)"),
    "host": (str, "a host name or address (string)"),
    "port": (int, "an integer TCP port"),
}


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # YAML booleans are ints in Python; never accept true/false for a number.
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def settings_from_dict(
    raw: dict[str, Any], *, source: str = "settings", base_dir: Path | None = None
) -> ServiceSettings:
    """Build :class:`ServiceSettings` from a mapping (as read from YAML), checking every key.

    Parameters
    ----------
    raw
        The mapping.
    source
        Name used in error messages (the YAML file).
    base_dir
        Relative paths are resolved against it (default: the current folder).
    """
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of settings at the top level, found {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_TYPES))
    if unknown:
        raise InputError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; the known keys are {', '.join(sorted(_TYPES))}"
        )
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise InputError(f"{source}: required key(s) missing: {', '.join(missing)}")
    for key, value in raw.items():
        types, what = _TYPES[key]
        if not _type_ok(value, types):
            raise InputError(f"{source}: {key} must be {what}, found {type(value).__name__} {value!r}")

    def _path(value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() or base_dir is None else (base_dir / p)

    peers: dict[str, Peer] = {}
    for name, spec in raw.get("peers", {}).items():
        if not isinstance(spec, dict):
            raise InputError(f"{source}: peers.{name} must be a mapping {{ae_title, host, port}}, found {spec!r}")
        bad = sorted(set(spec) - set(_PEER_TYPES))
        if bad:
            raise InputError(
                f"{source}: unknown key(s) {', '.join(map(repr, bad))} in peers.{name}; known: ae_title, host, port"
            )
        for k, (t, what) in _PEER_TYPES.items():
            if k not in spec:
                raise InputError(f"{source}: peers.{name}.{k} is missing ({what})")
            if not _type_ok(spec[k], (t,)):
                raise InputError(f"{source}: peers.{name}.{k} must be {what}, found {type(spec[k]).__name__}")
        try:
            peers[str(name)] = Peer(ae_title=spec["ae_title"], host=spec["host"], port=spec["port"])
        except InputError as exc:
            raise InputError(f"{source}: peers.{name}: {exc}") from exc
    auto_jobs = raw.get("auto_jobs", [])
    for i, kind in enumerate(auto_jobs):
        if not isinstance(kind, str) or not kind:
            raise InputError(f"{source}: auto_jobs[{i}] must be a job kind (string), found {kind!r}")
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("peers", "auto_jobs")}
    for k in ("data_dir", "api_keys_file", "audit_log"):
        if k in kwargs:
            kwargs[k] = _path(kwargs[k])
    for k in ("quiet_period_s", "max_upload_mb"):
        if k in kwargs:
            kwargs[k] = float(kwargs[k])
    try:
        return ServiceSettings(peers=peers, auto_jobs=list(auto_jobs), **kwargs)
    except InputError as exc:
        raise InputError(f"{source}: {exc}".replace(": settings: ", ": ")) from exc


def load_settings(path: str | os.PathLike[str]) -> ServiceSettings:
    """Read and check the YAML settings file ``path``.

    Raises
    ------
    InputError
        The file is missing, not YAML, or has an unknown key, a missing required key or a value
        of the wrong type (the message names the key).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"settings file {p} does not exist; write a sample one with `medlens serve init {p}`")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"settings file {p} is not valid YAML: {exc}") from exc
    if raw is None:
        raise InputError(f"settings file {p} is empty; it needs at least data_dir, http_port and dicom_port")
    return settings_from_dict(raw, source=str(p), base_dir=p.resolve().parent)


def settings_to_dict(settings: ServiceSettings) -> dict[str, Any]:
    """The settings as a plain mapping that :func:`settings_from_dict` reads back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        v = getattr(settings, f.name)
        if isinstance(v, Path):
            v = str(v)
        elif f.name == "peers":
            v = {n: dataclasses.asdict(p) for n, p in v.items()}
        elif f.name == "auto_jobs":
            v = list(v)
        out[f.name] = v
    return out


def sample_config(*, data_dir: str = "./medlens-data", http_port: int = 11101, dicom_port: int = 11100) -> str:
    """Text of a commented sample settings file (``medlens serve init`` writes it)."""
    return f"""\
# medlens serve settings (every key is checked: unknown keys and wrong types are refused).
data_dir: {data_dir}          # received studies, catalog.duckdb, job outputs (relative: to this file)
host: 127.0.0.1               # bind address of both servers; keep loopback unless a firewall is in front
http_port: {http_port}               # REST API and viewer
dicom_port: {dicom_port}              # DICOM node: C-ECHO, C-STORE, C-FIND
ae_title: MEDLENS             # this node's AE title
peers:                        # remote AEs by name
  pacs: {{ae_title: ORTHANC, host: 127.0.0.1, port: 11300}}
send_results_to: pacs         # peer receiving finished jobs' SEG/SR by C-STORE (null: keep locally)
quiet_period_s: 10            # a study is complete after this many seconds without a new instance
max_upload_mb: 2048           # largest REST (STOW-RS) upload
api_keys_file: null           # REST API keys file
audit_log: null               # default: data_dir/audit.jsonl
auto_jobs: []                 # job kinds run on every completed study, e.g. [segment]
"""
