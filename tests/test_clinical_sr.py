"""DICOM SR (Comprehensive 3D, TID 1500): dciodvfy-valid, read by dcmtk's dsrdump, values round-trip."""

from __future__ import annotations

import subprocess
import warnings

import pytest

from conftest import need_tool
from medlens.clinical.measure import measure_lesion
from medlens.clinical.sr import Finding, read_measurement_sr, write_measurement_sr
from medlens.core.errors import InputError


@pytest.fixture(scope="module")
def pet_case(sts_dir, tmp_path_factory):
    import medlens
    from medlens.io.seg import write_seg

    src = sts_dir / "STS_001" / "PET" / "image"
    pet = medlens.read_image(src)
    mask = medlens.read_mask(sts_dir / "STS_001" / "PET" / "rtstruct", reference=pet, roi="GTV_Mass_PET")
    out = tmp_path_factory.mktemp("sr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the source's over-long StudyID is reported elsewhere
        seg = write_seg(mask, src, out / "seg.dcm", segment_label="GTV_Mass_PET", algorithm_type="MANUAL")
    return src, pet, mask, seg, out


def _dciodvfy_errors(path) -> list[str]:
    exe = need_tool("dciodvfy")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]


def test_pet_sarcoma_sr_valid_and_round_trips(pet_case) -> None:
    src, pet, mask, seg, out = pet_case
    m = measure_lesion(pet, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = write_measurement_sr(src, seg, [Finding(1, m, label="sarcoma", finding_type="tumor")], out / "sr.dcm")
    assert _dciodvfy_errors(p) == []
    dump = subprocess.run([need_tool("dsrdump"), str(p)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    assert "Comprehensive 3D SR" in dump.stdout and "{SUVbw}g/ml" in dump.stdout
    assert "Referenced Segment" in dump.stdout and "Long axis" in dump.stdout
    (g,) = read_measurement_sr(p)
    assert g["label"] == "sarcoma" and g["segment_number"] == 1
    import pydicom

    assert g["seg_sop_instance_uid"] == str(pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID)
    want = {k: v for k, v in m.to_dict().items() if k in g["measurements"]}
    assert set(g["measurements"]) == {
        "long_axis_mm",
        "short_axis_mm",
        "mean_diameter_mm",
        "volume_mm3",
        "suv_max",
        "suv_mean",
        "suv_peak",
        "tlg_g",
    }
    for k, v in want.items():
        assert g["measurements"][k] == pytest.approx(v, rel=1e-9)
    assert g["units"]["volume_mm3"] == "mm3" and g["units"]["suv_max"] == "{SUVbw}g/ml"
    # every source slice is referenced as a source image for the segmentation
    ds = pydicom.dcmread(p)
    assert len(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence) == 2


def test_lungrads_and_mapping_measurements(pet_case) -> None:
    src, _, _, seg, out = pet_case
    f = Finding(1, {"long_axis_mm": 9.4, "short_axis_mm": 7.0, "mean_hu": -20.5}, label="n1", lungrads_category="4a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = write_measurement_sr(src, seg, [f], out / "sr_lr.dcm")
    assert _dciodvfy_errors(p) == []
    (g,) = read_measurement_sr(p)
    assert g["lungrads_category"] == "4A" and g["measurements"]["mean_hu"] == -20.5
    assert g["units"]["mean_hu"] == "[hnsf'U]"


def test_bad_inputs(pet_case, sts_dir) -> None:
    src, _, _, seg, out = pet_case
    with pytest.raises(InputError, match="segment 2 is not in the SEG"):
        write_measurement_sr(src, seg, [Finding(2, {"volume_mm3": 1.0})], out / "x.dcm")
    with pytest.raises(InputError, match="unknown measurement"):
        write_measurement_sr(src, seg, [Finding(1, {"volume_ml": 1.0})], out / "x.dcm")
    with pytest.raises(InputError, match="lungrads_category"):
        write_measurement_sr(src, seg, [Finding(1, {"volume_mm3": 1.0}, lungrads_category="5")], out / "x.dcm")
    with pytest.raises(InputError, match="references none of the source images"):
        write_measurement_sr(sts_dir / "STS_002" / "PET" / "image", seg, [Finding(1, {"volume_mm3": 1.0})], out / "x")
    with pytest.raises(InputError, match="at least one finding"):
        write_measurement_sr(src, seg, [], out / "x.dcm")
    assert not (out / "x.dcm").exists()
