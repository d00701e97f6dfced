"""Reading one series out of a folder of four: pixel bytes read and peak traced memory (one run).

Usage: ``python benchmarks/io_chosen_series_memory.py`` (needs ../shared/data). The folder holds the
IBSI CT phantom slices four times, as four series (60 files each). The reader reads every header with
the pixel data deferred and then only the chosen series' pixels; the figure to compare is the peak
traced memory against reading the same series alone (its floor), side by side.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDLENS_SHARED_DATA", REPO.parent / "shared" / "data"))


def _peak_mb(fn) -> float:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def main() -> None:
    import pydicom
    from pydicom.uid import generate_uid

    from medlens.io.dicom_series import read_dicom_series

    src = DATA / "ibsi1" / "ct_phantom" / "dicom" / "image"
    tmp = Path(tempfile.mkdtemp())
    try:
        uid = ""
        files = sorted(src.glob("*.dcm"))
        for i, f in enumerate(files):
            ds = pydicom.dcmread(f)
            uid = str(ds.SeriesInstanceUID)
            ds.save_as(tmp / f"a{i:03d}.dcm")
            for k in range(3):
                ds.SeriesInstanceUID = generate_uid()
                ds.SOPInstanceUID = generate_uid()
                ds.save_as(tmp / f"b{k}_{i:03d}.dcm")
        pixel_mb = sum(p.stat().st_size for p in tmp.iterdir()) / 1e6
        alone = _peak_mb(lambda: read_dicom_series(src))
        chosen = _peak_mb(lambda: read_dicom_series(tmp, series_uid=uid))
        print(f"folder: {len(files) * 4} files, 4 series, {pixel_mb:.1f} MB on disk")
        print(f"peak traced memory, the series alone:            {alone:6.1f} MB")
        print(f"peak traced memory, 1 of 4 series in the folder: {chosen:6.1f} MB  (ratio {chosen / alone:.2f})")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
