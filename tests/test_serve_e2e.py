"""End to end: storescu of a whole STS patient (PET + CT + RTSTRUCTs) to ``medlens serve`` -> automatic
jobs when the study completes -> SEG and SR sent back by C-STORE to a real Orthanc."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from _orthanc import Orthanc, free_port
from conftest import need_tool

pytest.importorskip("pynetdicom")
pytest.importorskip("fastapi")

pytestmark = [pytest.mark.slow, pytest.mark.needs_tool, pytest.mark.needs_data]


def _result_of_modality(svc: object, job_id: str, modality: str) -> Path:
    """The job's one DICOM result of a modality (the file names are the job's business)."""
    import pydicom

    found = [
        p
        for p in svc.jobs.results(job_id)  # type: ignore[attr-defined]
        if p.suffix == ".dcm" and pydicom.dcmread(p, stop_before_pixels=True).Modality == modality
    ]
    assert len(found) == 1, f"job {job_id}: {modality} results {found}"
    return found[0]


def test_storescu_patient_to_auto_jobs_to_seg_and_sr_in_orthanc(
    orthanc: Orthanc, sts_dir: Path, tmp_path: Path
) -> None:
    import json

    import numpy as np
    import pydicom

    from medlens.serve.service import Service
    from medlens.serve.settings import settings_from_dict

    dicom_port = free_port(11100, 11149)
    http_port = free_port(11100, 11149, skip=(dicom_port,))
    orthanc.add_modality("medlens", "MEDLENS", dicom_port)
    orthanc.start()
    settings = settings_from_dict(
        {
            "data_dir": str(tmp_path / "medlens"),
            "http_port": http_port,
            "dicom_port": dicom_port,
            "ae_title": "MEDLENS",
            "peers": {"pacs": {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}},
            "send_results_to": "pacs",
            "quiet_period_s": 2,
            "auto_jobs": ["segment", "report"],
        }
    )
    patient = sts_dir / "STS_001"
    sent = sorted((patient / "PET").rglob("*.dcm")) + sorted((patient / "CT").rglob("*.dcm"))
    pet_series = str(pydicom.dcmread(sent[0], stop_before_pixels=True).SeriesInstanceUID)
    with Service(settings) as svc:
        # -xt -R: propose JPEG-LS lossless besides the uncompressed syntaxes (the CT is JPEG-LS), only the
        # SOP classes the files need.
        r = subprocess.run(
            [need_tool("storescu"), "-aec", "MEDLENS", "-xt", "-R", "+sd", "+r", "127.0.0.1", str(dicom_port),
             str(patient / "PET"), str(patient / "CT")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert len(svc.store) == len(sent) == 120
        end = time.monotonic() + 30
        while len(svc.auto_submitted) < 2 and time.monotonic() < end:
            time.sleep(0.1)
        assert [k for _, k, _ in svc.auto_submitted] == ["segment", "report"]
        (study_uid,) = {s for s, _, _ in svc.auto_submitted}
        records = [svc.jobs.wait(j, timeout_s=150) for _, _, j in svc.auto_submitted]
        assert [rec.state.value for rec in records] == ["done", "done"], [rec.message for rec in records]
        end = time.monotonic() + 30  # delivery runs right after each job, on the job thread
        while len(svc.sent) < 2 and time.monotonic() < end:
            time.sleep(0.1)
        assert all(rep.ok for rep in svc.sent) and len(svc.sent) == 2
        seg_auto = _result_of_modality(svc, records[0].id, "SEG")
        sr_local = _result_of_modality(svc, records[1].id, "SR")
    # Orthanc now holds exactly what MedLens sent back: the automatic SEG, the report's SEG and its SR.
    got = orthanc.instances()
    by_modality: dict[str, list[dict[str, object]]] = {}
    for inst in got:
        by_modality.setdefault(str(inst["tags"]["Modality"]), []).append(inst)
    assert sorted((m, len(v)) for m, v in by_modality.items()) == [("SEG", 2), ("SR", 1)]
    assert {i["tags"]["StudyInstanceUID"] for i in got} == {study_uid}
    seg_ids = {i["tags"]["SOPInstanceUID"] for i in by_modality["SEG"]}
    assert str(pydicom.dcmread(seg_auto, stop_before_pixels=True).SOPInstanceUID) in seg_ids
    # The SEG in Orthanc is the job's: PET series referenced, a non-empty mask of the volume the job reported.
    auto = next(
        i for i in by_modality["SEG"] if i["tags"]["SOPInstanceUID"] == str(pydicom.dcmread(seg_auto).SOPInstanceUID)
    )
    back = tmp_path / "seg_from_orthanc.dcm"
    back.write_bytes(orthanc.get(f"/instances/{auto['id']}/file"))
    ds = pydicom.dcmread(back)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pet_series
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    summary = json.loads(svc.jobs.result_path(records[0].id, "segment.json").read_text())
    n_vox = int(np.count_nonzero(ds.pixel_array))
    assert n_vox == summary["n_voxels"] > 0
    # The SR in Orthanc is the report job's, byte for byte in its data set, and refers to the PET series.
    sr = next(iter(by_modality["SR"]))
    sr_back = tmp_path / "sr_from_orthanc.dcm"
    sr_back.write_bytes(orthanc.get(f"/instances/{sr['id']}/file"))
    assert pydicom.dcmread(sr_back) == pydicom.dcmread(sr_local)
    # Every step is in the one audit log.
    from medlens.core.audit import AuditLog

    log = AuditLog(settings.audit_log)
    actions = [e["action"] for e in log.entries()]
    assert actions.count("serve.instance.stored") == 120
    assert actions.count("serve.study.complete") == 1
    assert actions.count("job.done") == 2 and actions.count("dicom.send") == 2
    assert log.verify().ok
