#!/usr/bin/env bash
# Rebuild the web viewer's bundle: npm installs the pinned @niivue/niivue and esbuild (viewer/package-lock.json),
# esbuild bundles viewer/src/main.js into src/medlens/serve/viewer/static/viewer.js. The bundle is committed, so
# installing MedLens never needs npm; run this only after changing viewer/src or the pinned versions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../viewer"
npm ci --no-audit --no-fund
npm run build
ls -l ../src/medlens/serve/viewer/static/viewer.js
