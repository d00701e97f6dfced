"""Clinical rules and reports: guideline engines (Lung-RADS), measurements, DICOM SR, printed reports.

Same layer as :mod:`medlens.learn`: uses ``core``, ``io``, ``preprocess``, ``segment`` and
``radiomics``; never ``pipeline`` or the apps.
"""
