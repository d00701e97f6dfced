"""The viewer ships as files of the package: bundled NiiVue, nothing loaded from a CDN, rebuildable."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATIC = REPO / "src" / "medlens" / "serve" / "viewer" / "static"


def test_page_loads_only_its_own_files() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(refs) == ["data:,", "viewer.css", "viewer.js"]
    csp = re.search(r'http-equiv="Content-Security-Policy"\s+content="([^"]+)"', html)
    assert csp is not None and "default-src 'self'" in csp.group(1)
    assert "http" not in csp.group(1)
    css = (STATIC / "viewer.css").read_text()
    assert "@import" not in css and "url(" not in css


def test_bundle_is_niivue_and_fetches_nothing_remote() -> None:
    js = (STATIC / "viewer.js").read_text()
    assert len(js) > 500_000  # NiiVue is inside (a 2 MB bundle), not loaded from elsewhere
    assert "attachToCanvas" in js and "loadVolumes" in js
    # No remote module, script, stylesheet or fetch: every URL in the code is a comment or a doc string.
    assert not re.search(r"""import\s*\(\s*["'`]https?:""", js)
    assert not re.search(r"""fetch\(\s*["'`]https?:""", js)
    assert not re.search(r"""from\s*["']https?:""", js)
    assert "unpkg.com" not in js and "jsdelivr" not in js and "cdnjs" not in js


def test_build_inputs_are_pinned_and_committed() -> None:
    pkg = json.loads((REPO / "viewer" / "package.json").read_text())
    lock = json.loads((REPO / "viewer" / "package-lock.json").read_text())
    niivue = pkg["dependencies"]["@niivue/niivue"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", niivue), "pin an exact version"
    assert lock["packages"]["node_modules/@niivue/niivue"]["version"] == niivue
    assert lock["packages"]["node_modules/esbuild"]["version"] == pkg["devDependencies"]["esbuild"]
    assert "../src/medlens/serve/viewer/static/viewer.js" in pkg["scripts"]["build"]
    script = (REPO / "scripts" / "build_viewer.sh").read_text()
    assert "npm ci" in script and "npm run build" in script
