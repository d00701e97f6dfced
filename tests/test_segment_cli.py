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
    from medlens.segment.classic import EmptyResultWarning

    with pytest.warns(EmptyResultWarning, match="empty"):
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


def _small_cohort(sts_dir, tmp_path, n):
    rows = (sts_dir / "cohort.csv").read_text().splitlines()
    out = [rows[0]]
    for line in rows[1 : n + 1]:
        f = line.split(",")
        out.append(",".join(f[:2] + [str(sts_dir / p) for p in f[2:]]))
    csv = tmp_path / "small.csv"
    csv.write_text("\n".join(out) + "\n")
    return csv


@pytest.mark.slow
def test_segment_cli_train_seg_3d_then_segment_with_it(sts_dir, tmp_path, capsys):
    csv = _small_cohort(sts_dir, tmp_path, 2)
    model = tmp_path / "model3d"
    assert main(["train-seg", str(csv), "--out", str(model), "--dims", "3", "--epochs", "1"]) == 0
    assert {p.name for p in model.iterdir()} >= {"model.pt", "model.json", "model.onnx"}
    capsys.readouterr()
    pet = sts_dir / "STS_003" / "PET" / "image"
    out_t, out_o = tmp_path / "t.nii.gz", tmp_path / "o.nii.gz"
    assert main(["segment", str(pet), "--method", "unet", "--model", str(model), "--out", str(out_t)]) == 0
    rc = main(
        ["segment", str(pet), "--method", "unet", "--model", str(model), "--backend", "onnx", "--out", str(out_o)]
    )
    assert rc == 0
    a, b = medlens.read_image(out_t), medlens.read_image(out_o)
    assert a.shape == medlens.read_image(pet).shape
    from medlens.segment import metrics

    # ONNX Runtime and PyTorch give the same mask (Dice of two empty masks is 1 by definition)
    assert metrics.dice(a.with_array(a.array > 0), b.with_array(b.array > 0)) >= 0.99


def test_segment_cli_evaluate_rtstruct_against_itself(sts_dir, capsys):
    pet = sts_dir / "STS_002" / "PET" / "image"
    rs = sts_dir / "STS_002" / "PET" / "rtstruct"
    assert main(["evaluate-seg", str(rs), str(rs), "--reference", str(pet), "--roi", "GTV_Mass_PET", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dice"] == 1.0 and res["volume_diff_mm3"] == 0.0 and res["volume_truth_mm3"] > 0


def test_segment_cli_lungs_label_image(tmp_path, capsys):
    z, y, x = np.mgrid[0:20, 0:60, 0:80]
    ct = np.full(z.shape, -1000.0, np.float32)
    ct[((y - 30) / 27.0) ** 2 + ((x - 40) / 38.0) ** 2 <= 1] = 40.0
    for cx in (22, 58):
        ct[((z - 10) / 8.0) ** 2 + ((y - 30) / 15.0) ** 2 + ((x - cx) / 10.0) ** 2 <= 1] = -850.0
    src = tmp_path / "chest.nii.gz"
    medlens.write_image(Image.from_array(ct, spacing=(3.0, 1.5, 1.5), modality="CT", units=Units.HU), src)
    out = tmp_path / "lungs.nii.gz"
    assert main(["segment", str(src), "--method", "lungs", "--out", str(out)]) == 0
    lab = medlens.read_image(out).array
    assert set(np.unique(lab)) == {0, 1, 2}
    assert (lab[:, :, :40] == 1).sum() > 0 and (lab[:, :, :40] == 2).sum() == 0  # right lung at lower LPS x
