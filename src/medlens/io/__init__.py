"""Reading and writing images and masks: the only package that knows file formats and DICOM.

Public entry points (re-exported from :mod:`medlens`): :func:`read_image`, :func:`read_mask`,
:func:`write_image`, :func:`list_series`.
"""

from medlens.io.api import list_series, read_image, read_mask, write_image

__all__ = ["list_series", "read_image", "read_mask", "write_image"]
