"""Who may call the REST API: API keys (stored hashed) and OIDC-style bearer tokens (JWT).

The keys file (``api_keys_file`` of :class:`~medlens.serve.settings.ServiceSettings`, default
``data_dir/api_keys.yaml``) is YAML::

    keys:
      - {name: alice, role: write, sha256: 3f9c..., created: "2026-12-02T18:50:00+00:00"}
    oidc:                                # optional: accept JWTs from an identity provider
      issuer: https://idp.hospital.example/realms/radiology
      audience: medlens
      algorithms: [RS256]                # RS256 needs public_key_file, HS256 needs secret_file
      public_key_file: idp-public.pem    # relative paths: to the keys file's folder
      role_claim: medlens_role           # a role name or a list of names (highest wins)

Why SHA-256 and not scrypt/PBKDF2: a key is 256 random bits from :func:`secrets.token_urlsafe`,
not a password a person chose. Slow, salted hashes exist to make guessing *low-entropy* secrets
expensive; guessing one of 2^256 keys is infeasible at any hash speed, and a salt adds nothing
when no two users can share a key. A fast hash lets every request be checked in microseconds
(the API must sustain tens of requests per second on two cores), where scrypt at a safe cost
would take ~50-100 ms of CPU per request. The file still never holds a usable key: a stolen
copy does not let anyone call the API.

Roles are ordered ``read < write < admin``: ``read`` lists and retrieves, ``write`` also uploads
(STOW-RS) and submits/cancels jobs, ``admin`` also reads the audit log. A missing or unknown
credential is ``401``; a valid one whose role is too low is ``403``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from medlens.core.atomic import atomic_write_text
from medlens.core.errors import InputError

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "AuthError",
    "Authenticator",
    "OIDCConfig",
    "Principal",
    "Role",
    "add_key",
    "hash_key",
    "list_keys",
    "load_keys_file",
    "register_keys",
    "revoke_key",
]

#: Every key starts with this, so a leaked key is recognisable (secret scanners, logs) and an API key
#: is told apart from a JWT in the same ``Authorization: Bearer`` header.
KEY_PREFIX = "mlk_"
_KEY_BYTES = 32  # 256 bits


class Role(StrEnum):
    """Roles of API callers, in increasing order of rights."""

    read = "read"
    write = "write"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """True when this role has at least the rights of ``needed``."""
        return self.rank >= needed.rank


_RANK = {Role.read: 0, Role.write: 1, Role.admin: 2}


def _role(value: Any, *, where: str) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        raise InputError(f"{where}: role must be one of read, write, admin; got {value!r}") from None


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes
    ----------
    name
        Key name (``keys add NAME``) or the token's ``sub`` claim.
    role
        Its role.
    method
        ``"api-key"`` or ``"bearer"``.
    """

    name: str
    role: Role
    method: str

    @property
    def actor(self) -> str:
        """The name written into the audit log (``api-key:alice``, ``bearer:dr.smith``)."""
        return f"{self.method}:{self.name}"


