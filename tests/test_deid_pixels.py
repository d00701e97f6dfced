"""Clean Pixel Data: blanked rectangles of burned-in text, on pydicom's ultrasound and MR test files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from conftest import need_tool
from medlens.core.errors import InputError
from medlens.io.deid import PixelRegion, deidentify

US_TOP = "US:640x480:0,0,640,60"  # the header band of pydicom's 640x480 ultrasound images


def test_pixel_region_parse_and_spec() -> None:
    r = PixelRegion.parse(US_TOP)
    assert (r.modality, r.columns, r.rows, r.x0, r.y0, r.x1, r.y1) == ("US", 640, 480, 0, 0, 640, 60)
    assert PixelRegion.parse(r.spec()) == r
    any_ = PixelRegion.parse("0, 0, 20, 10")
    assert any_.modality is None and any_.columns is None and any_.spec() == "*:*x*:0,0,20,10"
    assert PixelRegion.parse("sc:*:1,2,3,4").modality == "SC"
    for bad in ("US:0,0,640", "US:640x480:a,b,c,d", "US;0,0,1,1", ""):
        with pytest.raises(InputError, match="is not MODALITY:COLUMNSxROWS:x0,y0,x1,y1"):
            PixelRegion.parse(bad)
    with pytest.raises(InputError, match="must have 0 <= x0 < x1"):
        PixelRegion.parse("10,0,5,5")


def _inputs(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    from pydicom.data import get_testdata_file

    inp = tmp_path / "in"
    inp.mkdir()
    files = {}
    for name in ("US1_UNCR.dcm", "US1_J2KR.dcm", "MR_small.dcm"):
        files[name] = inp / name
        shutil.copy(get_testdata_file(name), files[name])
    return inp, files


def _by_sop(out: Path) -> dict[str, pydicom.Dataset]:
    """The output datasets, keyed by path."""
    return {str(p): pydicom.dcmread(p) for p in out.rglob("*.dcm")}


def _codes(ds: pydicom.Dataset) -> set[str]:
    return {str(it.CodeValue) for it in ds.DeidentificationMethodCodeSequence}


def test_clean_pixels_blanks_matching_images_only(tmp_path: Path) -> None:
    inp, files = _inputs(tmp_path)
    originals = {n: pydicom.dcmread(p).pixel_array.copy() for n, p in files.items()}
    before = {n: p.read_bytes() for n, p in files.items()}
    rep = deidentify(inp, tmp_path / "out", map_path=tmp_path / "map.csv", clean_pixels=[US_TOP])
    assert rep.n_written == 3 and len(rep.pixels_cleaned) == 2
    assert all(p.read_bytes() == before[n] for n, p in files.items())  # inputs never modified
    outs = list(_by_sop(tmp_path / "out").values())
    us = [d for d in outs if d.Modality == "US"]
    mr = [d for d in outs if d.Modality == "MR"]
    assert len(us) == 2 and len(mr) == 1
    for ds in us:
        px = ds.pixel_array
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.PhotometricInterpretation == "RGB" and "113101" in _codes(ds)
        assert ds.DeidentificationMethod.endswith("+113101")
        assert not px[:60].any()  # the band is black in every channel
        # below the band the pixels are the decoded source pixels (both sources are lossless)
        np.testing.assert_array_equal(px[60:], originals["US1_UNCR.dcm"][60:])
    assert originals["US1_UNCR.dcm"][:60].any()  # the premise: the band held something
    # the MR matched no region: pixel data unchanged, no Clean Pixel Data code
    np.testing.assert_array_equal(mr[0].pixel_array, originals["MR_small.dcm"])
    assert "113101" not in _codes(mr[0])
    assert "2 with pixel regions blanked" in rep.summary()


def test_clean_pixels_monochrome1_fill_and_region_outside_image(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    inp = tmp_path / "in"
    inp.mkdir()
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"  # white is low: blanking must use the largest value
    ds.save_as(inp / "mono1.dcm")
    src = ds.pixel_array.copy()
    rep = deidentify(inp, tmp_path / "out", map_path=tmp_path / "map.csv", clean_pixels=["MR:64x64:0,0,64,8"])
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert len(rep.pixels_cleaned) == 1
    assert (out.pixel_array[:8] == src.max()).all() and np.array_equal(out.pixel_array[8:], src[8:])
    # a region that starts outside the image: the file is skipped with the reason, the run goes on
    rep2 = deidentify(inp, tmp_path / "out2", map_path=tmp_path / "map2.csv", clean_pixels=["MR:*:70,0,80,8"])
    assert rep2.n_written == 0 and len(rep2.skipped) == 1
    assert "starts outside the 64x64 image" in rep2.skipped[0][1]


def _dciodvfy_errors(tool: str, path: Path) -> set[str]:
    res = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return {
        re.sub(r"<[^>]*>|= \S+|\d+", "#", ln) for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")
    }


def test_clean_pixels_output_passes_dciodvfy_like_the_source(tmp_path: Path) -> None:
    tool = need_tool("dciodvfy")
    inp, files = _inputs(tmp_path)
    deidentify(inp, tmp_path / "out", map_path=tmp_path / "map.csv", clean_pixels=[US_TOP])
    src_errors = _dciodvfy_errors(tool, files["US1_J2KR.dcm"]) | _dciodvfy_errors(tool, files["US1_UNCR.dcm"])
    for p in (tmp_path / "out").rglob("*.dcm"):
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "US":
            assert not (_dciodvfy_errors(tool, p) - src_errors), p


def test_clean_pixels_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medlens.cli import main

    inp, _ = _inputs(tmp_path)
    code = main(["deid", str(inp), str(tmp_path / "out"), "--map", str(tmp_path / "m.csv"), "--clean-pixels", US_TOP])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "2 with pixel regions blanked" in out.out
    assert main(["deid", str(inp), str(tmp_path / "o2"), "--map", str(tmp_path / "m2.csv"), "--clean-pixels", "x"]) == 2
    assert "is not MODALITY:COLUMNSxROWS" in capsys.readouterr().err


def test_segmentations_never_match_a_region() -> None:
    ds = pydicom.Dataset()
    ds.Modality, ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelData = "SEG", 4, 4, 1, b"\x00\x00"
    everywhere = PixelRegion.parse("0,0,4,4")
    assert not everywhere.applies(ds)
    ds.Modality = "OT"  # a 1-bit object of another modality: still not an image to clean
    assert not everywhere.applies(ds)
    ds.BitsAllocated = 8
    assert everywhere.applies(ds)
