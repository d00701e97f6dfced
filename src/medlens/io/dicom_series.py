"""DICOM image series: the public names of the DICOM access layer (:mod:`medlens.io.dicom`).

:func:`read_dicom_series` reads one series into an :class:`~medlens.core.image.Image` (headers of
every file first, pixel data deferred; then the pixels of the chosen series only);
:func:`list_series` describes every series from headers; :func:`geometry_findings` runs the
geometry QA on headers a caller already holds (the catalog). See :mod:`medlens.io.dicom` for the
modules behind them and ``docs/io-dicom.md`` for the rules.
"""

from __future__ import annotations

from medlens.io.dicom.geometry import geometry_findings
from medlens.io.dicom.listing import SeriesInfo, list_series
from medlens.io.dicom.series import NON_IMAGE_MODALITIES, read_dicom_series

__all__ = ["NON_IMAGE_MODALITIES", "SeriesInfo", "geometry_findings", "list_series", "read_dicom_series"]
