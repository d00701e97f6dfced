"""The DICOM access layer: headers first, pixels of the chosen series only; one lister, one reader, one age parser."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import FormatError, GeometryWarning
from medlens.io.dicom.files import collect_files, list_files
from medlens.io.dicom.headers import age_years, read_dicom_file
from medlens.io.dicom_series import list_series, read_dicom_series

N = 6


def _two_series(ct_phantom_dir: Path, folder: Path) -> tuple[str, str]:
    """N phantom slices as series A and the same slices re-identified as series B, in one folder."""
    import pydicom
    from pydicom.uid import generate_uid

    files = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[30 : 30 + N]
    folder.mkdir()
    uid_b = generate_uid()
    uid_a = ""
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        uid_a = str(ds.SeriesInstanceUID)
        ds.save_as(folder / f"a_{i:02d}.dcm", enforce_file_format=True)
        ds.SeriesInstanceUID = uid_b
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(folder / f"b_{i:02d}.dcm", enforce_file_format=True)
    return uid_a, uid_b


def test_only_the_chosen_series_pixels_are_read_and_decoded(ct_phantom_dir, tmp_path, monkeypatch):
    import pydicom.filereader

    import medlens.io.dicom.pixels as pixels_mod

    folder = tmp_path / "two"
    uid_a, uid_b = _two_series(ct_phantom_dir, folder)
    read_from_disk: list[str] = []
    decoded: list[str] = []
    real_deferred = pydicom.filereader.read_deferred_data_element
    real_decode = pixels_mod.decode

    def counting_deferred(fileobj_type, filename_or_obj, timestamp, raw_data_elem):  # type: ignore[no-untyped-def]
        if raw_data_elem.tag == 0x7FE00010:
            read_from_disk.append(os.path.basename(str(filename_or_obj)))
        return real_deferred(fileobj_type, filename_or_obj, timestamp, raw_data_elem)

    def counting_decode(ds, name):  # type: ignore[no-untyped-def]
        decoded.append(str(ds.SeriesInstanceUID))
        return real_decode(ds, name)

    monkeypatch.setattr(pydicom.filereader, "read_deferred_data_element", counting_deferred)
    monkeypatch.setattr(pixels_mod, "decode", counting_decode)
    img = read_dicom_series(folder, series_uid=uid_b)
    assert img.shape[0] == N and img.meta.series_uid == uid_b
    assert decoded == [uid_b] * N  # six decodes, all of series B
    assert sorted(read_from_disk) == [f"b_{i:02d}.dcm" for i in range(N)]  # series A's pixel bytes never read
    # The pixels equal those of series A read on its own (same slices).
    decoded.clear()
    a = read_dicom_series(folder, series_uid=uid_a)
    assert decoded == [uid_a] * N
    np.testing.assert_array_equal(a.array, img.array)


def test_listing_reads_no_pixels(ct_phantom_dir, tmp_path, monkeypatch):
    import medlens.io.dicom.pixels as pixels_mod

    folder = tmp_path / "two"
    uid_a, uid_b = _two_series(ct_phantom_dir, folder)

    def no_decode(ds, name):  # type: ignore[no-untyped-def]
        raise AssertionError(f"list_series decoded {name}")

    monkeypatch.setattr(pixels_mod, "decode", no_decode)
    infos = {i.series_uid: i for i in list_series(folder)}
    assert set(infos) == {uid_a, uid_b}
    assert infos[uid_b].shape == (N, 201, 204) and infos[uid_b].n_files == N


def test_one_lister_follows_symlinked_folders_once_and_skips_hidden(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "x.dcm").write_bytes(b"1")
    (tmp_path / "a" / "b" / "y.dcm").write_bytes(b"2")
    (tmp_path / "a" / ".hidden").write_bytes(b"3")
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")  # a loop: followed once, never again
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    got = [str(p.relative_to(tmp_path)) for p in list_files(tmp_path)]
    assert got == sorted(got) and sorted(p.rsplit("/", 1)[1] for p in got) == ["x.dcm", "y.dcm"]  # each real folder
    # once (through whichever link is met first), sorted, the hidden file left out
    assert len(list_files(tmp_path, include_hidden=True)) == 3
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "z.dcm").write_bytes(b"4")
    files, source = collect_files([tmp_path / "a" / "x.dcm", tmp_path / "c"])
    assert [f.name for f in files] == ["x.dcm", "z.dcm"] and "2 files under" in source


def test_robust_reader_statuses(ct_phantom_dir, tmp_path):
    import pydicom

    src = sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[0]
    (tmp_path / "notes.txt").write_text("hello")
    assert read_dicom_file(tmp_path / "notes.txt").status == "not_dicom"
    # No preamble: a raw dataset starting at group 0008 is still read.
    ds = pydicom.dcmread(src)
    raw = tmp_path / "raw.dcm"
    ds.save_as(raw, enforce_file_format=False, implicit_vr=True, little_endian=True)
    raw.write_bytes(raw.read_bytes()[132:] if raw.read_bytes()[128:132] == b"DICM" else raw.read_bytes())
    got = read_dicom_file(raw, pixels="skip")
    assert got.status == "dicom" and got.has_pixels and str(got.ds.SOPInstanceUID) == str(ds.SOPInstanceUID)
    # Truncated native pixel data are found from the header, without reading the pixels.
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:-1000])
    bad = read_dicom_file(cut)
    assert bad.status == "bad" and bad.ds is None and "truncated" in (bad.reason or "")
    good = read_dicom_file(src)
    assert good.status == "dicom" and good.has_pixels
    assert good.ds._dict[0x7FE00010].value is None  # still deferred: on disk until used


@pytest.mark.parametrize(
    ("value", "years"),
    [("045Y", 45.0), ("45Y", 45.0), ("006M", 0.5), ("052W", 52 * 7 / 365.25), ("365D", 365 / 365.25),
     ("045y", 45.0), (" 070Y ", 70.0), ("", None), (None, None), ("45", None), ("Y", None), ("12345Y", None),
     ("04.5Y", None), ("045X", None)],
)  # fmt: skip
def test_one_age_parser(value, years):
    got = age_years(value)
    assert got == (pytest.approx(years) if years is not None else None)


def test_age_parser_is_the_one_the_pipeline_uses(tmp_path, ct_phantom_dir):
    import pydicom

    from medlens.io import read_image
    from medlens.pipeline.steps import header_facts

    ds = pydicom.dcmread(sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[0])
    ds.PatientAge = "018M"
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "x.dcm", enforce_file_format=True)
    # the pipeline takes the age from Image.meta, which the series reader fills with the one age parser
    assert header_facts(read_image(tmp_path / "s"))["age"] == pytest.approx(1.5)


def test_zero_rescale_slope_is_refused(ct_phantom_dir, tmp_path):
    import pydicom

    ds = pydicom.dcmread(sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[0])
    ds.RescaleSlope = 0
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    with pytest.raises(FormatError, match="RescaleSlope is 0"):
        read_dicom_series(tmp_path / "s.dcm")


def test_single_slice_without_orientation_or_thickness_warns(ct_phantom_dir, tmp_path):
    import pydicom

    ds = pydicom.dcmread(sorted((ct_phantom_dir / "dicom" / "image").glob("*.dcm"))[0])
    del ds.ImageOrientationPatient
    del ds.SliceThickness
    ds.save_as(tmp_path / "s.dcm", enforce_file_format=True)
    with pytest.warns(GeometryWarning) as rec:
        img = read_dicom_series(tmp_path / "s.dcm")
    text = " ".join(str(w.message) for w in rec)
    assert "no ImageOrientationPatient" in text and "SliceThickness" in text
    np.testing.assert_allclose(img.direction[:, :2], [[0, 1], [1, 0], [0, 0]])
