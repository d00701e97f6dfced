"""Task (b) of the federation: the lesion U-Net, site training, per-round checkpoints, resume and DP ledger.

Server side (:func:`run_unet`, called by :meth:`Federation.run_unet
<medlens.learn.federated.apps.Federation.run_unet>`): FedAvg / FedProx rounds through
:meth:`~medlens.learn.federated.apps.Federation.train_round` (Flower's strategies), one checkpoint
file per round, evaluation on the sites' held-out patients, the final model in ``<output>/model``.

Checkpoints: ``<output>/checkpoints/unet/round_NNNN.npz`` holds the global weights after round N and
a JSON entry ``__medlens_checkpoint__`` (format, round, the *training identity* and its hash, ε per
site); ``state.json`` names the last one. Both are written atomically. The training identity is
everything that decides the weights of a round (architecture, local recipe, strategy and proximal
``mu``, privacy settings, seed), not the number of rounds: a run resumed with ``rounds: 30`` from a
20-round run continues it. A checkpoint with another identity is refused with the file and the keys
that differ.

Site side (:func:`client_train`): the U-Net recipe of :func:`medlens.learn.federated.training.train_unet`
on the site's training patients; with ``privacy.mode: local`` DP-SGD (Opacus). Every site keeps its
privacy ledger in its own work folder (``dp-ledger-<run>-<hash>.json``: the accountant history after
each round), so the ε it reports after a resumed round composes the steps of the rounds before the
interruption as well (Flower's context state does not survive a new run).

Reproducibility: the initial weights are seeded by ``seed``; a site's round seed is
``seed * 1000 + 7 * round + hash(site id)``; Adam starts afresh each round; the server aggregates the
replies in site order. A run resumed after round r therefore yields the same weights as an
uninterrupted run (tested).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medlens.core.atomic import atomic_path, atomic_write_text
from medlens.core.errors import FormatError, InputError

if TYPE_CHECKING:
    from medlens.learn.federated.apps import Federation
    from medlens.learn.federated.config import FLConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "client_train",
    "identity_difference",
    "load_unet_checkpoint",
    "run_unet",
    "save_unet_checkpoint",
    "training_identity",
]

CHECKPOINT_FORMAT = "medlens-fl-unet-checkpoint/1"
_META_KEY = "__medlens_checkpoint__"


# ============================================================================ training identity
def training_identity(config: FLConfig) -> dict[str, Any]:
    """What decides the U-Net's weights round by round (not the number of rounds, not timeouts)."""
    u = config["unet"]
    pv = config["privacy"]
    privacy: dict[str, Any] = {"mode": pv["mode"]}
    if pv["mode"] == "local":
        privacy.update({k: pv[k] for k in ("noise_multiplier", "max_grad_norm", "batch_size", "delta")})
    elif pv["mode"] == "central":
        privacy.update({k: pv[k] for k in ("noise_multiplier", "clipping_norm", "delta")})
        if pv["central_clipping"] != "server":  # (absent = server: the identities of earlier runs stay valid)
            privacy["central_clipping"] = pv["central_clipping"]
    extra: dict[str, Any] = {}
    sa = config["secure_aggregation"]
    if sa["enabled"]:  # quantisation changes the weights a little: part of the identity
        extra["secure_aggregation"] = {k: v for k, v in sa.items() if k != "timeout_s"}
    return {
        **extra,
        "task": "unet",
        "architecture": config.unet_config().to_dict(),
        "unet": {k: u[k] for k in ("roi", "local_epochs", "learning_rate", "batch_size", "holdout")},
        "strategy": config["strategy"],
        "proximal_mu": float(config["proximal_mu"]) if config["strategy"] == "fedprox" else 0.0,
        "privacy": privacy,
        "seed": int(config["seed"]),
    }


def identity_hash(identity: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of the identity (sorted JSON)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def identity_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: <saved> in the checkpoint vs <current> in the config`` for every dotted key that differs."""
    a, b = _flat(saved), _flat(current)
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(f"{k}: {a.get(k, '<absent>')!r} in the checkpoint vs {b.get(k, '<absent>')!r} in the config")
    return out


# ============================================================================ checkpoints
def save_unet_checkpoint(
    folder: str | Path, rnd: int, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> Path:
    """Write ``round_<rnd>.npz`` (weights + metadata) and then ``state.json`` (last round), both atomically."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"round_{rnd:04d}.npz"
    doc = {"format": CHECKPOINT_FORMAT, "round": int(rnd), **meta}
    if _META_KEY in arrays:
        raise InputError(f"a U-Net layer may not be called {_META_KEY}")
    with atomic_path(p) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{**dict(arrays), _META_KEY: np.array(json.dumps(doc, default=float))})  # type: ignore[arg-type]
    atomic_write_text(d / "state.json", json.dumps({"round": int(rnd), "file": p.name}))
    return p


