"""Append-only, hash-chained audit log (JSON lines), optionally keyed (HMAC-SHA256).

Each line is one entry::

    {"seq": 3, "time": "2026-11-24T09:31:02.123456+00:00", "actor": "alice@host", "action": "deid",
     "inputs": ..., "outputs": ..., "details": ..., "prev_hash": "<hash of entry 2>", "hash": "<sha256>"}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, no spaces) of the entry without ``hash``
(and without ``mac``); ``prev_hash`` of the first entry is 64 zeros. Files named in
``inputs``/``outputs`` are recorded by content hash (``{"path": ..., "sha256": ...}``), so a later
change of a file is detectable too.

Two guarantees, and :func:`verify` says which one holds:

*unkeyed* (the default)
    Any edit, deletion, insertion, reordering or truncation breaks the chain (or the ``seq``
    numbering) and :func:`verify` reports the first bad entry. This detects *accidental* damage
    only: SHA-256 needs no secret, so a forger who edits an entry and recomputes every later hash
    produces a log that verifies.
*keyed*
    With a secret key kept outside the log (``key_file=`` or the environment variable
    ``MEDLENS_AUDIT_KEY_FILE``), every entry also carries ``key_id`` (a fingerprint of the key, not
    the key) and ``mac`` = HMAC-SHA256(key, canonical JSON of the entry without ``mac``). The MAC
    covers ``seq``, ``prev_hash`` and ``hash``, so it authenticates the entry *and* its place in the
    chain: without the key a forger can neither edit, insert, delete nor reorder entries (nor strip
    the MACs: a verifier given the key demands one on every entry) without :func:`verify` failing.

Concurrent writers (threads or processes) are serialised with an exclusive ``fcntl.flock`` held
while the last hash is read and the new line appended, so the chain never forks.

Truncation of the *tail* (dropping the last entries) cannot be detected from the file alone, keyed
or not; pass the expected number of entries or the last hash recorded elsewhere
(``expect_count`` / ``expect_last_hash``) to :func:`verify` to close that gap.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlens.core.errors import FormatError, InputError

__all__ = [
    "GENESIS_HASH",
    "KEY_FILE_ENV",
    "AuditKey",
    "AuditLog",
    "VerifyResult",
    "create_key_file",
    "entry_hash",
    "file_sha256",
    "load_key",
    "verify",
]

GENESIS_HASH = "0" * 64
KEY_FILE_ENV = "MEDLENS_AUDIT_KEY_FILE"
_FIELDS = ("seq", "time", "actor", "action", "inputs", "outputs", "details", "prev_hash", "hash")
_KEYED_FIELDS = (*_FIELDS, "key_id", "mac")
_MIN_KEY_BYTES = 32
_UNKEYED_GUARANTEE = "unkeyed: detects accidental edits only; a forger can recompute the chain"


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
    """Hash of an entry: SHA-256 of its canonical JSON without the ``hash`` and ``mac`` fields."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True, repr=False)
