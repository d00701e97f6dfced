"""Segmentation: classic methods, lung fields, metrics and a small U-Net (``medlens.segment.unet``).

:func:`segment` (``segment(image, method="otsu", **options)``) is the one entry point by method name.
"""

from medlens.segment.dispatch import METHODS, Method, method_options, postprocess_mask, segment

__all__ = ["METHODS", "Method", "method_options", "postprocess_mask", "segment"]
