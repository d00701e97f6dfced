"""The MedLens service: DICOM node (pynetdicom), REST API (FastAPI) and web viewer.

An app layer beside :mod:`medlens.cli`: it calls :mod:`medlens.pipeline` and the public functions
and holds no science of its own. FastAPI, uvicorn and pynetdicom (the ``[serve]`` extra) are
imported only here.
"""
