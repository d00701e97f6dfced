"""DICOM access layer, one module per concern (the public names are in :mod:`medlens.io.dicom_series`).

* :mod:`~medlens.io.dicom.files` — the one file lister (folders, lists, symlinked folders once);
* :mod:`~medlens.io.dicom.headers` — the one robust single-file reader (:func:`read_dicom_file`),
  fast header values, the one PatientAge parser;
* :mod:`~medlens.io.dicom.geometry` — slice records, sorting along the normal, spacing, affine, QA;
* :mod:`~medlens.io.dicom.pixels` — decoding and modality rescale of the chosen slices only;
* :mod:`~medlens.io.dicom.pet` — SUVbw factors;
* :mod:`~medlens.io.dicom.series` — assembling an :class:`~medlens.core.image.Image` from one series;
* :mod:`~medlens.io.dicom.listing` — :func:`list_series` from headers.

Reading order: every file's header is read first with its pixel data *deferred* (pydicom records
where the bytes are and does not read them); the series is chosen from the headers, and only the
chosen series' pixel data are then read from disk and decoded.
"""
