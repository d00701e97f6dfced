"""Secure aggregation (SecAgg+) and client-side clipping for the federation's ``train`` rounds.

With ``secure_aggregation.enabled`` a training round is Flower's SecAgg+ protocol: the ServerApp runs
:class:`flwr.server.workflow.SecAggPlusWorkflow` as the fit workflow of a one-round
:class:`flwr.server.workflow.DefaultWorkflow` (legacy strategy API: :class:`RoundStrategy` below hands it
this round's global weights and sites), and every site's ClientApp runs :func:`flwr.client.mod.secaggplus_mod`
around its ``train`` function. Four message exchanges per round (setup: public keys; share keys:
encrypted Shamir shares of each site's mask seed and key; collect masked vectors: the training
instructions out, the masked, quantised, weighted parameters back; unmask: the shares the server needs to
remove the masks of the sum). The server learns the weighted sum of the sites' parameters only; each
reply of the collect stage carries an integer vector masked with uniform noise modulo 2**32 and no
arrays (the mod empties the site's ArrayRecord before it is sent).

Arithmetic (Flower 1.42, ``secaggplus_mod._collect_masked_vectors`` and ``SecAggPlusWorkflow.unmask_stage``):
site *i* with weight ``n_i`` (its examples; 1 with central DP) and ``W = max_weight`` uses the factor
``d_i = round(n_i / W * T) / T`` (``T = quantization_range``), quantises ``d_i * p_i`` clipped to
``[-c, c]`` (``c = clipping_range``) on ``T`` levels with stochastic rounding (error below one level
``2c / T``), and the server returns ``sum_i dequant_i / sum_i d_i``. Hence the aggregate differs from
FedAvg's ``sum_i n_i p_i / sum_i n_i`` by at most :func:`quantization_bound` per parameter (while
``|d_i p_i| <= c``), plus float32 rounding.

Client-side clipping (``privacy.central_clipping: client``): the server sends ``clipping_norm`` in the
train config (Flower's ``DifferentialPrivacyClientSideFixedClipping``) and the site's
``fixedclipping_mod`` clips its update ``w_site - w_global`` to that L2 norm before it leaves the site;
the server adds Gaussian noise ``noise_multiplier * clipping_norm / n_sites`` to the average. This works
with and without SecAgg+ (server-side clipping cannot: it needs every update in the clear).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medlens.core.errors import InputError, ProcessingError
from medlens.learn.federated.config import MODULUS_RANGE

if TYPE_CHECKING:
    from medlens.learn.federated.apps import Federation

__all__ = ["quantization_bound", "secure_train_round", "site_mods"]

LEGACY_PARAMS = "fitins.parameters"
LEGACY_CONFIG = "fitins.config"


# ============================================================================ error bound
def quantization_bound(
    weights: Sequence[float], *, max_weight: float, clipping_range: float, quantization_range: int
) -> float:
    """Largest per-parameter difference between the SecAgg+ aggregate and FedAvg with ``weights``, excl. float32.

    Two parts: stochastic rounding (each site's error is below one level ``2c/T`` of its scaled vector,
    divided by ``sum d_i``) and the rounding of the weights to ``d_i = round(n_i T / W) / T``, which moves the
    normalised weights by ``|d_i / sum d - n_i / sum n|``; the second part is returned as a factor of
    ``max |p|`` by :func:`weight_rounding`, the first here.
    """
    d = _factors(weights, max_weight, quantization_range)
    return len(weights) * (2.0 * clipping_range / quantization_range) / float(sum(d))


def weight_rounding(weights: Sequence[float], *, max_weight: float, quantization_range: int) -> float:
    """``sum_i |d_i / sum d - n_i / sum n|``: times ``max |p_i|`` it bounds the effect of the rounded weights."""
    d = np.asarray(_factors(weights, max_weight, quantization_range))
    n = np.asarray(weights, float)
    return float(np.abs(d / d.sum() - n / n.sum()).sum())


def _factors(weights: Sequence[float], max_weight: float, quantization_range: int) -> list[float]:
    return [round(w / max_weight * quantization_range) / quantization_range for w in weights]


# ============================================================================ site side (ClientApp mods)
def _secagg_switch(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """``secaggplus_mod`` for the messages of a SecAgg+ round; other ``train`` messages pass through."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


