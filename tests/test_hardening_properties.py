"""Property tests (hypothesis): DICOM slice sort and affine, RTSTRUCT round trip, de-identification invariants.

Every case is a synthetic series written with :func:`medlens.io.dicom_write.write_ct_series` from an
image whose geometry hypothesis draws (rotation, spacing, origin, slice order), so the expected values
are computed directly from that geometry, not taken from MedLens.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medlens
from medlens.core.image import Image
from medlens.io.dicom_write import write_ct_series

_SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_counter = iter(range(10**9))


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    """Rotation matrix from three angles (radians), z-y-x order."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    return rz @ ry @ rx


geometry = st.fixed_dictionaries(
    {
        "angles": st.tuples(*(st.floats(-np.pi, np.pi, allow_nan=False) for _ in range(3))),
        "spacing": st.tuples(*(st.sampled_from([0.5, 0.8, 1.0, 2.5, 3.0]) for _ in range(3))),
        "origin": st.tuples(*(st.floats(-400.0, 400.0, allow_nan=False) for _ in range(3))),
        "flip_slices": st.booleans(),  # slice axis along +normal or -normal of the image plane
        "perm_seed": st.integers(0, 2**16),
    }
)


def _image(g: dict, shape: tuple[int, int, int], values: np.ndarray) -> Image:
    r = _rotation(*g["angles"])
    # array axes (z, y, x): x along the row cosine r[:, 0], y along the column cosine r[:, 1]
    normal = np.cross(r[:, 0], r[:, 1])
    z_dir = -normal if g["flip_slices"] else normal
    direction = np.column_stack([z_dir, r[:, 1], r[:, 0]])
    return Image.from_array(values.reshape(shape), spacing=g["spacing"], origin=g["origin"], direction=direction)


def _write_shuffled(img: Image, folder: Path, seed: int) -> list[Path]:
    """Write the series, then give the files shuffled names and InstanceNumbers (order must come from geometry)."""
    files = write_ct_series(img, folder, patient_id="P1", uid_seed=f"s{seed}")
    perm = np.random.default_rng(seed).permutation(len(files))
    out = []
    for f, k in zip(files, perm):
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = int(k) + 1
        target = folder / f"x{k:04d}_{f.name}.dcm"
        ds.save_as(target, enforce_file_format=True)
        f.unlink()
        out.append(target)
    return out


@pytest.mark.slow
@_SETTINGS
@given(g=geometry)
def test_dicom_sort_and_affine_match_the_geometry(tmp_path: Path, g: dict) -> None:
    shape = (5, 6, 7)
    values = np.arange(np.prod(shape), dtype=np.float64) * 3.0 - 500.0  # every voxel unique (HU)
    img = _image(g, shape, values)
    folder = tmp_path / f"series{next(_counter)}"
    _write_shuffled(img, folder, g["perm_seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = medlens.read_image(folder)
    assert got.shape == shape
    # direct computation from the tags: sort by the projection of ImagePositionPatient on row x column
    dss = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    dss.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, dtype=float))))
    ipp = np.array([d.ImagePositionPatient for d in dss], dtype=float)
    expected = np.eye(4)
    expected[:3, 0] = ipp[1] - ipp[0]
    expected[:3, 1] = iop[3:] * float(dss[0].PixelSpacing[0])
    expected[:3, 2] = iop[:3] * float(dss[0].PixelSpacing[1])
    expected[:3, 3] = ipp[0]
    np.testing.assert_allclose(got.affine, expected, atol=1e-3)
    # and every voxel value sits at the same physical point as in the image that was written
    vox = np.array(dss[0].pixel_array.shape)
    assert tuple(vox) == shape[1:]
    idx_in = {round(v): i for i, v in enumerate(img.array.ravel())}
    zyx_got = np.indices(shape).reshape(3, -1).T
    zyx_in = np.array([np.unravel_index(idx_in[round(v)], shape) for v in got.array.ravel()])
    pts_got = got.affine[:3, :3] @ zyx_got.T + got.affine[:3, 3:4]
    pts_in = img.affine[:3, :3] @ zyx_in.T + img.affine[:3, 3:4]
    np.testing.assert_allclose(pts_got, pts_in, atol=1e-3)


