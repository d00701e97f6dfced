"""BIDS-style export from a catalog: naming, sidecars, participants.tsv, masks, refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import medlens
from medlens.catalog import scan
from medlens.catalog.bids import export_bids
from medlens.cli import main
from medlens.core.errors import InputError


@pytest.fixture(scope="module")
def bids_catalog(sts_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bids")
    src = base / "src"
    src.mkdir()
    for pid in ("STS_001", "STS_030"):  # STS_030 has PET only
        (src / pid).symlink_to(sts_dir / pid)
    db = base / "c.duckdb"
    scan(src, db, workers=1)
    return db


def test_bids_export_layout_and_content(bids_catalog: Path, sts_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bids"
    rep = export_bids(bids_catalog, out)  # STS_001: CT, PET, MR; STS_030: PET, MR
    assert (rep.n_participants, rep.n_images, rep.n_masks) == (2, 5, 5) and not rep.skipped
    ct = out / "sub-STS001" / "ses-01" / "anat" / "sub-STS001_ses-01_ct.nii.gz"
    pet = out / "sub-STS001" / "ses-01" / "pet" / "sub-STS001_ses-01_pet.nii.gz"
    assert ct.is_file() and pet.is_file()
    assert (out / "sub-STS030" / "ses-01" / "pet" / "sub-STS030_ses-01_pet.nii.gz").is_file()
    assert not (out / "sub-STS030" / "ses-01" / "anat" / "sub-STS030_ses-01_ct.nii.gz").exists()  # no CT
    # The NIfTI holds the same voxels and geometry as the DICOM series.
    for nii, dcm in ((ct, sts_dir / "STS_001" / "CT" / "image"), (pet, sts_dir / "STS_001" / "PET" / "image")):
        a, b = medlens.read_image(dcm), medlens.read_image(nii)
        np.testing.assert_allclose(b.array, a.array, rtol=1e-6)
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-4)
    side = json.loads(pet.with_name("sub-STS001_ses-01_pet.json").read_text())
    assert side["Modality"] == "PT" and side["Units"] == "SUVbw"
    assert side["TracerRadionuclide"] == "18F" and side["InjectedRadioactivityUnits"] == "MBq"
    assert side["InjectedRadioactivity"] == pytest.approx(388.777472)
    assert side["FrameDuration"] == [240.0] and side["TimeZero"] == "11:20:11"
    cside = json.loads(ct.with_name("sub-STS001_ses-01_ct.json").read_text())
    assert cside["Units"] == "HU" and cside["ConvolutionKernel"] == "SOFT"
    assert cside["VoxelSpacingMM"] == pytest.approx(list(medlens.read_image(ct).spacing[::-1]))
    rows = list(csv.DictReader((out / "participants.tsv").open(), delimiter="\t"))
    assert rows[0] == {"participant_id": "sub-STS001", "sex": "M", "age": "59", "weight": "71", "height": "1.63"}
    assert [r["participant_id"] for r in rows] == ["sub-STS001", "sub-STS030"]
    mask = out / "derivatives/masks/sub-STS001/ses-01/pet/sub-STS001_ses-01_space-pet_desc-GTVMassPET_mask.nii.gz"
    m = medlens.read_image(mask)
    assert m.shape == medlens.read_image(pet).shape and m.array.sum() > 0
    meta = json.loads(mask.with_name(mask.name.replace(".nii.gz", ".json")).read_text())
    assert meta["ROIName"] == "GTV_Mass_PET" and meta["RawSources"] == [str(pet.relative_to(out))]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] and desc["DatasetType"] == "raw"


def test_bids_refusals_and_cli(bids_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(InputError, match="already exists and is not empty"):
        export_bids(bids_catalog, out)
    with pytest.raises(InputError, match="does not exist"):
        export_bids(tmp_path / "missing.duckdb", tmp_path / "o2")
    assert main(["export-bids", str(bids_catalog), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export-bids", str(bids_catalog), str(out), "--overwrite"]) == 0
    assert "5 images" in capsys.readouterr().out
