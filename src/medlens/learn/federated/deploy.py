"""The apps under Flower's Deployment Engine (named in the Flower App that ``medlens fl server`` writes).

The ServerApp reads the federation YAML from the run config key ``config-path``; each SuperNode's
ClientApp finds its site in its ``--node-config`` (``data-dir``, ``site-id``, ``work-dir``).
"""

from __future__ import annotations

from medlens.learn.federated.apps import make_client_app, make_server_app

server_app = make_server_app()
client_app = make_client_app(None)
