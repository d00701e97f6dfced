"""One-page HTML/PDF report and the REST ``report`` job entry point, on real STS data."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import warnings

import numpy as np
import pytest

from conftest import need_tool
from medlens.clinical.lungrads import Nodule, NoduleType, Status, assess_nodule
from medlens.clinical.measure import growth, measure_lesion
from medlens.clinical.report import key_image_png, render_report, study_report, write_report
from medlens.core.errors import InputError


def test_study_report_pet_rtstruct(sts_dir, tmp_path) -> None:
    pet_dir = sts_dir / "STS_001" / "PET"
    files = sorted((pet_dir / "image").glob("*.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = study_report(image_files=files, mask_path=pet_dir / "rtstruct", rois=None, out_dir=tmp_path, pdf=False)
    assert set(paths) == {"seg", "sr", "html", "json"}
    exe = need_tool("dciodvfy")
    for kind in ("seg", "sr"):
        res = subprocess.run([exe, str(paths[kind])], capture_output=True, text=True, timeout=60)
        assert [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")] == [], kind
    from medlens.clinical.sr import read_measurement_sr

    table = json.loads(paths["json"].read_text())
    (g,) = read_measurement_sr(paths["sr"])
    assert g["label"] == "GTV_Mass_PET"
    assert g["measurements"]["suv_max"] == pytest.approx(table["GTV_Mass_PET"]["suv_max"])
    page = paths["html"].read_text()
    assert f"{table['GTV_Mass_PET']['long_axis_mm']:.1f} mm" in page and "SUVmax" in page
    (uri,) = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert base64.b64decode(uri)[:8] == b"\x89PNG\r\n\x1a\n"
    # the SEG written from the RTSTRUCT serves as input too (the REST job passes a segment job's SEG)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = study_report(image_files=files, mask_path=paths["seg"], rois=None, out_dir=tmp_path / "seg", pdf=False)
    assert "seg" not in again
    (g2,) = read_measurement_sr(again["sr"])
    assert g2["segment_number"] == 1 and g2["measurements"] == g["measurements"]


def test_ct_report_with_lungrads_growth_cam_and_pdf(sts_dir, tmp_path) -> None:
    import medlens

    d = sts_dir / "STS_002" / "CT"
    ct = medlens.read_image(d / "image")
    mask = medlens.read_mask(d / "rtstruct", reference=ct, roi="GTV_Mass_CT")
    m = measure_lesion(ct, mask)
    # a prior exam: the same lesion eroded by 2 voxels in-plane, one year earlier
    from scipy import ndimage

    prior_mask = mask.with_array(ndimage.binary_erosion(np.asarray(mask.array), np.ones((1, 5, 5)), iterations=1))
    prior = measure_lesion(ct, prior_mask)
    g = growth(m, prior, current_date="20240110", prior_date="20230110")
    assert g.growing and g.mean_diameter_change_mm > 1.5
    lr = assess_nodule(
        Nodule(nodule_type=NoduleType(m.nodule_type), mean_diameter_mm=m.mean_diameter_mm, status=Status.GROWING)
    )
    z = np.arange(ct.shape[0])[:, None, None]
    cam = ct.with_array(np.exp(-((z - m.slice_index) ** 2) / 8.0) * np.ones(ct.shape), units="normalised")
    need_tool("chromium")
    paths = write_report(
        ct, {"GTV": mask}, tmp_path, lungrads={"GTV": lr}, growths={"GTV": g}, cams={"GTV": cam}, pdf=True
    )
    page = paths["html"].read_text()
    assert lr.category.value in page and "solid.growing" in page and "growing</b>" in page
    assert page.count("data:image/png;base64,") == 2
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    doc = json.loads(paths["json"].read_text())
    assert doc["GTV"]["lungrads"]["category"] == lr.category.value


def test_screenshot_shows_the_page(sts_dir, tmp_path) -> None:
    need_tool("chromium")
    from PIL import Image as PILImage

    import medlens
    from medlens.clinical.report import screenshot

    d = sts_dir / "STS_001" / "PET"
    pet = medlens.read_image(d / "image")
    mask = medlens.read_mask(d / "rtstruct", reference=pet, roi="GTV_Mass_PET")
    paths = write_report(pet, {"lesion": mask}, tmp_path, pdf=False)
    png = screenshot(paths["html"], tmp_path / "shot.png", size_px=(900, 600))
    arr = np.asarray(PILImage.open(png).convert("L"), dtype=float)
    assert arr.shape == (600, 900)
    # the key image (dark PET background) is on the page: a block of dark pixels amid white paper
    assert (arr < 60).mean() > 0.02 and (arr > 240).mean() > 0.5


def test_key_image_and_bad_inputs(sts_dir) -> None:
    import medlens

    d = sts_dir / "STS_001" / "PET"
    pet = medlens.read_image(d / "image")
    mask = medlens.read_mask(d / "rtstruct", reference=pet, roi="GTV_Mass_PET")
    m = measure_lesion(pet, mask)
    assert key_image_png(pet, mask, m)[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="window"):
        key_image_png(pet, mask, m, window=(1.0, 0.0))
    with pytest.raises(InputError, match="at least one finding"):
        render_report([])
