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
from pathlib import Path

__all__ = ["split_multipart_related", "stow_body"]


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
