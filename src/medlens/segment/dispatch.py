"""One entry point for every segmentation method: :func:`segment` (used by the CLI and the pipeline).

The science lives in :mod:`medlens.segment.classic`, :mod:`medlens.segment.lungs` and
:mod:`medlens.segment.unet`; this module only maps a method name and its keyword options to
the function that implements it, and checks the option names before calling it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from medlens.core.errors import InputError
from medlens.core.image import Image

__all__ = ["METHODS", "Method", "method_options", "postprocess_mask", "segment"]


class Method(StrEnum):
    """Segmentation methods accepted by :func:`segment` (and ``medlens segment --method``)."""

    otsu = "otsu"
    multi_otsu = "multi-otsu"
    threshold = "threshold"
    region_grow = "region-grow"
    confidence = "confidence"
    suv_threshold = "suv-threshold"
    lungs = "lungs"
    unet = "unet"


#: The method names, in the order of :class:`Method`.
METHODS: tuple[str, ...] = tuple(m.value for m in Method)


def _function(method: Method) -> Callable[..., Image]:
    """The function implementing ``method`` (imported lazily: the U-Net pulls in torch on use only)."""
    from medlens.segment import classic

    if method is Method.lungs:
        from medlens.segment.lungs import segment_lungs

        return segment_lungs
    if method is Method.unet:
        from medlens.segment.unet import segment_unet

        return segment_unet
    table: dict[Method, Callable[..., Image]] = {
        Method.otsu: classic.otsu,
        Method.multi_otsu: classic.multi_otsu,
        Method.threshold: classic.threshold,
        Method.region_grow: classic.region_grow,
        Method.confidence: classic.confidence_connected,
        Method.suv_threshold: classic.suv_threshold,
    }
    return table[method]


def _as_method(method: str) -> Method:
    try:
        return Method(str(method))
    except ValueError:
        raise InputError(f"unknown segmentation method {method!r}; use one of: {', '.join(METHODS)}") from None


def method_options(method: str) -> tuple[str, ...]:
    """Names of the keyword options that ``method`` accepts (see the implementing function's docstring)."""
    sig = inspect.signature(_function(_as_method(method)))
    return tuple(p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY)


def segment(image: Image, *, method: str, **options: Any) -> Image:
    """Segment ``image`` with a named method.

    Parameters
    ----------
    image
        The image to segment (units as the method expects: HU for ``lungs``, SUVbw for
        ``suv-threshold``, PET for the shipped ``unet`` model).
    method
        One of :data:`METHODS`: ``otsu`` (:func:`~medlens.segment.classic.otsu`), ``multi-otsu``
        (:func:`~medlens.segment.classic.multi_otsu`), ``threshold``
        (:func:`~medlens.segment.classic.threshold`), ``region-grow``
        (:func:`~medlens.segment.classic.region_grow`), ``confidence``
        (:func:`~medlens.segment.classic.confidence_connected`), ``suv-threshold``
        (:func:`~medlens.segment.classic.suv_threshold`), ``lungs``
        (:func:`~medlens.segment.lungs.segment_lungs`), ``unet``
        (:func:`~medlens.segment.unet.segment_unet`).
    **options
        Keyword options of that function (e.g. ``lower``/``upper``/``units`` for ``threshold``,
        ``seed_index``/``seed_mm``/``tolerance`` for ``region-grow``, ``classes`` for ``multi-otsu``,
        ``model_dir``/``backend`` for ``unet``); see :func:`method_options`.

    Returns
    -------
    Image
        A boolean mask on ``image``'s grid, or an integer label image for ``multi-otsu``
        (``0..classes-1``) and ``lungs`` (0 background, 1 right, 2 left).

    Raises
    ------
    InputError
        Unknown method (the message lists the allowed ones), an option the method does not take
        (the message lists the ones it does), or a bad option value (raised by the method).
    """
    m = _as_method(method)
    allowed = method_options(m.value)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"segmentation method {m.value!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(allowed) or '(none)'}"
        )
    return _function(m)(image, **options)


def postprocess_mask(
    mask: Image,
    *,
    largest: bool = False,
    fill_holes: bool = False,
    opening_mm: float | None = None,
    closing_mm: float | None = None,
) -> Image:
    """Clean a boolean mask: keep the largest component, fill holes, open, close (in that order).

    Label images (``multi-otsu``, ``lungs``) are returned unchanged. Radii are in mm.
    """
    from medlens.segment import classic

    if not mask.is_mask:
        return mask
    if largest and mask.array.any():
        mask = classic.largest_component(mask)
    if fill_holes:
        mask = classic.fill_holes(mask)
    if opening_mm:
        mask = classic.opening(mask, radius_mm=opening_mm)
    if closing_mm:
        mask = classic.closing(mask, radius_mm=closing_mm)
    return mask
