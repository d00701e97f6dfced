# ruff: noqa: E501  (the reference table keeps one file per line)
"""pydicom's test files and pydicom-data: a reference table, and every file reads or fails clearly.

The table's pixel values are cross-checked in the test against SimpleITK (GDCM, an independent
decoder) where it reads the file, and against pydicom's own modality LUT; the lossless variants of
one image (RLE, big endian, JPEG-LS, JPEG 2000, implicit VR) must give identical values.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from medlens.core.errors import MedlensError

pydicom_data = pytest.importorskip("pydicom.data")

_MR = [((0, 0), 905.0), ((32, 32), 182.0), ((63, 63), 862.0)]
# file, shape, modality, units, spacing (array order, mm), [(index, value)]
TABLE = [
    ("CT_small.dcm", (128, 128), "CT", "HU", (0.6615, 0.6615), [((0, 0), -849.0), ((64, 64), 904.0), ((127, 127), -115.0)]),
    ("MR_small.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),  # explicit VR little endian
    ("MR_small_implicit.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),
    ("MR_small_bigendian.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),  # explicit VR big endian
    ("MR_small_RLE.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),
    ("MR_small_jp2klossless.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),
    ("MR_small_jpeg_ls_lossless.dcm", (64, 64), "MR", "arbitrary", (0.3125, 0.3125), _MR),
    ("JPEG2000.dcm", (1024, 256), "NM", "arbitrary", (2.26, 2.26), [((0, 0), 0.0), ((512, 128), 7.0), ((1023, 255), 0.0)]),
    ("JPGExtended.dcm", (1024, 256), "NM", "arbitrary", (2.26, 2.26), [((0, 0), 1.0), ((512, 128), 14.0), ((1023, 255), 1.0)]),
    ("JPEG-LL.dcm", (1024, 256), "NM", "arbitrary", (2.26, 2.26), [((0, 0), 0.0), ((512, 128), 13.0), ((1023, 255), 0.0)]),
    ("image_dfl.dcm", (512, 512), "OT", "arbitrary", (1.0, 1.0), [((0, 0), 213.0), ((256, 256), 65.0), ((511, 511), 188.0)]),
    ("eCT_Supplemental.dcm", (2, 512, 512), "CT", "HU", (10.0, 0.3887, 0.3887), [((0, 0, 0), -1024.0), ((1, 256, 256), 81.0), ((1, 511, 511), -1024.0)]),
    ("693_J2KR.dcm", (512, 512), "CT", "HU", (0.4785, 0.4785), [((0, 0), -3024.0), ((256, 256), 24.0), ((511, 511), -3024.0)]),
    ("693_UNCR.dcm", (512, 512), "CT", "HU", (0.4785, 0.4785), [((0, 0), -3024.0), ((256, 256), 24.0), ((511, 511), -3024.0)]),
    ("J2K_pixelrep_mismatch.dcm", (512, 512), "CT", "HU", (0.431, 0.431), [((0, 0), -2000.0), ((256, 256), 27.0), ((511, 511), -2000.0)]),
    ("OBXXXX1A_rle.dcm", (600, 800), "US", "arbitrary", (1.0, 1.0), [((0, 0), 244.0), ((300, 400), 1.0), ((599, 799), 0.0)]),
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", (768, 1024), "US", "arbitrary", (1.0, 1.0), [((0, 0), 0.0), ((384, 512), 15.0), ((767, 1023), 0.0)]),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", (484, 484), "MR", "arbitrary", (0.7231, 0.7231), [((0, 0), 0.0), ((242, 242), 108.0), ((483, 483), 0.0)]),
]  # fmt: skip


def _read(path):
    from medlens.io.dicom_series import read_dicom_series

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dicom_series(path)


def _pydicom_values(path):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    if "PerFrameFunctionalGroupsSequence" in ds:
        return None  # per-frame rescale: compared through the table only
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float64)


@pytest.mark.parametrize(("name", "shape", "modality", "units", "spacing", "values"), TABLE, ids=[t[0] for t in TABLE])
def test_reference_table(name, shape, modality, units, spacing, values):
    path = pydicom_data.get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not available (pip install pydicom-data)")
    img = _read(path)
    assert img.shape == shape and img.dtype == np.float32
    assert img.meta.modality == modality and img.meta.units == units
    assert img.spacing == pytest.approx(spacing, abs=1e-4)
    for index, value in values:
        assert float(img.array[index]) == value, (index, float(img.array[index]))
    ref = _pydicom_values(path)
    if ref is not None:
        np.testing.assert_array_equal(img.array, ref.astype(np.float32))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"])
def test_reference_files_agree_with_simpleitk(name):
    import SimpleITK as sitk

    from medlens.core.sitk_bridge import from_sitk

    path = pydicom_data.get_testdata_file(name)
    img = _read(path)
    ref = from_sitk(sitk.ReadImage(path))
    np.testing.assert_array_equal(img.array, ref.array.reshape(img.shape).astype(np.float32))
    np.testing.assert_allclose(img.spacing, ref.spacing[-2:], atol=1e-4)


def _all_files():
    files = [f for f in pydicom_data.get_testdata_files() if os.path.isfile(f)]
    return sorted(set(files))


def test_every_pydicom_file_reads_or_fails_clearly():
    files = _all_files()
    assert len(files) > 100
    ok = failed = 0
    for f in files:
        try:
            img = _read(f)
        except MedlensError as exc:
            msg = str(exc)
            assert os.path.basename(f) in msg, (f, msg)  # the message names the file
            assert len(msg) > 40, (f, msg)
            failed += 1
            continue
        assert img.dtype == np.float32 and np.all(np.isfinite(img.array)), f
        ok += 1
    assert ok >= 60, (ok, failed)
