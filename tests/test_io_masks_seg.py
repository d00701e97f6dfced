"""DICOM SEG writing/reading (highdicom), dciodvfy validation, label images and read_mask dispatch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import medlens
from conftest import need_tool
from medlens import GeometryError, Image, InputError
from medlens.io.masks import describe_mask_source, read_mask
from medlens.io.seg import list_segments, read_seg, write_seg
from medlens.io.volume_files import read_volume, write_volume


@pytest.fixture(scope="module")
def phantom_ct(ct_phantom_dir: Path) -> Image:
    return medlens.read_image(ct_phantom_dir / "dicom/image")


@pytest.fixture(scope="module")
def gtv(ct_phantom_dir: Path, phantom_ct: Image) -> Image:
    lab = read_volume(ct_phantom_dir / "nifti/mask/mask.nii.gz")
    return phantom_ct.with_array(lab.array != 0)


@pytest.fixture(scope="module")
def seg_file(ct_phantom_dir: Path, gtv: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "gtv_seg.dcm"
    return write_seg(gtv, ct_phantom_dir / "dicom/image", out, segment_label="GTV-1", algorithm_type="AUTOMATIC")


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = need_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def test_seg_round_trip_equals_mask(seg_file: Path, phantom_ct: Image, gtv: Image) -> None:
    back = read_seg(seg_file, reference=phantom_ct, roi="GTV-1")
    assert back.same_grid(phantom_ct)
    assert np.array_equal(back.array, gtv.array)
    assert back.meta.extra["mask_source"] == "SEG" and back.meta.units == "mask"
    # The public dispatcher finds it too, and without roi= for a single segment.
    assert np.array_equal(medlens.read_mask(seg_file, reference=phantom_ct).array, gtv.array)


def test_seg_passes_dciodvfy_and_references_source(seg_file: Path, phantom_ct: Image) -> None:
    import pydicom

    assert _dciodvfy_errors(seg_file) == []
    ds = pydicom.dcmread(seg_file)
    assert ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == phantom_ct.meta.frame_of_reference_uid
    ref_series = ds.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == phantom_ct.meta.series_uid
    referenced = {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence}
    assert referenced == set(phantom_ct.meta.sop_instance_uids)


def test_seg_multiple_segments_manual(ct_phantom_dir: Path, phantom_ct: Image, gtv: Image, tmp_path: Path) -> None:
    box = np.zeros(phantom_ct.shape, dtype=bool)
    box[10:12, 5:9, 100:110] = True
    out = write_seg(
        {"GTV-1": gtv, "box": phantom_ct.with_array(box)},
        ct_phantom_dir / "dicom/image",
        tmp_path / "two.dcm",
        algorithm_type="MANUAL",
    )
    assert _dciodvfy_errors(out) == []
    assert list_segments(out) == ["GTV-1", "box"]
    assert np.array_equal(read_seg(out, reference=phantom_ct, roi="box").array, box)
    assert np.array_equal(read_seg(out, reference=phantom_ct, roi="GTV-1").array, gtv.array)
    with pytest.raises(InputError, match="several segments, choose one with roi=LABEL: 'GTV-1', 'box'"):
        read_seg(out, reference=phantom_ct)


def test_seg_unknown_label_lists_available(seg_file: Path, phantom_ct: Image) -> None:
    with pytest.raises(InputError, match=r"no segment labelled 'liver'; the SEG has: 'GTV-1'"):
        read_mask(seg_file, reference=phantom_ct, roi="liver")


def test_seg_for_another_image_is_geometry_error(seg_file: Path, sts_dir: Path, phantom_ct: Image) -> None:
    pet = medlens.read_image(sts_dir / "STS_001/PET/image")
    with pytest.raises(GeometryError, match="Frame of Reference") as info:
        read_seg(seg_file, reference=pet, roi="GTV-1")
    assert pet.meta.frame_of_reference_uid in str(info.value)
    assert phantom_ct.meta.frame_of_reference_uid in str(info.value)


def test_seg_on_shifted_grid_is_geometry_error(seg_file: Path, phantom_ct: Image) -> None:
    aff = np.array(phantom_ct.affine)
    aff[:3, 3] += aff[:3, 1] * 0.5  # half a row: same frame of reference, other grid
    moved = Image(phantom_ct.array, aff, phantom_ct.meta)
    with pytest.raises(GeometryError, match="is not on a slice of the image"):
        read_seg(seg_file, reference=moved, roi="GTV-1")
    cropped = Image(phantom_ct.array[:, :100], phantom_ct.affine, phantom_ct.meta)
    with pytest.raises(GeometryError, match="SEG frames are 201x204 pixels but the image slices are 100x204"):
        read_seg(seg_file, reference=cropped, roi="GTV-1")


def test_write_seg_bad_input(ct_phantom_dir: Path, phantom_ct: Image, gtv: Image, tmp_path: Path) -> None:
    src = ct_phantom_dir / "dicom/image"
    out = tmp_path / "bad.dcm"
    with pytest.raises(InputError, match="empty; an empty DICOM SEG is never written"):
        write_seg(phantom_ct.with_array(np.zeros(phantom_ct.shape, bool)), src, out, segment_label="e")
    with pytest.raises(InputError, match="needs segment_label"):
        write_seg(gtv, src, out)
    with pytest.raises(InputError, match="must be a boolean Image"):
        write_seg(phantom_ct, src, out, segment_label="x")
    with pytest.raises(InputError, match="algorithm_type must be"):
        write_seg(gtv, src, out, segment_label="x", algorithm_type="GUESSED")
    other = Image(gtv.array[:30], gtv.affine, gtv.meta)
    with pytest.raises(GeometryError, match="not on the grid of the source series"):
        write_seg(other, src, out, segment_label="x")
    with pytest.raises(GeometryError, match=r"the mask is in Frame of Reference 1\.2\.3 but the source series"):
        write_seg(gtv.with_meta(frame_of_reference_uid="1.2.3"), src, out, segment_label="x")
    assert list(tmp_path.iterdir()) == []


# ---- label images and dispatch --------------------------------------------------------------------------------------


def test_label_image_mask_and_label_selection(phantom_ct: Image, tmp_path: Path) -> None:
    lab = np.zeros(phantom_ct.shape, dtype=np.uint8)
    lab[5, 10:12, 10:13] = 1
    lab[6, 20, 20] = 3
    p = write_volume(phantom_ct.with_array(lab), tmp_path / "labels.nii.gz")
    assert read_mask(p, reference=phantom_ct).array.sum() == 7
    three = read_mask(p, reference=phantom_ct, label=3)
    assert three.array.sum() == 1 and three.array[6, 20, 20]
    assert read_mask(p, reference=phantom_ct, roi="1").array.sum() == 6
    assert describe_mask_source(p) == ("LABEL", ["1", "3"])
    with pytest.raises(InputError, match=r"has no label 2; labels present: \[1, 3\]"):
        read_mask(p, reference=phantom_ct, label=2)
    with pytest.raises(InputError, match=r"ROI names \('GTV'\) apply to RTSTRUCT/SEG"):
        read_mask(p, reference=phantom_ct, roi="GTV")


def test_label_image_on_other_grid_explains_both(ct_phantom_dir: Path, sts_dir: Path) -> None:
    pet = medlens.read_image(sts_dir / "STS_001/PET/image")
    with pytest.raises(GeometryError, match="different grid") as info:
        read_mask(ct_phantom_dir / "nifti/mask/mask.nii.gz", reference=pet)
    msg = str(info.value)
    assert "mask.nii.gz: the label image is on a different grid" in msg
    assert "shape (59, 43, 41) vs (60, 201, 204)" in msg and "spacing (" in msg and "origin (" in msg


def test_read_mask_dispatch_errors(tmp_path: Path, phantom_ct: Image, ct_phantom_dir: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        read_mask(tmp_path / "absent", reference=phantom_ct)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="no RTSTRUCT or DICOM SEG found"):
        read_mask(tmp_path, reference=phantom_ct)
    with pytest.raises(medlens.FormatError, match="not a DICOM RTSTRUCT/SEG and not a label image"):
        read_mask(tmp_path / "notes.txt", reference=phantom_ct)
    with pytest.raises(InputError, match="label= applies to label images only"):
        read_mask(ct_phantom_dir / "dicom/mask", reference=phantom_ct, label=1)
    with pytest.raises(InputError, match="one mask file or folder"):
        read_mask([tmp_path, tmp_path], reference=phantom_ct)


# ---- a SEG written by another tool (pydicom-data "liver.dcm": BINARY, 3 frames of 512 x 512) -----------------------


def _liver_seg() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("liver.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    return Path(str(path))


def test_third_party_seg_frames_placed_by_position() -> None:
    import pydicom

    path = _liver_seg()
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array  # frames at z = -128.69, -127.69, -126.69 mm
    # A reference grid of 6 axial slices, 1 mm apart, starting 2 slices below the SEG's first frame.
    ref = Image.from_array(
        np.zeros((6, 512, 512), dtype=np.int16),
        spacing=(1.0, 0.810547, 0.810547),
        origin=(-235.2, -226.8, -130.69),
    ).with_meta(frame_of_reference_uid=str(ds.FrameOfReferenceUID))
    assert list_segments(path) == ["Liver"]
    m = read_mask(path, reference=ref, roi="Liver")
    assert int(m.array.sum()) == int(frames.sum()) == 107098
    for k in range(3):
        np.testing.assert_array_equal(m.array[k + 2], frames[k] != 0)
    assert not m.array[[0, 1, 5]].any()
    with pytest.raises(GeometryError, match="is not on a slice of the image"):
        read_seg(path, reference=Image(ref.array[:3], ref.affine, ref.meta))


def test_write_seg_multiframe_source_is_clear_error(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    src = get_testdata_file("emri_small.dcm")  # enhanced MR, 10 frames, ships with pydicom
    mask = Image.from_array(np.ones((10, 64, 64), dtype=bool))
    with pytest.raises(InputError, match="multi-frame source images are not supported for SEG writing"):
        write_seg(mask, [src], tmp_path / "x.dcm", segment_label="x")


def test_seg_and_rtstruct_from_a_source_with_an_overlong_study_id_stay_valid(sts_dir: Path, tmp_path: Path) -> None:
    """The STS PET headers carry an 18-character StudyID (SH allows 16): derived objects get it cut, with a warning."""
    import pydicom

    from medlens.core.errors import MedlensWarning
    from medlens.io.rtstruct import write_rtstruct

    src = sts_dir / "STS_001" / "PET" / "image"
    first = pydicom.dcmread(next(p for p in sorted(src.iterdir()) if p.is_file()), stop_before_pixels=True)
    with pytest.warns(UserWarning):
        original = str(first.StudyID)
    assert len(original) > 16  # the premise: the source value is invalid
    pet = medlens.read_image(src)
    gtv = medlens.read_mask(sts_dir / "STS_001" / "PET" / "rtstruct", reference=pet)
    files = sorted(p for p in src.iterdir() if p.is_file())
    for name, write in (
        ("seg.dcm", lambda out: write_seg(gtv, src, out, segment_label="GTV")),
        ("rs.dcm", lambda out: write_rtstruct({"GTV": gtv}, files, out)),
    ):
        with pytest.warns(MedlensWarning, match="StudyID 'IBSI_1_STS_001_PET' has 18 characters"):
            out = write(tmp_path / name)
        assert _dciodvfy_errors(out) == [], name
        ds = pydicom.dcmread(out, stop_before_pixels=True)
        assert ds.StudyID == original[:16] and ds.StudyInstanceUID == first.StudyInstanceUID