def _boxes_mask(shape: tuple[int, int, int], boxes: list[tuple[int, int, int, int, int, int]]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for z0, z1, y0, y1, x0, x1 in boxes:
        m[z0:z1, y0:y1, x0:x1] = True
    return m


box = st.tuples(
    st.integers(0, 3), st.integers(1, 3), st.integers(0, 10), st.integers(1, 6), st.integers(0, 10), st.integers(1, 6)
).map(lambda b: (b[0], b[0] + b[1], b[2], b[2] + b[3], b[4], b[4] + b[5]))


@pytest.mark.slow
@_SETTINGS
@given(g=geometry, boxes=st.lists(box, min_size=1, max_size=3))
def test_rtstruct_round_trip_gives_the_same_mask(tmp_path: Path, g: dict, boxes: list) -> None:
    from medlens.io.rtstruct import write_rtstruct

    shape = (6, 16, 16)
    img = _image(g, shape, np.zeros(np.prod(shape)))
    folder = tmp_path / f"series{next(_counter)}"
    files = _write_shuffled(img, folder, g["perm_seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = medlens.read_image(folder)
        # the mask on the grid as read (slice order from geometry), voxel boxes: boundaries on voxel edges
        mask = ref.with_array(_boxes_mask(shape, boxes))
        out = write_rtstruct({"ROI": mask}, files, tmp_path / f"rs{next(_counter)}.dcm")
        back = medlens.read_mask(out, reference=ref, roi="ROI")
    # rasterisation rule: a voxel is inside when its centre is inside a contour; contours traced on voxel
    # edges therefore give back exactly the voxels they were traced from
    np.testing.assert_array_equal(back.array, mask.array)


# "Q" + letters: cannot occur by chance in the pseudonyms (hex digits), dates, times or profile codes
_PHI = st.text(alphabet="GHJKLMNPRSTUVWXYZ", min_size=5, max_size=9).map(lambda s: "Q" + s)
_ACCESSION = st.text(alphabet="0123456789", min_size=5, max_size=7).map(lambda s: "Q" + s)


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_PHI, pid=_PHI, inst=_PHI, phys=_PHI, acc=_ACCESSION)
def test_deid_invariants(tmp_path: Path, name: str, pid: str, inst: str, phys: str, acc: str) -> None:
    from medlens.io.deid import deidentify

    n = next(_counter)
    src, dst = tmp_path / f"in{n}", tmp_path / f"out{n}"
    arr = np.random.default_rng(n).integers(-1000, 1500, (3, 8, 9)).astype(np.float64)
    img = Image.from_array(arr, spacing=(2.0, 0.7, 0.7))
    files = write_ct_series(img, src, patient_id=pid, patient_name=f"{name}^X", uid_seed=f"d{n}")
    for f in files:  # more identifying attributes, as a scanner writes them
        ds = pydicom.dcmread(f)
        ds.InstitutionName = inst
        ds.ReferringPhysicianName = f"{phys}^Dr"
        ds.AccessionNumber = acc
        ds.PatientBirthDate = "19700304"
        ds.save_as(f, enforce_file_format=True)
    before = {f.name: f.read_bytes() for f in files}
    ins = {str(pydicom.dcmread(f).SOPInstanceUID): pydicom.dcmread(f) for f in files}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deidentify(src, dst, map_path=tmp_path / f"map{n}.csv", workers=1)
    assert {f.name: f.read_bytes() for f in files} == before  # inputs never modified
    outs = [pydicom.dcmread(p) for p in sorted(dst.rglob("*.dcm"))]
    assert len(outs) == len(files)
    secrets_ = [name, pid, inst, phys, acc, "19700304"]
    for ds in outs:
        text = " ".join(str(e.value) for e in ds.iterall() if e.VR not in ("OB", "OW", "OF", "UN"))
        for s in secrets_:
            assert s not in text, f"{s!r} survived de-identification"
    # UIDs: replaced, and one input UID maps to one output UID (study/series/frame of reference shared)
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        got = {str(ds[key].value) for ds in outs}
        original = {str(getattr(d, key)) for d in ins.values()}
        assert len(got) == 1 and got.isdisjoint(original)
    sops = [str(ds.SOPInstanceUID) for ds in outs]
    assert len(set(sops)) == len(files) and set(sops).isdisjoint(ins)
    assert all(str(ds.file_meta.MediaStorageSOPInstanceUID) == str(ds.SOPInstanceUID) for ds in outs)
    # pixel data unchanged: the same set of slices, bit for bit
    assert sorted(ds.PixelData for ds in outs) == sorted(d.PixelData for d in ins.values())
