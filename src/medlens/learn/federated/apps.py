"""The Flower apps: a ServerApp that runs the federation's rounds and a ClientApp for every site.

The same two apps run under Flower's Deployment Engine (``medlens fl server`` / ``medlens fl site``: a
SuperLink and one SuperNode process per site) and under its Simulation Engine (``medlens fl simulate``).

Messages (Flower Message API, all built here; nothing but the listed records crosses the wire):

============== ====================================== ==============================================
type           server -> site                         site -> server
============== ====================================== ==============================================
query.schema   task settings                          feature names / layer shapes, case count
query.moments  fold, stage, federated statistics      per-class counts, sums, centred sums of squares
train          global weights, fold, local recipe     updated weights, num-examples, loss, DP steps
evaluate       global weights, fold                   score histograms per class / Dice sum and count
============== ====================================== ==============================================

Aggregation uses Flower's strategies: ``FedAvg``/``FedProx.aggregate_train`` (weighted by the sites'
training examples) and, with ``privacy.mode: central``, ``DifferentialPrivacyServerSideFixedClipping``
(each site's update clipped to ``clipping_norm``, Gaussian noise added to the average). Every round's
bytes in both directions, the parameter count, the sites that answered and the ε spent are appended to
the run's audit log (:class:`medlens.core.audit.AuditLog`).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medlens.core.atomic import atomic_path, atomic_write_text
from medlens.core.errors import InputError, ProcessingError
from medlens.learn.federated import stats
from medlens.learn.federated.config import FLConfig, from_mapping, load_fl_config
from medlens.learn.federated.privacy import epsilon
from medlens.learn.federated.training import DPSettings

__all__ = ["Federation", "make_client_app", "make_server_app"]

SCHEMA_VERSION = "medlens-fl/1"


# ============================================================================ shared helpers
def _arrays_to_record(arrays: Mapping[str, np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _record_to_arrays(record: Any) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def content_bytes(msg: Any) -> int:
    """Bytes of a message's records (arrays, metrics, configs), as Flower counts them.

    Flower 1.42's ``ConfigRecord.count_bytes`` refuses list values (SecAgg+ sends lists of keys and
    shares); those records are counted the same way, element by element (bytes/str: their length,
    bool: 1, int/float: 8, plus the key).
    """
    total = 0
    for r in msg.content.values():
        try:
            total += r.count_bytes()
        except (ValueError, IndexError):  # a list value, or an empty one
            total += sum(
                len(k) + sum(_value_bytes(x) for x in (v if isinstance(v, list) else [v])) for k, v in r.items()
            )
    return int(total)


def _value_bytes(v: Any) -> int:
    if isinstance(v, bytes):
        return len(v)
    if isinstance(v, str):
        return len(v.encode())
    return 1 if isinstance(v, bool) else 8


def _json(record: Any, key: str) -> Any:
    return json.loads(str(record[key]))


# ============================================================================ site (ClientApp)
def _site_spec(context: Any, site_map: Mapping[int, Mapping[str, Any]] | None) -> dict[str, Any]:
    nc = dict(context.node_config)
    if "data-dir" in nc:
        site_id = str(nc.get("site-id") or Path(str(nc["data-dir"])).name)
        work = str(nc.get("work-dir") or Path(tempfile.gettempdir()) / "medlens-fl" / site_id)
        spec: dict[str, Any] = {"id": site_id, "data": str(nc["data-dir"]), "work": work}
        if nc.get("radiomics-settings"):
            spec["settings"] = str(nc["radiomics-settings"])
        if nc.get("unet-architecture"):
            spec["architecture"] = json.loads(str(nc["unet-architecture"]))
        return spec
    if site_map is not None and "partition-id" in nc:
        spec = dict(site_map[int(nc["partition-id"])])
        spec.setdefault("work", str(Path(tempfile.gettempdir()) / "medlens-fl" / spec["id"]))
        return spec
    raise InputError(
        'this SuperNode has no site: start it with --node-config \'data-dir="DIR" site-id="NAME"\' '
        "(medlens fl site --data DIR --site-id NAME does this)"
    )


def _site_settings(spec: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """Radiomics settings: the site's own file when it pins one, else the federation's."""
    if spec.get("settings"):
        import yaml

        return dict(yaml.safe_load(Path(spec["settings"]).read_text()))
    return dict(task["settings"])


def _tabular_site(spec: Mapping[str, Any], task: Mapping[str, Any]) -> Any:
    from medlens.learn.federated.site import TabularSite

    return TabularSite(
        spec["data"],
        spec["work"],
        settings=_site_settings(spec, task),
        roi=task["roi"],
        outcome=task["outcome"],
        folds=int(task["folds"]),
        seed=int(task["seed"]),
    )


def _unet_site(spec: Mapping[str, Any], task: Mapping[str, Any]) -> Any:
    from medlens.learn.federated.site import UNetSite

    return UNetSite(spec["data"], spec["work"], roi=task["roi"], holdout=int(task["holdout"]), seed=int(task["seed"]))


def _site_unet_config(spec: Mapping[str, Any], task: Mapping[str, Any]) -> Any:
    from medlens.segment.unet.model import UNetConfig

    return UNetConfig.from_dict(dict(spec.get("architecture") or task["architecture"]))


def _reply(
    msg: Any,
    *,
    arrays: Mapping[str, np.ndarray] | None = None,
    metrics: Mapping[str, float] | None = None,
    info: Mapping[str, Any] | None = None,
    array_key: str = "arrays",
) -> Any:
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    rd = RecordDict()
    if arrays is not None:
        rd[array_key] = _arrays_to_record(arrays)
    if metrics is not None:
        rd["metrics"] = MetricRecord({k: float(v) for k, v in metrics.items()})
    if info is not None:
        rd["site"] = ConfigRecord({k: json.dumps(v) if not isinstance(v, str) else v for k, v in info.items()})
    return Message(rd, reply_to=msg)


def make_client_app(site_map: Mapping[int, Mapping[str, Any]] | None = None) -> Any:
    """The ClientApp of a site. ``site_map`` (simulation) maps Flower's partition id to ``{id, data, ...}``."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query("schema")
    def _schema(msg: Any, context: Any) -> Any:
        spec = _site_spec(context, site_map)
        task = _json(msg.content["config"], "task")
        if task["kind"] == "radiomics":
            site = _tabular_site(spec, task)
            schema = site.schema()
        else:
            from medlens.learn.federated.training import unet_arrays

            cfg = _site_unet_config(spec, task)
            site = _unet_site(spec, task)
            from medlens.learn.federated.training import unet_examples

            schema = {
                "layers": {k: list(v.shape) for k, v in unet_arrays(cfg).items()},
                "n_cases": len(site.train_cases),
                "max_examples": unet_examples(site.train_cases, cfg),
                "architecture": cfg.to_dict(),
            }
        return _reply(msg, metrics={"n-cases": schema["n_cases"]}, info={"site-id": spec["id"], "schema": schema})

    @app.query("moments")
    def _moments(msg: Any, context: Any) -> Any:
        spec = _site_spec(context, site_map)
        cfg = msg.content["config"]
        task, fold, stage = _json(cfg, "task"), int(cfg["fold"]), str(cfg["stage"])
        site = _tabular_site(spec, task)
        if stage == "raw":
            X, _ = site.rows(fold, train=True)
            m = stats.site_moments(X)
        else:
            X, y = site.prepared(fold, _json(cfg, "prep"), train=True)
            m = stats.site_moments(X, y)
        from medlens.learn.federated.site import check_outgoing

        check_outgoing({"moments": m}, n_rows=len(site.y), image_shapes=[])
        return _reply(
            msg, arrays={"moments": m}, array_key="moments", metrics={"n": len(X)}, info={"site-id": spec["id"]}
        )

    from medlens.learn.federated.secure import legacy_train, site_mods

    @app.train(mods=site_mods())
    def _train(msg: Any, context: Any) -> Any:
        if "fitins.parameters" in msg.content.array_records:  # a SecAgg+ round (legacy FitIns layout)
            return legacy_train(msg, context, _train_plain)
        return _train_plain(msg, context)

    def _train_plain(msg: Any, context: Any) -> Any:
        from flwr.app import ConfigRecord

        from medlens.learn.federated.site import check_outgoing
        from medlens.learn.federated.training import train_logistic

        spec = _site_spec(context, site_map)
        cfg = msg.content["config"]
        task, fold, rnd = _json(cfg, "task"), int(cfg["fold"]), int(cfg["server-round"])
        if task["kind"] == "unet":
            from medlens.learn.federated.unet_task import client_train

            return client_train(msg, context, spec, task)
        mu = float(cfg.get("proximal-mu", 0.0))
        glob = _record_to_arrays(msg.content["arrays"])
        privacy = task["privacy"]
        dp = None
        if privacy["mode"] == "local":
            dp = DPSettings(
                noise_multiplier=float(privacy["noise_multiplier"]),
                max_grad_norm=float(privacy["max_grad_norm"]),
                batch_size=int(privacy["batch_size"]),
                delta=float(privacy["delta"]),
            )
        seed = int(task["seed"]) * 1000 + rnd * 7 + _stable(spec["id"])  # differs per site and round, reproducible
        if task["kind"] == "radiomics":
            site = _tabular_site(spec, task)
            X, y = site.model_rows(fold, _json(cfg, "prep"), train=True)
            res = train_logistic(
                glob,
                X,
                y,
                l2=float(cfg["l2"]),
                steps=int(task["local_steps"]),
                learning_rate=float(task["learning_rate"]),
                mu=mu,
                dp=dp,
                seed=seed,
            )
        check_outgoing(res.arrays, n_rows=len(site.y), image_shapes=[])
        # the site's accountant: every DP step of this training run (fold), across rounds
        key = f"dp-history-{task['run']}-fold{fold}"
        state = context.state
        past = json.loads(str(state[key]["h"])) if key in state.config_records else []
        history = past + [list(h) for h in res.dp_history]
        state[key] = ConfigRecord({"h": json.dumps(history)})
        eps = epsilon(history, delta=float(privacy["delta"])) if dp is not None else float("nan")
        metrics = {"num-examples": res.n_examples, "unit-weight": 1.0, "loss": res.loss, "epsilon": eps}
        return _reply(msg, arrays=res.arrays, metrics=metrics, info={"site-id": spec["id"], "dp-history": history})

    @app.evaluate()
    def _evaluate(msg: Any, context: Any) -> Any:
        from medlens.learn.federated.training import predict_logistic, unet_dice

        spec = _site_spec(context, site_map)
        cfg = msg.content["config"]
        task, fold = _json(cfg, "task"), int(cfg["fold"])
        glob = _record_to_arrays(msg.content["arrays"])
        if task["kind"] == "radiomics":
            site = _tabular_site(spec, task)
            X, y = site.model_rows(fold, _json(cfg, "prep"), train=False)
            p = predict_logistic(glob, X)
            hist = stats.score_histograms(p, y)
            return _reply(
                msg, arrays={"hist": hist}, array_key="hist", metrics={"n-test": len(y)}, info={"site-id": spec["id"]}
            )
        site = _unet_site(spec, task)
        dice = unet_dice(glob, site.test_cases, _site_unet_config(spec, task))
        return _reply(msg, metrics={"dice-sum": float(np.sum(dice)), "n-test": len(dice)}, info={"site-id": spec["id"]})

    return app


