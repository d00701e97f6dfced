"""Append-only, hash-chained audit log (JSON lines).

Each line is one entry::

    {"seq": 3, "time": "2026-11-24T09:31:02.123456+00:00", "actor": "alice@host", "action": "deid",
     "inputs": ..., "outputs": ..., "details": ..., "prev_hash": "<hash of entry 2>", "hash": "<sha256>"}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the entry without ``hash``;
``prev_hash`` of the first entry is 64 zeros. Files named in ``inputs``/``outputs`` are recorded by
content hash (``{"path": ..., "sha256": ...}``), so a later change of a file is detectable too.

Any edit, deletion, insertion, reordering or truncation of the log breaks the chain (or the
``seq`` numbering) and :func:`verify` reports the first bad entry. Concurrent writers (threads or
processes) are serialised with an exclusive ``fcntl.flock`` held while the last hash is read and
the new line appended, so the chain never forks.

Truncation of the *tail* (dropping the last entries) cannot be detected from the file alone; pass
the expected number of entries or the last hash recorded elsewhere (``expect_count`` /
``expect_last_hash``) to :func:`verify` to close that gap.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core.errors import FormatError, InputError

__all__ = ["GENESIS_HASH", "AuditLog", "VerifyResult", "file_sha256", "verify"]

GENESIS_HASH = "0" * 64
_FIELDS = ("seq", "time", "actor", "action", "inputs", "outputs", "details", "prev_hash", "hash")


def file_sha256(path: str | os.PathLike[str], *, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _canonical(entry: Mapping[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """Hash of an entry: SHA-256 of its canonical JSON without the ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def _describe(value: Any) -> Any:
    """JSON-able description of inputs/outputs; existing files are replaced by path + content hash."""
    if isinstance(value, os.PathLike) or (isinstance(value, str) and len(value) < 4096):
        p = Path(value)
        try:
            if p.is_file():
                return {"path": str(p), "sha256": file_sha256(p), "size": p.stat().st_size}
        except OSError:
            pass
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_describe(v) for v in value]
    return value


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no login name (containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    ok
        True when every entry is intact and chained.
    n_entries
        Number of lines read.
    first_bad
        1-based line number of the first bad entry (None when ok).
    reason
        What is wrong at ``first_bad`` ("" when ok).
    """

    ok: bool
    n_entries: int
    first_bad: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log at ``path``.

    Examples
    --------
    >>> log = AuditLog(tmp / "audit.jsonl")                      # doctest: +SKIP
    >>> log.append(action="deid", inputs=["a.dcm"], outputs=["b.dcm"], details={"profile": "basic"})  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, actor: str | None = None) -> None:
        self.path = Path(path)
        self.actor = actor or _default_actor()

    def append(
        self,
        *,
        action: str,
        inputs: Any = None,
        outputs: Any = None,
        details: Any = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq`` and ``hash``).

        ``inputs``/``outputs`` may be paths, lists or mappings of paths, or any JSON-able value;
        paths of existing files are recorded with their SHA-256.
        """
        import fcntl

        if not isinstance(action, str) or not action:
            raise InputError(f"audit action must be a non-empty string, got {action!r}")
        ins, outs = _describe(inputs), _describe(outputs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # "a+" never truncates; the lock covers read-last-hash + append so writers cannot fork the chain.
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                last = _last_entry(fh)
                seq = 1 if last is None else int(last["seq"]) + 1
                prev = GENESIS_HASH if last is None else str(last["hash"])
                entry: dict[str, Any] = {
                    "seq": seq,
                    "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                    "actor": actor or self.actor,
                    "action": action,
                    "inputs": ins,
                    "outputs": outs,
                    "details": details,
                    "prev_hash": prev,
                }
                entry = json.loads(_canonical(entry))  # exactly what will be re-read
                entry["hash"] = entry_hash(entry)
                fh.seek(0, os.SEEK_END)
                fh.write(_canonical(entry) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """All entries as dictionaries (does not verify; use :func:`verify`)."""
        return list(_iter_entries(self.path))

    def verify(self, **kwargs: Any) -> VerifyResult:
        """Verify the chain (see :func:`verify`)."""
        return verify(self.path, **kwargs)


def _last_entry(fh: Any) -> dict[str, Any] | None:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return None
    block = 4096
    pos = size
    data = b""
    while pos > 0:
        step = min(block, pos)
        pos -= step
        fh.seek(pos)
        data = fh.read(step) + data
        lines = data.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or pos == 0:
            try:
                return json.loads(lines[-1])
            except json.JSONDecodeError as exc:
                raise FormatError(
                    f"audit log {fh.name}: the last line is not valid JSON ({exc}); the log was damaged — "
                    "run `medlens audit verify` on it and keep the damaged file as evidence"
                ) from exc
        block *= 2
    return None


def _iter_entries(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def verify(
    path: str | os.PathLike[str], *, expect_count: int | None = None, expect_last_hash: str | None = None
) -> VerifyResult:
    """Check an audit log's hash chain.

    Parameters
    ----------
    path
        The JSON-lines log.
    expect_count, expect_last_hash
        Optional facts recorded elsewhere (e.g. in a run's report) that also detect truncation of
        the tail.

    Returns
    -------
    VerifyResult
        ``first_bad`` is the 1-based line number of the first entry that is edited, out of place,
        missing its predecessor or unreadable.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audit log {p} does not exist or is not a file")
    prev = GENESIS_HASH
    n = 0
    with open(p, "rb") as fh:
        raw_lines = fh.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    elif raw_lines:
        # A last line without newline: an append was cut short (truncated).
        return VerifyResult(False, len(raw_lines), len(raw_lines), "the last line is incomplete (truncated write)")
    for i, raw in enumerate(raw_lines, start=1):
        n = i
        try:
            e = json.loads(raw)
        except json.JSONDecodeError:
            return VerifyResult(False, len(raw_lines), i, "not valid JSON (edited or truncated)")
        if not isinstance(e, dict) or set(e) != set(_FIELDS):
            return VerifyResult(False, len(raw_lines), i, "fields differ from an audit entry's (edited)")
        if e["hash"] != entry_hash(e):
            return VerifyResult(False, len(raw_lines), i, "content does not match its hash (edited)")
        if e["seq"] != i:
            return VerifyResult(
                False,
                len(raw_lines),
                i,
                f"sequence number {e['seq']} found where {i} was expected (deleted, inserted or reordered entries)",
            )
        if e["prev_hash"] != prev:
            return VerifyResult(
                False, len(raw_lines), i, "prev_hash does not match the previous entry (deleted, inserted or reordered)"
            )
        prev = e["hash"]
    if expect_count is not None and n != expect_count:
        return VerifyResult(
            False,
            n,
            n + 1 if n < expect_count else expect_count + 1,
            f"{n} entries found, {expect_count} expected (truncated or extended)",
        )
    if expect_last_hash is not None and prev != expect_last_hash:
        return VerifyResult(False, n, n, "the last entry's hash differs from the one expected (truncated)")
    return VerifyResult(True, n)
