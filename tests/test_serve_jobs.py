"""The service's job manager: queue, progress, cancel, failure, persistence, and the real job kinds."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.serve import jobs as jobs_mod
from medlens.serve.jobs import JobContext, JobManager, JobState
from medlens.serve.settings import ServiceSettings
from medlens.serve.store import StudyStore

FAST_RADIOMICS = {"name": "fast", "families": ["morph", "stat"], "texture": {"families": []}}


def _service(tmp_path: Path, sts_dir: Path, *, workers: int = 1) -> tuple[StudyStore, JobManager, str]:
    settings = ServiceSettings(data_dir=tmp_path, http_port=11250, dicom_port=11251)
    store = StudyStore(tmp_path, quiet_period_s=60, fsync=False)
    for f in sorted((sts_dir / "STS_001" / "PET").rglob("*.dcm")):
        store.add_file(f)
    study = store.studies()[0]["study_uid"]
    return store, JobManager(store, settings, max_workers=workers), study


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> dict[str, threading.Event]:
    """A job kind that reports progress and waits for the test, to observe running/cancel states."""
    events = {"started": threading.Event(), "release": threading.Event()}

    def _gated(ctx: JobContext) -> None:
        ctx.progress(0.5, "half way")
        events["started"].set()
        while not events["release"].wait(0.02):
            ctx.check_cancelled()
        (ctx.out_dir / "out.txt").write_text("done")

    def _broken(ctx: JobContext) -> None:
        (ctx.out_dir / "half.txt").write_text("half")
        raise ZeroDivisionError("division by zero in a job")

    monkeypatch.setitem(jobs_mod.JOB_KINDS, "gated", (_gated, set()))
    monkeypatch.setitem(jobs_mod.JOB_KINDS, "broken", (_broken, set()))
    return events


def test_progress_cancel_and_queue(tmp_path: Path, sts_dir: Path, gated: dict[str, threading.Event]) -> None:
    store, mgr, study = _service(tmp_path, sts_dir)
    try:
        first = mgr.submit("gated", study, actor="api-key:tester")
        second = mgr.submit("gated", study)
        assert gated["started"].wait(10)
        rec = mgr.status(first)
        assert (rec.state, rec.progress, rec.message, rec.actor) == (
            JobState.running,
            0.5,
            "half way",
            "api-key:tester",
        )
        assert mgr.status(second).state is JobState.queued  # one worker: the second waits
        # A queued job is cancelled at once and never runs.
        assert mgr.cancel(second).state is JobState.cancelled
        # A running job stops at its next checkpoint; its partial outputs are removed.
        mgr.cancel(first)
        rec = mgr.wait(first, timeout_s=10)
        assert rec.state is JobState.cancelled and rec.results == []
        assert not (mgr.results_dir / first).exists() and not list(mgr.results_dir.glob(".*partial"))
        assert mgr.results(first) == []
        with pytest.raises(InputError, match="is cancelled, not done"):
            mgr.result_path(first, "out.txt")
        # The pool is free again: the next job runs to the end.
        gated["release"].set()
        third = mgr.submit("gated", study)
        rec = mgr.wait(third, timeout_s=10)
        assert (rec.state, rec.progress, rec.results) == (JobState.done, 1.0, ["out.txt"])
        assert mgr.result_path(third, "out.txt").read_text() == "done"
        actions = [e["action"] for e in mgr.audit.entries()]
        assert actions.count("job.submit") == 3 and "job.cancelled" in actions and "job.done" in actions
    finally:
        mgr.shutdown()
        store.close()


def test_failure_is_recorded_and_service_survives(
    tmp_path: Path, sts_dir: Path, gated: dict[str, threading.Event]
) -> None:
    store, mgr, study = _service(tmp_path, sts_dir)
    try:
        bad = mgr.submit("broken", study)
        rec = mgr.wait(bad, timeout_s=10)
        assert rec.state is JobState.failed
        assert rec.message.startswith("unexpected ZeroDivisionError: division by zero in a job")
        assert not (mgr.results_dir / bad).exists()  # nothing half-written is left
        gated["release"].set()
        assert mgr.wait(mgr.submit("gated", study), timeout_s=10).state is JobState.done
        # The record survives a restart; a job that was running when the service stopped is failed.
        stuck = mgr.jobs_dir / "deadbeef00000000.json"
        stuck.write_text(json.dumps({**mgr.status(bad).to_dict(), "id": "deadbeef00000000", "state": "running"}))
        again = JobManager(store, mgr.settings)
        assert again.status(bad).state is JobState.failed
        restarted = again.status("deadbeef00000000")
        assert (restarted.state, restarted.message) == (JobState.failed, "the service stopped while the job ran")
        again.shutdown()
    finally:
        mgr.shutdown()
        store.close()


def test_submit_rejects_bad_requests(tmp_path: Path, sts_dir: Path) -> None:
    store, mgr, study = _service(tmp_path, sts_dir)
    try:
        with pytest.raises(InputError, match="unknown job kind 'train'; the kinds are: segment, features, report"):
            mgr.submit("train", study)
        with pytest.raises(InputError, match="has no parameter 'threshold'"):
            mgr.submit("segment", study, {"threshold": 3})
        with pytest.raises(InputError, match=r"no study 1\.2\.3 in the store"):
            mgr.submit("segment", "1.2.3")
        with pytest.raises(InputError, match="no job 'nope'"):
            mgr.status("nope")
        assert mgr.list_jobs() == []
    finally:
        mgr.shutdown()
        store.close()


@pytest.mark.slow
def test_segment_then_features_match_the_library(tmp_path: Path, sts_dir: Path) -> None:
    """The job kinds call the public functions: their outputs equal a direct call on the same data."""
    from medlens.io import read_image, read_mask
    from medlens.io.seg import read_seg
    from medlens.radiomics import extract
    from medlens.segment import segment

    store, mgr, study = _service(tmp_path, sts_dir)
    try:
        seg_job = mgr.submit("segment", study, {"method": "otsu"})
        feat_job = mgr.submit("features", study, {"settings": FAST_RADIOMICS})  # the RTSTRUCT's ROI
        rec = mgr.wait(seg_job, timeout_s=120)
        assert rec.state is JobState.done, rec.message
        assert rec.results == ["mask.nii.gz", "seg.dcm", "segment.json"]
        image = read_image(sts_dir / "STS_001" / "PET" / "image")
        expected = segment(image, method="otsu")
        summary = json.loads(mgr.result_path(seg_job, "segment.json").read_text())
        assert summary["n_voxels"] == int(expected.array.sum()) > 0
        assert summary["volume_ml"] == pytest.approx(expected.array.sum() * np.prod(image.spacing) / 1000)
        back = read_seg(mgr.result_path(seg_job, "seg.dcm"), reference=image)
        assert np.array_equal(back.array, expected.array)

        rec = mgr.wait(feat_job, timeout_s=120)
        assert rec.state is JobState.done, rec.message
        doc = json.loads(mgr.result_path(feat_job, "features.json").read_text())
        mask = read_mask(sts_dir / "STS_001" / "PET" / "rtstruct", reference=image, roi="GTV_Mass_PET")
        direct = extract(image, mask, FAST_RADIOMICS)
        got = doc["features"]["GTV_Mass_PET"]
        assert set(got) == set(direct)
        for tag in ("morph_volume", "stat_mean", "stat_max"):
            assert got[tag] == pytest.approx(direct[tag], rel=1e-12)
        csv_head = mgr.result_path(feat_job, "features.csv").read_text().splitlines()
        assert csv_head[0].startswith("roi,") and csv_head[1].startswith("GTV_Mass_PET,")

        # Features of the segment job's SEG (params.mask_job).
        feat2 = mgr.submit("features", study, {"mask_job": seg_job, "settings": FAST_RADIOMICS})
        rec = mgr.wait(feat2, timeout_s=120)
        assert rec.state is JobState.done, rec.message
        vol = json.loads(mgr.result_path(feat2, "features.json").read_text())["features"]["MedLens otsu"]
        assert vol["morph_volume"] == pytest.approx(extract(image, expected, FAST_RADIOMICS)["morph_volume"])
    finally:
        mgr.shutdown()
        store.close()


@pytest.mark.slow
def test_segment_default_unet_with_gradcam(tmp_path: Path, sts_dir: Path) -> None:
    """PET defaults to the shipped U-Net; gradcam=true adds the Grad-CAM map the viewer overlays."""
    from medlens.io import read_image
    from medlens.io.seg import read_seg
    from medlens.learn.explain import gradcam_unet

    store, mgr, study = _service(tmp_path, sts_dir)
    try:
        bad = mgr.submit("segment", study, {"method": "otsu", "gradcam": True})
        rec = mgr.wait(bad, timeout_s=60)
        assert rec.state is JobState.failed and "needs method 'unet', not 'otsu'" in rec.message
        job = mgr.submit("segment", study, {"gradcam": True})
        rec = mgr.wait(job, timeout_s=300)
        assert rec.state is JobState.done, rec.message
        assert rec.results == ["gradcam.nii.gz", "mask.nii.gz", "seg.dcm", "segment.json"]
        summary = json.loads(mgr.result_path(job, "segment.json").read_text())
        assert (summary["method"], summary["modality"]) == ("unet", "PT")
        image = read_image(sts_dir / "STS_001" / "PET" / "image")
        mask = read_seg(mgr.result_path(job, "seg.dcm"), reference=image)
        assert int(mask.array.sum()) == summary["n_voxels"] > 0
        cam = read_image(mgr.result_path(job, "gradcam.nii.gz"))
        assert cam.same_grid(image)
        direct = gradcam_unet(image, mask=mask).array
        cam = cam.array
        assert cam.shape == direct.shape and np.allclose(cam, direct, atol=1e-6)
    finally:
        mgr.shutdown()
        store.close()
