"""Keyed audit log (HMAC-SHA256): a forger who recomputes the plain chain is caught only when keyed.

Plus a property test of the chain: any single edit, deletion or swap of entries is detected.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medlens.cli import main
from medlens.core.audit import (
    GENESIS_HASH,
    KEY_FILE_ENV,
    AuditLog,
    create_key_file,
    entry_hash,
    load_key,
    verify,
)
from medlens.core.errors import InputError


def _canon(e: dict) -> str:
    return json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def _forge(path: Path, index: int, new_action: str) -> None:
    """Edit entry ``index`` (0-based) and recompute every hash after it: what a forger without the key can do."""
    ents = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    ents[index]["action"] = new_action
    prev = GENESIS_HASH if index == 0 else ents[index - 1]["hash"]
    for e in ents[index:]:
        e["prev_hash"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    path.write_text("".join(_canon(e) for e in ents), encoding="utf-8")


def _strip_macs_and_rechain(path: Path) -> None:
    """The stronger forger: drop key_id/mac everywhere and rebuild a plain chain."""
    ents = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    prev = GENESIS_HASH
    for e in ents:
        e.pop("mac"), e.pop("key_id")
        e["prev_hash"] = prev
        e["hash"] = entry_hash(e)
        prev = e["hash"]
    path.write_text("".join(_canon(e) for e in ents), encoding="utf-8")


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append(action=f"step{i}", inputs={"i": i}, details={"note": "x" * i})


def test_key_file_created_private_and_never_overwritten(tmp_path: Path) -> None:
    kf = tmp_path / "keys" / "audit.key"
    key = create_key_file(kf)
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert len(kf.read_text().strip()) == 64  # 32 random bytes as hex
    assert load_key(kf) is not None and load_key(kf).key_id == key.key_id  # type: ignore[union-attr]
    assert key.secret.decode() not in repr(key)  # the key never appears in messages
    with pytest.raises(InputError, match="already exists"):
        create_key_file(kf)
    os.chmod(kf, 0o644)
    with pytest.raises(InputError, match=r"0644.*chmod 600"):
        load_key(kf)
    with pytest.raises(InputError, match=r"does not exist.*keygen"):
        load_key(tmp_path / "nope.key")
    short = tmp_path / "short.key"
    short.write_text("abc")
    os.chmod(short, 0o600)
    with pytest.raises(InputError, match="3 bytes; at least 32"):
        load_key(short)


def test_forger_recomputing_chain_caught_only_when_keyed(tmp_path: Path) -> None:
    kf = tmp_path / "secret" / "audit.key"
    keyed = AuditLog(tmp_path / "keyed.jsonl", actor="t", key_file=kf, create_key=True)
    plain = AuditLog(tmp_path / "plain.jsonl", actor="t")
    _fill(keyed, 5)
    _fill(plain, 5)
    kid = keyed.key.key_id  # type: ignore[union-attr]
    e1 = keyed.entries()[0]
    assert e1["key_id"] == kid and len(e1["mac"]) == 64 and "mac" not in plain.entries()[0]
    assert keyed.verify().ok and keyed.verify().keyed

    _forge(plain.path, 2, "forged")
    _forge(keyed.path, 2, "forged")
    res_plain = verify(plain.path)
    # the plain chain cannot tell: the forgery verifies, and the result says that this is all it proves
    assert res_plain.ok and not res_plain.keyed
    assert res_plain.guarantee.startswith("unkeyed: detects accidental edits only; a forger can recompute the chain")
    res = verify(keyed.path, key_file=kf)
    assert not res.ok and res.first_bad == 3 and "MAC does not match" in res.reason
    # without the key, the keyed log's forgery also passes the plain check, and the message says the MACs were not read
    res_nokey = verify(keyed.path)
    assert res_nokey.ok and not res_nokey.keyed and f"key id {kid}" in res_nokey.guarantee


def test_forger_stripping_macs_caught_when_keyed(tmp_path: Path) -> None:
    kf = tmp_path / "k" / "audit.key"
    log = AuditLog(tmp_path / "a.jsonl", key_file=kf, create_key=True)
    _fill(log, 3)
    _strip_macs_and_rechain(log.path)
    assert verify(log.path).ok  # a perfect plain chain
    res = verify(log.path, key_file=kf)
    assert not res.ok and res.first_bad == 1 and "no MAC" in res.reason


def test_wrong_key_and_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    create_key_file(k1)
    key2 = create_key_file(k2)
    monkeypatch.setenv(KEY_FILE_ENV, str(k1))
    log = AuditLog(tmp_path / "a.jsonl")  # the old call signature picks the key from the environment
    _fill(log, 2)
    assert log.key is not None and log.entries()[1]["key_id"] == log.key.key_id
    res = verify(log.path, key_file=k2)
    assert not res.ok and res.first_bad == 1 and f"not with {key2.key_id}" in res.reason
    monkeypatch.delenv(KEY_FILE_ENV)
    assert AuditLog(tmp_path / "b.jsonl").key is None
    with pytest.raises(InputError, match="the log itself"):
        AuditLog(tmp_path / "a.jsonl", key_file=tmp_path / "a.jsonl")


def test_cli_verify_states_guarantee(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    kf = tmp_path / "k" / "audit.key"
    assert main(["audit", "keygen", str(kf)]) == 0
    kid = load_key(kf).key_id  # type: ignore[union-attr]
    assert f"key id {kid}" in capsys.readouterr().out
    assert main(["audit", "keygen", str(kf)]) == 2  # never overwrite a key
    log = AuditLog(tmp_path / "a.jsonl", key_file=kf)
    _fill(log, 3)
    assert main(["audit", "verify", str(log.path), "--key-file", str(kf)]) == 0
    out = capsys.readouterr().out
    assert "ok: 3 entries" in out and f"keyed: entries authenticated with key id {kid}" in out
    assert main(["audit", "verify", str(log.path)]) == 0
    assert "unkeyed: detects accidental edits only; a forger can recompute the chain" in capsys.readouterr().out
    _forge(log.path, 1, "forged")
    monkeypatch.setenv(KEY_FILE_ENV, str(kf))  # the CLI reads the key from the environment too
    assert main(["audit", "verify", str(log.path)]) == 3
    err = capsys.readouterr().err
    assert "entry 2 of 3 is bad: MAC does not match" in err


# --- property test of the chain ------------------------------------------------------------------

_N = 6
_edits = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, _N - 1), st.sampled_from(["action", "actor", "details", "time", "seq"])),
    st.tuples(st.just("delete"), st.integers(0, _N - 2), st.just("")),  # deleting the last is tail truncation
    st.tuples(st.just("swap"), st.integers(0, _N - 2), st.just("")),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=_edits, keyed=st.booleans())
def test_any_single_edit_delete_or_reorder_detected(tmp_path: Path, change: tuple, keyed: bool) -> None:
    kind, i, field = change
    path = tmp_path / f"p{os.getpid()}_{kind}_{i}_{field}_{keyed}.jsonl"
    path.unlink(missing_ok=True)
    kf = tmp_path / f"k_{kind}_{i}_{field}_{keyed}.key"
    kf.unlink(missing_ok=True)
    log = AuditLog(path, actor="t", key_file=kf if keyed else None, create_key=keyed)
    _fill(log, _N)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if kind == "edit":
        e = json.loads(lines[i])
        e[field] = (e[field] + 1) if field == "seq" else f"{e[field]}!"
        lines[i] = _canon(e)
        expect_bad = i + 1
    elif kind == "delete":
        del lines[i]
        expect_bad = i + 1
    else:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
        expect_bad = i + 1
    path.write_text("".join(lines), encoding="utf-8")
    res = verify(path, key_file=kf if keyed else None)
    assert not res.ok
    assert res.first_bad == expect_bad