def load_unet_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Weights and metadata of one checkpoint file (FormatError when it is not a MedLens U-Net checkpoint)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if _META_KEY not in z.files:
                raise FormatError(f"{p}: not a MedLens federated U-Net checkpoint (no {_META_KEY} entry)")
            meta = json.loads(str(z[_META_KEY]))
            arrays = {k: z[k] for k in z.files if k != _META_KEY}
    except (OSError, ValueError) as exc:
        raise FormatError(f"{p}: not a readable checkpoint ({exc})") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise FormatError(f"{p}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
    return arrays, meta


def last_checkpoint(folder: str | Path) -> Path | None:
    """The file ``state.json`` names, else the highest ``round_NNNN.npz``; None when there is none."""
    d = Path(folder)
    st = d / "state.json"
    if st.is_file():
        try:
            name = json.loads(st.read_text())["file"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise FormatError(f"{st}: not a checkpoint state file ({exc}); remove it to resume from the files") from exc
        if not (d / name).is_file():
            raise InputError(f"{st} names {name}, which does not exist in {d}")
        return d / name
    files = sorted(d.glob("round_[0-9][0-9][0-9][0-9].npz"))
    return files[-1] if files else None


def check_resumable(
    path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], identity: Mapping[str, Any]
) -> None:
    """Refuse (InputError) a checkpoint of another training identity or architecture, naming what differs."""
    from medlens.learn.federated.training import unet_arrays
    from medlens.segment.unet.model import UNetConfig, state_mismatch

    diff = identity_difference(meta.get("identity", {}), identity)
    if diff or meta.get("config_hash") != identity_hash(identity):
        raise InputError(
            f"{path}: cannot resume from this checkpoint, it belongs to another training configuration "
            f"(hash {meta.get('config_hash')} vs {identity_hash(identity)}): "
            + "; ".join(diff[:6])
            + (f" (and {len(diff) - 6} more)" if len(diff) > 6 else "")
            + ". Use another output.dir or set resume: false to start afresh"
        )
    want = unet_arrays(UNetConfig.from_dict(dict(identity["architecture"])))
    detail = state_mismatch(want, dict(arrays))
    if detail:
        raise InputError(f"{path}: the weights do not fit the configured U-Net: " + "; ".join(detail))


# ============================================================================ server
def resume_point(fed: Federation) -> tuple[Path, dict[str, np.ndarray], dict[str, Any]] | None:
    """The checkpoint a run resumes from (file, weights, metadata), None to start afresh; refuses a foreign one."""
    folder = fed.out / "checkpoints" / "unet"
    prev = last_checkpoint(folder) if (fed.cfg["resume"] and folder.is_dir()) else None
    if prev is None:
        return None
    saved, meta = load_unet_checkpoint(prev)
    check_resumable(prev, saved, meta, training_identity(fed.cfg))
    return prev, saved, meta


def run_unet(fed: Federation) -> dict[str, Any]:
    """The U-Net rounds of a federation (see the module docstring); returns the run's result mapping."""
    from medlens.learn.federated.training import unet_arrays

    cfg = fed.cfg
    ucfg = cfg.unet_config()
    u = cfg["unet"]
    identity = training_identity(cfg)
    h = identity_hash(identity)
    folder = fed.out / "checkpoints" / "unet"
    arrays, first = unet_arrays(ucfg, seed=int(cfg["seed"])), 1
    eps_sites: dict[str, float] = {}
    start = resume_point(fed)
    if start is not None:
        prev, saved, meta = start
        arrays = {k: saved[k].astype(arrays[k].dtype) for k in arrays}
        first = int(meta["round"]) + 1
        eps_sites = {k: float(v) for k, v in meta.get("epsilon_per_site", {}).items()}
        fed.log(f"resuming the U-Net from {prev} (round {meta['round']})")
        fed.audit.append(action="fl.resume", inputs={"checkpoint": str(prev)}, details={"round": meta["round"]})
    elif last_checkpoint(folder) is not None:
        fed.log(f"resume is off: starting afresh; the checkpoints in {folder} are overwritten round by round")
    entry: dict[str, Any] = {}
    evals: list[dict[str, Any]] = []
    rounds = int(cfg["rounds"])
    every = int(u["evaluate_every"])
    for rnd in range(first, rounds + 1):
        arrays, entry = fed.train_round(rnd, arrays, {"fold": -1, "ckpt-hash": h}, phase="unet")
        eps_sites.update(entry.get("epsilon_local", {}))
        eps = _epsilon(fed, entry, eps_sites)
        p = save_unet_checkpoint(
            folder,
            rnd,
            arrays,
            {"config_hash": h, "identity": identity, "epsilon": eps, "epsilon_per_site": eps_sites, "run": cfg["name"]},
        )
        fed.audit.append(
            action="fl.checkpoint",
            outputs={"checkpoint": str(p)},
            details={"phase": "unet", "round": rnd, "config_hash": h, "epsilon": eps},
        )
        if rnd == rounds or (every and rnd % every == 0):
            evals.append({"round": rnd, **fed.evaluate_unet(arrays)})
    if not evals:  # resumed after the last round: evaluate what the checkpoint holds
        evals.append({"round": rounds, **fed.evaluate_unet(arrays)})
    eps = _epsilon(fed, entry, eps_sites)
    _save_final(fed, ucfg, arrays, rounds, eps, evals[-1], h)
    last = evals[-1]
    fed.log(f"U-Net after round {last['round']}: pooled test Dice {last['dice_pooled']:.3f}")
    return {
        "task": "unet",
        "dice_pooled": last["dice_pooled"],
        "dice_per_site": last["dice_per_site"],
        "evaluations": evals,
        "epsilon": eps,
        "config_hash": h,
        "first_round": first,
    }


def _epsilon(fed: Federation, entry: Mapping[str, Any], eps_sites: Mapping[str, float]) -> dict[str, Any]:
    summary = fed._epsilon_summary(entry)
    if summary.get("mode") == "local":
        # every site's latest ε (a site that missed the last round keeps what it had spent)
        summary["per_site"] = dict(sorted(eps_sites.items()))
        summary["unit"] = "one 2D slice (a patient contributes several: patient-level ε is larger)"
    return summary


def _save_final(
    fed: Federation,
    ucfg: Any,
    arrays: Mapping[str, np.ndarray],
    rounds: int,
    eps: Mapping[str, Any],
    last_eval: Mapping[str, Any],
    h: str,
) -> None:
    import torch

    from medlens.segment.unet.model import build_unet, save_model

    net = build_unet(ucfg)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in arrays.items()})
    save_model(
        net,
        ucfg,
        fed.out / "model",
        info={
            "federated": {
                "strategy": fed.cfg["strategy"],
                "proximal_mu": fed.cfg["proximal_mu"],
                "rounds": rounds,
                "sites": sorted(set(fed.accepted.values())),
                "privacy": fed.cfg["privacy"],
                "secure_aggregation": fed.cfg["secure_aggregation"],
                "epsilon": dict(eps),
                "config_hash": h,
            },
            "held_out_dice": dict(last_eval),
        },
    )


