"""The web viewer, driven by Playwright in Debian's chromium against a real uvicorn on 127.0.0.1.

An STS study (PET + its RTSTRUCT, CT) is stored through STOW-RS, features and report jobs run
through the REST API, and the page is checked from screenshots of its canvas: not blank, the
mask's red where the ROI is, a different picture after a window/level change, the warm heat map
over CT, and the feature table and SR content shown.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import need_tool

pytest.importorskip("fastapi", reason="the REST API needs the [serve] extra")
pytest.importorskip("playwright.sync_api", reason="playwright (the Python package) drives the browser")

PORT = 11270
CHROMIUM = "/usr/bin/chromium"
FAST_RADIOMICS = {"name": "fast", "families": ["morph", "stat"], "texture": {"families": []}}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sts_dir: Path) -> Iterator[dict[str, Any]]:
    import httpx
    import uvicorn

    from medlens.serve.api import create_app
    from medlens.serve.api.client import stow_body
    from medlens.serve.auth import add_key
    from medlens.serve.jobs import JobManager
    from medlens.serve.settings import ServiceSettings
    from medlens.serve.store import StudyStore

    need_tool("chromium")
    root = tmp_path_factory.mktemp("serve-viewer")
    settings = ServiceSettings(data_dir=root, http_port=PORT, dicom_port=PORT + 1)
    store = StudyStore(root, quiet_period_s=60, fsync=False)
    jobs = JobManager(store, settings)
    key = add_key(root / "api_keys.yaml", "radiologist", role="write")
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, store, jobs), host="127.0.0.1", port=PORT, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started and time.monotonic() < end:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{PORT}"
    auth = {"Authorization": f"Bearer {key}"}
    files = sorted((sts_dir / "STS_001" / "PET").rglob("*.dcm")) + sorted(
        (sts_dir / "STS_001" / "CT" / "image").glob("*.dcm")
    )
    body, ctype = stow_body(files)
    r = httpx.post(f"{base}/dicomweb/studies", content=body, headers={**auth, "Content-Type": ctype}, timeout=120)
    assert r.status_code == 200, r.text
    study = httpx.get(f"{base}/studies", headers=auth).json()[0]["study_uid"]
    ids = []
    for kind, params in (("features", {"settings": FAST_RADIOMICS}), ("report", {})):
        r = httpx.post(f"{base}/jobs", json={"kind": kind, "study_uid": study, "params": params}, headers=auth)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    for i in ids:
        rec = jobs.wait(i, timeout_s=180)
        assert rec.state == "done", rec.message
    try:
        yield {"base": base, "key": key, "study": study, "jobs": jobs}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        jobs.shutdown()
        store.close()


def _canvas(page: Any) -> np.ndarray:
    from PIL import Image as PILImage

    page.wait_for_timeout(400)  # let NiiVue draw the frame after the volumes are on the GPU
    png = page.locator("#gl").screenshot()
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)


def _red(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r > 150) & (g < 90) & (b < 90)


def test_viewer_shows_volume_mask_window_heatmap_features_and_sr(live: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 850})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live['base']}/viewer/?study={live['study']}")
            # Without a key the page says so and shows nothing.
            page.wait_for_selector("#status:has-text('enter an API key')", timeout=20000)
            # One axial slice: software WebGL (SwiftShader) renders it far faster than the 4-panel view.
            page.click("button[data-view='AXIAL']")
            page.fill("#key", "mlk_wrong-key-wrong-key-wrong-key-wrong-key-000")
            page.click("#connect")
            page.wait_for_selector("body[data-status='error']", state="attached", timeout=20000)
            assert "401" in page.text_content("#status")
            page.fill("#key", live["key"])
            page.click("#connect")
            page.wait_for_selector("body[data-volumes='1']", state="attached", timeout=60000)

            plain = _canvas(page)
            grey = plain.mean(axis=2)
            assert grey.std() > 10, "the canvas is blank"
            assert _red(plain).sum() < 50  # nothing red before a mask is chosen

            # Mask overlay: the RTSTRUCT ROI rasterised server-side, drawn red.
            page.select_option("#mask", label="RTSTRUCT GTV_Mass_PET")
            page.wait_for_selector("body[data-volumes='2']", state="attached", timeout=60000)
            masked = _canvas(page)
            red = _red(masked)
            assert red.sum() > 2000, f"only {red.sum()} red pixels with the mask on"
            # Red appears only where the picture changed (the ROI), and the rest stays as it was.
            changed = np.abs(masked - plain).sum(axis=2) > 30
            assert (red & changed).sum() / red.sum() > 0.95

            # Window/level: a wider SUV window makes the picture darker outside the mask.
            page.click("button[data-preset='SUV 0-5']")
            page.wait_for_selector("body[data-window='2.5/5']", state="attached")
            narrow = _canvas(page)
            page.click("button[data-preset='SUV 0-20']")
            page.wait_for_selector("body[data-window='10/20']", state="attached")
            wide = _canvas(page)
            outside = ~(_red(narrow) | _red(wide))
            assert wide.mean(axis=2)[outside].mean() < 0.7 * narrow.mean(axis=2)[outside].mean()

            # Feature table and SR content from the jobs run through the API.
            table = page.text_content("#features")
            assert "morph_volume" in table and "3.6429e+5" in table  # 364285 mm^3, as the library computes
            sr = page.text_content("#sr")
            assert "GTV_Mass_PET" in sr and "suv_max = 7.911" in sr
            # The HTML report (medlens.clinical.report) in its sandboxed frame.
            report = page.frame_locator("#report").locator("body").text_content()
            assert report is not None and "GTV_Mass_PET" in report

            # Heat map: PET SUV in the warm colour map over the CT.
            page.click("#series li[data-modality='CT']")
            page.wait_for_selector("body[data-volumes='1']", state="attached", timeout=60000)
            ct = _canvas(page)
            assert ct.mean(axis=2).std() > 10
            page.select_option("#heat", index=1)
            page.wait_for_selector("body[data-volumes='2']", state="attached", timeout=60000)
            heat = _canvas(page)
            r, g, b = heat[..., 0], heat[..., 1], heat[..., 2]
            warm = (r > g + 40) & (g > b) & (r > 120)
            ct_warm = (ct[..., 0] > ct[..., 1] + 40) & (ct[..., 1] > ct[..., 2]) & (ct[..., 0] > 120)
            assert warm.sum() > 500 and ct_warm.sum() < 50
        finally:
            browser.close()
    assert not errors, errors
