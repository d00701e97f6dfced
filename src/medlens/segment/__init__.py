"""Segmentation: classic methods, lung fields, metrics and a small U-Net (``medlens.segment.unet``)."""
