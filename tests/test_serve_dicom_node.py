"""The DICOM node against real peers: dcmtk echoscu/storescu/findscu, pynetdicom SCUs and Orthanc."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _orthanc import Orthanc, free_port
from conftest import need_tool

pytest.importorskip("pynetdicom")

from medlens.core.audit import AuditLog
from medlens.serve.dicom import DicomNode, send_to_peer
from medlens.serve.settings import Peer
from medlens.serve.store import StudyStore

pytestmark = pytest.mark.needs_tool

AET = "MEDLENS"


def free_node_port() -> int:
    """A free port in 11100-11149 (this node's range)."""
    return free_port(11100, 11149)


class Node:
    def __init__(self, root: Path, *, quiet_period_s: float = 30.0) -> None:
        self.audit = AuditLog(root / "audit.jsonl")
        self.store = StudyStore(root / "data", quiet_period_s=quiet_period_s, audit_log=self.audit, fsync=False)
        self.port = free_node_port()
        self.node = DicomNode(self.store, ae_title=AET, port=self.port, audit=self.audit)
        self.node.start()

    def close(self) -> None:
        self.node.stop()
        self.store.close()

    def actions(self) -> list[str]:
        return [e["action"] for e in self.audit.entries()]

    def wait_for(self, action: str, n: int = 1, timeout_s: float = 10.0) -> None:
        end = time.monotonic() + timeout_s
        while self.actions().count(action) < n:
            if time.monotonic() > end:
                raise AssertionError(f"{action} x{n} not in the audit log: {self.actions()}")
            time.sleep(0.05)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path)
    try:
        yield n
    finally:
        n.close()


def _run(*args: str | Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout_s, check=False)


def _sop_uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _same_instance(stored: Path, original: Path) -> bool:
    """Same data set and transfer syntax (the file meta is the receiver's own: PS3.10 7.1)."""
    import pydicom

    a, b = pydicom.dcmread(stored), pydicom.dcmread(original)
    return a == b and a.file_meta.TransferSyntaxUID == b.file_meta.TransferSyntaxUID


def _find(port: int, model: str, *keys: str) -> list[dict[str, str]]:
    """findscu answers as a list of {keyword: value} (dcmtk's text dump, parsed)."""
    import re

    r = _run(need_tool("findscu"), "-aec", AET, model, *[a for k in keys for a in ("-k", k)], "127.0.0.1", port)
    assert r.returncode == 0, r.stderr
    out: list[dict[str, str]] = []
    for block in r.stderr.split("Find Response:")[1:]:
        row = {}
        for m in re.finditer(
            r"\([0-9a-f]{4},[0-9a-f]{4}\) \w\w (\[(.*?)\]|\(no value available\))\s+#.*?\d+, \d+ (\w+)", block
        ):
            row[m.group(3)] = (m.group(2) or "").strip()
        out.append(row)
    return out


# ----------------------------------------------------------------------------------- echo, store, find


def test_echo_and_called_ae_title_checked(node: Node) -> None:
    r = _run(need_tool("echoscu"), "-aec", AET, "127.0.0.1", node.port)
    assert r.returncode == 0, r.stderr
    r = _run("echoscu", "-aec", "NOT_MEDLENS", "127.0.0.1", node.port)
    assert r.returncode != 0 and "Called AE Title Not Recognized" in r.stderr
    node.wait_for("dicom.association.rejected")
    assert node.actions().count("dicom.association.open") == 1


