"""The DICOM side of ``medlens serve``: the node (C-ECHO, C-STORE, C-FIND SCP) and C-STORE to peers.

pynetdicom is imported only when a node starts or a peer is contacted.
"""

from __future__ import annotations

from medlens.serve.dicom.node import DicomNode
from medlens.serve.dicom.scu import SendReport, echo_peer, send_to_peer

__all__ = ["DicomNode", "SendReport", "echo_peer", "send_to_peer"]
