"""Small client-side helpers for the REST API: build STOW-RS bodies, read WADO-RS responses.

Used by the tests and the load benchmark; handy for scripts that push a folder of DICOM files::

    body, ctype = stow_body(sorted(Path("study").rglob("*.dcm")))
    httpx.post(f"{url}/dicomweb/studies", content=body, headers={"Content-Type": ctype, **auth})
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LoadResult", "paced_load", "split_multipart_related", "stow_body"]


def stow_body(
    parts: Sequence[str | os.PathLike[str] | bytes], *, content_types: Sequence[str] | None = None
) -> tuple[bytes, str]:
    """A ``multipart/related; type="application/dicom"`` body of files (paths) or byte strings.

    Returns
    -------
    (bytes, str)
        The body and its Content-Type header value (with the boundary).
    """
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for i, part in enumerate(parts):
        data = part if isinstance(part, bytes) else Path(part).read_bytes()
        ctype = content_types[i] if content_types is not None else "application/dicom"
        chunks.append(f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def split_multipart_related(body: bytes, content_type: str) -> list[bytes]:
    """The parts' payloads of a WADO-RS ``multipart/related`` response."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError(f"no boundary in Content-Type {content_type!r}")
    delim = b"--" + m.group(1).encode()
    out = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        _headers, _, payload = chunk.partition(b"\r\n\r\n")
        out.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return out


@dataclass
class LoadResult:
    """What :func:`paced_load` saw.

    Attributes
    ----------
    sent, answered
        Requests started and requests that got an HTTP response (any status).
    status_counts
        ``{status code: count}``.
    errors
        Transport errors (connection refused, timeout), as ``"ExceptionName: message"``.
    latencies_ms
        One per answered request, in milliseconds.
    wall_s
        Seconds from the first request to the last answer.
    """

    sent: int = 0
    answered: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the latencies, in ms."""
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


def paced_load(
    base_url: str,
    paths: Sequence[str],
    *,
    rate_per_s: float,
    duration_s: float,
    headers: dict[str, str] | None = None,
    workers: int = 16,
    timeout_s: float = 30.0,
) -> LoadResult:
    """GET ``paths`` in turn at a fixed rate for a fixed time (bounded: ``rate * duration`` requests).

    Requests start on a fixed schedule (open loop), so a slow server shows as latency, not as a
    lower request count. Meant for loopback servers only.
    """
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    if rate_per_s <= 0 or duration_s <= 0:
        raise ValueError(f"rate_per_s and duration_s must be > 0, got {rate_per_s} and {duration_s}")
    n = round(rate_per_s * duration_s)
    res = LoadResult()
    lock = threading.Lock()
    client = httpx.Client(base_url=base_url, headers=headers or {}, timeout=timeout_s)

    def one(i: int) -> None:
        t = time.perf_counter()
        try:
            r = client.get(paths[i % len(paths)])
        except httpx.HTTPError as exc:
            with lock:
                res.errors.append(f"{type(exc).__name__}: {exc}")
            return
        ms = (time.perf_counter() - t) * 1000
        with lock:
            res.answered += 1
            res.status_counts[r.status_code] = res.status_counts.get(r.status_code, 0) + 1
            res.latencies_ms.append(ms)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i in range(n):
            delay = t0 + i / rate_per_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
            res.sent += 1
    res.wall_s = time.perf_counter() - t0
    client.close()
    return res
