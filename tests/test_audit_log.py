"""Audit log: hash chain, tamper detection of each kind, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from medlens.cli import main
from medlens.core.audit import AuditLog, file_sha256, verify
from medlens.core.errors import InputError


def _make(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path, actor="tester")
    for i in range(n):
        log.append(action=f"step{i}", inputs={"i": i}, outputs=None, details={"note": "x" * i})
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_audit_chain_intact(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    res = verify(log.path)
    assert res.ok and res.n_entries == 5 and res.first_bad is None
    ents = log.entries()
    assert [e["seq"] for e in ents] == [1, 2, 3, 4, 5]
    assert ents[0]["prev_hash"] == "0" * 64
    assert all(ents[i]["prev_hash"] == ents[i - 1]["hash"] for i in range(1, 5))


def test_audit_files_recorded_by_hash(tmp_path: Path) -> None:
    f = tmp_path / "in.bin"
    f.write_bytes(b"hello")
    e = AuditLog(tmp_path / "a.jsonl").append(action="scan", inputs=[f], outputs={"db": str(f)})
    assert e["inputs"][0]["sha256"] == file_sha256(f)
    assert e["outputs"]["db"]["path"] == str(f)


def test_audit_detects_edit(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    lines = _lines(log.path)
    e = json.loads(lines[2])
    e["details"] = {"note": "forged"}
    lines[2] = json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
    log.path.write_text("".join(lines))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 3 and "hash" in res.reason


def test_audit_detects_edit_with_rehash(tmp_path: Path) -> None:
    # A forger who recomputes the edited entry's own hash still breaks the next link.
    from medlens.core.audit import entry_hash

    log = _make(tmp_path / "a.jsonl")
    lines = _lines(log.path)
    e = json.loads(lines[1])
    e["action"] = "forged"
    e["hash"] = entry_hash(e)
    lines[1] = json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n"
    log.path.write_text("".join(lines))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 3 and "prev_hash" in res.reason


def test_audit_detects_delete(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    lines = _lines(log.path)
    del lines[1]
    log.path.write_text("".join(lines))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 2


def test_audit_detects_insert(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    other = _make(tmp_path / "b.jsonl", 2)
    lines = _lines(log.path)
    lines.insert(3, _lines(other.path)[1])
    log.path.write_text("".join(lines))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 4


def test_audit_detects_reorder(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    lines = _lines(log.path)
    lines[3], lines[4] = lines[4], lines[3]
    log.path.write_text("".join(lines))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 4


def test_audit_detects_truncate(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-20])  # cut inside the last entry
    res = verify(log.path)
    assert not res.ok and res.first_bad == 5
    # Dropping whole entries at the tail is found against a count or hash kept elsewhere.
    _make(tmp_path / "c.jsonl")
    last = AuditLog(tmp_path / "c.jsonl").entries()[-1]["hash"]
    lines = _lines(tmp_path / "c.jsonl")
    (tmp_path / "c.jsonl").write_text("".join(lines[:3]))
    assert verify(tmp_path / "c.jsonl").ok
    res = verify(tmp_path / "c.jsonl", expect_count=5)
    assert not res.ok and res.first_bad == 4
    assert not verify(tmp_path / "c.jsonl", expect_last_hash=last).ok


def test_audit_detects_truncate_from_head(tmp_path: Path) -> None:
    log = _make(tmp_path / "a.jsonl")
    lines = _lines(log.path)
    log.path.write_text("".join(lines[2:]))
    res = verify(log.path)
    assert not res.ok and res.first_bad == 1


def _writer(path: str, k: int, n: int) -> None:
    log = AuditLog(path, actor=f"proc{k}")
    for i in range(n):
        log.append(action="write", inputs={"proc": k, "i": i})


def test_audit_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), k, 25)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    res = verify(path)
    assert res.ok, res.reason
    assert res.n_entries == 100
    got = sorted((e["inputs"]["proc"], e["inputs"]["i"]) for e in AuditLog(path).entries())
    assert got == [(k, i) for k in range(4) for i in range(25)]


def test_audit_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        verify(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="non-empty string"):
        AuditLog(tmp_path / "a.jsonl").append(action="")


def test_audit_cli_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _make(tmp_path / "a.jsonl")
    assert main(["audit", "verify", str(log.path)]) == 0
    assert "5 entries" in capsys.readouterr().out
    lines = _lines(log.path)
    del lines[0]
    log.path.write_text("".join(lines))
    code = main(["audit", "verify", str(log.path)])
    assert code != 0
    assert "entry 1" in capsys.readouterr().err
