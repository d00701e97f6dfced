"""Bad DICOM input: every path gives a clear message (synthetic series written to tmp_path).

The synthetic series are modified copies of the IBSI CT phantom slices; the inputs are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import (
    FormatError,
    GeometryError,
    GeometryWarning,
    InputError,
    MedlensWarning,
    MissingDependencyError,
    SkippedInputWarning,
)
from medlens.io.dicom_series import list_series, read_dicom_series

N = 10


def _phantom_slices(ct_phantom_dir: Path, n: int = N):
    import pydicom

    files = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return dss[20 : 20 + n]


def _write(
    tmp: Path, dss, edit: Callable[[int, object], None] | None = None, *, skip: tuple[int, ...] = ()
) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ds in enumerate(dss):
        if i in skip:
            continue
        if edit is not None:
            edit(i, ds)
        p = tmp / f"slice_{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


@pytest.fixture
def good_series(ct_phantom_dir, tmp_path):
    folder = tmp_path / "good"
    _write(folder, _phantom_slices(ct_phantom_dir))
    return folder


def test_junk_and_truncated_files_are_skipped_with_warning_naming_them(good_series, ct_phantom_dir):
    (good_series / "notes.txt").write_text("not a DICOM file\n")
    src = sorted(good_series.glob("*.dcm"))[0].read_bytes()
    (good_series / "cut_header.dcm").write_bytes(src[:300])
    (good_series / "cut_pixels.dcm").write_bytes(src[: len(src) - 5000])
    with pytest.warns(SkippedInputWarning) as rec:
        img = read_dicom_series(good_series)
    msg = " ".join(str(w.message) for w in rec)
    assert "notes.txt" in msg and "not a DICOM file" in msg
    assert "cut_header.dcm" in msg and "cut_pixels.dcm" in msg and "truncated" in msg
    assert img.shape[0] == N


def test_empty_folder_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no files"):
        read_dicom_series(tmp_path / "empty")


def test_only_junk_is_a_format_error(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01" * 100)
    with (
        pytest.raises(FormatError, match=r"no usable DICOM file among 2 file\(s\).*a\.txt"),
        pytest.warns(SkippedInputWarning),
    ):
        read_dicom_series(tmp_path)


def test_missing_slice_errors_and_lists_where(ct_phantom_dir, tmp_path):
    folder = tmp_path / "gap"
    _write(folder, _phantom_slices(ct_phantom_dir), skip=(5,))
    with pytest.raises(GeometryError) as exc:
        read_dicom_series(folder)
    msg = str(exc.value)
    assert "missing_slices" in msg and "1 slice(s) missing" in msg
    assert "slice_004.dcm" in msg and "slice_006.dcm" in msg and "on_irregular='resample'" in msg


def test_missing_slice_resampled_with_warning(ct_phantom_dir, tmp_path):
    folder = tmp_path / "gap"
    dss = _phantom_slices(ct_phantom_dir)
    _write(folder, dss, skip=(5,))
    with pytest.warns(GeometryWarning, match="missing_slices"):
        img = read_dicom_series(folder, on_irregular="resample")
    assert img.shape[0] == N
    assert img.spacing[0] == pytest.approx(3.0, abs=1e-3)
    s4 = dss[4].pixel_array.astype(np.float32) - 1000
    s6 = dss[6].pixel_array.astype(np.float32) - 1000
    np.testing.assert_allclose(img.array[5], 0.5 * (s4 + s6), atol=1e-3)
    np.testing.assert_array_equal(img.array[4], s4)
    assert "resample_irregular_slices" in img.meta.history


def test_mixed_series_are_listed_and_selectable(ct_phantom_dir, tmp_path):
    folder = tmp_path / "mixed"

    def other_series(i, ds):
        if i >= 6:
            ds.SeriesInstanceUID = "1.2.3.4.5.999"
            ds.SeriesDescription = "second series"

    _write(folder, _phantom_slices(ct_phantom_dir), other_series)
    with pytest.raises(InputError) as exc:
        read_dicom_series(folder)
    msg = str(exc.value)
    assert "2 image series found" in msg and "1.2.3.4.5.999" in msg and "'second series'" in msg
    assert "4 file(s)" in msg and "6 file(s)" in msg and "series_uid" in msg
    img = read_dicom_series(folder, series_uid="1.2.3.4.5.999")
    assert img.shape[0] == 4 and img.meta.series_uid == "1.2.3.4.5.999"
    with pytest.raises(InputError, match=r"no series with SeriesInstanceUID 9\.9\.9"):
        read_dicom_series(folder, series_uid="9.9.9")


def test_duplicate_positions_fail_in_both_modes(ct_phantom_dir, tmp_path):
    folder = tmp_path / "dup"
    dss = _phantom_slices(ct_phantom_dir)
    _write(folder, dss)
    extra = dss[3].copy()
    extra.SOPInstanceUID = "1.2.3.4.5.6.7.8"
    extra.EchoNumbers = 2
    extra.save_as(folder / "extra.dcm", enforce_file_format=True)
    for mode in ("error", "resample"):
        with pytest.raises(GeometryError) as exc:
            read_dicom_series(folder, on_irregular=mode)
        msg = str(exc.value)
        assert "duplicate_position" in msg and "extra.dcm" in msg and "slice_003.dcm" in msg
        assert "resampling cannot repair duplicate_position" in msg
        assert "the files differ in EchoNumbers (2, absent)" in msg


def test_gantry_tilt_errors_then_resamples_onto_orthogonal_grid(ct_phantom_dir, tmp_path):
    folder = tmp_path / "tilt"
    dss = _phantom_slices(ct_phantom_dir)
    dx = float(dss[0].PixelSpacing[1])

    def tilt(i, ds):
        p = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [p[0] + i * dx, p[1], p[2]]  # one column per slice: ~18 degrees

    originals = [d.pixel_array.astype(np.float32) - 1000 for d in dss]
    _write(folder, dss, tilt)
    with pytest.raises(GeometryError, match="gantry_tilt"):
        read_dicom_series(folder)
    with pytest.warns(GeometryWarning, match="gantry_tilt"):
        img = read_dicom_series(folder, on_irregular="resample")
    d = img.direction
    assert abs(d[:, 0] @ d[:, 2]) < 1e-9 and np.allclose(d[:, 0], [0, 0, 1])
    k = 6
    # slice k sits k columns to the +x side: on the orthogonal grid its column c holds source column c - k
    np.testing.assert_allclose(img.array[k][:, k:], originals[k][:, :-k], atol=1e-3)


def test_nonuniform_spacing_and_orientation_findings(ct_phantom_dir, tmp_path):
    folder = tmp_path / "nonuni"

    def move(i, ds):
        if i == 4:
            p = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [p[0], p[1], p[2] + 1.0]
        if i == 7:
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.996, 0.0872]

    _write(folder, _phantom_slices(ct_phantom_dir), move)
    with pytest.raises(GeometryError) as exc:
        read_dicom_series(folder, on_irregular="resample")
    msg = str(exc.value)
    assert "nonuniform_spacing" in msg and "inconsistent_orientation" in msg and "slice_007.dcm" in msg
    qa = next(s for s in list_series(folder) if s.is_image).qa
    assert {f["code"] for f in qa} >= {"nonuniform_spacing", "inconsistent_orientation"}


def test_only_rtstruct_is_not_an_image(ct_phantom_dir):
    with pytest.raises(FormatError, match=r"no image series found.*RTSTRUCT"):
        read_dicom_series(ct_phantom_dir / "dicom" / "mask")


def test_selecting_a_non_image_series_says_to_use_read_mask(ct_phantom_dir):
    rs = next(s for s in list_series(ct_phantom_dir / "dicom") if s.modality == "RTSTRUCT")
    with pytest.raises(InputError, match=r"RTSTRUCT object, not an image.*read_mask"):
        read_dicom_series(ct_phantom_dir / "dicom", series_uid=rs.series_uid)


def test_missing_codec_names_the_package(sts_dir, monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    f = sorted((sts_dir / "STS_001" / "CT" / "image").glob("*.dcm"))[0]
    with pytest.raises(MissingDependencyError, match=r"JPEG-LS.*pip install pyjpegls"):
        read_dicom_series(f)


def test_single_slice_is_2d_with_its_plane(ct_phantom_dir):
    f = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[0]
    img = read_dicom_series(f)
    assert img.ndim == 2 and img.shape == (201, 204)
    assert img.spacing == pytest.approx((0.977, 0.977), abs=1e-4)
    assert img.affine[2, 2] == pytest.approx(3.0)  # normal x slice thickness


def test_bad_on_irregular_value():
    with pytest.raises(InputError, match="on_irregular must be"):
        read_dicom_series("x", on_irregular="ignore")  # type: ignore[arg-type]


def test_empty_file_list():
    with pytest.raises(InputError, match="list of DICOM files is empty"):
        read_dicom_series([])


def _bqml_copy(sts_dir: Path, tmp: Path, edit=None):
    """Write an STS PET series back in BQML (the IBSI copy stores SUVbw, Units GML)."""
    import datetime as dt

    import pydicom

    files = sorted((sts_dir / "STS_001" / "PET" / "image").glob("*.dcm"))
    dss = [pydicom.dcmread(f) for f in files]
    first = dss[0]
    info = first.RadiopharmaceuticalInformationSequence[0]
    t_inj = dt.datetime.strptime(str(info.RadiopharmaceuticalStartTime).split(".")[0], "%H%M%S")
    t_ser = dt.datetime.strptime(str(first.SeriesTime).split(".")[0], "%H%M%S")
    elapsed = (t_ser - t_inj).total_seconds()
    decayed = float(info.RadionuclideTotalDose) * 0.5 ** (elapsed / float(info.RadionuclideHalfLife))
    bq_per_suv = decayed / (float(first.PatientWeight) * 1000.0)
    tmp.mkdir()
    for i, ds in enumerate(dss):
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.RescaleSlope = f"{float(ds.RescaleSlope) * bq_per_suv:.10g}"[:16]
        if edit:
            edit(ds)
        ds.save_as(tmp / f"{i:03d}.dcm", enforce_file_format=True)
    return elapsed


def test_pet_bqml_converted_to_suv_with_decay_corrected_dose(sts_dir, tmp_path):
    suv = read_dicom_series(sts_dir / "STS_001" / "PET" / "image")
    elapsed = _bqml_copy(sts_dir, tmp_path / "bq")
    assert elapsed > 600  # a real uptake time, so the decay correction matters
    img = read_dicom_series(tmp_path / "bq")
    assert img.meta.units == "SUVbw"
    np.testing.assert_allclose(img.array, suv.array, rtol=1e-5, atol=1e-5)


def test_pet_bqml_without_weight_stays_bqml_with_warning(sts_dir, tmp_path):
    def no_weight(ds):
        del ds.PatientWeight

    _bqml_copy(sts_dir, tmp_path / "bq", no_weight)
    with pytest.warns(MedlensWarning, match="SUVbw cannot be computed.*PatientWeight"):
        img = read_dicom_series(tmp_path / "bq")
    assert img.meta.units == "BQML"


def test_truncated_jpegls_slice_is_skipped_and_named(sts_dir, tmp_path):
    files = sorted((sts_dir / "STS_001" / "CT" / "image").glob("*.dcm"))[:6]
    for f in files:
        (tmp_path / f.name).write_bytes(f.read_bytes())
    last = tmp_path / files[-1].name
    data = last.read_bytes()
    last.write_bytes(data[: len(data) - 3000])
    with pytest.warns(SkippedInputWarning, match=rf"{last.name} \(truncated or damaged"):
        img = read_dicom_series(tmp_path)
    assert img.shape[0] == 5


@pytest.mark.parametrize(
    "iop",
    [
        [0.0, 1.0, 0.0, 0.0, 0.0, -1.0],  # sagittal
        [1.0, 0.0, 0.0, 0.0, 0.0, -1.0],  # coronal
        [0.866025, 0.5, 0.0, -0.17101, 0.296198, -0.939693],  # oblique
    ],
    ids=["sagittal", "coronal", "oblique"],
)
def test_non_axial_geometry_matches_simpleitk(ct_phantom_dir, tmp_path, iop):
    """Non-square pixels and rotated planes: rows/columns and the slice axis must land where ITK puts them."""
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    row, col = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row, col)
    origin = np.array([12.5, -40.0, 100.0])
    order = [4, 1, 7, 0, 9, 2, 5, 8, 3, 6]  # file order differs from spatial order

    def rotate(i, ds):
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        ds.PixelSpacing = ["0.8", "0.6"]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + 2.5 * order[i] * normal]

    folder = tmp_path / "rot"
    _write(folder, _phantom_slices(ct_phantom_dir), rotate)
    img = read_dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = from_sitk(reader.Execute())
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-3)
    np.testing.assert_array_equal(img.array, ref.array.astype(np.float32))
    assert img.spacing == pytest.approx((2.5, 0.8, 0.6), abs=1e-4)


def test_projection_image_uses_imager_pixel_spacing(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for tag in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"):
        delattr(ds, tag)
    ds.Modality = "DX"
    ds.ImagerPixelSpacing = ["0.15", "0.2"]
    ds.save_as(tmp_path / "dx.dcm", enforce_file_format=True)
    img = read_dicom_series(tmp_path / "dx.dcm")
    assert img.ndim == 2 and img.spacing == pytest.approx((0.15, 0.2))
    assert img.meta.modality == "DX" and img.meta.units == "arbitrary"


def test_image_without_spacing_warns_and_uses_1mm(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelSpacing
    ds.save_as(tmp_path / "nospacing.dcm", enforce_file_format=True)
    with pytest.warns(GeometryWarning, match="no PixelSpacing or ImagerPixelSpacing; pixel spacing set to 1 mm"):
        img = read_dicom_series(tmp_path / "nospacing.dcm")
    assert img.spacing == (1.0, 1.0)


def test_localizer_in_the_series_is_left_out_with_warning(ct_phantom_dir, tmp_path):
    dss = _phantom_slices(ct_phantom_dir)
    folder = tmp_path / "scout"
    _write(folder, dss)
    scout = dss[0].copy()
    scout.SOPInstanceUID = "1.2.3.4.5.6.7.9"
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    scout.save_as(folder / "scout.dcm", enforce_file_format=True)
    with pytest.warns(SkippedInputWarning, match=r"left out 1 localizer image\(s\).*scout\.dcm"):
        img = read_dicom_series(folder)
    assert img.shape[0] == N
    (info,) = list_series(folder)
    assert info.qa == [] and info.shape == (N, 201, 204)