class AuthError(Exception):
    """Authentication (401) or authorisation (403) failed; ``status`` is the HTTP status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiKey:
    """One entry of the keys file (the key itself is never stored)."""

    name: str
    role: Role
    sha256: str
    created: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "role": self.role.value, "sha256": self.sha256, "created": self.created}


@dataclass(frozen=True)
class OIDCConfig:
    """How bearer tokens are checked (no network: the key is configured, never fetched).

    Attributes
    ----------
    issuer, audience
        Required ``iss`` and ``aud`` claims.
    algorithms
        Accepted JWS algorithms (``RS256``, ``HS256``); never ``none``.
    key
        The PEM public key (RS*) or the shared secret (HS*).
    role_claim
        Claim holding the role name, or a list of names (the highest known one is used).
    leeway_s
        Clock skew tolerated on ``exp``/``nbf``/``iat``, in seconds.
    """

    issuer: str
    audience: str
    algorithms: tuple[str, ...]
    key: str | bytes
    role_claim: str = "medlens_role"
    leeway_s: float = 30.0


_ALGORITHMS = {"RS256", "RS384", "RS512", "HS256", "HS384", "HS512"}


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for ``key`` (see the module docstring for why not scrypt)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"API keys file {path} is not valid YAML: {exc}") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"API keys file {path}: expected a mapping with 'keys' (and optionally 'oidc'), found {raw!r}")
    unknown = sorted(set(raw) - {"keys", "oidc"})
    if unknown:
        raise InputError(f"API keys file {path}: unknown key(s) {', '.join(unknown)}; known: keys, oidc")
    return raw


def _parse_keys(raw: dict[str, Any], path: Path) -> list[ApiKey]:
    items = raw.get("keys") or []
    if not isinstance(items, list):
        raise InputError(f"API keys file {path}: 'keys' must be a list of {{name, role, sha256}}, found {items!r}")
    out: list[ApiKey] = []
    for i, item in enumerate(items):
        where = f"API keys file {path}: keys[{i}]"
        if not isinstance(item, dict) or not {"name", "role", "sha256"} <= set(item):
            raise InputError(f"{where} must be a mapping with name, role and sha256; found {item!r}")
        digest = str(item["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise InputError(f"{where}: sha256 must be 64 hex digits, found {item['sha256']!r}")
        out.append(ApiKey(str(item["name"]), _role(item["role"], where=where), digest, str(item.get("created", ""))))
    return out


def _parse_oidc(raw: dict[str, Any], path: Path) -> OIDCConfig | None:
    spec = raw.get("oidc")
    if spec is None:
        return None
    where = f"API keys file {path}: oidc"
    if not isinstance(spec, dict):
        raise InputError(f"{where} must be a mapping, found {spec!r}")
    known = {"issuer", "audience", "algorithms", "public_key_file", "secret_file", "role_claim", "leeway_s"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for k in ("issuer", "audience"):
        if not isinstance(spec.get(k), str) or not spec[k]:
            raise InputError(f"{where}.{k} is required (a string)")
    algs = spec.get("algorithms", ["RS256"])
    if not isinstance(algs, list) or not algs or any(a not in _ALGORITHMS for a in algs):
        raise InputError(
            f"{where}.algorithms must be a non-empty list of {', '.join(sorted(_ALGORITHMS))}; got {algs!r}"
        )
    asym = any(a.startswith("RS") for a in algs)
    sym = any(a.startswith("HS") for a in algs)
    if asym and sym:
        # One key can't be both; mixing them is how algorithm-confusion attacks start.
        raise InputError(f"{where}.algorithms mixes RS* and HS* ({algs}); configure one family")
    key_field = "public_key_file" if asym else "secret_file"
    if not spec.get(key_field):
        raise InputError(f"{where}.{key_field} is required for {', '.join(algs)}")
    key_path = Path(os.path.expanduser(str(spec[key_field])))
    if not key_path.is_absolute():
        key_path = path.parent / key_path
    if not key_path.is_file():
        raise InputError(f"{where}.{key_field}: {key_path} does not exist")
    key: str | bytes = key_path.read_text(encoding="utf-8") if asym else key_path.read_bytes().strip()
    if not asym and len(key) < 32:
        raise InputError(f"{where}.secret_file: the HS* secret in {key_path} must be at least 32 bytes")
    return OIDCConfig(
        issuer=spec["issuer"],
        audience=spec["audience"],
        algorithms=tuple(algs),
        key=key,
        role_claim=str(spec.get("role_claim", "medlens_role")),
        leeway_s=float(spec.get("leeway_s", 30.0)),
    )


def load_keys_file(path: str | os.PathLike[str]) -> tuple[list[ApiKey], OIDCConfig | None]:
    """Read the keys file: its API keys and its optional OIDC settings (a missing file has neither)."""
    p = Path(path)
    raw = _read_yaml(p)
    return _parse_keys(raw, p), _parse_oidc(raw, p)


def _write(path: Path, raw: dict[str, Any]) -> None:
    import yaml

    header = "# medlens serve API keys: only SHA-256 digests are stored (see medlens.serve.auth).\n"
    atomic_write_text(path, header + yaml.safe_dump(raw, sort_keys=False))
    os.chmod(path, 0o600)  # digests are not keys, but the file also names who may call the API


def add_key(path: str | os.PathLike[str], name: str, *, role: Role | str = Role.read) -> str:
    """Create a key named ``name`` with ``role``; store its digest in ``path`` and return the key.

    The key is returned once and never stored: whoever runs ``medlens serve keys add`` must copy it.

    Raises
    ------
    InputError
        Empty name, unknown role, or a key of that name exists already (revoke it first).
    """
    p = Path(path)
    if not name or not name.strip() or any(c.isspace() for c in name):
        raise InputError(f"key name must be a non-empty word without spaces, got {name!r}")
    r = _role(role, where="keys add")
    raw = _read_yaml(p)
    existing = _parse_keys(raw, p)
    if any(k.name == name for k in existing):
        raise InputError(
            f"{p}: a key named {name!r} exists already; revoke it first (medlens serve keys revoke {name})"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    entry = ApiKey(name, r, hash_key(key), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    raw["keys"] = [k.to_dict() for k in [*existing, entry]]
    _write(p, raw)
    return key


def list_keys(path: str | os.PathLike[str]) -> list[ApiKey]:
    """The keys of ``path`` (names, roles, digests; never the keys)."""
    return load_keys_file(path)[0]


def revoke_key(path: str | os.PathLike[str], name: str) -> None:
    """Remove the key ``name`` from ``path``; a running service refuses it from its next request on."""
    p = Path(path)
    raw = _read_yaml(p)
    existing = _parse_keys(raw, p)
    if not any(k.name == name for k in existing):
        names = ", ".join(k.name for k in existing) or "none"
        raise InputError(f"{p}: no key named {name!r} (keys: {names})")
    raw["keys"] = [k.to_dict() for k in existing if k.name != name]
    _write(p, raw)


class Authenticator:
    """Checks the credentials of a request against the keys file (re-read when it changes).

    Parameters
    ----------
    keys_file
        The YAML keys file; it may not exist yet (then every request is refused with 401 until a
        key is added: the service is closed by default).
    """

    def __init__(self, keys_file: str | os.PathLike[str]) -> None:
        self.keys_file = Path(keys_file)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_digest: dict[str, ApiKey] = {}
        self._oidc: OIDCConfig | None = None
        self._loaded = False
        self._reload()

    def _reload(self) -> None:
        try:
            st = self.keys_file.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if self._loaded and stamp == self._stamp:
                return
            keys, oidc = load_keys_file(self.keys_file) if stamp is not None else ([], None)
            self._by_digest = {k.sha256: k for k in keys}
            self._oidc = oidc
            self._stamp = stamp
            self._loaded = True

    @property
    def oidc(self) -> OIDCConfig | None:
        """The bearer-token settings of the keys file (None: API keys only)."""
        self._reload()
        return self._oidc

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller named by ``Authorization: Bearer ...`` or ``X-API-Key``; :class:`AuthError` 401 if none."""
        self._reload()
        token = ""
        auth = headers.get("authorization") or headers.get("Authorization") or ""
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise AuthError(401, "the Authorization header must be 'Bearer <API key or token>'")
            token = value.strip()
        else:
            token = (headers.get("x-api-key") or headers.get("X-API-Key") or "").strip()
        if not token:
            raise AuthError(
                401, "no credentials: send 'Authorization: Bearer <key>' (create one with `medlens serve keys add`)"
            )
        if token.startswith(KEY_PREFIX):
            return self._api_key(token)
        return self._bearer(token)

    def _api_key(self, token: str) -> Principal:
        digest = hash_key(token)
        found = None
        # Constant-time comparison over every stored digest: no timing hint about near misses.
        for stored, entry in self._by_digest.items():
            if hmac.compare_digest(stored, digest):
                found = entry
        if found is None:
            raise AuthError(401, "unknown or revoked API key")
        return Principal(found.name, found.role, "api-key")

    def _bearer(self, token: str) -> Principal:
        cfg = self._oidc
        if cfg is None:
            raise AuthError(401, "not an API key (they start with 'mlk_'), and bearer tokens are not configured")
        import jwt

        try:
            claims = jwt.decode(
                token,
                cfg.key,
                algorithms=list(cfg.algorithms),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "the bearer token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, f"invalid bearer token: {exc}") from None
        role = _token_role(claims.get(cfg.role_claim))
        if role is None:
            raise AuthError(
                403, f"the bearer token carries no MedLens role in its {cfg.role_claim!r} claim (read, write or admin)"
            )
        return Principal(str(claims["sub"]), role, "bearer")

    @staticmethod
    def authorise(principal: Principal, needed: Role) -> None:
        """Raise :class:`AuthError` 403 unless ``principal`` has at least ``needed``."""
        if not principal.role.allows(needed):
            raise AuthError(
                403, f"{principal.actor} has role {principal.role.value!r}; this request needs {needed.value!r}"
            )


def _token_role(value: Any) -> Role | None:
    names = value if isinstance(value, list) else [value]
    roles = [Role(v) for v in names if isinstance(v, str) and v in Role.__members__]
    return max(roles, key=lambda r: r.rank) if roles else None


def default_keys_file(settings: Any) -> Path:
    """``settings.api_keys_file``, or ``data_dir/api_keys.yaml`` when unset."""
    path = getattr(settings, "api_keys_file", None)
    return Path(path) if path is not None else Path(settings.data_dir) / "api_keys.yaml"


def register_keys(app: Any) -> None:
    """Add ``keys add|list|revoke`` to the ``medlens serve`` Typer group ``app``.

    The keys file is the one named by the settings file given with ``--config`` (or ``--file``
    directly).
    """
    from medlens.serve._keys_cli import register

    register(app)
