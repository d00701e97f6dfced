"""Catalog: scanning the real data tree and a small tree of bad inputs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from medlens.catalog import Catalog, scan
from medlens.cli import main
from medlens.core.errors import FormatError, InputError


@pytest.fixture(scope="module")
def shared_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    db = tmp_path_factory.mktemp("cat") / "catalog.duckdb"
    rep = scan(shared_data, db, workers=2)
    return db, rep


@pytest.mark.slow
def test_catalog_shared_data_counts(shared_catalog: tuple[Path, object], sts_dir: Path) -> None:
    import csv

    db, rep = shared_catalog
    assert rep.n_bad == 0 and rep.n_read == rep.n_seen
    cohort = list(csv.DictReader((sts_dir / "cohort.csv").open()))
    ids = sorted(r["patient_id"] for r in cohort)
    with Catalog(db) as cat:
        pats = cat.query("SELECT patient_id FROM patients WHERE patient_id LIKE 'STS_%' ORDER BY 1")
        assert pats["patient_id"].tolist() == ids and len(ids) == 51
        sts = "patient_id LIKE 'STS_%'"
        n = cat.query(f"SELECT modality, count(*) AS n FROM series WHERE {sts} GROUP BY 1").set_index("modality")["n"]
        assert n.to_dict() == {"PT": 51, "CT": 20, "MR": 51, "RTSTRUCT": 122}
        ss = cat.query(f"SELECT * FROM structure_sets WHERE {sts}")
        assert len(ss) == 122 and ss["referenced_series_found"].all()
        # Every RTSTRUCT points at an image series of its own patient, of the modality its folder says.
        joined = cat.query(
            f"""SELECT s.path, s.referenced_modality, r.patient_id = s.patient_id AS same
                FROM structure_sets s JOIN series r ON r.series_uid = s.referenced_series_uid WHERE s.{sts}"""
        )
        assert joined["same"].all()
        for path, mod in zip(joined["path"], joined["referenced_modality"], strict=True):
            assert ("/PET/" in path) == (mod == "PT") and ("/MR_T1/" in path) == (mod == "MR")
        rois = set(ss["roi_names"].map(tuple))
        assert rois == {("GTV_Mass_PET",), ("GTV_Mass_CT",), ("GTV_Mass_MR_T1",)}
        # The IBSI CT phantom: 60 slices and its RTSTRUCT with GTV-1 resolved.
        ph = cat.query("SELECT * FROM series WHERE first_path LIKE '%ct_phantom/dicom/image%'")
        assert len(ph) == 1 and ph["n_instances"][0] == 60 and ph["modality"][0] == "CT"
        phs = cat.query("SELECT * FROM structure_sets WHERE path LIKE '%ct_phantom/dicom/mask%'")
        assert list(phs["roi_names"][0]) == ["GTV-1"] and phs["referenced_series_found"][0]
        pt = cat.series(modality="PT")
        assert len(pt) == 51 and (pt["n_instances"] > 1).all()
        # The non-DICOM files (CSV, NIfTI, README) are listed, not fatal.
        bad = cat.bad_files()
        assert (bad["status"] == "not_dicom").all() and any(p.endswith("cohort.csv") for p in bad["path"])
        assert not cat.query(
            f"SELECT * FROM qa WHERE series_uid IN (SELECT series_uid FROM series WHERE {sts}) AND severity = 'error'"
        ).shape[0]


@pytest.mark.slow
def test_catalog_rescan_reads_nothing(shared_catalog: tuple[Path, object], shared_data: Path) -> None:
    db, first = shared_catalog
    rep = scan(shared_data, db, workers=1)
    assert rep.n_read == 0 and rep.n_skipped == first.n_seen and rep.n_removed == 0  # type: ignore[attr-defined]
    assert rep.totals["series"] == first.totals["series"]  # type: ignore[attr-defined]


def _small_tree(root: Path) -> dict[str, Path]:
    from pydicom.data import get_testdata_file

    root.mkdir()
    files = {}
    for name in ("CT_small.dcm", "MR_small.dcm", "rtstruct.dcm"):
        files[name] = Path(shutil.copy(get_testdata_file(name), root / name))
    (root / "sub").mkdir()
    dd = get_testdata_file("DICOMDIR")
    files["DICOMDIR"] = Path(shutil.copy(dd, root / "sub" / "DICOMDIR"))
    (root / "junk.dcm").write_bytes(b"this is not dicom at all" * 10)
    data = (root / "CT_small.dcm").read_bytes()
    (root / "truncated.dcm").write_bytes(data[:300])
    return files


def test_catalog_bad_inputs_and_incremental(tmp_path: Path) -> None:
    import pydicom

    files = _small_tree(tmp_path / "tree")
    db = tmp_path / "c.duckdb"
    rep = scan(tmp_path / "tree", db, workers=1)
    assert rep.n_seen == 6 and rep.n_read == 6 and rep.n_dicomdir == 1
    assert rep.n_not_dicom + rep.n_bad == 2
    with Catalog(db) as cat:
        bad = cat.bad_files().set_index("path")
        assert str(tmp_path / "tree" / "junk.dcm") in bad.index
        assert str(tmp_path / "tree" / "truncated.dcm") in bad.index
        assert "DICOMDIR" not in " ".join(cat.query("SELECT path FROM instances")["path"])
        # rtstruct.dcm references a series that is not in the tree: flagged.
        qa = cat.qa()
        unresolved = qa[qa["code"] == "unresolved_reference"]
        assert len(unresolved) == 1 and "not in the catalog" in unresolved["message"].iloc[0]
        rt = cat.series(modality="RTSTRUCT")
        assert len(rt) == 1 and not rt["has_pixels"][0]
        assert cat.series(modality="CT")["has_pixels"][0]
    # Change one file, delete another, add one: only those are read.
    ds = pydicom.dcmread(files["MR_small.dcm"])
    ds.SeriesDescription = "changed"
    ds.save_as(files["MR_small.dcm"])
    os.utime(files["MR_small.dcm"], ns=(1, 1))
    files["CT_small.dcm"].unlink()
    (tmp_path / "tree" / "new.txt").write_text("hello")
    rep = scan(tmp_path / "tree", db, workers=1)
    assert (rep.n_read, rep.n_removed, rep.n_skipped) == (2, 1, 4)
    with Catalog(db) as cat:
        assert cat.series(modality="CT").empty
        assert cat.series(modality="MR")["series_description"][0] == "changed"
    rep = scan(tmp_path / "tree", db, workers=1)
    assert rep.n_read == 0


def test_catalog_geometry_qa_missing_slice(tmp_path: Path, ct_phantom_dir: Path) -> None:
    src = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))
    tree = tmp_path / "tree"
    tree.mkdir()
    for i, f in enumerate(src[:10]):
        if i != 5:
            shutil.copy(f, tree / f.name)
    db = tmp_path / "c.duckdb"
    scan(tree, db, workers=1)
    with Catalog(db) as cat:
        qa = cat.qa()
    assert qa["code"].tolist() == ["missing_slices"]


def test_catalog_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a folder"):
        scan(tmp_path / "nope", tmp_path / "c.duckdb")
    (tmp_path / "t").mkdir()
    with pytest.raises(InputError, match="workers must be >= 1"):
        scan(tmp_path / "t", tmp_path / "c.duckdb", workers=0)
    with pytest.raises(InputError, match="does not exist"):
        Catalog(tmp_path / "missing.duckdb")
    (tmp_path / "junk.duckdb").write_bytes(b"not a database at all" * 100)
    with pytest.raises(InputError, match=r"not a DuckDB catalog|cannot be opened"):
        scan(tmp_path / "t", tmp_path / "junk.duckdb", workers=1)
    (tmp_path / "x.duckdb").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="not a MedLens catalog"):
        Catalog(tmp_path / "x.duckdb")


def test_catalog_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _small_tree(tmp_path / "tree")
    db = tmp_path / "c.duckdb"
    log = tmp_path / "audit.jsonl"
    assert (
        main(["catalog", "scan", str(tmp_path / "tree"), "--db", str(db), "--workers", "1", "--audit", str(log)]) == 0
    )
    assert "read 6" in capsys.readouterr().out
    assert main(["catalog", "ls", "--db", str(db), "--modality", "MR", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["modality"] == "MR"
    assert main(["catalog", "ls", "--db", str(db)]) == 0
    assert "RTSTRUCT" in capsys.readouterr().out
    assert main(["audit", "verify", str(log)]) == 0
    assert main(["catalog", "scan", str(tmp_path / "nope"), "--db", str(db)]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err


def test_catalog_image_without_pixels_flagged(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    tree = tmp_path / "tree"
    tree.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(tree / "nopix.dcm")
    db = tmp_path / "c.duckdb"
    rep = scan(tree, db, workers=1)
    assert rep.n_bad == 0
    with Catalog(db) as cat:
        qa = cat.qa()
        assert qa["code"].tolist() == ["no_pixel_data"] and "nopix.dcm" in qa["message"][0]
        assert not cat.series(modality="CT")["is_image"][0]
