"""Authentication, authorisation, request-size limits and the access audit, as one ASGI middleware.

Every request passes through :class:`AccessMiddleware`, which

1. decides the role a request needs from its method and path (:func:`required_role`): the viewer's
   static files, ``/docs``, ``/openapi.json`` and ``/health`` are public; reads need ``read``;
   uploads, job submission and cancellation need ``write``; the audit log needs ``admin``;
2. authenticates it (:class:`medlens.serve.auth.Authenticator`): 401 without a valid key or token,
   403 when the role is too low;
3. refuses a body larger than the limit with 413 before reading it when ``Content-Length`` says
   so, and while reading it otherwise (chunked uploads);
4. appends one entry to the audit log once the response is sent: who (the key name or token
   subject), what (method, path, query), the status code, the client address and the duration.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio

from medlens.serve.auth import Authenticator, AuthError, Principal, Role

PUBLIC_PREFIXES = ("/viewer", "/docs", "/redoc", "/openapi.json", "/health", "/favicon.ico")

#: Body limit of requests other than STOW-RS uploads (JSON job submissions): 1 MiB.
SMALL_BODY_BYTES = 1 << 20


def required_role(method: str, path: str) -> Role | None:
    """The role a request needs (``None``: public)."""
    if path == "/" or any(path == p or path.startswith(p + "/") or path.startswith(p + "?") for p in PUBLIC_PREFIXES):
        return None
    if path == "/audit" or path.startswith("/audit/"):
        return Role.admin
    if method in ("GET", "HEAD", "OPTIONS"):
        return Role.read
    return Role.write


def is_upload(method: str, path: str) -> bool:
    """STOW-RS (``POST /dicomweb/studies[/{uid}]``): the large-body route."""
    return method == "POST" and path.rstrip("/").startswith("/dicomweb/studies")


class BodyTooLarge(Exception):
    """Raised by the wrapped ``receive`` when the body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def too_large_message(limit: int) -> str:
    mib = limit / (1 << 20)
    return (
        f"request body larger than the limit of {mib:g} MiB (max_upload_mb in the service settings for STOW-RS, "
        f"1 MiB for other requests); nothing was stored. Send fewer instances per request"
    )


class AccessMiddleware:
    """ASGI middleware: auth (401/403), body limits (413) and one audit entry per request."""

    def __init__(self, app: Any, *, authenticator: Authenticator, audit: Any, max_upload_bytes: int) -> None:
        self.app = app
        self.auth = authenticator
        self.audit = audit
        self.max_upload_bytes = int(max_upload_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status = {"code": 500}
        principal: Principal | None = None
        error = ""

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            needed = required_role(method, path)
            if needed is not None:
                try:
                    principal = self.auth.authenticate(headers)
                    self.auth.authorise(principal, needed)
                except AuthError as exc:
                    error = exc.message
                    extra = {"www-authenticate": 'Bearer realm="medlens"'} if exc.status == 401 else {}
                    await _json(send_wrapper, exc.status, {"detail": exc.message}, extra)
                    return
                scope.setdefault("state", {})["principal"] = principal
            limit = self.max_upload_bytes if is_upload(method, path) else SMALL_BODY_BYTES
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                error = too_large_message(limit)
                await _json(send_wrapper, 413, {"detail": error})
                return
            seen = {"n": 0}

            async def receive_limited() -> dict[str, Any]:
                message = await receive()
                if message["type"] == "http.request":
                    seen["n"] += len(message.get("body", b""))
                    if seen["n"] > limit:
                        raise BodyTooLarge(limit)
                return message  # type: ignore[no-any-return]

            scope.setdefault("state", {})["body_limit"] = limit
            try:
                await self.app(scope, receive_limited, send_wrapper)
            except BodyTooLarge as exc:
                error = too_large_message(exc.limit)
                await _json(send_wrapper, 413, {"detail": error})
        finally:
            entry = {
                "method": method,
                "path": path,
                "query": scope.get("query_string", b"").decode("latin-1")[:500],
                "status": status["code"],
                "client": (scope.get("client") or ("", 0))[0],
                "ms": round((time.perf_counter() - t0) * 1000, 1),
            }
            if error:
                entry["error"] = error[:300]
            actor = principal.actor if principal is not None else "anonymous"
            # The audit log fsyncs; keep it off the event loop.
            await anyio.to_thread.run_sync(lambda: self.audit.append(action="http.request", actor=actor, details=entry))


async def _json(send: Any, status: int, body: dict[str, Any], extra: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
