"""Federated U-Net (task b): Flower simulation, per-round checkpoints, resume, DP-SGD ledger, refusals."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("opacus")

from medlens.core.errors import InputError

#: A small U-Net so that a 2-site, 2-round simulation stays well under a minute on one thread.
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "roi_size": [32, 32]}


class _NoGrid:
    def get_node_ids(self) -> list[int]:
        return []


def _config(tmp_path: Path, **over: object):
    from medlens.learn.federated.config import from_mapping

    raw = {"task": "unet", "output": {"dir": str(tmp_path / "out")}, "unet": {"architecture": dict(TINY)}}
    raw.update(over)  # type: ignore[arg-type]
    return from_mapping(raw, base_dir=tmp_path)


def test_checkpoint_file_holds_weights_round_hash_and_epsilon(tmp_path: Path):
    from medlens.learn.federated.training import unet_arrays
    from medlens.learn.federated.unet_task import (
        identity_hash,
        last_checkpoint,
        load_unet_checkpoint,
        save_unet_checkpoint,
        training_identity,
    )

    cfg = _config(tmp_path)
    ident = training_identity(cfg)
    w = unet_arrays(cfg.unet_config(), seed=3)
    folder = tmp_path / "ck"
    save_unet_checkpoint(folder, 1, w, {"config_hash": identity_hash(ident), "identity": ident, "epsilon": {}})
    w2 = {k: v + 1 for k, v in w.items()}
    p2 = save_unet_checkpoint(
        folder, 2, w2, {"config_hash": identity_hash(ident), "identity": ident, "epsilon": {"per_site": {"a": 2.5}}}
    )
    assert last_checkpoint(folder) == p2
    assert sorted(x.name for x in folder.iterdir()) == ["round_0001.npz", "round_0002.npz", "state.json"]
    arrays, meta = load_unet_checkpoint(p2)
    assert (
        meta["round"] == 2 and meta["config_hash"] == identity_hash(ident) and meta["epsilon"]["per_site"]["a"] == 2.5
    )
    assert set(arrays) == set(w) and all(np.array_equal(arrays[k], w2[k]) for k in w)
    # the identity hash changes with what decides the weights, not with the number of rounds
    assert identity_hash(training_identity(cfg.with_overrides(rounds=99))) == identity_hash(ident)
    assert identity_hash(training_identity(cfg.with_overrides(**{"unet.learning_rate": 1e-3}))) != identity_hash(ident)


def test_resume_refuses_a_checkpoint_of_another_architecture_or_privacy(tmp_path: Path):
    from medlens.learn.federated.apps import Federation
    from medlens.learn.federated.training import unet_arrays
    from medlens.learn.federated.unet_task import identity_hash, save_unet_checkpoint, training_identity

    old = _config(tmp_path, privacy={"mode": "local", "noise_multiplier": 1.0})
    ident = training_identity(old)
    p = save_unet_checkpoint(
        old.out_dir / "checkpoints" / "unet",
        2,
        unet_arrays(old.unet_config()),
        {"config_hash": identity_hash(ident), "identity": ident, "epsilon": {}},
    )
    other_arch = _config(
        tmp_path,
        privacy={"mode": "local", "noise_multiplier": 1.0},
        unet={"architecture": {**TINY, "channels": [8, 16, 32]}},
        wait_for_sites_s=1,
    )
    with pytest.raises(InputError) as e:  # before waiting for sites (none would come: ProcessingError)
        Federation(_NoGrid(), other_arch, log=lambda s: None).run()
    msg = str(e.value)
    assert str(p) in msg and "cannot resume" in msg
    assert "architecture.channels: [4, 8, 16] in the checkpoint vs [8, 16, 32] in the config" in msg
    other_noise = _config(tmp_path, privacy={"mode": "local", "noise_multiplier": 2.0})
    with pytest.raises(InputError, match=r"privacy\.noise_multiplier: 1\.0 in the checkpoint vs 2\.0 in the config"):
        Federation(_NoGrid(), other_noise, log=lambda s: None).run_unet()
    # identity edited to match but weights of another shape: refused by layer
    bad = {k: np.zeros((2, *v.shape[1:]), v.dtype) for k, v in unet_arrays(old.unet_config()).items()}
    save_unet_checkpoint(
        old.out_dir / "checkpoints" / "unet", 3, bad, {"config_hash": identity_hash(ident), "identity": ident}
    )
    with pytest.raises(InputError, match="the weights do not fit the configured U-Net: layer"):
        Federation(_NoGrid(), old, log=lambda s: None).run_unet()


def test_site_ledger_composes_the_rounds_before_an_interruption():
    from medlens.learn.federated.unet_task import _prior_history

    ledger = {"1": [[1.0, 0.1, 5]], "2": [[1.0, 0.1, 5], [1.0, 0.12, 4]]}
    assert _prior_history(ledger, 1) == []
    assert _prior_history(ledger, 3) == [[1.0, 0.1, 5], [1.0, 0.12, 4]]
    assert _prior_history(ledger, 2) == [[1.0, 0.1, 5]]
    assert _prior_history({"1": [[1.0, 0.1, 5]]}, 5) == [[1.0, 0.1, 5]]  # the site missed rounds 2-4


# ----------------------------------------------------------------------------- real sites, real Flower
@pytest.fixture(scope="module")
def unet_sites(tmp_path_factory, sts_dir: Path) -> Path:
    from medlens.learn.federated.sites import split_cohort

    root = tmp_path_factory.mktemp("flu")
    split_cohort(sts_dir / "cohort.csv", root / "sites", n_sites=2, patients=[f"STS_{i:03d}" for i in range(1, 7)])
    return root


def _sim(root: Path, out: str, *, rounds: int, resume: bool) -> tuple[dict, Path]:
    import yaml

    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import simulate

    cfg = {
        "name": "unet-test",
        "task": "unet",
        "rounds": rounds,
        "resume": resume,
        "seed": 5,
        "min_sites": 2,
        "wait_for_sites_s": 60,
        "round_timeout_s": 300,
        "sites": [{"id": f"site{i}", "data": f"sites/site{i}"} for i in (1, 2)],
        "output": {"dir": out},
        "privacy": {"mode": "local", "noise_multiplier": 1.0, "max_grad_norm": 1.0, "batch_size": 16},
        "unet": {"local_epochs": 1, "batch_size": 16, "holdout": 1, "architecture": dict(TINY)},
    }
    p = root / f"{out}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    c = load_fl_config(p)
    return simulate(c, log=lambda s: None, ray_tmp=tempfile.mkdtemp(prefix="mlray", dir="/tmp")), c.out_dir


@pytest.mark.slow
@pytest.mark.needs_data
def test_simulated_unet_resumed_after_two_rounds_equals_an_uninterrupted_run(unet_sites: Path, monkeypatch):
    """Flower simulation, 2 sites, DP-SGD: 2 rounds, stop, resume to 3 == 3 rounds in one go (weights and ε)."""
    from medlens.core.audit import AuditLog
    from medlens.learn.federated.unet_task import load_unet_checkpoint

    monkeypatch.setenv("FLWR_HOME", str(unet_sites / "flwr"))
    full, out_full = _sim(unet_sites, "full", rounds=3, resume=False)
    part, out_part = _sim(unet_sites, "part", rounds=2, resume=False)
    assert part["first_round"] == 1 and sorted(part["dice_per_site"]) == ["site1", "site2"]
    w2_full, _ = load_unet_checkpoint(out_full / "checkpoints" / "unet" / "round_0002.npz")
    w2_part, meta2 = load_unet_checkpoint(out_part / "checkpoints" / "unet" / "round_0002.npz")
    assert all(np.array_equal(w2_full[k], w2_part[k]) for k in w2_full)  # same seeds, same site order: bitwise
    resumed, _ = _sim(unet_sites, "part", rounds=3, resume=True)
    assert resumed["first_round"] == 3
    w3_full, m3_full = load_unet_checkpoint(out_full / "checkpoints" / "unet" / "round_0003.npz")
    w3_res, m3_res = load_unet_checkpoint(out_part / "checkpoints" / "unet" / "round_0003.npz")
    assert all(np.array_equal(w3_full[k], w3_res[k]) for k in w3_full)
    assert any(not np.array_equal(w3_full[k], w2_full[k]) for k in w3_full)  # round 3 did train
    # ε after the resumed round composes all three rounds' steps at each site (the site's own ledger)
    eps_full, eps_res = m3_full["epsilon"]["per_site"], m3_res["epsilon"]["per_site"]
    assert set(eps_full) == {"site1", "site2"}
    for s in eps_full:
        assert eps_res[s] == pytest.approx(eps_full[s], rel=1e-9)
        assert eps_res[s] > meta2["epsilon"]["per_site"][s] > 0
    assert resumed["dice_pooled"] == pytest.approx(full["dice_pooled"], abs=1e-12)
    # the audit log: every round with per-site loss and ε, every checkpoint with its hash
    log = AuditLog(out_part / "audit.jsonl")
    rounds = [e["details"] for e in log.entries() if e["action"] == "fl.round"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(set(r["loss"]) == {"site1", "site2"} and set(r["epsilon_local"]) == {"site1", "site2"} for r in rounds)
    cks = [e for e in log.entries() if e["action"] == "fl.checkpoint"]
    assert [c["details"]["round"] for c in cks] == [1, 2, 3]
    assert {c["details"]["config_hash"] for c in cks} == {meta2["config_hash"]}
    assert any(e["action"] == "fl.resume" for e in log.entries()) and log.verify()
    model = json.loads((out_part / "model" / "model.json").read_text())
    assert model["info"]["federated"]["epsilon"]["per_site"] == pytest.approx(eps_full)
    assert model["config"]["channels"] == TINY["channels"]


@pytest.mark.slow
@pytest.mark.needs_data
def test_fedprox_proximal_term_pulls_each_site_unet_towards_the_global_model(unet_sites: Path):
    """One U-Net round through the real ClientApps (in process), FedAvg vs FedProx from the same weights
    (and the FedAvg round again under SecAgg+: within the quantisation bound of the plain one).

    FedProx adds mu/2 ||w - w_global||^2 to every site's loss: with the same seeds (same batches,
    same augmentation) each site's update must move less from the global model, and the prox
    gradient mu (w - w_global) points back at it, so the site models sit closer to the global one.
    """
    from _fl_loopback import LoopbackGrid
    from medlens.learn.federated.apps import Federation, make_client_app
    from medlens.learn.federated.training import unet_arrays

    nodes = {
        201 + i: {
            "data-dir": str(unet_sites / "sites" / f"site{i + 1}"),
            "site-id": f"site{i + 1}",
            "work-dir": str(unet_sites / "prox-work" / f"site{i + 1}"),
        }
        for i in range(2)
    }
    grid = LoopbackGrid(make_client_app(), nodes)
    drift: dict[float, dict[str, float]] = {}
    agg_drift: dict[float, float] = {}
    fedavg: dict[str, np.ndarray] = {}
    for mu, secagg in ((0.0, False), (1.0, False), (30.0, False), (0.0, True)):
        strategy = "fedprox" if mu else "fedavg"
        cfg = _config(
            unet_sites / f"prox-{mu}-{secagg}",
            strategy=strategy,
            proximal_mu=mu,
            seed=5,
            secure_aggregation={"enabled": secagg},
            unet={"local_epochs": 1, "batch_size": 16, "holdout": 1, "architecture": dict(TINY)},
        )
        wire: list = []
        fed = Federation(grid, cfg, log=lambda s: None, wire_log=lambda d, m, w=wire: w.append((d, m)))
        fed.admit_sites(wait=False)
        g = unet_arrays(cfg.unet_config(), seed=5)
        new, entry = fed.train_round(1, g, {"fold": -1, "ckpt-hash": "x"}, phase="unet")
        assert not grid.errors, grid.errors
        if secagg:  # the same FedAvg round under SecAgg+: the sites' sample counts are their weights
            from medlens.learn.federated.secure import quantization_bound, weight_rounding
            from medlens.learn.federated.site import UNetSite
            from medlens.learn.federated.training import unet_examples

            n = [
                unet_examples(
                    UNetSite(nc["data-dir"], nc["work-dir"], holdout=1, seed=5).train_cases, cfg.unet_config()
                )
                for nc in nodes.values()
            ]
            W = entry["secure_aggregation"]["max_weight"]
            assert W == max(n)  # the automatic max_weight: the largest site's samples per epoch (schema reply)
            pmax = max(float(np.abs(v).max()) for v in fedavg.values())
            bound = (
                quantization_bound(n, max_weight=W, clipping_range=8.0, quantization_range=2**22)
                + weight_rounding(n, max_weight=W, quantization_range=2**22) * pmax
                + 4 * 2**-23 * pmax
            )
            d = max(float(np.abs(new[k] - fedavg[k]).max()) for k in g)
            assert 0 < d <= bound, (d, bound)
            continue
        if mu == 0.0:
            fedavg = new
        sent = [m for d, m in wire if d == "sent" and m.metadata.message_type == "train"]
        assert all(float(m.content["config"]["proximal-mu"]) == mu for m in sent)  # the server sends mu
        drift[mu] = {
            str(m.content["site"]["site-id"]): float(
                np.sqrt(sum(((m.content["arrays"][k].numpy() - g[k]) ** 2).sum() for k in g))
            )
            for d, m in wire
            if d == "received" and m.metadata.message_type == "train"
        }
        agg_drift[mu] = float(np.sqrt(sum(((new[k] - g[k]) ** 2).sum() for k in g)))
    for site in ("site1", "site2"):
        assert drift[30.0][site] < drift[1.0][site] < drift[0.0][site], drift
    assert agg_drift[30.0] < agg_drift[0.0]
    # the strong term keeps the local models much closer (not a rounding-level effect)
    assert all(drift[30.0][s] < 0.9 * drift[0.0][s] for s in ("site1", "site2")), drift
