"""De-identification: PS3.15 Basic Profile on 3 STS patients (PET+CT+RTSTRUCT) and pydicom's test files."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from conftest import need_tool
from medlens.core.errors import InputError
from medlens.io.deid import Deidentifier, Option, action_for, deidentify, load_table, row_for

PYDICOM_FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "rtstruct.dcm",
    "JPEG2000.dcm",
    "SC_rgb.dcm",
    "emri_small.dcm",
    "MR2_J2KI.dcm",
    "RG1_J2KR.dcm",
    "waveform_ecg.dcm",
    "liver.dcm",
]
STS_PATIENTS = ["STS_001", "STS_002", "STS_003"]


def _link_tree(sts_dir: Path, dest: Path) -> Path:
    from pydicom.data import get_testdata_file

    for pid in STS_PATIENTS:
        for f in (sts_dir / pid).rglob("*.dcm"):
            t = dest / pid / f.relative_to(sts_dir / pid)
            t.parent.mkdir(parents=True, exist_ok=True)
            t.symlink_to(f)
    (dest / "pydicom").mkdir(parents=True)
    for name in PYDICOM_FILES:
        p = get_testdata_file(name)
        if p is not None:
            shutil.copy(p, dest / "pydicom" / name)
    (dest / "notes.txt").write_text("not dicom")
    return dest


def _read(p: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(p)
    except pydicom.errors.InvalidDicomError:
        return pydicom.dcmread(p, force=True)


def _strings(ds: pydicom.Dataset) -> list[tuple[str, str, str]]:
    """(keyword, VR, value as text) of every element, sequences included."""
    out = []
    for e in ds.iterall():
        if e.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV"):  # binary payloads (pixels) are not text
            continue
        v = e.value
        if isinstance(v, bytes):
            try:
                v = v.decode("latin-1")
            except Exception:
                continue
        out.append((e.keyword or str(e.tag), e.VR, str(v)))
    return out


@pytest.fixture(scope="module")
def deid_run(sts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("deid")
    inp = _link_tree(sts_dir, base / "in")
    out = base / "out"
    rep = deidentify(inp, out, map_path=base / "secret" / "map.csv")
    return {"in": inp, "out": out, "rep": rep, "base": base}


def _pairs(run: dict[str, Any]) -> list[tuple[Path, Path]]:
    key = (run["base"] / "secret" / "map.csv.key").read_bytes().strip()
    d = Deidentifier(key)
    by_sop = {}
    for f in run["out"].rglob("*.dcm"):
        by_sop[str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)] = f
    pairs = []
    for f in sorted(run["in"].rglob("*.dcm")):
        ds = _read(f)
        pairs.append((f, by_sop[d.uid(str(ds.SOPInstanceUID))]))
    return pairs


@pytest.mark.slow
def test_deid_nothing_identifying_survives(deid_run: dict[str, Any]) -> None:
    rep = deid_run["rep"]
    n_in = sum(1 for _ in deid_run["in"].rglob("*.dcm"))
    assert rep.n_written == n_in and rep.n_duplicates == 0
    assert [Path(p).name for p, _ in rep.skipped] == ["notes.txt"]
    ids, dates, uids = set(), set(), set()
    for f in deid_run["in"].rglob("*.dcm"):
        ds = _read(f)
        for tok in (str(ds.get("PatientID", "")), str(ds.get("PatientName", ""))):
            ids |= {t for t in re.split(r"[\^ ]+", tok) if len(t) >= 3}
        for e in ds.iterall():
            if e.VR in ("DA", "DT") and e.value:
                vals = e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value]
                dates |= {str(v)[:8] for v in vals if len(str(v)) >= 8}
            if e.VR == "UI" and e.value:
                vals = e.value if isinstance(e.value, (list, pydicom.multival.MultiValue)) else [e.value]
                uids |= {str(v) for v in vals if not str(v).startswith("1.2.840.10008.")}
    assert "STS_001" in ids and len(uids) > 100 and dates
    outs = sorted(deid_run["out"].rglob("*"))
    # Output names are pseudonyms and keyed hashes in hex: an all-hex identifier (pydicom's PatientID "642341")
    # can occur inside a random hash by chance, so those must not appear as a whole name piece.
    hex_ids = {i for i in ids if re.fullmatch(r"[0-9a-fA-F]+", i)}
    for f in outs:
        for part in f.relative_to(deid_run["out"]).parts:
            assert not any(i in part for i in ids - hex_ids), f
            assert not hex_ids & set(re.split(r"[-_.]", part)), f
        if not f.name.endswith(".dcm"):
            continue
        ds = pydicom.dcmread(f)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert not any(e.tag.is_private for e in ds.iterall()), f
        assert str(ds.file_meta.MediaStorageSOPInstanceUID) == str(ds.SOPInstanceUID)
        for kw, vr, text in _strings(ds) + _strings(ds.file_meta):
            if vr in ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE", "UN"):
                for i in ids:
                    assert i.lower() not in text.lower(), (f, kw, i)
            if vr in ("DA", "DT", "LO", "SH", "LT", "ST", "UT", "CS"):
                assert not any(d in text for d in dates), (f, kw, text)
            if vr == "UI":
                assert text not in uids, (f, kw)


@pytest.mark.slow
def test_deid_table_actions_applied(deid_run: dict[str, Any]) -> None:
    key = (deid_run["base"] / "secret" / "map.csv.key").read_bytes().strip()
    d = Deidentifier(key)
    checked = set()
    for src, dst in _pairs(deid_run):
        a, b = _read(src), pydicom.dcmread(dst)
        for e in a:
            row = row_for(int(e.tag))
            if row is None or e.tag in (0x00100010, 0x00100020):  # name/ID get the pseudonym (a Z dummy)
                continue
            act = action_for(row, frozenset())
            checked.add(act)
            if act == "X":
                assert e.tag not in b, (src, row.name)
            elif act == "Z":
                assert e.tag in b and (b[e.tag].value in (None, "", b"") or b[e.tag].VR == "SQ"), (src, row.name)
            elif act == "D" and e.VR != "SQ" and e.value not in (None, ""):
                assert e.tag in b and b[e.tag].value != e.value, (src, row.name)
            elif act == "U" and e.VR == "UI":
                assert b[e.tag].value == d.uid(str(e.value)), (src, row.name)
            elif act == "K":
                assert b[e.tag].value == e.value
    assert {"X", "Z", "U"} <= checked


@pytest.mark.slow
def test_deid_pixels_geometry_and_references(deid_run: dict[str, Any]) -> None:
    from medlens.catalog import Catalog, scan

    geo = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns")
    n_pix = 0
    for src, dst in _pairs(deid_run):
        a, b = _read(src), pydicom.dcmread(dst)
        for kw in geo:
            assert a.get(kw) == b.get(kw), (src, kw)
        if "PixelData" in a:
            assert a.PixelData == b.PixelData
            if "STS_00" in str(src) and n_pix < 40:
                np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
                n_pix += 1
    # Whole series re-read: same voxels and affine.
    import medlens

    for mod in ("PET", "CT"):
        img_a = medlens.read_image(deid_run["in"] / "STS_002" / mod / "image")
        key = (deid_run["base"] / "secret" / "map.csv.key").read_bytes().strip()
        new_series = Deidentifier(key).uid(img_a.meta.series_uid)
        db = deid_run["base"] / "out.duckdb"
        if not db.exists():
            scan(deid_run["out"], db, workers=1)
        with Catalog(db) as cat:
            files = cat.files(new_series)
        img_b = medlens.read_image(files)
        np.testing.assert_array_equal(img_a.array, img_b.array)
        np.testing.assert_allclose(img_a.affine, img_b.affine)
    # RTSTRUCT -> image references resolve in the de-identified collection.
    with Catalog(deid_run["base"] / "out.duckdb") as cat:
        ss = cat.structure_sets()
        sts = ss[(ss["modality"] == "RTSTRUCT") & ss["referenced_series_found"]]
        assert len(sts) == 9  # 3 patients x (PET + CT + MR); pydicom's rtstruct.dcm has no images here
        assert (ss["modality"] == "RTSTRUCT").sum() == 10
        sops = set(cat.query("SELECT sop_instance_uid FROM instances")["sop_instance_uid"])
    # Contour -> image references are remapped with the same function as the images' SOP Instance UIDs.
    # (In the STS data they do not resolve even in the input: the IBSI re-created the images with new
    # UIDs and kept only the series-level reference, which resolves — checked above.)
    key = (deid_run["base"] / "secret" / "map.csv.key").read_bytes().strip()
    d = Deidentifier(key)
    sops_in = {str(_read(f).SOPInstanceUID) for f in deid_run["in"].rglob("*.dcm")}

    def contour_refs(p: Path) -> set[str]:
        rt = pydicom.dcmread(p)
        return {
            str(ci.ReferencedSOPInstanceUID)
            for rc in rt.ROIContourSequence
            for c in rc.ContourSequence
            for ci in c.get("ContourImageSequence", [])
        }

    n = 0
    for src, dst in _pairs(deid_run):
        if "rtstruct" not in str(src) or "STS" not in str(src):
            continue
        refs_in = contour_refs(src)
        assert refs_in and contour_refs(dst) == {d.uid(u) for u in refs_in}
        assert {d.uid(u) for u in refs_in & sops_in} <= sops
        n += 1
    assert n == 9


@pytest.mark.slow
def test_deid_map_and_key_private(deid_run: dict[str, Any]) -> None:
    mp = deid_run["base"] / "secret" / "map.csv"
    assert stat.S_IMODE(mp.stat().st_mode) == 0o600
    assert stat.S_IMODE((deid_run["base"] / "secret" / "map.csv.key").stat().st_mode) == 0o600
    text = mp.read_text()
    assert "STS_001" in text and "patient" in text
    assert not list(deid_run["out"].rglob("*.csv"))


def test_deid_options_dates_patient_chars(sts_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    for pid in ("STS_004", "STS_005"):
        (inp / pid).mkdir(parents=True)
        for f in sorted((sts_dir / pid / "PET" / "image").glob("*.dcm"))[:2]:
            (inp / pid / f.name).symlink_to(f)
    out = tmp_path / "out"
    deidentify(inp, out, retain=["dates", "patient-chars", "device"])
    key = (tmp_path / "out.pseudonyms.csv.key").read_bytes().strip()
    d = Deidentifier(key, options=[Option.DATES])
    import datetime as dt

    for pid in ("STS_004", "STS_005"):
        a = pydicom.dcmread(sorted((inp / pid).glob("*.dcm"))[0])
        b = pydicom.dcmread(
            next(f for f in out.rglob("*.dcm") if pydicom.dcmread(f).SOPInstanceUID == d.uid(str(a.SOPInstanceUID)))
        )
        shift = d.shift_days(pid)
        assert 1 <= shift <= 3650
        for kw in ("StudyDate", "SeriesDate", "AcquisitionDate"):
            da = dt.datetime.strptime(a.get(kw), "%Y%m%d")
            assert (da - dt.datetime.strptime(b.get(kw), "%Y%m%d")).days == shift
        for kw in ("PatientAge", "PatientSex", "PatientWeight", "PatientSize", "Manufacturer", "AcquisitionTime"):
            assert a.get(kw) == b.get(kw), kw
        codes = [c.CodeValue for c in b.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107", "113108", "113109"]
        assert b.LongitudinalTemporalInformationModified == "MODIFIED"
    # The same key gives the same pseudonyms in a second batch (a collection de-identified in parts).
    rows = (tmp_path / "out.pseudonyms.csv").read_text()
    assert d.patient_pseudonym("STS_004") in rows


def test_deid_private_allow_list_and_burned_in(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    inp = tmp_path / "in"
    inp.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    creators = {str(e.value) for e in ds if e.tag.is_private and 0x10 <= (e.tag.element) <= 0xFF}
    keep = sorted(creators)[0]
    ds.BurnedInAnnotation = "YES"
    ds.save_as(inp / "a.dcm")
    from medlens.io.deid import BurnedInAnnotationWarning

    with pytest.warns(BurnedInAnnotationWarning, match="BurnedInAnnotation=YES"):
        rep = deidentify(inp, tmp_path / "out", private_creators=[keep])
    assert len(rep.burned_in) == 1
    b = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    kept = {str(e.value) for e in b if e.tag.is_private and 0x10 <= e.tag.element <= 0xFF}
    assert kept == {keep}


def test_deid_refusals_and_resume(sts_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    for f in sorted((sts_dir / "STS_010" / "PET" / "image").glob("*.dcm"))[:6]:
        (inp / f.name).symlink_to(f)
    with pytest.raises(InputError, match="inside the input"):
        deidentify(inp, inp / "out")
    with pytest.raises(InputError, match="unknown --retain option 'age'"):
        deidentify(inp, tmp_path / "o", retain=["age"])
    with pytest.raises(InputError, match="profile 'x' is not supported"):
        deidentify(inp, tmp_path / "o", profile="x")
    with pytest.raises(InputError, match="must not be inside the output"):
        deidentify(inp, tmp_path / "o", map_path=tmp_path / "o" / "map.csv")
    with pytest.raises(InputError, match="is not a folder"):
        deidentify(tmp_path / "missing", tmp_path / "o")
    out = tmp_path / "out"
    rep = deidentify(inp, out)
    assert rep.n_written == 6
    with pytest.raises(InputError, match=r"already exists.*--overwrite"):
        deidentify(inp, out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        deidentify(inp, tmp_path / "other")
    # Simulate an interruption: two files missing, a half-written temporary left, state "running".
    files = sorted(out.rglob("*.dcm"))
    files[0].unlink()
    files[1].unlink()
    half = files[2].parent / f".{files[2].name}.abc.tmp.dcm"
    half.write_bytes(b"partial")
    state = json.loads((out / ".medlens-deid.json").read_text())
    state["status"] = "running"
    (out / ".medlens-deid.json").write_text(json.dumps(state))
    rep = deidentify(inp, out)
    assert (rep.n_written, rep.n_resumed) == (2, 4)
    assert not half.exists()
    assert sorted(out.rglob("*.dcm")) == files
    rep = deidentify(inp, out, overwrite=True)
    assert rep.n_written == 0 and rep.n_resumed == 6


def test_deid_table_is_complete() -> None:
    exact, wild = load_table()
    assert len(exact) > 600 and len(wild) == 3
    assert action_for(exact[0x00100010], frozenset()) == "Z"  # Patient's Name
    assert action_for(exact[0x00080018], frozenset()) == "U"  # SOP Instance UID
    assert action_for(exact[0x00080020], frozenset({Option.DATES})) == "C"  # Study Date shifted
    assert action_for(exact[0x00101010], frozenset({Option.PATIENT_CHARS})) == "K"  # Patient's Age
    assert row_for(0x60023000) is not None and row_for(0x60023000).basic == "X"  # type: ignore[union-attr]
    with pytest.raises(InputError, match="at least 16 bytes"):
        Deidentifier(b"short")


def _dciodvfy_errors(tool: str, path: Path) -> set[str]:
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errs = set()
    for line in (res.stdout + res.stderr).splitlines():
        if line.startswith("Error"):
            errs.add(re.sub(r"<[^>]*>|= \S+|\d+", "#", line))
    return errs


@pytest.mark.slow
def test_deid_dciodvfy_no_new_errors(deid_run: dict[str, Any]) -> None:
    tool = need_tool("dciodvfy")
    pairs = _pairs(deid_run)
    sample = [p for p in pairs if "STS_001" in str(p[0])][:1]
    sample += [p for p in pairs if "/CT/image" in str(p[0])][:1] + [p for p in pairs if "rtstruct" in str(p[0])][:1]
    sample += [p for p in pairs if "pydicom" in str(p[0])]
    for src, dst in sample:
        new = _dciodvfy_errors(tool, dst) - _dciodvfy_errors(tool, src)
        assert not new, (src.name, new)


def test_deid_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pydicom.data import get_testdata_file

    from medlens.cli import main

    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), inp / "a.dcm")
    log = tmp_path / "audit.jsonl"
    code = main(
        [
            "deid",
            str(inp),
            str(tmp_path / "out"),
            "--retain",
            "dates",
            "--map",
            str(tmp_path / "m.csv"),
            "--audit",
            str(log),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "1 written" in capsys.readouterr().out
    assert main(["deid", str(inp), str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["deid", str(inp), str(inp / "x")]) == 2
    assert main(["audit", "verify", str(log)]) == 0
    assert os.stat(tmp_path / "m.csv").st_mode & 0o077 == 0


def test_deid_descriptors_keep_roi_names(sts_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "RS.dcm").symlink_to(sts_dir / "STS_010" / "PET" / "rtstruct" / "RS.dcm")
    deidentify(inp, tmp_path / "basic")
    deidentify(inp, tmp_path / "desc", retain=["descriptors"])
    basic = pydicom.dcmread(next((tmp_path / "basic").rglob("*.dcm")))
    desc = pydicom.dcmread(next((tmp_path / "desc").rglob("*.dcm")))
    assert basic.StructureSetROISequence[0].ROIName in ("", None)
    assert desc.StructureSetROISequence[0].ROIName == "GTV_Mass_PET"
    assert [c.CodeValue for c in desc.DeidentificationMethodCodeSequence] == ["113100", "113105"]


@pytest.mark.slow
def test_deid_parallel_equals_serial(sts_dir: Path, tmp_path: Path) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "STS_020").symlink_to(sts_dir / "STS_020")
    key = tmp_path / "k.key"
    key.write_text("ab" * 32)
    r1 = deidentify(inp, tmp_path / "serial", key_file=key, workers=1)
    r2 = deidentify(inp, tmp_path / "parallel", key_file=key, workers=2)
    assert r1.n_written == r2.n_written > 64 and r2.n_duplicates == 0
    a = {f.relative_to(tmp_path / "serial"): f.read_bytes() for f in (tmp_path / "serial").rglob("*.dcm")}
    b = {f.relative_to(tmp_path / "parallel"): f.read_bytes() for f in (tmp_path / "parallel").rglob("*.dcm")}
    assert a == b
    assert (tmp_path / "serial.pseudonyms.csv").read_text() == (tmp_path / "parallel.pseudonyms.csv").read_text()
    with pytest.raises(InputError, match="workers must be >= 1"):
        deidentify(inp, tmp_path / "x", workers=0)