@pytest.mark.slow
def test_storescu_patient_then_findscu_all_levels(node: Node, sts_dir: Path) -> None:
    pet = sts_dir / "STS_001" / "PET"
    files = sorted(pet.rglob("*.dcm"))
    r = _run(need_tool("storescu"), "-aec", AET, "-R", "+sd", "+r", "127.0.0.1", node.port, pet)
    assert r.returncode == 0, r.stderr
    assert len(node.store) == len(files) == 60
    for f in files:  # stored as sent
        assert _same_instance(node.store.path(_sop_uid(f)), f)
    node.wait_for("dicom.association.released")
    released = next(e for e in node.audit.entries() if e["action"] == "dicom.association.released")
    assert released["details"]["n_stored"] == 60 and released["details"]["calling_ae"] == "STORESCU"

    studies = _find(
        node.port,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=STS_0*",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
        "StudyDate",
    )
    assert len(studies) == 1
    st = studies[0]
    assert (st["ModalitiesInStudy"], st["NumberOfStudyRelatedSeries"], st["NumberOfStudyRelatedInstances"]) == (
        "PT\\RTSTRUCT",
        "2",
        "60",
    )
    assert st["PatientID"] == "STS_001" and st["StudyDate"] == "20000907"
    assert _find(node.port, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20010101-", "StudyInstanceUID") == []
    assert len(_find(node.port, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=-20001231", "StudyInstanceUID")) == 1
    assert _find(node.port, "-S", "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=CT", "StudyInstanceUID") == []

    series = _find(
        node.port,
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={st['StudyInstanceUID']}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted((s["Modality"], s["NumberOfSeriesRelatedInstances"]) for s in series) == [
        ("PT", "59"),
        ("RTSTRUCT", "1"),
    ]
    pt = next(s for s in series if s["Modality"] == "PT")
    images = _find(
        node.port,
        "-P",
        "QueryRetrieveLevel=IMAGE",
        "PatientID=STS_001",
        f"SeriesInstanceUID={pt['SeriesInstanceUID']}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert len(images) == 59
    assert {i["SOPInstanceUID"] for i in images} == {_sop_uid(f) for f in files if "image" in f.parts}
    # Patient Root at PATIENT level; Study Root refuses it with a clear status.
    pats = _find(
        node.port, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=sts_001", "NumberOfPatientRelatedInstances"
    )
    assert [p.get("NumberOfPatientRelatedInstances") for p in pats] == ["60"]
    r = _run(
        "findscu",
        "-v",
        "-aec",
        AET,
        "-S",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientID",
        "127.0.0.1",
        node.port,
    )
    assert "Received Final Find Response (Error: DataSetDoesNotMatchSOPClass)" in r.stderr, r.stderr
    assert node.actions().count("dicom.find") == 7 and node.actions().count("dicom.find.refused") == 1


# ----------------------------------------------------------------------------------------- bad input


def _scu(port: int, sop_class: str) -> object:
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1"])  # explicit VR little endian only
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    return assoc


def test_non_dicom_and_unsupported_sop_class_refused_nothing_stored(
    node: Node, sts_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydicom
    from pynetdicom import _config

    # Send files as they are on disk (file meta parsed, data set bytes untouched), like a PACS would.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    src = sorted((sts_dir / "STS_001" / "PET" / "image").glob("*.dcm"))[0]
    # 1) A file that has a valid file meta header (so an SCU sends it) but text instead of a data set.
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    junk = tmp_path / "junk.dcm"
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.save_as(junk, enforce_file_format=True)
    junk.write_bytes(junk.read_bytes() + b"this is a text file, not a DICOM data set\n" * 40)
    assoc = _scu(node.port, "1.2.840.10008.5.1.4.1.1.128")
    status = assoc.send_c_store(junk)  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert status.Status == 0xC000, status
    assert "not a valid DICOM data set" in status.ErrorComment
    # 2) An RT Dose (valid DICOM, a SOP class we do not handle) through dcmtk's storescu.
    dose = pydicom.dcmread(src)
    dose.SOPClassUID = dose.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    dose.Modality = "RTDOSE"
    dose_path = tmp_path / "dose.dcm"
    dose.save_as(dose_path)
    r = _run(need_tool("storescu"), "-v", "-aec", AET, "127.0.0.1", node.port, dose_path)
    assert r.returncode != 0 and "Received Store Response (Refused: SOPClassNotSupported)" in r.stderr, r.stderr
    assert len(node.store) == 0
    assert not [p for p in (node.store.root / "dicom").rglob("*") if p.is_file()]
    assert not any((node.store.root / ".incoming").iterdir())
    refused = [e for e in node.audit.entries() if e["action"] == "serve.instance.refused"]
    assert [e["details"]["error"] for e in refused] == ["FormatError", "UnsupportedSOPClassError"]
    assert "RT Dose" in refused[1]["details"]["message"]
    assert refused[0]["inputs"]["source"].startswith("C-STORE from TESTSCU@127.0.0.1:")
    node.wait_for("dicom.association.released", 2)
    assert [e["details"]["n_refused"] for e in node.audit.entries() if e["action"] == "dicom.association.released"] == [
        1,
        1,
    ]


@pytest.mark.slow
def test_association_aborted_mid_instance_nothing_half_stored(tmp_path: Path, sts_dir: Path) -> None:
    """A sender that dies in the middle of an instance: the instances it finished are kept whole,
    the one in flight is not stored at all, and the study does not complete until a resend."""
    import numpy as np
    import pydicom
    from pynetdicom import AE, evt

    n = Node(tmp_path, quiet_period_s=0.5)
    completed: list[str] = []
    n.store.on_study_complete(completed.append)
    try:
        files = sorted((sts_dir / "STS_002" / "PET" / "image").glob("*.dcm"))
        # A big instance (about 8 MB of pixels) makes "in flight" last many PDUs.
        big = pydicom.dcmread(files[0])
        big.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["medlens-test-big"])
        big.Rows = big.Columns = 2048
        big.PixelData = np.random.default_rng(0).integers(0, 1000, (2048, 2048), dtype=np.uint16).tobytes()
        big_path = tmp_path / "big.dcm"
        big.save_as(big_path)
        sent_pdus = {"n": 0}

        def _cut(event: object) -> None:
            sent_pdus["n"] += 1
            if sent_pdus["n"] == 40:  # well inside the 8 MB instance: drop the TCP connection
                sock = event.assoc.dul.socket.socket  # type: ignore[attr-defined]
                sock.shutdown(socket.SHUT_RDWR)

        ae = AE(ae_title="DYINGSCU")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.1.2")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", n.port, ae_title=AET)
        assert assoc.is_established
        for f in files[:10]:
            assert assoc.send_c_store(f).Status == 0
        assoc.bind(evt.EVT_PDU_SENT, _cut)
        try:
            assoc.send_c_store(big_path)
        except Exception:
            pass
        n.wait_for("dicom.association.aborted")
        time.sleep(1.5)  # three quiet periods
        assert len(n.store) == 10
        assert big.SOPInstanceUID not in n.store
        for f in files[:10]:
            assert _same_instance(n.store.path(_sop_uid(f)), f)
        assert not any((n.store.root / ".incoming").iterdir())
        assert completed == []  # interrupted: not complete
        aborted = next(e for e in n.audit.entries() if e["action"] == "dicom.association.aborted")
        assert aborted["details"]["n_stored"] == 10 and aborted["details"]["calling_ae"] == "DYINGSCU"
        # The sender retries the whole series: the 10 are idempotent, the study then completes once.
        r = _run(need_tool("storescu"), "-aec", AET, "127.0.0.1", n.port, *files)
        assert r.returncode == 0, r.stderr
        end = time.monotonic() + 10
        while not completed and time.monotonic() < end:
            time.sleep(0.05)
        assert completed == [str(big.StudyInstanceUID)] and len(n.store) == len(files)
        assert n.actions().count("serve.instance.duplicate") == 10
    finally:
        n.close()


# ------------------------------------------------------------------------------------------------ load


@pytest.mark.slow
def test_load_500_instances_over_4_parallel_associations(node: Node, sts_dir: Path) -> None:
    files: list[Path] = []
    for pid in range(1, 52):
        files += sorted((sts_dir / f"STS_{pid:03d}" / "PET" / "image").glob("*.dcm"))
        if len(files) >= 500:
            break
    files = files[:500]
    expected = {_sop_uid(f) for f in files}
    assert len(expected) == 500
    storescu = need_tool("storescu")
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            [storescu, "-aec", AET, "127.0.0.1", str(node.port), *map(str, files[i::4])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=240) for p in procs]
    elapsed = time.monotonic() - t0
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [o[1][-500:] for o in outs]
    assert node.store.sop_instance_uids() == expected
    assert sum(r["n_instances"] for r in node.store.studies()) == 500
    stored = [e for e in node.audit.entries() if e["action"] == "serve.instance.stored"]
    assert len(stored) == 500 and node.audit.verify().ok
    assert elapsed < 240


# -------------------------------------------------------------------------------------------- Orthanc


@pytest.mark.slow
def test_orthanc_pushes_study_and_gets_seg_back(node: Node, orthanc: Orthanc, sts_dir: Path, tmp_path: Path) -> None:
    from medlens.io import read_image, read_mask
    from medlens.io.seg import write_seg

    orthanc.add_modality("medlens", AET, node.port)
    orthanc.start()
    pet = sts_dir / "STS_003" / "PET"
    files = sorted(pet.rglob("*.dcm"))
    orthanc.upload(files)
    (study_id,) = orthanc.get("/studies")
    job = orthanc.post("/modalities/medlens/store", {"Resources": [study_id], "Synchronous": True})
    assert job.get("FailedInstancesCount", 0) == 0 and job["InstancesCount"] == len(files), job
    assert {_sop_uid(f) for f in files} == node.store.sop_instance_uids()
    # A SEG made from the received RTSTRUCT goes back to Orthanc by C-STORE.
    (st,) = node.store.studies()
    series = node.store.series(st["study_uid"])
    img = next(s for s in series if s["modality"] == "PT")
    rt = next(s for s in series if s["modality"] == "RTSTRUCT")
    img_files = [Path(r["path"]) for r in node.store.instances(img["series_uid"])]
    image = read_image(img_files)
    mask = read_mask(Path(node.store.instances(rt["series_uid"])[0]["path"]), reference=image, roi="GTV_Mass_PET")
    seg = write_seg(mask, img_files, tmp_path / "seg.dcm", segment_label="GTV", algorithm_type="MANUAL")
    report = send_to_peer(
        [seg], Peer(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port), calling_ae=AET, audit=node.audit
    )
    assert report.ok and report.sent == [seg]
    segs = [i for i in orthanc.instances() if i["tags"].get("Modality") == "SEG"]
    assert len(segs) == 1 and segs[0]["tags"]["SOPInstanceUID"] == _sop_uid(seg)
    back = tmp_path / "back.dcm"
    back.write_bytes(orthanc.get(f"/instances/{segs[0]['id']}/file"))
    assert _same_instance(back, seg)
    sent = next(e for e in node.audit.entries() if e["action"] == "dicom.send")
    assert sent["details"]["n_sent"] == 1 and sent["details"]["peer"].startswith("ORTHANC@127.0.0.1:")
    # A peer that does not know us refuses the association: a clear error.
    from medlens.core.errors import ProcessingError

    with pytest.raises(ProcessingError, match="association was not established"):
        send_to_peer(
            [seg], Peer(ae_title=orthanc.aet, host="127.0.0.1", port=orthanc.dicom_port), calling_ae="STRANGER"
        )


# ------------------------------------------------------------------------------------- configuration


def test_port_in_use_and_unknown_auto_job_are_clear_errors(tmp_path: Path) -> None:
    from medlens.core.errors import InputError
    from medlens.serve.service import Service
    from medlens.serve.settings import settings_from_dict

    port = free_node_port()
    with socket.socket() as blocker, StudyStore(tmp_path / "s") as store:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the port may be in TIME_WAIT
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(InputError, match=rf"cannot listen on 127\.0\.0\.1:{port}.*choose another dicom_port"):
            DicomNode(store, port=port).start()
    settings = settings_from_dict(
        {"data_dir": str(tmp_path / "d"), "http_port": 11148, "dicom_port": 11149, "auto_jobs": ["segmnt"]}
    )
    with pytest.raises(InputError, match=r"auto_jobs names unknown job kind.*'segmnt'; known kinds: .*segment"):
        Service(settings)
