"""Service settings (YAML, checked key by key) and the study store (atomic, idempotent, catalogued)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from medlens.core.audit import AuditLog
from medlens.core.errors import FormatError, InputError
from medlens.serve.settings import load_settings, sample_config, settings_from_dict
from medlens.serve.store import (
    DuplicateInstanceError,
    NotInStoreError,
    StudyStore,
    UnsupportedSOPClassError,
)


def _pet_files(sts_dir: Path) -> list[Path]:
    return sorted((sts_dir / "STS_001" / "PET" / "image").glob("*.dcm"))


# ---------------------------------------------------------------------------------------- settings


def test_settings_load_sample_and_resolve_paths(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(sample_config(data_dir="data"), encoding="utf-8")
    s = load_settings(cfg)
    assert s.data_dir == tmp_path / "data"
    assert s.audit_log == tmp_path / "data" / "audit.jsonl"
    assert (s.host, s.http_port, s.dicom_port, s.ae_title) == ("127.0.0.1", 11101, 11100, "MEDLENS")
    assert s.result_peer is not None and (s.result_peer.ae_title, s.result_peer.port) == ("ORTHANC", 11300)
    assert s.quiet_period_s == 10.0 and s.auto_jobs == []


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"data_dir": "d", "http_port": 1, "dicom_port": 2, "dicom_prot": 3}, "unknown key(s) 'dicom_prot'"),
        ({"data_dir": "d", "http_port": "80", "dicom_port": 2}, "http_port must be an integer TCP port, found str"),
        ({"data_dir": "d", "http_port": True, "dicom_port": 2}, "http_port must be an integer TCP port, found bool"),
        ({"data_dir": "d", "http_port": 1}, "required key(s) missing: dicom_port"),
        ({"data_dir": "d", "http_port": 1, "dicom_port": 2, "send_results_to": "pacs"}, "not under peers"),
        ({"data_dir": "d", "http_port": 1, "dicom_port": 2, "quiet_period_s": 0}, "quiet_period_s must be > 0"),
        ({"data_dir": "d", "http_port": 1, "dicom_port": 2, "auto_jobs": "segment"}, "auto_jobs must be a list"),
        ({"data_dir": "d", "http_port": 1, "dicom_port": 70000}, "dicom_port must be a TCP port"),
        ({"data_dir": "d", "http_port": 1, "dicom_port": 2, "ae_title": "A" * 17}, "ae_title must be a DICOM AE"),
        (
            {"data_dir": "d", "http_port": 1, "dicom_port": 2, "peers": {"p": {"ae_title": "X", "host": "h"}}},
            "peers.p.port is missing",
        ),
        (
            {"data_dir": "d", "http_port": 1, "dicom_port": 2, "peers": {"p": {"ae": "X", "host": "h", "port": 1}}},
            "unknown key(s) 'ae' in peers.p",
        ),
    ],
)
def test_settings_refuse_bad_keys_naming_them(raw: dict[str, object], needle: str) -> None:
    with pytest.raises(InputError) as ei:
        settings_from_dict(raw, source="serve.yaml")
    assert needle in str(ei.value)
    assert str(ei.value).startswith("serve.yaml: ")


def test_settings_missing_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist; write a sample one with `medlens serve init"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dir: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputError, match="not valid YAML"):
        load_settings(bad)


# ------------------------------------------------------------------------------------------- store


def test_store_atomic_layout_idempotent_duplicates_and_catalog(tmp_path: Path, sts_dir: Path) -> None:
    files = _pet_files(sts_dir)[:5]
    audit = tmp_path / "audit.jsonl"
    with StudyStore(tmp_path / "s", audit_log=audit) as store:
        paths = [store.add_file(f) for f in files]
        for src, dst in zip(files, paths):
            assert dst.read_bytes() == src.read_bytes()
            study, series, sop = dst.parent.parent.name, dst.parent.name, dst.stem
            assert dst == tmp_path / "s" / "dicom" / study / series / f"{sop}.dcm"
            assert store.path(sop) == dst
        # Same bytes again: idempotent, same path, nothing new.
        assert store.add_file(files[0]) == paths[0]
        assert len(store) == 5
        # Same SOP Instance UID, different bytes: refused, the stored copy kept.
        import pydicom

        ds = pydicom.dcmread(files[1])
        ds.SeriesDescription = "changed"
        with pytest.raises(DuplicateInstanceError, match=f"{ds.SOPInstanceUID} is stored already"):
            store.add_dataset(ds, source="test")
        assert paths[1].read_bytes() == files[1].read_bytes()
        studies = store.studies()
        assert len(studies) == 1 and studies[0]["n_instances"] == 5 and studies[0]["patient_id"] == "STS_001"
        (ser,) = store.series(studies[0]["study_uid"])
        assert ser["modality"] == "PT" and ser["n_instances"] == 5
        inst = store.instances(ser["series_uid"])
        assert {Path(r["path"]) for r in inst} == set(paths)
        assert store.study_folder(studies[0]["study_uid"]) == paths[0].parent.parent
        with pytest.raises(NotInStoreError, match=r"1\.2\.3 is not in the store"):
            store.path("1.2.3")
        assert not any((tmp_path / "s" / ".incoming").iterdir())
    actions = [e["action"] for e in AuditLog(audit).entries()]
    assert actions.count("serve.instance.stored") == 5
    assert actions.count("serve.instance.duplicate") == 1
    assert actions.count("serve.instance.refused") == 1
    assert AuditLog(audit).verify().ok
    # A new store on the same folder finds what was stored.
    with StudyStore(tmp_path / "s") as again:
        assert len(again) == 5 and again.path(paths[2].stem) == paths[2]
        assert again.add_file(files[2]) == paths[2]  # still idempotent after a restart
        with pytest.raises(DuplicateInstanceError):
            again.add_dataset(ds, source="test")
        assert paths[1].read_bytes() == files[1].read_bytes()


def test_store_refuses_garbage_and_unsupported_storing_nothing(tmp_path: Path, sts_dir: Path) -> None:
    import pydicom

    src = _pet_files(sts_dir)[0]
    data = src.read_bytes()
    with StudyStore(tmp_path / "s", audit_log=tmp_path / "a.jsonl") as store:
        with pytest.raises(FormatError, match="not a DICOM Part 10 file"):
            store.add_bytes(b"%PDF-1.4 not dicom" * 20, source="upload.pdf")
        with pytest.raises(FormatError, match="pixel data is truncated"):
            store.add_bytes(data[:-10], source="cut.dcm")
        ds = pydicom.dcmread(src)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"  # RT Dose
        with pytest.raises(UnsupportedSOPClassError, match=r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.481\.2 \(RT Dose"):
            store.add_dataset(ds, source="dose")
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID = "../../etc"
        with pytest.raises(FormatError, match=r"StudyInstanceUID '\.\./\.\./etc' is not a valid DICOM UID"):
            store.add_dataset(ds, source="evil")
        assert len(store) == 0
        assert store.studies() == []
    assert not [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.name != "catalog.duckdb"]
    refused = [e for e in AuditLog(tmp_path / "a.jsonl").entries() if e["action"] == "serve.instance.refused"]
    assert [e["inputs"]["source"] for e in refused] == ["upload.pdf", "cut.dcm", "dose", "evil"]


def test_store_threads_and_quiet_period(tmp_path: Path, sts_dir: Path) -> None:
    files = _pet_files(sts_dir)[:24]
    done: list[tuple[str, float]] = []
    with StudyStore(tmp_path / "s", quiet_period_s=0.6, fsync=False) as store:
        store.on_study_complete(lambda uid: done.append((uid, time.monotonic())))
        errors: list[BaseException] = []

        def worker(chunk: list[Path]) -> None:
            try:
                for f in chunk:
                    store.add_file(f)
                    store.add_file(f)  # concurrent duplicates stay idempotent
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(files[i::4] + files[(i + 1) % 4 :: 4],)) for i in range(4)]
        t_last = 0.0
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_last = time.monotonic()
        assert not errors
        assert len(store) == 24
        time.sleep(0.3)
        assert done == []  # still inside the quiet period
        deadline = time.monotonic() + 5
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(done) == 1
        uid, t_done = done[0]
        assert t_done - t_last >= 0.6
        assert store.studies()[0]["n_instances"] == 24
        assert uid == store.studies()[0]["study_uid"]