def _clipping_switch(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """Flower's ``fixedclipping_mod`` when the server asked for client-side clipping (``clipping_norm`` sent)."""
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    legacy = LEGACY_CONFIG in msg.content.config_records
    cfg = msg.content.config_records.get(LEGACY_CONFIG if legacy else "config")
    if cfg is None or KEY_CLIPPING_NORM not in cfg:
        return call_next(msg, ctxt)
    if not legacy:
        from flwr.clientapp.mod import fixedclipping_mod

        return fixedclipping_mod(msg, ctxt, call_next)
    # SecAgg+ round: the legacy FitIns/FitRes layout; Flower's legacy mod rebuilds the reply from the
    # FitRes alone, so the site's own records (loss, ε, site id) are put back afterwards
    from flwr.client.mod import fixedclipping_mod as legacy_fixedclipping_mod

    kept: dict[str, Any] = {}

    def inner(m: Any, c: Any) -> Any:
        out = call_next(m, c)
        if not out.has_error():
            kept.update({k: v for k, v in out.content.items() if not k.startswith("fitres.")})
        return out

    out = legacy_fixedclipping_mod(msg, ctxt, inner)
    if not out.has_error():
        for k, v in kept.items():
            out.content[k] = v
    return out


def site_mods() -> list[Any]:
    """The mods of the site's ``train`` function: SecAgg+ outside, client-side clipping inside."""
    return [_secagg_switch, _clipping_switch]


def legacy_train(msg: Any, context: Any, train: Callable[[Any, Any], Any]) -> Any:
    """Run ``train`` (which reads ``arrays``/``config`` and replies ``arrays``/``metrics``/``site``) on a
    SecAgg+ ``FitIns`` message and turn its reply into the ``FitRes`` layout ``secaggplus_mod`` expects."""
    from flwr.app import ConfigRecord, RecordDict
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from medlens.learn.federated.apps import _arrays_to_record

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    keys = json.loads(str(fitins.config["array-keys"]))
    values = parameters_to_ndarrays(fitins.parameters)
    if len(keys) != len(values):
        raise InputError(f"secure aggregation: {len(values)} arrays received for {len(keys)} layer names")
    cfg = ConfigRecord({k: v for k, v in fitins.config.items() if k != "array-keys"})  # type: ignore[misc]
    original = msg.content
    msg.content = RecordDict({"arrays": _arrays_to_record(dict(zip(keys, values, strict=True))), "config": cfg})
    try:
        reply = train(msg, context)
    finally:
        msg.content = original
    if reply.has_error():
        return reply
    out = {k: v.numpy() for k, v in reply.content["arrays"].items()}
    metrics = reply.content["metrics"]
    weight = float(metrics[str(fitins.config["weight-key"])])
    res = FitRes(
        status=Status(Code.OK, ""),
        parameters=ndarrays_to_parameters([out[k] for k in keys]),
        num_examples=round(weight),
        metrics={},
    )
    content = compat.fitres_to_recorddict(res, keep_input=True)
    content["metrics"] = metrics
    content["site"] = reply.content["site"]
    reply.content = content
    return reply


# ============================================================================ server side
class RecordingGrid:
    """A Grid that forwards to Flower's and counts (and shows the wire log) every message of the protocol."""

    def __init__(self, grid: Any, wire_log: Callable[[str, Any], None] | None) -> None:
        from medlens.learn.federated.apps import content_bytes

        self._grid = grid
        self._bytes = content_bytes
        self.wire_log = wire_log
        self.sent = 0
        self.received = 0
        self.replies: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Iterable[Any]:
        msgs = list(messages)
        for m in msgs:
            self.sent += self._bytes(m)
            if self.wire_log:
                self.wire_log("sent", m)
        replies = list(self._grid.send_and_receive(msgs, timeout=timeout))
        for r in replies:
            if self.wire_log:
                self.wire_log("received", r)
            if not r.has_error():
                self.received += self._bytes(r)
        self.replies.extend(replies)
        return replies


def _round_strategy(nodes: Sequence[int], arrays: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> Any:
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.server.strategy import Strategy

    class RoundStrategy(Strategy):
        """This round only: the global weights, the accepted live sites, our train config; keeps the aggregate."""

        def __init__(self) -> None:
            self.aggregate: Any = None

        def initialize_parameters(self, client_manager: Any) -> Any:
            return ndarrays_to_parameters([np.asarray(v) for v in arrays.values()])

        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            proxies = {p.node_id: p for p in client_manager.all().values()}
            return [(proxies[n], FitIns(parameters, dict(config))) for n in nodes if n in proxies]

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if not results:
                return None, {}
            self.aggregate = results[0][1].parameters  # SecAgg+ put the unmasked average into every FitRes
            return self.aggregate, {}

        def configure_evaluate(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            return []

        def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
            return None, {}

        def evaluate(self, server_round: int, parameters: Any) -> Any:
            return None

    return RoundStrategy()


def max_weight(fed: Federation) -> float:
    """``secure_aggregation.max_weight``, else 1 (uniform weights of central DP) or the largest site's examples."""
    sa = fed.cfg["secure_aggregation"]
    if sa["max_weight"] is not None:
        return float(sa["max_weight"])
    if fed.cfg["privacy"]["mode"] == "central":
        return 1.0
    return float(max(fed.site_max_examples.values(), default=1) or 1)


def secure_train_round(
    fed: Federation, rnd: int, nodes: Sequence[int], arrays: Mapping[str, np.ndarray], config: Mapping[str, Any]
) -> tuple[dict[str, np.ndarray] | None, list[Any], int, int]:
    """One SecAgg+ round: (aggregate or None, the sites' collect-stage replies, bytes sent, bytes received)."""
    from flwr.app import Context, RecordDict
    from flwr.common import parameters_to_ndarrays
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    sa = fed.cfg["secure_aggregation"]
    pv = fed.cfg["privacy"]
    central = pv["mode"] == "central"
    if len(nodes) * int(sa["quantization_range"]) >= MODULUS_RANGE:
        raise InputError(
            f"secure_aggregation.quantization_range {sa['quantization_range']} x {len(nodes)} sites overflows the "
            f"2**32 modulus of the masks; use quantization_range < {MODULUS_RANGE // len(nodes)}"
        )
    key = "unit-weight" if central else "num-examples"
    cfg = {**config, "array-keys": json.dumps(list(arrays)), "weight-key": key}
    inner = _round_strategy(nodes, arrays, cfg)
    strategy: Any = inner
    if central:  # client-side clipping (validated): Flower's legacy wrapper sends clipping_norm and adds the noise
        from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping

        strategy = DifferentialPrivacyClientSideFixedClipping(
            inner, float(pv["noise_multiplier"]), float(pv["clipping_norm"]), len(nodes)
        )
    W = max_weight(fed)
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=int(sa["num_shares"]),
            reconstruction_threshold=int(sa["reconstruction_threshold"]),
            max_weight=W,
            clipping_range=float(sa["clipping_range"]),
            quantization_range=int(sa["quantization_range"]),
            modulus_range=MODULUS_RANGE,
            timeout=float(sa["timeout_s"]),
        )
    )
    base = fed.context or Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    # a fresh state per round: the workflow keeps its parameters in context.state
    ctx = LegacyContext(
        Context(
            run_id=base.run_id, node_id=base.node_id, node_config=base.node_config, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(num_rounds=1, round_timeout=float(sa["timeout_s"])),
        strategy=strategy,
    )
    grid = RecordingGrid(fed.grid, fed.wire_log)
    t0 = time.perf_counter()
    workflow(grid, ctx)  # type: ignore[arg-type]
    from medlens.learn.federated.apps import _short

    for r in grid.replies:
        if r.has_error():
            site = fed.accepted.get(r.metadata.src_node_id, str(r.metadata.src_node_id))
            fed.log(f"secure aggregation round {rnd}: site {site} failed: {_short(r.error.reason)}")
    collected = [r for r in grid.replies if not r.has_error() and "metrics" in r.content.metric_records]
    for r in collected:
        w = float(r.content["metrics"][key])
        if w > W * (1 + 1e-9):
            fed.log(f"secure aggregation: site weight {w:g} > max_weight {W:g}; set secure_aggregation.max_weight")
    if inner.aggregate is None:
        return None, collected, grid.sent, grid.received
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    # what the workflow stored after aggregate_fit: the unmasked average (+ the DP wrapper's noise)
    agg = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(ctx.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
    if len(agg) != len(arrays):
        raise ProcessingError(f"secure aggregation returned {len(agg)} arrays for {len(arrays)} layers")
    out = {k: np.asarray(v).reshape(np.shape(arrays[k])) for k, v in zip(arrays, agg, strict=True)}
    fed.secure_round_info = {
        "protocol": "SecAgg+",
        "num_shares": int(sa["num_shares"]),
        "reconstruction_threshold": int(sa["reconstruction_threshold"]),
        "clipping_range": float(sa["clipping_range"]),
        "quantization_range": int(sa["quantization_range"]),
        "max_weight": W,
        "messages": len(grid.replies),
        "bound": quantization_bound(
            [float(r.content["metrics"][key]) for r in collected] or [1.0],
            max_weight=W,
            clipping_range=float(sa["clipping_range"]),
            quantization_range=int(sa["quantization_range"]),
        ),
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    if not all(math.isfinite(float(np.max(np.abs(v)))) for v in out.values()):
        raise ProcessingError(f"secure aggregation round {rnd}: the aggregate is not finite")
    return out, collected, grid.sent, grid.received
