"""DICOM series reading on real data: the IBSI CT phantom and the STS cohort (PET SUV, JPEG-LS CT)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from medlens.core.image import Units
from medlens.core.sitk_bridge import from_sitk
from medlens.io.dicom_series import list_series, read_dicom_series


def _sitk_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return from_sitk(reader.Execute())


def _same_as_sitk(img, ref, *, atol_value: float) -> None:
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4, rtol=0)
    np.testing.assert_allclose(img.array, ref.array.astype(np.float64), atol=atol_value, rtol=1e-6)


def test_ct_phantom_matches_nifti_copy(ct_phantom_dir):
    import SimpleITK as sitk

    img = read_dicom_series(ct_phantom_dir / "dicom" / "image")
    nii = from_sitk(sitk.ReadImage(str(ct_phantom_dir / "nifti" / "image" / "phantom.nii.gz")))
    assert img.shape == nii.shape == (60, 201, 204)
    np.testing.assert_allclose(img.affine, nii.affine, atol=1e-4, rtol=0)
    assert np.array_equal(img.array, nii.array.astype(np.float32))
    assert img.dtype == np.float32
    assert img.meta.modality == "CT" and img.meta.units == Units.HU


def test_ct_phantom_matches_sitk_series_reader_and_meta(ct_phantom_dir):
    folder = ct_phantom_dir / "dicom" / "image"
    img = read_dicom_series(folder)
    _same_as_sitk(img, _sitk_series(folder), atol_value=0)
    # slices sorted along +z: the SOP UIDs follow the positions
    assert len(img.meta.sop_instance_uids) == 60 and len(set(img.meta.sop_instance_uids)) == 60
    assert img.spacing == pytest.approx((3.0, 0.977, 0.977), abs=1e-3)
    assert img.meta.series_uid and img.meta.study_uid and img.meta.frame_of_reference_uid
    assert "slice_thickness_mm" in img.meta.extra


def test_reading_never_modifies_inputs(ct_phantom_dir):
    folder = ct_phantom_dir / "dicom" / "image"
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    read_dicom_series(folder)
    list_series(folder)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    assert before == after


def test_list_series_finds_image_and_rtstruct(ct_phantom_dir):
    infos = {s.modality: s for s in list_series(ct_phantom_dir / "dicom")}
    assert set(infos) == {"CT", "RTSTRUCT"}
    ct, rs = infos["CT"], infos["RTSTRUCT"]
    assert ct.n_files == 60 and ct.is_image and ct.qa == [] and ct.shape == (60, 201, 204) and ct.units == "HU"
    assert rs.rois == ["GTV-1"] and rs.referenced_series_uid == ct.series_uid
    assert rs.frame_of_reference_uid == ct.frame_of_reference_uid


@pytest.mark.parametrize("patient", ["STS_001", "STS_007", "STS_023", "STS_051"])
def test_sts_pet_matches_sitk_geometry(sts_dir, patient):
    folder = sts_dir / patient / "PET" / "image"
    img = read_dicom_series(folder)
    ref = _sitk_series(folder)
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4, rtol=0)
    # SimpleITK applies the same rescale (Units GML: the stored values are SUVbw)
    np.testing.assert_allclose(img.array, ref.array, rtol=1e-5, atol=1e-5)
    assert img.meta.units == Units.SUVBW


def test_sts_jpegls_ct_matches_sitk(sts_dir):
    folder = sts_dir / "STS_001" / "CT" / "image"
    img = read_dicom_series(folder)
    _same_as_sitk(img, _sitk_series(folder), atol_value=0)
    assert img.meta.units == Units.HU and img.meta.patient_id == "STS_001"
    assert img.meta.extra["patient_weight_kg"] is not None and img.meta.extra["patient_sex"] in ("M", "F")


def _patients(sts_dir: Path, modality: str) -> list[Path]:
    return sorted(p / modality / "image" for p in sts_dir.glob("STS_*") if (p / modality / "image").is_dir())


@pytest.mark.slow
def test_all_51_sts_pet_read_in_suv(sts_dir):
    folders = _patients(sts_dir, "PET")
    assert len(folders) == 51
    maxima = []
    for folder in folders:
        img = read_dicom_series(folder)
        assert img.meta.units == Units.SUVBW, folder
        assert img.ndim == 3 and img.shape[0] > 5, folder
        assert np.all(np.isfinite(img.array)), folder
        assert img.array.min() >= -0.01, folder
        maxima.append(float(img.array.max()))
    # FDG uptake around sarcomas: max SUV between ~1 and ~60 in every patient
    assert 1.0 < min(maxima) and max(maxima) < 60.0, (min(maxima), max(maxima))


@pytest.mark.slow
def test_all_20_sts_ct_read_in_hu(sts_dir):
    folders = _patients(sts_dir, "CT")
    assert len(folders) == 20
    for folder in folders:
        img = read_dicom_series(folder)
        assert img.meta.units == Units.HU and img.ndim == 3, folder
        a = img.array
        assert -1100 <= a.min() < -500 and 300 < a.max() < 4000, (folder, a.min(), a.max())


def test_list_series_sts_patient_pairs_rtstructs_with_images(sts_dir):
    infos = list_series(sts_dir / "STS_001")
    images = {s.modality: s for s in infos if s.is_image}
    structs = {s.rois[0]: s for s in infos if s.modality == "RTSTRUCT"}
    assert set(images) == {"CT", "PT", "MR"}
    assert set(structs) == {"GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"}
    assert structs["GTV_Mass_CT"].referenced_series_uid == images["CT"].series_uid
    assert structs["GTV_Mass_PET"].referenced_series_uid == images["PT"].series_uid
    assert structs["GTV_Mass_MR_T1"].referenced_series_uid == images["MR"].series_uid
    assert images["PT"].units == "SUVbw" and images["CT"].units == "HU"


def test_list_series_reads_seg_segment_labels():
    pydicom_data = pytest.importorskip("pydicom.data")
    path = pydicom_data.get_testdata_file("liver.dcm")
    (info,) = list_series(path)
    assert info.modality == "SEG" and not info.is_image
    assert info.rois == ["Liver"] and info.referenced_series_uid.startswith("1.2.392.")


def test_geometry_findings_from_headers_only(ct_phantom_dir):
    import pydicom

    from medlens.io.dicom_series import geometry_findings

    files = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert geometry_findings(headers) == []
    del headers[30]
    (finding,) = geometry_findings(headers, [f.name for i, f in enumerate(files) if i != 30])
    assert finding.code == "missing_slices" and "1 slice(s) missing" in finding.message
