"""Learning from MedLens data: tabular radiomics + clinical models, deep models, federated training.

Sits between the science packages (``segment``, ``radiomics``) and ``pipeline``: it may use
``core``, ``io``, ``catalog``, ``preprocess``, ``segment`` and ``radiomics``, never ``pipeline`` or the apps.
Heavy dependencies (torch, MONAI, Flower, Opacus) are imported only inside the modules that need them.
"""
