"""No silent geometry defaults: each crafted file raises GeometryError/FormatError or warns GeometryWarning.

The rules are tabled in docs/io-dicom.md ("Missing or impossible geometry").
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from medlens.core.errors import FormatError, GeometryError, GeometryWarning
from medlens.io import read_image
from medlens.io.dicom_series import read_dicom_series

_ARR = np.arange(60, dtype=np.float32).reshape(3, 4, 5)  # on disk (x, y, z)


def _nifti(tmp_path: Path, *, pixdim=(1.0, 1.0, 1.0), sform=None, sform_code=0, qform_code=0) -> Path:
    img = nib.Nifti1Image(_ARR, None)
    img.header.set_zooms(pixdim)
    if qform_code:
        img.header.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=qform_code)
        img.header.set_zooms(pixdim)
    if sform is not None:
        img.header.set_sform(sform, code=sform_code)
    p = tmp_path / "v.nii"
    nib.save(img, str(p))
    return p


def _no_geometry_warning(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)
        return read_image(path)


def test_nifti_zero_pixdim_warns_and_names_the_axis(tmp_path):
    good = _no_geometry_warning(_nifti(tmp_path, pixdim=(2.0, 3.0, 4.0), qform_code=1))
    assert good.spacing == pytest.approx((4.0, 3.0, 2.0))
    p = _nifti(tmp_path, pixdim=(2.0, 3.0, 4.0), qform_code=1)
    raw = bytearray(p.read_bytes())  # nibabel repairs a zero pixdim on saving: write the byte ourselves
    raw[84:88] = np.float32(0.0).tobytes()  # pixdim[2] (pixdim is float32[8] at offset 76 of a NIfTI-1 header)
    p.write_bytes(bytes(raw))
    with open(p, "rb") as fh:
        assert nib.Nifti1Header.from_fileobj(fh, check=False)["pixdim"][2] == 0.0  # nibabel's load says 1
    with pytest.warns(GeometryWarning, match=r"pixdim\[2\] = 0 .*spacing 1 mm used"):
        img = read_image(p)
    assert img.spacing == pytest.approx((4.0, 1.0, 2.0))


def test_nifti_sheared_sform_warns_with_qform_and_fails_without(tmp_path):
    sheared = np.array([[1, 0.3, 0, 1], [0, 1, 0, 2], [0, 0, 2, 3], [0, 0, 0, 1]], dtype=float)
    with pytest.warns(GeometryWarning, match="sform .* has shear.*the qform .* is used instead"):
        read_image(_nifti(tmp_path, sform=sheared, sform_code=1, qform_code=1))
    with pytest.raises(GeometryError, match="sform has shear and there is no qform") as info:
        read_image(_nifti(tmp_path, sform=sheared, sform_code=1, qform_code=0))
    assert info.value.exit_code == 4


def test_nifti_without_any_transform_warns(tmp_path):
    with pytest.warns(GeometryWarning, match="neither a qform nor an sform"):
        img = read_image(_nifti(tmp_path, pixdim=(2.0, 2.0, 2.0)))
    assert img.origin == (0.0, 0.0, 0.0) and img.spacing == pytest.approx((2.0, 2.0, 2.0))


def test_nrrd_without_space_directions_warns(tmp_path):
    p = tmp_path / "v.nrrd"
    nrrd.write(str(p), _ARR, {"kinds": ["domain"] * 3}, index_order="C")
    with pytest.warns(GeometryWarning, match="no 'space directions'.*spacing 1 mm where 'spacings' is missing"):
        read_image(p)
    q = tmp_path / "w.nrrd"
    nrrd.write(str(q), _ARR, {"space": "left-posterior-superior", "space directions": np.diag([1.0, 2.0, 3.0]),
                              "space origin": np.zeros(3)}, index_order="C")  # fmt: skip
    ref = sitk.ReadImage(str(q))
    assert _no_geometry_warning(q).spacing == pytest.approx(ref.GetSpacing()[::-1])


def test_nrrd_zero_space_direction_is_a_geometry_error(tmp_path):
    p = tmp_path / "v.nrrd"
    dirs = np.diag([1.0, 0.0, 3.0])
    nrrd.write(str(p), _ARR, {"space": "left-posterior-superior", "space directions": dirs}, index_order="C")
    with pytest.raises(GeometryError, match="singular"):
        read_image(p)


def test_metaimage_without_spacing_or_orientation_warns(tmp_path):
    s = sitk.GetImageFromArray(_ARR)
    s.SetSpacing((0.5, 0.5, 2.0))
    full = tmp_path / "full.mhd"
    sitk.WriteImage(s, str(full))
    assert _no_geometry_warning(full).spacing == pytest.approx((2.0, 0.5, 0.5))
    text = full.read_text().splitlines()
    kept = [ln for ln in text if not ln.startswith(("ElementSpacing", "TransformMatrix"))]
    bare = tmp_path / "bare.mhd"
    bare.write_text("\n".join(kept) + "\n")
    with pytest.warns(GeometryWarning, match=r"no ElementSpacing \(1 mm used\) and no TransformMatrix"):
        img = read_image(bare)
    assert img.spacing == pytest.approx((1.0, 1.0, 1.0))


def _phantom(ct_phantom_dir: Path, n: int):
    import pydicom

    files = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))
    dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    return dss[20 : 20 + n]


def test_dicom_stack_without_orientation_is_a_geometry_error(ct_phantom_dir, tmp_path):
    for i, ds in enumerate(_phantom(ct_phantom_dir, 3)):
        if i == 1:
            del ds.ImageOrientationPatient
        ds.save_as(tmp_path / f"s{i}.dcm", enforce_file_format=True)
    with pytest.raises(GeometryError, match="lack ImagePositionPatient/ImageOrientationPatient"):
        read_dicom_series(tmp_path)


def test_dicom_zero_pixel_spacing_warns(ct_phantom_dir, tmp_path):
    ds = _phantom(ct_phantom_dir, 1)[0]
    ds.PixelSpacing = [0, 0]
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    with pytest.warns(GeometryWarning, match=r"pixel spacing set to 1 mm \(PixelSpacing zero\)"):
        img = read_dicom_series(tmp_path / "s.dcm")
    assert img.spacing == pytest.approx((1.0, 1.0))


def test_dicom_zero_rescale_slope_in_a_stack_is_a_format_error(ct_phantom_dir, tmp_path):
    for i, ds in enumerate(_phantom(ct_phantom_dir, 3)):
        if i == 2:
            ds.RescaleSlope = 0
        ds.save_as(tmp_path / f"s{i}.dcm", enforce_file_format=True)
    with pytest.raises(FormatError, match=r"s2\.dcm: RescaleSlope is 0\.0") as info:
        read_dicom_series(tmp_path)
    assert info.value.exit_code == 3
