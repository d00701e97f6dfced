"""``medlens mask IMAGE MASKFILE --roi NAME --out OUT`` through medlens.cli.main."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medlens
from medlens.cli import main
from medlens.io.volume_files import read_volume


def test_cli_mask_rtstruct_to_nifti(ct_phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gtv.nii.gz"
    code = main(
        ["mask", str(ct_phantom_dir / "dicom/image"), str(ct_phantom_dir / "dicom/mask"), "--roi", "GTV-1",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "ROI 'GTV-1', 125256 voxels" in capsys.readouterr().out
    written = read_volume(out)
    expected = read_volume(ct_phantom_dir / "nifti/mask/mask.nii.gz")
    assert written.dtype == np.uint8
    np.testing.assert_array_equal(written.array, expected.array)
    np.testing.assert_allclose(written.affine, expected.affine, atol=1e-4)


def test_cli_mask_to_seg_and_back(ct_phantom_dir: Path, tmp_path: Path) -> None:
    seg = tmp_path / "gtv.dcm"
    args = ["mask", str(ct_phantom_dir / "dicom/image"), str(ct_phantom_dir / "nifti/mask/mask.nii.gz")]
    assert main([*args, "--out", str(seg)]) == 0
    img = medlens.read_image(ct_phantom_dir / "dicom/image")
    back = medlens.read_mask(seg, reference=img)
    assert int(back.array.sum()) == 125256
    # --format seg with another suffix
    assert main([*args, "--out", str(tmp_path / "gtv.seg"), "--format", "seg"]) == 0


def test_cli_mask_unknown_roi_exit_2_lists_rois(
    ct_phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["mask", str(ct_phantom_dir / "dicom/image"), str(ct_phantom_dir / "dicom/mask"), "--roi", "Lung",
         "--out", str(tmp_path / "m.nii.gz")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "no ROI named 'Lung'; the structure set has: 'GTV-1'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.nii.gz").exists()


def test_cli_mask_other_image_exit_4(
    ct_phantom_dir: Path, sts_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["mask", str(sts_dir / "STS_001/PET/image"), str(ct_phantom_dir / "dicom/mask"), "--roi", "GTV-1",
         "--out", str(tmp_path / "m.nii.gz")]
    )  # fmt: skip
    assert code == 4
    assert "Frame of Reference" in capsys.readouterr().err


def test_cli_mask_bad_output_name_and_format(
    ct_phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["mask", str(ct_phantom_dir / "dicom/image"), str(ct_phantom_dir / "dicom/mask"), "--roi", "GTV-1"]
    assert main([*base, "--out", str(tmp_path / "m.png")]) == 3  # unknown output suffix: 3 in every command
    assert "cannot tell the output format" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "m.nii.gz"), "--format", "png"]) == 2
    assert "--format must be 'nifti' or 'seg'" in capsys.readouterr().err


def test_cli_mask_seg_needs_dicom_image(
    ct_phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["mask", str(ct_phantom_dir / "nifti/image/phantom.nii.gz"), str(ct_phantom_dir / "nifti/mask/mask.nii.gz"),
         "--out", str(tmp_path / "m.dcm")]
    )  # fmt: skip
    assert code == 2
    assert "must reference DICOM source images" in capsys.readouterr().err