def _stable(text: str) -> int:
    import hashlib

    return int(hashlib.sha256(text.encode()).hexdigest()[:6], 16) % 997


# ============================================================================ server
class Federation:
    """The server side of one run: sites, rounds, aggregation, checkpoints and the audit log.

    Parameters
    ----------
    grid
        Flower's :class:`~flwr.serverapp.Grid` (deployment or simulation).
    config
        The validated :class:`~medlens.learn.federated.config.FLConfig`.
    wire_log
        Optional callable receiving every message sent and received (tests inspect what crosses the wire).
    """

    def __init__(
        self,
        grid: Any,
        config: FLConfig,
        *,
        log: Callable[[str], None] = print,
        wire_log: Callable[[str, Any], None] | None = None,
        context: Any = None,
    ) -> None:
        from medlens.core.audit import AuditLog

        self.grid = grid
        self.context = context  # the ServerApp's Flower context (SecAgg+ rounds build their LegacyContext on it)
        self.site_max_examples: dict[int, float] = {}  # node -> largest weight it can send (SecAgg+ max_weight)
        self.secure_round_info: dict[str, Any] = {}
        self.cfg = config
        self.log = log
        self.wire_log = wire_log
        self.out = config.out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.audit = AuditLog(self.out / "audit.jsonl")
        self.accepted: dict[int, str] = {}
        self.refused: dict[int, str] = {}
        self.reference_schema: dict[str, Any] | None = None
        self.task = self._task_record()
        self.round_log: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ plumbing
    def _task_record(self) -> dict[str, Any]:
        c = self.cfg
        common = {"seed": c["seed"], "privacy": c["privacy"], "run": c["name"]}
        if c["task"] == "radiomics":
            r = c["radiomics"]
            return {"kind": "radiomics", **r, "settings": c.radiomics_settings(), **common}
        u = c["unet"]
        return {"kind": "unet", **u, **common}

    def _config(self, extra: Mapping[str, Any]) -> Any:
        from flwr.app import ConfigRecord

        d: dict[str, Any] = {"task": json.dumps(self.task, default=str)}
        for k, v in extra.items():
            d[k] = json.dumps(v) if isinstance(v, (dict, list)) else v
        return ConfigRecord(d)

    def _send(self, kind: str, nodes: Iterable[int], content: Any) -> tuple[list[Any], int, int]:
        from flwr.app import Message

        msgs = [Message(content, dst_node_id=n, message_type=kind) for n in nodes]
        sent = sum(content_bytes(m) for m in msgs)
        for m in msgs:
            if self.wire_log:
                self.wire_log("sent", m)
        replies = list(self.grid.send_and_receive(msgs, timeout=float(self.cfg["round_timeout_s"])))
        received = 0
        for r in replies:
            if self.wire_log:
                self.wire_log("received", r)
            if not r.has_error():
                received += content_bytes(r)
        return replies, sent, received

    def _ok(self, replies: list[Any]) -> list[Any]:
        good = []
        for r in replies:
            nid = r.metadata.src_node_id
            if r.has_error():
                site = self.accepted.get(nid, str(nid))
                self.log(f"site {site}: no valid reply ({_short(r.error.reason)})")
                continue
            good.append(r)
        return good

    def _site(self, reply: Any) -> str:
        return str(reply.content["site"]["site-id"])

    # ------------------------------------------------------------------ sites
    def admit_sites(self, *, wait: bool = True) -> None:
        """Ask every new node for its schema; accept matching sites, refuse the others with the reason."""
        deadline = time.monotonic() + float(self.cfg["wait_for_sites_s"])
        while True:
            nodes = [int(n) for n in self.grid.get_node_ids()]
            new = [n for n in nodes if n not in self.accepted and n not in self.refused]
            if new:
                replies, _sent, _recv = self._send("query.schema", new, _rd({"config": self._config({})}))
                if self.reference_schema is None and self.cfg["task"] == "radiomics":
                    self._majority_schema(replies)
                for r in replies:
                    nid = r.metadata.src_node_id
                    if r.has_error():
                        reason = _short(r.error.reason)
                        self.refused[nid] = f"node {nid}: schema query failed: {reason}"
                        self.log(f"refused node {nid}: {reason}")
                        continue
                    site = self._site(r)
                    schema = json.loads(str(r.content["site"]["schema"]))
                    problem = self._schema_problem(site, schema)
                    if problem:
                        self.refused[nid] = problem
                        self.log(f"refused site {site}: {problem}")
                        self.audit.append(action="fl.site.refused", details={"site": site, "reason": problem})
                    else:
                        self.accepted[nid] = site
                        self.site_max_examples[nid] = float(schema.get("max_examples", schema["n_cases"]))
                        self.log(f"site {site} joined ({schema['n_cases']} cases)")
                        self.audit.append(action="fl.site.joined", details={"site": site, "n_cases": schema["n_cases"]})
            alive = [n for n in self.accepted if n in nodes]
            if not wait or len(alive) >= int(self.cfg["min_sites"]):
                return
            if time.monotonic() > deadline:
                raise ProcessingError(
                    f"only {len(alive)} site(s) with a matching schema are connected after "
                    f"{self.cfg['wait_for_sites_s']} s "
                    f"(min_sites={self.cfg['min_sites']}); refused: {list(self.refused.values()) or 'none'}"
                )
            time.sleep(0.5)

    def _majority_schema(self, replies: list[Any]) -> None:
        """The federation's feature schema: the one most sites report (ties: the first site by name)."""
        seen: dict[tuple[str, ...], list[str]] = {}
        for r in replies:
            if not r.has_error():
                names = tuple(json.loads(str(r.content["site"]["schema"]))["names"])
                seen.setdefault(names, []).append(self._site(r))
        if seen:
            names, sites = max(seen.items(), key=lambda kv: (len(kv[1]), [-ord(c) for c in min(kv[1])]))
            self.reference_schema = {"names": list(names), "site": min(sites)}

    def _schema_problem(self, site: str, schema: Mapping[str, Any]) -> str:
        if self.cfg["task"] == "radiomics":
            names = list(schema["names"])
            if self.reference_schema is None:
                self.reference_schema = {"names": names, "site": site}
                return ""
            ref = self.reference_schema["names"]
            if names == ref:
                return ""
            missing = [n for n in ref if n not in names]
            extra = [n for n in names if n not in ref]
            return (
                f"its feature schema differs from the federation's (set by site {self.reference_schema['site']}): "
                f"{len(missing)} feature(s) missing (first: {missing[:3]}), "
                f"{len(extra)} unexpected (first: {extra[:3]}); "
                "use the federation's radiomics settings at this site"
            )
        from medlens.learn.federated.training import unet_arrays

        want = {k: list(v.shape) for k, v in unet_arrays(self.cfg.unet_config()).items()}
        got = dict(schema["layers"])
        if got == want:
            return ""
        diff = [k for k in want if got.get(k) != want[k]] or [k for k in got if k not in want]
        k = diff[0]
        return (
            f"its U-Net architecture differs from the federation's: layer {k} is {got.get(k)} at the site but "
            f"{want.get(k)} in the federation ({len(diff)} layer(s) differ; site architecture "
            f"{schema.get('architecture', {}).get('channels')} vs {list(self.cfg.unet_config().channels)} channels)"
        )

    def _live_sites(self) -> list[int]:
        self.admit_sites(wait=True)
        nodes = {int(n) for n in self.grid.get_node_ids()}
        return sorted(n for n in self.accepted if n in nodes)

    # ------------------------------------------------------------------ one training round
    def train_round(
        self, rnd: int, arrays: dict[str, np.ndarray], extra: Mapping[str, Any], *, phase: str, max_attempts: int = 3
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Send the global model to the live sites, aggregate their updates (Flower strategy), log the round."""
        from flwr.serverapp.strategy import (
            DifferentialPrivacyClientSideFixedClipping,
            DifferentialPrivacyServerSideFixedClipping,
            FedAvg,
            FedProx,
        )
        from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

        from medlens.learn.federated.secure import secure_train_round

        mu = float(self.cfg["proximal_mu"]) if self.cfg["strategy"] == "fedprox" else 0.0
        pv = self.cfg["privacy"]
        central = pv["mode"] == "central"
        client_clip = central and pv["central_clipping"] == "client"
        secure = bool(self.cfg["secure_aggregation"]["enabled"])
        key = "unit-weight" if central else "num-examples"
        for attempt in range(1, max_attempts + 1):
            t0 = time.perf_counter()
            nodes = self._live_sites()
            rec = _arrays_to_record(arrays)
            cfgrec = self._config({**extra, "server-round": rnd, "proximal-mu": mu})
            secure_agg: dict[str, np.ndarray] | None = None
            if secure:  # SecAgg+: the server sees the sum only (clipping_norm is added by Flower's legacy wrapper)
                secure_agg, replies, sent, recv = secure_train_round(self, rnd, nodes, arrays, dict(cfgrec.items()))
                good = sorted(replies, key=self._site)
                if secure_agg is None:
                    good = []
            else:
                if client_clip:  # what DifferentialPrivacyClientSideFixedClipping.configure_train adds
                    cfgrec[KEY_CLIPPING_NORM] = float(pv["clipping_norm"])
                content = _rd({"arrays": rec, "config": cfgrec})
                replies, sent, recv = self._send("train", nodes, content)
                good = sorted(self._ok(replies), key=self._site)  # float sums in a fixed order: reproducible rounds
            if len(good) < int(self.cfg["min_sites"]):
                self.log(f"{phase} round {rnd}: {len(good)} of {len(nodes)} sites replied (< min_sites); retrying")
                self.audit.append(
                    action="fl.round.retry",
                    details={
                        "phase": phase,
                        "round": rnd,
                        "attempt": attempt,
                        "replied": [self._site(r) for r in good],
                    },
                )
                continue
            if secure_agg is not None:
                new = {k: secure_agg[k].astype(arrays[k].dtype) for k in arrays}
            else:
                strat: Any = (
                    FedProx(proximal_mu=mu, weighted_by_key=key, min_available_nodes=1, min_train_nodes=1)
                    if mu
                    else FedAvg(weighted_by_key=key, min_available_nodes=1, min_train_nodes=1)
                )
                if client_clip:  # each site clipped its own update (fixedclipping_mod); noise on the average
                    strat = DifferentialPrivacyClientSideFixedClipping(
                        strat, float(pv["noise_multiplier"]), float(pv["clipping_norm"]), len(good)
                    )
                elif central:
                    strat = DifferentialPrivacyServerSideFixedClipping(
                        strat, float(pv["noise_multiplier"]), float(pv["clipping_norm"]), len(good)
                    )
                    strat.current_arrays = rec
                agg, _ = strat.aggregate_train(rnd, good)
                if agg is None:
                    raise ProcessingError(f"{phase} round {rnd}: Flower could not aggregate the site updates")
                new = _record_to_arrays(agg)
                new = {k: new[k].astype(arrays[k].dtype) for k in arrays}
            sites = [self._site(r) for r in good]
            eps_sites = {self._site(r): float(r.content["metrics"]["epsilon"]) for r in good}
            entry: dict[str, Any] = {
                "phase": phase,
                "round": rnd,
                "sites": sites,
                "missing": sorted(set(self.accepted[n] for n in nodes) - set(sites)),
                "bytes_sent": sent,
                "bytes_received": recv,
                "n_parameters": int(sum(np.size(v) for v in arrays.values())),
                "loss": {self._site(r): float(r.content["metrics"]["loss"]) for r in good},
                "epsilon_local": {k: v for k, v in eps_sites.items() if np.isfinite(v)},
                "wall_s": round(time.perf_counter() - t0, 3),
                "attempt": attempt,
            }
            if secure:
                entry["secure_aggregation"] = dict(self.secure_round_info)
            if central:
                entry["central_clipping"] = pv["central_clipping"]
                entry["epsilon_central"] = epsilon(
                    [(float(self.cfg["privacy"]["noise_multiplier"]), 1.0, rnd)],
                    delta=float(self.cfg["privacy"]["delta"]),
                )
            self.round_log.append(entry)
            self.audit.append(action="fl.round", details=entry)
            eps_txt = ""
            if entry["epsilon_local"]:
                eps_txt = f", ε (δ={self.cfg['privacy']['delta']:g}) " + ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(entry["epsilon_local"].items())
                )
            if central:
                eps_txt = (
                    f", central ε {entry['epsilon_central']:.2f} at δ={pv['delta']:g} (site level, "
                    f"{pv['central_clipping']}-side clipping)"
                )
            sa_txt = " under SecAgg+" if secure else ""
            self.log(f"{phase} round {rnd}: {len(sites)} sites{sa_txt}, sent {sent} B, received {recv} B{eps_txt}")
            return new, entry
        raise ProcessingError(
            f"{phase} round {rnd}: fewer than min_sites={self.cfg['min_sites']} sites replied "
            f"in {max_attempts} attempts"
        )

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_dir(self, phase: str) -> Path:
        d = self.out / "checkpoints" / phase
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save_checkpoint(self, phase: str, rnd: int, arrays: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> Path:
        d = self._ckpt_dir(phase)
        p = d / f"round_{rnd:04d}.npz"
        with atomic_path(p) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **dict(arrays))  # type: ignore[arg-type]
        atomic_write_text(d / "state.json", json.dumps({"round": rnd, "file": p.name, **extra}, default=str))
        return p

    def load_checkpoint(self, phase: str) -> tuple[int, dict[str, np.ndarray], dict[str, Any]] | None:
        st = self.out / "checkpoints" / phase / "state.json"
        if not (self.cfg["resume"] and st.is_file()):
            return None
        doc = json.loads(st.read_text())
        with np.load(st.parent / doc["file"]) as z:
            arrays = {k: z[k] for k in z.files}
        return int(doc["round"]), arrays, doc

    # ------------------------------------------------------------------ tasks
    def run(self) -> dict[str, Any]:
        import medlens

        t0 = time.perf_counter()
        self.audit.append(
            action="fl.start",
            inputs={"config": self.cfg.source},
            details={
                "task": self.cfg["task"],
                "strategy": self.cfg["strategy"],
                "privacy": self.cfg["privacy"],
                "secure_aggregation": self.cfg["secure_aggregation"],
                "rounds": self.cfg["rounds"],
                "medlens_version": medlens.__version__,
            },
        )
        if self.cfg["task"] == "unet":  # refuse a checkpoint of another configuration before waiting for sites
            from medlens.learn.federated.unet_task import resume_point

            resume_point(self)
        self.admit_sites(wait=True)
        result = self.run_radiomics() if self.cfg["task"] == "radiomics" else self.run_unet()
        result.update(
            sites=sorted(set(self.accepted.values())),
            refused=sorted(self.refused.values()),
            wall_s=round(time.perf_counter() - t0, 2),
            bytes_total=int(sum(e["bytes_sent"] + e["bytes_received"] for e in self.round_log)),
        )
        atomic_write_text(self.out / "result.json", json.dumps(result, indent=1, default=float))
        self.audit.append(
            action="fl.finish",
            outputs={"result": str(self.out / "result.json")},
            details={k: result.get(k) for k in ("auc_pooled", "dice_pooled", "sites", "bytes_total")},
        )
        return result

    def _moments(
        self, fold: int, stage: str, prep: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], int]:
        nodes = self._live_sites()
        extra: dict[str, Any] = {"fold": fold, "stage": stage}
        if prep is not None:
            extra["prep"] = prep
        rec = self._config(extra)
        replies, sent, recv = self._send("query.moments", nodes, _rd({"config": rec}))
        good = self._ok(replies)
        if len(good) < int(self.cfg["min_sites"]):
            raise ProcessingError(f"fold {fold}: only {len(good)} sites sent their {stage} statistics")
        self.audit.append(
            action="fl.statistics",
            details={
                "fold": fold,
                "stage": stage,
                "sites": [self._site(r) for r in good],
                "bytes_sent": sent,
                "bytes_received": recv,
            },
        )
        return {self._site(r): r.content["moments"]["moments"].numpy() for r in good}, sent + recv

    def _prep(self, fold: int) -> dict[str, Any]:
        """Federated preprocessing of a fold: imputation means, ComBat statistics, scaler, feature selection."""
        r = self.cfg["radiomics"]
        raw, _ = self._moments(fold, "raw")
        pooled = stats.pool_moments(list(raw.values()))
        _, mean, _ = stats.mean_var(pooled)
        prep: dict[str, Any] = {"impute_mean": np.nan_to_num(mean).tolist(), "harmonise": r["harmonise"] or False}
        if r["harmonise"]:
            # ComBat: grand mean and the pooled *within-site* SD (sum of the sites' centred squares / n)
            n_tot = sum(m[0, 0] for m in raw.values())
            within = sum(m[0, 2] for m in raw.values()) / np.where(n_tot > 0, n_tot, 1)
            prep["combat_mean"] = np.nan_to_num(mean).tolist()
            prep["combat_sd"] = np.sqrt(within).tolist()
        cls, _ = self._moments(fold, "prepared", prep)
        pooled_c = stats.pool_moments(list(cls.values()))
        n, m, var = stats.mean_var(pooled_c)
        sd = np.sqrt(var)
        f = stats.f_statistic(pooled_c)
        usable = np.isfinite(sd) & (sd > 0)
        f = np.where(usable, f, -np.inf)
        k = min(int(r["n_features"]), int(usable.sum()))
        selected = sorted(np.argsort(-f, kind="stable")[:k].tolist())
        prep.update(
            scale_mean=m.tolist(), scale_sd=np.where(usable, sd, 1.0).tolist(), selected=selected, n_train=int(n.max())
        )
        return prep

    def run_radiomics(self) -> dict[str, Any]:
        r = self.cfg["radiomics"]
        folds = int(r["folds"])
        names = self.reference_schema["names"] if self.reference_schema else []
        results_path = self.out / "folds.json"
        done: dict[str, Any] = (
            json.loads(results_path.read_text()) if (self.cfg["resume"] and results_path.is_file()) else {}
        )
        hist_total = np.zeros((2, stats.AUC_BINS))
        site_hist: dict[str, np.ndarray] = {}
        for fold in [*range(folds), -1]:
            tag = "final" if fold == -1 else f"fold{fold}"
            if tag in done:
                res = done[tag]
            else:
                res = self._train_fold(fold, tag)
                done[tag] = res
                atomic_write_text(results_path, json.dumps(done, default=float))
            if fold >= 0:
                for s, h in res["hist"].items():
                    site_hist[s] = site_hist.get(s, np.zeros((2, stats.AUC_BINS))) + np.asarray(h)
                    hist_total += np.asarray(h)
        final = done["final"]
        model = {
            "format": "medlens-fl-logistic/1",
            "feature_names": names,
            "selected": [names[i] for i in final["prep"]["selected"]] if names else final["prep"]["selected"],
            "prep": final["prep"],
            "weight": final["arrays"]["weight"],
            "bias": final["arrays"]["bias"],
            "privacy": self.cfg["privacy"],
            "secure_aggregation": self.cfg["secure_aggregation"],
            "epsilon": final["epsilon"],
            "strategy": self.cfg["strategy"],
            "rounds": self.cfg["rounds"],
        }
        (self.out / "model").mkdir(exist_ok=True)
        atomic_write_text(self.out / "model" / "model.json", json.dumps(model, indent=1, default=float))
        per_site = {s: stats.auc_from_histograms(h) for s, h in sorted(site_hist.items())}
        out = {
            "task": "radiomics",
            "auc_pooled": stats.auc_from_histograms(hist_total),
            "auc_per_site": per_site,
            "epsilon": final["epsilon"],
            "selected_final": model["selected"],
            "folds": folds,
        }
        self.log(
            f"pooled out-of-fold AUC {out['auc_pooled']:.3f}; per site "
            + ", ".join(f"{s} {a:.3f}" for s, a in per_site.items())
        )
        return out

    def _train_fold(self, fold: int, tag: str) -> dict[str, Any]:
        from medlens.learn.federated.training import logistic_arrays

        r = self.cfg["radiomics"]
        prep = self._prep(fold)
        k = len(prep["selected"])
        l2 = 1.0 / (float(r["C"]) * max(prep["n_train"], 1))  # = sklearn LogisticRegression(C) on the pooled rows
        start = self.load_checkpoint(tag)
        arrays, first = logistic_arrays(k), 1
        if start is not None and start[2].get("selected") == prep["selected"]:
            first, arrays = start[0] + 1, start[1]
        extra = {"fold": fold, "prep": prep, "l2": l2}
        entry: dict[str, Any] = {}
        for rnd in range(first, int(self.cfg["rounds"]) + 1):
            arrays, entry = self.train_round(rnd, arrays, extra, phase=tag)
            self.save_checkpoint(tag, rnd, arrays, {"selected": prep["selected"]})
        res: dict[str, Any] = {
            "prep": prep,
            "arrays": {k2: v.tolist() for k2, v in arrays.items()},
            "epsilon": self._epsilon_summary(entry),
        }
        if fold >= 0:
            nodes = self._live_sites()
            rec, cfgrec = _arrays_to_record(arrays), self._config({"fold": fold, "prep": prep})
            replies, sent, recv = self._send("evaluate", nodes, _rd({"arrays": rec, "config": cfgrec}))
            good = self._ok(replies)
            res["hist"] = {self._site(x): x.content["hist"]["hist"].numpy().tolist() for x in good}
            h = sum(np.asarray(v) for v in res["hist"].values())
            self.audit.append(
                action="fl.evaluate",
                details={
                    "phase": tag,
                    "sites": list(res["hist"]),
                    "bytes_sent": sent,
                    "bytes_received": recv,
                    "auc_fold": stats.auc_from_histograms(np.asarray(h)),
                },
            )
        return res

    def _epsilon_summary(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        pv = self.cfg["privacy"]
        if pv["mode"] == "local":
            return {
                "mode": "local",
                "delta": pv["delta"],
                "per_site": entry.get("epsilon_local", {}),
                "unit": "patient (radiomics) / 2D slice (U-Net)",
            }
        if pv["mode"] == "central":
            return {
                "mode": "central",
                "clipping": pv["central_clipping"],
                "noise_multiplier": pv["noise_multiplier"],
                "clipping_norm": pv["clipping_norm"],
                "delta": pv["delta"],
                "epsilon": entry.get("epsilon_central"),
                "rounds": entry.get("round"),
                "unit": "site",
                "accountant": "RDP (opacus.accountants.analysis.rdp), sampling rate 1 per round",
            }
        return {"mode": "none"}

    def run_unet(self) -> dict[str, Any]:
        """U-Net rounds, per-round checkpoints and resume: :func:`medlens.learn.federated.unet_task.run_unet`."""
        from medlens.learn.federated.unet_task import run_unet

        return run_unet(self)

    def evaluate_unet(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
        nodes = self._live_sites()
        rec, cfgrec = _arrays_to_record(arrays), self._config({"fold": -1})
        replies, sent, recv = self._send("evaluate", nodes, _rd({"arrays": rec, "config": cfgrec}))
        good = self._ok(replies)
        tot = sum(float(x.content["metrics"]["dice-sum"]) for x in good)
        n = sum(float(x.content["metrics"]["n-test"]) for x in good)
        per = {
            self._site(x): float(x.content["metrics"]["dice-sum"]) / max(float(x.content["metrics"]["n-test"]), 1)
            for x in good
        }
        out = {"dice_pooled": tot / n if n else float("nan"), "dice_per_site": per, "n_test": int(n)}
        self.audit.append(
            action="fl.evaluate", details={"phase": "unet", **out, "bytes_sent": sent, "bytes_received": recv}
        )
        return out


def _short(reason: str) -> str:
    """The last meaningful line of a remote error (Ray and Flower wrap the site's exception in tracebacks)."""
    text = str(reason)
    for marker in ("Message: ",):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    lines = [
        ln.strip() for ln in text.replace("\\n", "\n").splitlines() if ln.strip() and not ln.strip().startswith("^")
    ]
    return (lines[-1] if lines else text)[:500].rstrip("'>")


def _rd(records: Mapping[str, Any]) -> Any:
    from flwr.app import RecordDict

    return RecordDict(dict(records))


def make_server_app(
    config: FLConfig | None = None,
    *,
    log: Callable[[str], None] = print,
    wire_log: Callable[[str, Any], None] | None = None,
    result: dict[str, Any] | None = None,
) -> Any:
    """The ServerApp. Without ``config`` it reads the YAML named by the run config key ``config-path``."""
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def _main(grid: Any, context: Any) -> None:
        cfg = config
        if cfg is None:
            path = context.run_config.get("config-path")
            if not path:
                raise InputError("the run has no config-path (start it with `medlens fl server CONFIG.yaml`)")
            cfg = load_fl_config(str(path))
            over = context.run_config.get("overrides")
            if over:
                raw = cfg.raw | json.loads(str(over))
                cfg = from_mapping(raw, base_dir=cfg.base_dir, source=cfg.source)
        res = Federation(grid, cfg, log=log, wire_log=wire_log, context=context).run()
        if result is not None:
            result.update(res)

    return app
