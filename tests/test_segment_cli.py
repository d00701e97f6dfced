"""The segmentation commands, called through medlens.cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest

import medlens
from medlens.cli import main
from medlens.core.image import Image, Units


@pytest.fixture()
def blob_file(tmp_path):
    a = np.zeros((12, 20, 20), np.float32)
    a[3:8, 5:12, 5:12] = 100.0
    img = Image.from_array(a, spacing=(2.0, 1.0, 1.0), modality="CT", units=Units.HU)
    p = tmp_path / "ct.nii.gz"
    medlens.write_image(img, p)
    return p


def test_segment_cli_threshold_then_evaluate(blob_file, tmp_path, capsys):
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(blob_file), "--method", "threshold", "--lower", "50", "--out", str(out)]) == 0
    assert "245 voxels" in capsys.readouterr().out
    out2 = tmp_path / "rg.nii.gz"
    rc = main(
        [
            "segment",
            str(blob_file),
            "--method",
            "region-grow",
            "--seed-index",
            "5,8,8",
            "--tolerance",
            "10",
            "--out",
            str(out2),
        ]
    )
    assert rc == 0
    capsys.readouterr()
    assert main(["evaluate-seg", str(out), str(out2), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dice"] == pytest.approx(1.0) and res["hd95_mm"] == 0.0


def test_segment_cli_bad_seed_and_empty_seg(blob_file, tmp_path, capsys):
    out = tmp_path / "m.nii.gz"
    rc = main(
        [
            "segment",
            str(blob_file),
            "--method",
            "region-grow",
            "--seed-index",
            "50,8,8",
            "--tolerance",
            "10",
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    assert "outside the image" in capsys.readouterr().err
    assert not out.exists()
    seg = tmp_path / "m.dcm"
    rc = main(["segment", str(blob_file), "--method", "threshold", "--lower", "1000", "--out", str(seg)])
    assert rc == 6
    assert "empty" in capsys.readouterr().err
    assert not seg.exists()


def test_segment_cli_cohort_table_baselines(sts_dir, tmp_path, capsys):
    # a small cohort CSV beside the data (paths relative to it are resolved from the CSV's folder)
    rows = (sts_dir / "cohort.csv").read_text().splitlines()
    csv = tmp_path / "cohort.csv"
    header, body = rows[0], rows[1:5]
    csv.write_text(
        "\n".join(
            [header]
            + [
                ",".join([f.split(",")[0], f.split(",")[1]] + [str(sts_dir / p) for p in f.split(",")[2:]])
                for f in body
            ]
        )
        + "\n"
    )
    out = tmp_path / "rows.json"
    assert main(["evaluate-seg-cohort", str(csv), "--no-unet", "--folds", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "suv40 Dice" in text and "rg_suv2.5 Dice" in text and "all" in text
    rows_out = json.loads(out.read_text())
    assert {r["fold"] for r in rows_out} == {0, 1}
    assert len({r["patient_id"] for r in rows_out}) == 4


def test_segment_cli_unet_on_real_pet(sts_dir, tmp_path, capsys):
    pet = sts_dir / "STS_050" / "PET" / "image"
    out = tmp_path / "unet.nii.gz"
    assert main(["segment", str(pet), "--method", "unet", "--out", str(out)]) == 0
    assert "unet:" in capsys.readouterr().out
    m = medlens.read_image(out)
    assert m.array.max() == 1 and m.array.sum() > 50


def test_segment_cli_writes_dicom_seg(sts_dir, tmp_path, capsys):
    pet_dir = sts_dir / "STS_050" / "PET" / "image"
    seg = tmp_path / "lesion.dcm"
    nii = tmp_path / "lesion.nii.gz"
    args = ["--method", "suv-threshold", "--seed-index", "28,15,16", "--search-radius-mm", "40"]
    assert main(["segment", str(pet_dir), *args, "--out", str(seg)]) == 0
    assert main(["segment", str(pet_dir), *args, "--out", str(nii)]) == 0
    pet = medlens.read_image(pet_dir)
    back = medlens.read_mask(seg, reference=pet)
    ref = medlens.read_image(nii)
    assert back.array.sum() > 0
    assert np.array_equal(back.array, ref.array > 0)
