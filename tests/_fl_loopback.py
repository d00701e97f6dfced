"""An in-process Flower Grid for tests: the ServerApp's Federation talks to real ClientApps (with their mods).

Every message crosses a protobuf round trip (``message_to_proto`` / ``message_from_proto``, what the
SuperLink stores and forwards), so a site never shares an object with the server, and each node keeps
its own :class:`flwr.app.Context` across messages as a SuperNode does. No Ray, no processes: a round
costs what the sites' code costs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from types import SimpleNamespace
from typing import Any


class LoopbackGrid:
    def __init__(self, client_app: Any, node_configs: Mapping[int, Mapping[str, Any]]) -> None:
        from flwr.app import Context, RecordDict
        from flwr.common.constant import SUPERLINK_NODE_ID
        from flwr.supercore.task_identity import TaskIdentity

        # what a ServerApp process gets from its SuperLink (Message() reads it)
        TaskIdentity.run_id = 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        TaskIdentity.task_id = 1
        self.app = client_app
        self.contexts = {
            nid: Context(run_id=1, node_id=nid, node_config=dict(nc), state=RecordDict(), run_config={})
            for nid, nc in node_configs.items()
        }
        self.run = SimpleNamespace(run_id=1)
        self.errors: list[str] = []

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> list[Any]:
        from flwr.app import Error, Message
        from flwr.common.serde import message_from_proto, message_to_proto

        out = []
        for m in messages:
            m.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as the SuperLink does
            inbound = message_from_proto(message_to_proto(m))
            try:
                reply = self.app(inbound, self.contexts[m.metadata.dst_node_id])
            except Exception as exc:  # what a SuperNode reports for a failing ClientApp
                self.errors.append(f"{type(exc).__name__}: {exc}")
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=inbound)
            out.append(message_from_proto(message_to_proto(reply)))
        return out