# ============================================================================ site
def _ledger_path(work: str | Path, run: str, h: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run)
    return Path(work) / f"dp-ledger-{safe}-{h}.json"


def _prior_history(ledger: Mapping[str, Any], rnd: int) -> list[list[float]]:
    """The accountant history after the latest round before ``rnd`` this site trained in (empty before round 1)."""
    past = [int(r) for r in ledger if int(r) < rnd]
    return list(ledger[str(max(past))]) if past else []


def client_train(msg: Any, context: Any, spec: Mapping[str, Any], task: Mapping[str, Any]) -> Any:
    """A site's ``train`` reply for the U-Net: local epochs from the global weights, ε from its ledger."""
    from medlens.learn.federated.apps import _record_to_arrays, _reply, _site_unet_config, _stable, _unet_site
    from medlens.learn.federated.privacy import epsilon
    from medlens.learn.federated.site import check_outgoing
    from medlens.learn.federated.training import DPSettings, train_unet

    cfg = msg.content["config"]
    rnd = int(cfg["server-round"])
    mu = float(cfg.get("proximal-mu", 0.0))
    h = str(cfg.get("ckpt-hash", "nohash"))
    privacy = task["privacy"]
    dp = None
    if privacy["mode"] == "local":
        dp = DPSettings(
            noise_multiplier=float(privacy["noise_multiplier"]),
            max_grad_norm=float(privacy["max_grad_norm"]),
            batch_size=int(privacy["batch_size"]),
            delta=float(privacy["delta"]),
        )
    site = _unet_site(spec, task)
    res = train_unet(
        _record_to_arrays(msg.content["arrays"]),
        site.train_cases,
        _site_unet_config(spec, task),
        epochs=int(task["local_epochs"]),
        batch_size=int(task["batch_size"]),
        learning_rate=float(task["learning_rate"]),
        mu=mu,
        dp=dp,
        seed=int(task["seed"]) * 1000 + rnd * 7 + _stable(spec["id"]),
    )
    check_outgoing(res.arrays, n_rows=len(site.train_cases), image_shapes=site.image_shapes())
    eps = float("nan")
    history: list[list[float]] = []
    if dp is not None:
        path = _ledger_path(spec["work"], str(task["run"]), h)
        ledger: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        history = _prior_history(ledger, rnd) + [list(x) for x in res.dp_history]
        # rounds after this one belong to an abandoned continuation: a resumed run rewrites them
        ledger = {r: v for r, v in ledger.items() if int(r) < rnd}
        ledger[str(rnd)] = history
        atomic_write_text(path, json.dumps(ledger))
        eps = epsilon(history, delta=float(privacy["delta"]))
    metrics = {"num-examples": res.n_examples, "unit-weight": 1.0, "loss": res.loss, "epsilon": eps}
    return _reply(msg, arrays=res.arrays, metrics=metrics, info={"site-id": spec["id"], "dp-history": history})