class AuditKey:
    """A secret HMAC key for audit entries.

    Attributes
    ----------
    secret
        The key material (bytes; at least 32). Never written into the log.
    key_id
        First 16 hex digits of SHA-256 over a fixed label and the key: names the key in each entry
        and in :func:`verify`'s report without revealing it.
    source
        Where the key was read from (for messages).
    """

    secret: bytes
    key_id: str
    source: str = ""

    @classmethod
    def from_bytes(cls, secret: bytes, *, source: str = "") -> AuditKey:
        """Wrap key material (at least 32 bytes)."""
        if len(secret) < _MIN_KEY_BYTES:
            where = f"key file {source}" if source else "the audit key"
            raise InputError(
                f"{where} holds {len(secret)} bytes; at least {_MIN_KEY_BYTES} expected "
                "(create one with `medlens audit keygen KEY_FILE`)"
            )
        kid = hashlib.sha256(b"medlens-audit-key-id\x00" + secret).hexdigest()[:16]
        return cls(secret, kid, source)

    def mac(self, entry: Mapping[str, Any]) -> str:
        """HMAC-SHA256 (hex) of the canonical JSON of ``entry`` without its ``mac`` field."""
        body = {k: v for k, v in entry.items() if k != "mac"}
        return hmac.new(self.secret, _canonical(body), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print the secret
        return f"AuditKey(key_id={self.key_id!r}, source={self.source!r})"


def create_key_file(path: str | os.PathLike[str]) -> AuditKey:
    """Create a new random audit key file (64 hex digits, mode 0600) and return the key.

    Refuses to overwrite an existing file (a lost key makes every keyed entry unverifiable).
    Keep the key away from the log (another folder, a secrets store): whoever can read it can forge.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(32) + "\n"
    try:
        # O_EXCL: never replace a key; 0600 from creation, so the secret is never readable by others
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InputError(f"key file {p} already exists; refusing to overwrite an audit key") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return AuditKey.from_bytes(text.strip().encode("ascii"), source=str(p))


def load_key(key_file: str | os.PathLike[str] | None = None, *, use_env: bool = True) -> AuditKey | None:
    """Read the audit key from ``key_file`` or, when None, from ``$MEDLENS_AUDIT_KEY_FILE``.

    Returns None when neither is given (an unkeyed log). The file's stripped content is the key;
    a file readable by group or others is refused, since anyone who can read it can forge entries.
    """
    if key_file is None and use_env:
        env = os.environ.get(KEY_FILE_ENV, "").strip()
        key_file = env or None
    if key_file is None:
        return None
    p = Path(key_file)
    if not p.is_file():
        raise InputError(
            f"audit key file {p} does not exist; create one with `medlens audit keygen {p}` "
            f"(or unset {KEY_FILE_ENV} for an unkeyed log)"
        )
    mode = p.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"audit key file {p} has mode {stat.S_IMODE(mode):04o}; it must be private (0600): run chmod 600 {p}"
        )
    return AuditKey.from_bytes(p.read_bytes().strip(), source=str(p))


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
        True when every entry is intact and chained (and, when keyed, authenticated).
    n_entries
        Number of lines read.
    first_bad
        1-based line number of the first bad entry (None when ok).
    reason
        What is wrong at ``first_bad`` ("" when ok).
    keyed
        True when the entries were checked against a key (their MACs verified).
    key_id
        Fingerprint of the key used ("" when unkeyed).
    guarantee
        One sentence stating what a successful check proves (keyed or unkeyed).
    """

    ok: bool
    n_entries: int
    first_bad: int | None = None
    reason: str = ""
    keyed: bool = False
    key_id: str = ""
    guarantee: str = _UNKEYED_GUARANTEE

    def __bool__(self) -> bool:
        return self.ok


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log at ``path``.

    Parameters
    ----------
    path
        The log file (created on first append).
    actor
        Who appends (default ``user@host``).
    key_file
        Secret key file for HMAC-authenticated entries (see the module docstring). Default: the
        file named by ``$MEDLENS_AUDIT_KEY_FILE``, else unkeyed.
    create_key
        Create ``key_file`` (random, mode 0600) when it does not exist.

    Examples
    --------
    >>> log = AuditLog(tmp / "audit.jsonl")                      # doctest: +SKIP
    >>> log.append(action="deid", inputs=["a.dcm"], outputs=["b.dcm"], details={"profile": "basic"})  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        actor: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        create_key: bool = False,
    ) -> None:
        self.path = Path(path)
        self.actor = actor or _default_actor()
        if key_file is not None and Path(key_file).resolve() == self.path.resolve():
            raise InputError(f"audit key file {key_file} is the log itself; keep the key outside the log")
        if create_key and key_file is not None and not Path(key_file).exists():
            self.key: AuditKey | None = create_key_file(key_file)
        else:
            self.key = load_key(key_file)

    def append(
        self,
        *,
        action: str,
        inputs: Any = None,
        outputs: Any = None,
        details: Any = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq`` and ``hash``, and ``mac`` when keyed).

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
                if self.key is not None:
                    entry["key_id"] = self.key.key_id
                entry = json.loads(_canonical(entry))  # exactly what will be re-read
                entry["hash"] = entry_hash(entry)
                if self.key is not None:
                    entry["mac"] = self.key.mac(entry)
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
        """Verify the chain with this log's key, if any (see :func:`verify`)."""
        kwargs.setdefault("key", self.key)
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
    path: str | os.PathLike[str],
    *,
    expect_count: int | None = None,
    expect_last_hash: str | None = None,
    key: AuditKey | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> VerifyResult:
    """Check an audit log's hash chain and, given the key, every entry's MAC.

    Parameters
    ----------
    path
        The JSON-lines log.
    expect_count, expect_last_hash
        Optional facts recorded elsewhere (e.g. in a run's report) that also detect truncation of
        the tail.
    key, key_file
        The secret key (or its file). Given one, every entry must carry a MAC made with it: the
        check then holds against a forger without the key. Without one only the plain chain is
        checked (the environment variable is *not* consulted here, so the caller decides).

    Returns
    -------
    VerifyResult
        ``first_bad`` is the 1-based line number of the first entry that is edited, out of place,
        missing its predecessor, unauthenticated or unreadable; ``guarantee`` says what an ``ok``
        proves.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"audit log {p} does not exist or is not a file")
    if key is None and key_file is not None:
        key = load_key(key_file, use_env=False)
    keyed = key is not None
    kid = key.key_id if key is not None else ""
    guarantee = (
        f"keyed: entries authenticated with key id {kid} (HMAC-SHA256); without the key an entry cannot be "
        "edited, inserted, deleted or reordered undetected (dropping the last entries needs --expect-count)"
        if keyed
        else _UNKEYED_GUARANTEE
    )

    def result(ok: bool, n: int, first_bad: int | None = None, reason: str = "") -> VerifyResult:
        return VerifyResult(ok, n, first_bad, reason, keyed, kid, guarantee)

    prev = GENESIS_HASH
    n = 0
    unchecked_ids: set[str] = set()
    with open(p, "rb") as fh:
        raw_lines = fh.read().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    elif raw_lines:
        # A last line without newline: an append was cut short (truncated).
        return result(False, len(raw_lines), len(raw_lines), "the last line is incomplete (truncated write)")
    total = len(raw_lines)
    for i, raw in enumerate(raw_lines, start=1):
        n = i
        try:
            e = json.loads(raw)
        except json.JSONDecodeError:
            return result(False, total, i, "not valid JSON (edited or truncated)")
        if not isinstance(e, dict) or set(e) not in (set(_FIELDS), set(_KEYED_FIELDS)):
            return result(False, total, i, "fields differ from an audit entry's (edited)")
        if e["hash"] != entry_hash(e):
            return result(False, total, i, "content does not match its hash (edited)")
        if key is None and "key_id" in e:
            unchecked_ids.add(str(e["key_id"]))
        if key is not None:
            if "mac" not in e:
                return result(False, total, i, f"entry has no MAC, but the log is verified with key id {kid} (forged)")
            if e["key_id"] != kid:
                return result(False, total, i, f"entry was authenticated with key id {e['key_id']}, not with {kid}")
            if not hmac.compare_digest(str(e["mac"]), key.mac(e)):
                return result(False, total, i, "MAC does not match: edited by someone without the key (forged)")
        if e["seq"] != i:
            return result(
                False,
                total,
                i,
                f"sequence number {e['seq']} found where {i} was expected (deleted, inserted or reordered entries)",
            )
        if e["prev_hash"] != prev:
            return result(
                False, total, i, "prev_hash does not match the previous entry (deleted, inserted or reordered)"
            )
        prev = e["hash"]
    if expect_count is not None and n != expect_count:
        return result(
            False,
            n,
            n + 1 if n < expect_count else expect_count + 1,
            f"{n} entries found, {expect_count} expected (truncated or extended)",
        )
    if expect_last_hash is not None and prev != expect_last_hash:
        return result(False, n, n, "the last entry's hash differs from the one expected (truncated)")
    if unchecked_ids:
        guarantee = (
            f"{_UNKEYED_GUARANTEE} (the entries carry MACs of key id {', '.join(sorted(unchecked_ids))}, "
            "not checked: give the key to check them)"
        )
    return result(True, n)
