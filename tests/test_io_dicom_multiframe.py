"""Enhanced multi-frame CT: frames placed by PerFrameFunctionalGroups, same image as the single-frame series."""

from __future__ import annotations

import warnings

import numpy as np


def test_legacy_converted_enhanced_ct_equals_single_frame_series(ct_phantom_dir, tmp_path):
    import highdicom as hd
    import pydicom

    from medlens.io.dicom_series import list_series, read_dicom_series

    files = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[10:18]
    dss = [pydicom.dcmread(f) for f in files]
    dss = [dss[i] for i in (3, 0, 7, 1, 5, 2, 6, 4)]  # frames out of spatial order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = hd.legacy.LegacyConvertedEnhancedCTImage(
            legacy_datasets=dss,
            series_instance_uid=hd.UID(),
            series_number=99,
            sop_instance_uid=hd.UID(),
            instance_number=1,
        )
    path = tmp_path / "enhanced_ct.dcm"
    mf.save_as(path)
    assert "PerFrameFunctionalGroupsSequence" in pydicom.dcmread(path, stop_before_pixels=True)

    multi = read_dicom_series(path)
    single = read_dicom_series(files)
    assert multi.shape == single.shape == (8, 201, 204)
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-6)
    np.testing.assert_array_equal(multi.array, single.array)
    assert multi.meta.units == "HU" and multi.meta.sop_instance_uids == (str(mf.SOPInstanceUID),)
    (info,) = list_series(path)
    assert info.shape == (8, 201, 204) and info.qa == []
