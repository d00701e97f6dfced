"""De-identification of DICOM collections (PS3.15 Annex E Basic Application Level Confidentiality Profile).

>>> from medlens.io.deid import deidentify                                   # doctest: +SKIP
>>> deidentify("in/", "out/", retain=["dates", "patient-chars"])          # doctest: +SKIP
"""

from __future__ import annotations

from medlens.io.deid.engine import BurnedInAnnotationWarning, Deidentifier, DeidReport, deidentify
from medlens.io.deid.pixels import PixelRegion
from medlens.io.deid.profile import Option, action_for, load_table, row_for

__all__ = [
    "BurnedInAnnotationWarning",
    "DeidReport",
    "Deidentifier",
    "Option",
    "PixelRegion",
    "action_for",
    "deidentify",
    "load_table",
    "row_for",
]
