"""NIfTI / NRRD / MHA reading and writing: geometry agrees with SimpleITK, round trips keep pixels and affine."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from medlens import FormatError, GeometryError, Image, InputError
from medlens.core.sitk_bridge import from_sitk
from medlens.io.volume_files import read_volume, write_volume


def _sitk_image(path: Path) -> Image:
    return from_sitk(sitk.ReadImage(str(path)))


def _assert_same(a: Image, b: Image, *, atol: float = 1e-5) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=atol, rtol=0)
    np.testing.assert_array_equal(a.array, b.array)


@pytest.mark.parametrize(
    "rel",
    [
        "ct_phantom/nifti/image/phantom.nii.gz",
        "ct_phantom/nifti/mask/mask.nii.gz",
        "digital_phantom/nifti/image/phantom.nii.gz",
        "digital_phantom/nifti/mask/mask.nii.gz",
    ],
)
def test_nifti_geometry_equals_simpleitk_on_ibsi_files(ibsi1_dir: Path, rel: str) -> None:
    p = ibsi1_dir / rel
    ours = read_volume(p)
    ref = _sitk_image(p)
    _assert_same(ours, ref)
    assert ours.dtype == ref.dtype
    assert ours.meta.source == str(p)


def test_ct_phantom_nifti_known_geometry(ct_phantom_dir: Path) -> None:
    img = read_volume(ct_phantom_dir / "nifti/image/phantom.nii.gz")
    # On disk: 204 x 201 x 60 voxels (x, y, z), pixdim 0.977 x 0.977 x 3 mm, RAS sform diag(-0.977, -0.977, 3).
    assert img.shape == (60, 201, 204)
    np.testing.assert_allclose(img.spacing, (3.0, 0.977, 0.977), atol=1e-6)
    # LPS: x grows to the patient's left (+L), y to posterior (+P): the RAS -0.977 becomes +0.977.
    np.testing.assert_allclose(img.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(img.origin, (-174.3945, -79.6255, -100.4), atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_round_trip_keeps_pixels_and_affine(ct_phantom_dir: Path, tmp_path: Path, suffix: str) -> None:
    img = read_volume(ct_phantom_dir / "nifti/image/phantom.nii.gz")
    out = write_volume(img, tmp_path / f"ct{suffix}")
    back = read_volume(out)
    _assert_same(back, img, atol=1e-5)
    assert back.dtype == img.dtype
    # SimpleITK reads the written file the same way.
    _assert_same(_sitk_image(out), back, atol=1e-9)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_bool_mask_written_as_uint8(tmp_path: Path, suffix: str) -> None:
    arr = np.zeros((3, 4, 5), dtype=bool)
    arr[1, 1:3, 2:4] = True
    mask = Image.from_array(arr, spacing=(2.0, 1.0, 0.5), origin=(1.0, -2.0, 3.0))
    back = read_volume(write_volume(mask, tmp_path / f"m{suffix}"))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.array, arr.astype(np.uint8))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int32, np.uint32, np.int64, np.float64])
def test_dtypes_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    big = 2**40 if dtype == np.int64 else 3
    arr = (np.arange(24).reshape(2, 3, 4) * big).astype(dtype)
    back = read_volume(write_volume(Image.from_array(arr), tmp_path / f"d{suffix}"))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back.array, arr)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_float16_written_as_float32(tmp_path: Path, suffix: str) -> None:
    arr = np.linspace(-2, 2, 24, dtype=np.float16).reshape(2, 3, 4)
    back = read_volume(write_volume(Image.from_array(arr), tmp_path / f"h{suffix}"))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.array, arr.astype(np.float32))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_2d_axial_image_round_trip(tmp_path: Path, suffix: str) -> None:
    img = Image.from_array(np.arange(12, dtype=np.int16).reshape(3, 4), spacing=(0.5, 0.7), origin=(3.0, 4.0, 0.0))
    out = write_volume(img, tmp_path / f"flat{suffix}")
    back = read_volume(out)
    assert back.ndim == 2
    _assert_same(back, img, atol=1e-6)
    sitk_back = _sitk_image(out)
    assert sitk_back.ndim == 2
    _assert_same(sitk_back, back, atol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_2d_non_axial_image_is_stored_as_one_slice_volume(tmp_path: Path, suffix: str) -> None:
    sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    img = Image.from_array(
        np.arange(12, dtype=np.int16).reshape(3, 4), spacing=(0.5, 0.7), origin=(3.0, 4.0, 5.0), direction=sagittal
    )
    out = write_volume(img, tmp_path / f"sag{suffix}")
    back = read_volume(out)
    assert back.shape == (1, 3, 4)
    np.testing.assert_array_equal(back.array[0], img.array)
    # The plane is kept: every pixel centre lands at the same LPS point.
    idx2 = np.stack(np.meshgrid(np.arange(3), np.arange(4), indexing="ij"), axis=-1).reshape(-1, 2)
    idx3 = np.concatenate([np.zeros((len(idx2), 1)), idx2], axis=1)
    np.testing.assert_allclose(back.index_to_world(idx3), img.index_to_world(idx2), atol=1e-5)
    _assert_same(_sitk_image(out), back, atol=1e-9)


def test_nifti_scl_slope_inter_applied_like_simpleitk(tmp_path: Path) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nimg = nib.Nifti1Image(raw, np.diag([-1.0, -1.0, 2.0, 1.0]))
    nimg.header.set_slope_inter(2.5, -10.0)
    nimg.header.set_sform(nimg.affine, code=1)
    p = tmp_path / "scaled.nii.gz"
    nib.save(nimg, str(p))
    ours = read_volume(p)
    ref = _sitk_image(p)
    assert ours.dtype == ref.dtype == np.float32
    np.testing.assert_allclose(ours.array, raw.T * 2.5 - 10.0)
    _assert_same(ours, ref)


def test_nifti_qform_used_when_sform_unset(tmp_path: Path) -> None:
    aff = np.array([[0.0, 0.0, 2.0, 10.0], [-1.5, 0.0, 0.0, -5.0], [0.0, 1.2, 0.0, 7.0], [0, 0, 0, 1]])
    nimg = nib.Nifti1Image(np.ones((4, 5, 6), dtype=np.float32), None)
    nimg.header.set_qform(aff, code=1)
    nimg.header.set_sform(np.diag([9.0, 9.0, 9.0, 1.0]), code=0)
    p = tmp_path / "qform.nii"
    nib.save(nimg, str(p))
    ours = read_volume(p)
    _assert_same(ours, _sitk_image(p))
    np.testing.assert_allclose(ours.spacing, (2.0, 1.2, 1.5), atol=1e-6)


_ROTATED_SFORM = np.array([[0, -1.0, 0, 1], [1, 0, 0, 2], [0, 0, 2, 3], [0, 0, 0, 1]])
_SHEARED_SFORM = np.array([[1, 0.3, 0, 1], [0, 1, 0, 2], [0, 0, 2, 3], [0, 0, 0, 1]])


@pytest.mark.parametrize("sform_code", range(5))
@pytest.mark.parametrize("qform_code", range(5))
@pytest.mark.parametrize("sform", [_ROTATED_SFORM, _SHEARED_SFORM], ids=["rotated", "sheared"])
def test_nifti_sform_qform_choice_matches_itk(
    tmp_path: Path, sform_code: int, qform_code: int, sform: np.ndarray
) -> None:
    qform = np.diag([-1.0, -1.0, 2.0, 1.0])
    qform[:3, 3] = (5.0, 6.0, 7.0)
    nimg = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), None)
    nimg.header.set_qform(qform, code=qform_code)
    nimg.header.set_sform(sform, code=sform_code)
    p = tmp_path / "codes.nii"
    nib.save(nimg, str(p))
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        ref = _sitk_image(p)
    except RuntimeError:
        ref = None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(True)
    if ref is None:  # ITK refuses a sheared sform without a qform; so do we, with a message
        with pytest.raises(GeometryError, match="sform has shear and there is no qform"):
            read_volume(p)
    else:
        _assert_same(read_volume(p), ref, atol=1e-6)


def test_nrrd_ras_space_converted_to_lps(tmp_path: Path) -> None:
    data = np.arange(60, dtype=np.float32).reshape(3, 4, 5)  # C order (z, y, x)
    header = {
        "space": "right-anterior-superior",
        "space directions": np.array([[0.8, 0.0, 0.0], [0.0, 0.9, 0.1], [0.0, -0.3, 2.0]]),
        "space origin": np.array([10.0, 20.0, 30.0]),
        "kinds": ["domain"] * 3,
    }
    p = tmp_path / "ras.nrrd"
    nrrd.write(str(p), data, header, index_order="C")
    ours = read_volume(p)
    np.testing.assert_allclose(ours.origin, (-10.0, -20.0, 30.0))
    np.testing.assert_allclose(ours.affine[:3, 2], (-0.8, 0.0, 0.0))  # x axis, RAS +R -> LPS -L
    ref = _sitk_image(p)
    np.testing.assert_array_equal(ours.array, ref.array)
    np.testing.assert_allclose(ours.index_to_world([[2, 3, 4]]), ref.index_to_world([[2, 3, 4]]), atol=1e-9)


def _rotation(q: tuple[float, float, float, float]) -> np.ndarray:
    w, x, y, z = np.asarray(q) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


_quat = st.tuples(*[st.floats(-1, 1, allow_nan=False)] * 4).filter(lambda q: float(np.linalg.norm(q)) > 0.1)


@settings(max_examples=40, deadline=None)
@given(
    q=_quat,
    spacing=st.tuples(*[st.floats(0.2, 5.0)] * 3),
    origin=st.tuples(*[st.floats(-300.0, 300.0)] * 3),
    mirror=st.booleans(),
)
def test_property_nifti_affine_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    q: tuple[float, float, float, float],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    mirror: bool,
) -> None:
    direction = _rotation(q)
    if mirror:
        direction[:, 0] *= -1.0
    img = Image.from_array(
        np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=spacing, origin=origin, direction=direction
    )
    p = tmp_path_factory.mktemp("prop") / "x.nii.gz"
    write_volume(img, p)
    back = read_volume(p)
    # NIfTI keeps float32: compare to float32 precision of the values stored.
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5, rtol=2e-7)
    np.testing.assert_array_equal(back.array, img.array)
    ref = _sitk_image(p)
    np.testing.assert_allclose(ref.affine, back.affine, atol=1e-5, rtol=2e-7)


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_unknown_suffix_is_input_error(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"x\.png: not a volume file; expected one of \.nii"):
        read_volume(p)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_corrupt_file_is_format_error(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"broken{suffix}"
    p.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(FormatError, match="broken"):
        read_volume(p)


def test_4d_nifti_is_format_error(tmp_path: Path) -> None:
    p = tmp_path / "t.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), dtype=np.float32), np.eye(4)), str(p))
    with pytest.raises(FormatError, match=r"4 dimensions \(3, 2, 2, 2\)|4 dimensions"):
        read_volume(p)


def test_write_unknown_suffix_is_format_error(tmp_path: Path) -> None:
    img = Image.from_array(np.zeros((2, 2, 2)))
    with pytest.raises(FormatError, match="cannot tell the output format"):
        write_volume(img, tmp_path / "out.tif")


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = Image.from_array(np.zeros((2, 2, 2)))
    target = tmp_path / "out.nii.gz"

    def boom(*args: object, **kwargs: object) -> None:
        Path(str(args[1])).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_volume(img, target)
    assert list(tmp_path.iterdir()) == []
