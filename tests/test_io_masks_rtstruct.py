"""RTSTRUCT rasterisation and writing: real data (IBSI CT phantom, STS PET/CT), even-odd rule, bad input."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import medlens
from conftest import need_tool
from medlens import GeometryError, Image, InputError
from medlens.core.errors import GeometryWarning
from medlens.io.rtstruct import list_rois, rasterize_contours, read_rtstruct, write_rtstruct
from medlens.io.volume_files import read_volume


@pytest.fixture(scope="module")
def phantom_ct(ct_phantom_dir: Path) -> Image:
    return medlens.read_image(ct_phantom_dir / "dicom/image")


@pytest.fixture(scope="module")
def phantom_nifti_mask(ct_phantom_dir: Path, phantom_ct: Image) -> Image:
    lab = read_volume(ct_phantom_dir / "nifti/mask/mask.nii.gz")
    assert phantom_ct.same_grid(lab)
    return phantom_ct.with_array(lab.array != 0)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def test_ibsi_ct_phantom_gtv_matches_nifti_mask(
    ct_phantom_dir: Path, phantom_ct: Image, phantom_nifti_mask: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    mask = read_rtstruct(ct_phantom_dir / "dicom/mask", reference=phantom_ct, roi="GTV-1")
    assert mask.is_mask and mask.same_grid(phantom_ct)
    assert mask.meta.units == "mask" and mask.meta.extra["roi"] == "GTV-1"
    a, b = mask.array, phantom_nifti_mask.array
    dice = _dice(a, b)
    with capsys.disabled():
        print(
            f"\nIBSI CT phantom GTV-1: RTSTRUCT rasterised {int(a.sum())} voxels, NIfTI mask {int(b.sum())} voxels, "
            f"both {int((a & b).sum())}, Dice {dice:.5f}"
        )
    assert dice >= 0.99


def test_list_rois_and_unknown_roi_lists_available(ct_phantom_dir: Path, phantom_ct: Image) -> None:
    assert list_rois(ct_phantom_dir / "dicom/mask") == ["GTV-1"]
    with pytest.raises(InputError, match=r"no ROI named 'GTV-2'; the structure set has: 'GTV-1'"):
        read_rtstruct(ct_phantom_dir / "dicom/mask", reference=phantom_ct, roi="GTV-2")


def test_rtstruct_for_another_image_names_both_frames(ct_phantom_dir: Path, sts_dir: Path) -> None:
    pet = medlens.read_image(sts_dir / "STS_001/PET/image")
    with pytest.raises(GeometryError, match="Frame of Reference") as info:
        read_rtstruct(ct_phantom_dir / "dicom/mask", reference=pet, roi="GTV-1")
    msg = str(info.value)
    assert pet.meta.frame_of_reference_uid in msg
    assert "1.3.6.1.4.1.9590.100.1.2.43753750011518494101799896492065629048" in msg


@pytest.mark.parametrize(
    ("patient", "modality", "roi"),
    [("STS_001", "PET", "GTV_Mass_PET"), ("STS_013", "PET", "GTV_Mass_PET"), ("STS_002", "CT", "GTV_Mass_CT")],
)
def test_sts_rtstruct_sample(sts_dir: Path, patient: str, modality: str, roi: str) -> None:
    img = medlens.read_image(sts_dir / patient / modality / "image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeometryWarning)  # every contour lies inside the image
        mask = medlens.read_mask(sts_dir / patient / modality / "rtstruct", reference=img, roi=roi)
    assert mask.same_grid(img)
    n = int(mask.array.sum())
    assert n > 100
    # The GTV is a compact lesion: it touches few slices' borders and lies away from the crop's edge.
    zs = np.nonzero(mask.array.any(axis=(1, 2)))[0]
    assert 0 < zs.min() and zs.max() < img.shape[0] - 1


@pytest.mark.slow
def test_all_sts_pet_rtstructs_rasterise(sts_dir: Path) -> None:
    counts = {}
    for pdir in sorted(sts_dir.glob("STS_*")):
        img = medlens.read_image(pdir / "PET/image")
        mask = medlens.read_mask(pdir / "PET/rtstruct", reference=img, roi="GTV_Mass_PET")
        counts[pdir.name] = int(mask.array.sum())
    assert len(counts) == 51
    assert min(counts.values()) > 100, counts


@pytest.mark.slow
def test_all_sts_ct_rtstructs_rasterise(sts_dir: Path) -> None:
    counts = {}
    for pdir in sorted(sts_dir.glob("STS_*")):
        if not (pdir / "CT").is_dir():
            continue
        img = medlens.read_image(pdir / "CT/image")  # JPEG-LS lossless
        mask = medlens.read_mask(pdir / "CT/rtstruct", reference=img, roi="GTV_Mass_CT")
        counts[pdir.name] = int(mask.array.sum())
    assert len(counts) == 20
    assert min(counts.values()) > 1000, counts


# ---- even-odd rasterisation on synthetic contours ------------------------------------------------------------------


def _grid(nz: int = 3, n: int = 20) -> Image:
    # Axial grid: index (k, i, j) -> LPS (j, i, 2k) mm; frame of reference given so no warning.
    return Image.from_array(np.zeros((nz, n, n), dtype=np.int16), spacing=(2.0, 1.0, 1.0)).with_meta(
        frame_of_reference_uid="1.2.3"
    )


def _square(x0: float, y0: float, x1: float, y1: float, z: float, *, clockwise: bool = False) -> np.ndarray:
    pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if clockwise:
        pts = pts[::-1]
    return np.array([(x, y, z) for x, y in pts])


@pytest.mark.parametrize("inner_clockwise", [False, True])
def test_hole_by_even_odd_whatever_orientation(inner_clockwise: bool) -> None:
    ref = _grid()
    outer = _square(1.5, 1.5, 15.5, 15.5, 2.0)  # pixel centres 2..15 -> 14 x 14
    inner = _square(5.5, 5.5, 10.5, 10.5, 2.0, clockwise=inner_clockwise)  # 6..10 -> 5 x 5
    m = rasterize_contours([outer, inner], ref).array
    assert m[1].sum() == 14 * 14 - 5 * 5
    assert not m[1, 8, 8] and m[1, 3, 3]
    assert m[0].sum() == 0 and m[2].sum() == 0


def test_two_components_on_one_slice() -> None:
    ref = _grid()
    a = _square(1.5, 1.5, 4.5, 4.5, 4.0)  # 3 x 3
    b = _square(9.5, 11.5, 13.5, 12.5, 4.0)  # 4 x 1
    m = rasterize_contours([a, b], ref).array
    assert m[2].sum() == 9 + 4
    assert m[2, 12, 10:14].all()


def test_rasterisation_equals_skimage_polygon_on_random_polygons() -> None:
    from skimage.draw import polygon

    rng = np.random.default_rng(7)
    ref = _grid(nz=1, n=40)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(4, 18, n)
        x, y = 20 + rad * np.cos(ang), 20 + rad * np.sin(ang)
        ours = rasterize_contours([np.column_stack([x, y, np.zeros(n)])], ref).array[0]
        expected = np.zeros((40, 40), dtype=bool)
        rr, cc = polygon(y, x, shape=(40, 40))
        expected[rr, cc] = True
        assert np.array_equal(ours, expected)


def test_contour_outside_slices_warns_and_all_outside_errors() -> None:
    ref = _grid()
    inside = _square(1.5, 1.5, 4.5, 4.5, 0.0)
    outside = _square(1.5, 1.5, 4.5, 4.5, 40.0)
    with pytest.warns(GeometryWarning, match=r"1 of 2 contours of 'ROI' lie outside the image's 3 slices"):
        m = rasterize_contours([inside, outside], ref)
    assert m.array.sum() == 9
    with pytest.raises(GeometryError, match="no contour of 'ROI' lies inside the image"), pytest.warns(GeometryWarning):
        rasterize_contours([outside], ref)


def test_contour_off_plane_is_geometry_error() -> None:
    ref = _grid()
    tilted = np.array([(1.0, 1.0, 0.0), (10.0, 1.0, 0.0), (10.0, 10.0, 4.0), (1.0, 10.0, 4.0)])
    with pytest.raises(GeometryError, match=r"mm off the nearest slice plane of the image"):
        rasterize_contours([tilted], ref)


def test_contour_smaller_than_a_voxel_is_error() -> None:
    ref = _grid()
    tiny = _square(2.1, 2.1, 2.4, 2.4, 2.0)
    with pytest.raises(GeometryError, match="contains no voxel centre"):
        rasterize_contours([tiny], ref)


def test_2d_reference() -> None:
    ref = Image.from_array(np.zeros((10, 12), dtype=np.int16), spacing=(1.0, 1.0), origin=(0.0, 0.0, 5.0))
    m = rasterize_contours([_square(1.5, 2.5, 4.5, 3.5, 5.2)], ref)
    assert m.ndim == 2 and m.array.sum() == 3 and m.array[3, 2:5].all()


# ---- writing --------------------------------------------------------------------------------------------------------


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = need_tool("dciodvfy")
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]


def test_write_rtstruct_round_trip_and_dciodvfy(
    ct_phantom_dir: Path, phantom_ct: Image, phantom_nifti_mask: Image, tmp_path: Path
) -> None:
    # A second ROI with a hole and two components on the same slices.
    ring = np.zeros(phantom_ct.shape, dtype=bool)
    ring[20:25, 50:90, 50:90] = True
    ring[20:25, 60:80, 60:80] = False
    ring[22, 120:130, 30:35] = True
    ring_img = phantom_ct.with_array(ring)
    out = write_rtstruct(
        {"GTV-1": phantom_nifti_mask, "ring": ring_img}, ct_phantom_dir / "dicom/image", tmp_path / "rs.dcm"
    )
    assert _dciodvfy_errors(out) == []
    assert list_rois(out) == ["GTV-1", "ring"]
    back = read_rtstruct(out, reference=phantom_ct, roi="GTV-1")
    assert np.array_equal(back.array, phantom_nifti_mask.array)
    assert np.array_equal(read_rtstruct(out, reference=phantom_ct, roi="ring").array, ring)


def test_write_rtstruct_bad_input(ct_phantom_dir: Path, phantom_ct: Image, tmp_path: Path) -> None:
    empty = phantom_ct.with_array(np.zeros(phantom_ct.shape, dtype=bool))
    with pytest.raises(InputError, match="mask 'e' is empty"):
        write_rtstruct({"e": empty}, ct_phantom_dir / "dicom/image", tmp_path / "rs.dcm")
    with pytest.raises(InputError, match="at least one mask"):
        write_rtstruct({}, ct_phantom_dir / "dicom/image", tmp_path / "rs.dcm")
    shifted = Image(
        np.ones((2, 4, 4), dtype=bool), np.diag([3.0, 1.0, 1.0, 1.0]) + np.array([[0, 0, 0, 500.0]] + [[0] * 4] * 3)
    )
    with pytest.raises(InputError, match="no reference file lies at its position"):
        write_rtstruct({"x": shifted}, ct_phantom_dir / "dicom/image", tmp_path / "rs.dcm")
    other_for = phantom_ct.with_array(np.ones(phantom_ct.shape, dtype=bool)).with_meta(frame_of_reference_uid="1.2.3")
    with pytest.raises(GeometryError, match=r"mask 'o' is in Frame of Reference 1\.2\.3 but the reference series"):
        write_rtstruct({"o": other_for}, ct_phantom_dir / "dicom/image", tmp_path / "rs.dcm")
    assert not (tmp_path / "rs.dcm").exists()


def test_rtstruct_onto_nifti_reference_warns_and_matches(ct_phantom_dir: Path, phantom_nifti_mask: Image) -> None:
    nifti_ct = read_volume(ct_phantom_dir / "nifti/image/phantom.nii.gz")  # no Frame of Reference UID
    with pytest.warns(GeometryWarning, match="has no Frame of Reference UID"):
        mask = medlens.read_mask(ct_phantom_dir / "dicom/mask", reference=nifti_ct, roi="GTV-1")
    assert np.array_equal(mask.array, phantom_nifti_mask.array)


def test_rtstruct_folder_problems(ct_phantom_dir: Path, phantom_ct: Image, tmp_path: Path) -> None:
    src = ct_phantom_dir / "dicom/mask/DCM_RS_00060.dcm"
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.dcm").write_bytes(src.read_bytes())
    (two / "b.dcm").write_bytes(src.read_bytes())
    with pytest.raises(InputError, match=r"2 RTSTRUCT files found \(a\.dcm, b\.dcm\); pass the one to use"):
        read_rtstruct(two, reference=phantom_ct, roi="GTV-1")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(medlens.FormatError, match=r"truncated\.dcm: cannot read as DICOM"):
        read_rtstruct(truncated, reference=phantom_ct, roi="GTV-1")
