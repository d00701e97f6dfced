"""API keys (hashed at rest), roles and JWT bearer tokens of the REST API (medlens.serve.auth)."""

from __future__ import annotations

import hashlib
import stat
import time
from pathlib import Path

import pytest

pytest.importorskip("jwt", reason="PyJWT comes with the [serve] extra")

import jwt
import yaml

from medlens.core.errors import InputError
from medlens.serve.auth import (
    KEY_PREFIX,
    Authenticator,
    AuthError,
    Role,
    add_key,
    list_keys,
    revoke_key,
)

HS_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_key_is_stored_as_sha256_only_and_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = add_key(path, "alice", role="write")
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43  # 32 random bytes, base64url
    text = path.read_text()
    assert key not in text and key[len(KEY_PREFIX) :] not in text
    entry = yaml.safe_load(text)["keys"][0]
    assert entry["sha256"] == hashlib.sha256(key.encode()).hexdigest()
    assert (entry["name"], entry["role"]) == ("alice", "write")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Two keys never collide, and both authenticate to their own names/roles.
    key2 = add_key(path, "bob", role="read")
    auth = Authenticator(path)
    assert auth.authenticate(_bearer(key)).name == "alice"
    assert auth.authenticate({"x-api-key": key2}).role is Role.read
    assert [k.name for k in list_keys(path)] == ["alice", "bob"]


def test_wrong_missing_and_revoked_keys_are_401(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = add_key(path, "alice", role="admin")
    auth = Authenticator(path)
    for headers, words in [
        ({}, "no credentials"),
        (_bearer(key[:-1] + ("A" if key[-1] != "A" else "B")), "unknown or revoked"),
        ({"authorization": f"Basic {key}"}, "must be 'Bearer"),
        (_bearer("not-a-jwt"), "bearer tokens are not configured"),
    ]:
        with pytest.raises(AuthError, match=words) as info:
            auth.authenticate(headers)
        assert info.value.status == 401
    assert auth.authenticate(_bearer(key)).role is Role.admin
    revoke_key(path, "alice")
    with pytest.raises(AuthError, match="unknown or revoked") as info:
        auth.authenticate(_bearer(key))  # the running authenticator re-reads the changed file
    assert info.value.status == 401


def test_roles_are_ordered_and_too_low_is_403(tmp_path: Path) -> None:
    assert Role.admin.allows(Role.write) and Role.write.allows(Role.read) and Role.read.allows(Role.read)
    assert not Role.read.allows(Role.write) and not Role.write.allows(Role.admin)
    path = tmp_path / "keys.yaml"
    p = Authenticator(path)
    key = add_key(path, "viewer", role="read")
    principal = p.authenticate(_bearer(key))
    Authenticator.authorise(principal, Role.read)
    with pytest.raises(AuthError, match="has role 'read'; this request needs 'write'") as info:
        Authenticator.authorise(principal, Role.write)
    assert info.value.status == 403


def test_bad_key_requests_have_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key(path, "alice")
    with pytest.raises(InputError, match="exists already; revoke it first"):
        add_key(path, "alice")
    with pytest.raises(InputError, match="role must be one of read, write, admin; got 'root'"):
        add_key(path, "carol", role="root")
    with pytest.raises(InputError, match="without spaces"):
        add_key(path, "two words")
    with pytest.raises(InputError, match="no key named 'zed'"):
        revoke_key(path, "zed")
    path.write_text("keys:\n  - {name: x, role: read, sha256: abc}\n")
    with pytest.raises(InputError, match=r"keys\[0\]: sha256 must be 64 hex digits"):
        Authenticator(path)


def _oidc_file(tmp_path: Path, algorithms: list[str], key_file: str) -> Path:
    field = "public_key_file" if algorithms[0].startswith("RS") else "secret_file"
    path = tmp_path / "keys.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [],
                "oidc": {
                    "issuer": "https://idp.example/realms/radiology",
                    "audience": "medlens",
                    "algorithms": algorithms,
                    field: key_file,
                    "role_claim": "medlens_role",
                },
            }
        )
    )
    return path


def _claims(**over: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "https://idp.example/realms/radiology",
        "aud": "medlens",
        "sub": "dr.smith",
        "iat": now,
        "exp": now + 300,
        "medlens_role": ["read", "write"],
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_hs256_bearer_tokens(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(HS_SECRET)
    auth = Authenticator(_oidc_file(tmp_path, ["HS256"], "secret"))
    ok = jwt.encode(_claims(), HS_SECRET, algorithm="HS256")
    p = auth.authenticate(_bearer(ok))
    assert (p.name, p.role, p.method, p.actor) == ("dr.smith", Role.write, "bearer", "bearer:dr.smith")
    cases = [
        (jwt.encode(_claims(exp=int(time.time()) - 120), HS_SECRET, algorithm="HS256"), 401, "expired"),
        (jwt.encode(_claims(aud="other"), HS_SECRET, algorithm="HS256"), 401, "(?i)audience"),
        (jwt.encode(_claims(iss="https://evil.example"), HS_SECRET, algorithm="HS256"), 401, "(?i)issuer"),
        (jwt.encode(_claims(), b"another-secret-of-32-bytes-at-least!", algorithm="HS256"), 401, "(?i)signature"),
        (jwt.encode(_claims(exp=None), HS_SECRET, algorithm="HS256"), 401, "exp"),
        (jwt.encode(_claims(medlens_role="nurse"), HS_SECRET, algorithm="HS256"), 403, "no MedLens role"),
        # alg "none": unsigned tokens are never accepted.
        (jwt.encode(_claims(), None, algorithm="none"), 401, "invalid bearer token"),
    ]
    for token, status, words in cases:
        with pytest.raises(AuthError, match=words) as info:
            auth.authenticate(_bearer(token))
        assert info.value.status == status, words


def test_rs256_bearer_tokens_and_algorithm_confusion(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_pub = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "idp.pem").write_bytes(pem_pub)
    auth = Authenticator(_oidc_file(tmp_path, ["RS256"], "idp.pem"))
    token = jwt.encode(_claims(medlens_role="admin"), priv, algorithm="RS256")
    assert auth.authenticate(_bearer(token)).role is Role.admin
    # An HS256 token "signed" with the public key as the HMAC secret (algorithm confusion) is refused.
    forged = jwt.api_jws.PyJWS().encode(jwt.utils.force_bytes('{"sub":"x"}'), key=b"x" * 32, algorithm="HS256")
    with pytest.raises(AuthError) as info:
        auth.authenticate(_bearer(forged))
    assert info.value.status == 401
    with pytest.raises(InputError, match="mixes RS\\* and HS\\*"):
        Authenticator(_oidc_file(tmp_path, ["RS256", "HS256"], "idp.pem"))


def test_cli_keys_add_prints_the_key_once(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from medlens.serve.auth import register_keys

    app = typer.Typer()  # stands for the `medlens serve` group, which calls register_keys the same way
    register_keys(app)
    path = tmp_path / "keys.yaml"
    res = CliRunner().invoke(app, ["keys", "add", "alice", "--role", "write", "--file", str(path)])
    assert res.exit_code == 0, res.output
    key = res.stdout.strip().splitlines()[0]
    assert key.startswith(KEY_PREFIX)
    assert Authenticator(path).authenticate(_bearer(key)).role is Role.write
    listed = CliRunner().invoke(app, ["keys", "list", "--file", str(path)])
    assert listed.exit_code == 0 and "alice\twrite" in listed.stdout and key not in listed.stdout
