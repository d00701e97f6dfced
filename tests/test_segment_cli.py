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
