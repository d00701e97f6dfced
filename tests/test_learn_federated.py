"""Federated learning: aggregation arithmetic, federated statistics, privacy accounting, wire contents."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("opacus")

import itertools

from medlens.core.errors import InputError
from medlens.learn.federated import stats
from medlens.learn.federated.privacy import epsilon


def test_fedavg_matches_hand_computed_weighted_average():
    w0 = {"a": np.array([1.0, 2.0]), "b": np.array([[0.0]])}
    w1 = {"a": np.array([3.0, 6.0]), "b": np.array([[3.0]])}
    out = stats.weighted_average([w0, w1], [1, 2])
    np.testing.assert_allclose(out["a"], [(1 * 1 + 3 * 2) / 3, (2 * 1 + 6 * 2) / 3])
    np.testing.assert_allclose(out["b"], [[(0 * 1 + 3 * 2) / 3]])


def test_flower_fedavg_aggregation_equals_the_same_weighted_average():
    """The function behind FedAvg.aggregate_train (what the server applies to the site replies)."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    sites = [({"w": np.array([1.0, -1.0], np.float32)}, 10), ({"w": np.array([4.0, 2.0], np.float32)}, 30)]
    records = [
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        for arrays, n in sites
    ]
    agg = aggregate_arrayrecords(records, "num-examples")
    np.testing.assert_allclose(agg["w"].numpy(), [(1 * 10 + 4 * 30) / 40, (-1 * 10 + 2 * 30) / 40], rtol=1e-6)


def test_weighted_average_refuses_mismatched_shapes():
    with pytest.raises(InputError, match="different shapes"):
        stats.weighted_average([{"a": np.zeros(2)}, {"a": np.zeros(3)}], [1, 1])


def test_pooled_moments_and_f_statistic_equal_the_pooled_rows():
    from sklearn.feature_selection import f_classif

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)) + np.array([0, 5, -2, 1])
    y = (rng.random(40) < 0.4).astype(int)
    X[y == 1, 0] += 1.5
    parts = [slice(0, 7), slice(7, 25), slice(25, 40)]  # three unequal sites
    pooled = stats.pool_moments([stats.site_moments(X[p], y[p]) for p in parts])
    n, mean, var = stats.mean_var(pooled)
    np.testing.assert_allclose(n, 40)
    np.testing.assert_allclose(mean, X.mean(axis=0))
    np.testing.assert_allclose(var, X.var(axis=0))
    np.testing.assert_allclose(stats.f_statistic(pooled), f_classif(X, y)[0], rtol=1e-10)


def test_federated_combat_equals_batch_harmoniser():
    from medlens.learn.tabular import BatchHarmoniser

    rng = np.random.default_rng(1)
    sizes = [9, 14, 12]
    blocks = [rng.normal(loc=b, scale=1 + b / 2, size=(n, 6)) for b, n in enumerate(sizes)]
    X = np.vstack(blocks)
    batch = np.repeat(np.arange(3), sizes)
    ref = BatchHarmoniser("combat").fit(np.column_stack([X, batch]))
    # federation: grand mean and pooled within-site SD from the sites' moments only
    mom = [stats.site_moments(b) for b in blocks]
    n_tot = sum(m[0, 0] for m in mom)
    mean = sum(m[0, 1] for m in mom) / n_tot
    sd = np.sqrt(sum(m[0, 2] for m in mom) / n_tot)
    np.testing.assert_allclose(mean, ref.mean_)
    np.testing.assert_allclose(sd, ref.sd_)
    for b, block in enumerate(blocks):
        gamma, delta = stats.combat_site_parameters(block, mean, sd)
        g_ref, d_ref = ref.batches_[float(b)]
        np.testing.assert_allclose(gamma, g_ref, rtol=1e-10)
        np.testing.assert_allclose(delta, d_ref, rtol=1e-10)


def test_auc_from_site_histograms_equals_pooled_rank_auc():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + rng.random(60) * 0.7, 0, 1)
    h = sum(stats.score_histograms(p[i : i + 20], y[i : i + 20], bins=100000) for i in (0, 20, 40))
    assert stats.auc_from_histograms(h) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_epsilon_matches_opacus_and_decreases_with_noise():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(120):
        acc.step(noise_multiplier=1.1, sample_rate=0.25)
    ours = epsilon([(1.1, 0.25, 40), (1.1, 0.25, 80)], delta=1e-5)
    assert ours == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-12)
    eps = [epsilon([(nm, 0.25, 120)], delta=1e-5) for nm in (0.8, 1.1, 2.0, 4.0)]
    assert all(a > b for a, b in itertools.pairwise(eps))
    assert epsilon([], delta=1e-5) == 0.0
    with pytest.raises(InputError, match="delta"):
        epsilon([(1.0, 0.1, 1)], delta=0)


def test_dp_sgd_logistic_reports_opacus_steps():
    from medlens.learn.federated.training import DPSettings, logistic_arrays, train_logistic

    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 3))
    y = (X[:, 0] > 0).astype(float)
    res = train_logistic(logistic_arrays(3), X, y, l2=0.01, steps=3, dp=DPSettings(noise_multiplier=1.3, batch_size=8))
    (nm, q, steps), *_ = res.dp_history
    assert nm == 1.3 and q == pytest.approx(8 / 32) and steps == 3 * 4
    plain = train_logistic(logistic_arrays(3), X, y, l2=0.01, steps=200, learning_rate=0.5)
    assert plain.arrays["weight"][0, 0] > 1.0  # the informative feature gets a large positive weight


def test_outgoing_guard_refuses_rows_and_images():
    from medlens.learn.federated.site import check_outgoing

    check_outgoing({"w": np.zeros((1, 5)), "conv": np.zeros((8, 1, 3, 3))}, n_rows=17, image_shapes=[(40, 43, 41)])
    with pytest.raises(InputError, match="one row per patient"):
        check_outgoing({"x": np.zeros((17, 5))}, n_rows=17, image_shapes=[])
    with pytest.raises(InputError, match="shape of an image"):
        check_outgoing({"x": np.zeros((2, 43, 41))}, n_rows=17, image_shapes=[(40, 43, 41)])


def test_config_refuses_unknown_keys_and_values(tmp_path: Path):
    from medlens.learn.federated.config import load_fl_config

    p = tmp_path / "c.yaml"
    p.write_text("task: radiomics\nrounds: 2\nprivcy: {}\n")
    with pytest.raises(InputError, match="unknown key privcy"):
        load_fl_config(p)
    p.write_text("privacy: {mode: loud}\n")
    with pytest.raises(InputError, match=r"privacy\.mode must be none, local or central"):
        load_fl_config(p)


# ----------------------------------------------------------------------------- real sites, real Flower
@pytest.fixture(scope="module")
def small_sites(tmp_path_factory, sts_dir: Path) -> Path:
    from medlens.learn.federated.sites import split_cohort

    root = tmp_path_factory.mktemp("fl")
    doc = split_cohort(
        sts_dir / "cohort.csv", root / "sites", n_sites=3, patients=[f"STS_{i:03d}" for i in range(1, 13)]
    )
    suv = doc["suvmax"]
    s1, s3 = doc["sites"]["site1"], doc["sites"]["site3"]
    assert max(suv[p] for p in s1) <= min(suv[p] for p in s3)  # non-IID: low vs high SUVmax
    import yaml

    from medlens.learn.federated.site import TabularSite

    repo = Path(__file__).resolve().parents[1]
    settings = yaml.safe_load((repo / "examples" / "sts-pet-radiomics.yaml").read_text())
    for i in (1, 2, 3):  # fill the sites' feature caches once (the runs below then read them)
        TabularSite(root / "sites" / f"site{i}", root / "out" / "site-work" / f"site{i}", settings=settings, folds=2)
    return root


def _write_config(root: Path, **extra: object) -> Path:
    import yaml

    repo = Path(__file__).resolve().parents[1]
    cfg = {
        "name": "test",
        "task": "radiomics",
        "rounds": 2,
        "min_sites": 2,
        "wait_for_sites_s": 30,
        "round_timeout_s": 120,
        "sites": [{"id": f"site{i}", "data": f"sites/site{i}"} for i in (1, 2, 3)],
        "output": {"dir": "out"},
        "radiomics": {"settings": str(repo / "examples" / "sts-pet-radiomics.yaml"), "folds": 2, "n_features": 3},
    }
    cfg.update(extra)  # type: ignore[arg-type]
    p = root / "fl.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow
@pytest.mark.needs_data
def test_simulated_radiomics_federation_sends_no_rows(small_sites: Path, tmp_path: Path, monkeypatch):
    """Three sites in Flower's simulation: results, audit log, and what crossed the wire."""
    from medlens.core.audit import AuditLog
    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import simulate

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    cfg = load_fl_config(
        _write_config(small_sites, privacy={"mode": "local", "noise_multiplier": 1.5, "batch_size": 2})
    )
    wire: list[tuple[str, object]] = []
    res = simulate(
        cfg,
        log=lambda s: None,
        wire_log=lambda d, m: wire.append((d, m)),
        ray_tmp=tempfile.mkdtemp(prefix="mlray", dir="/tmp"),
    )
    assert res["sites"] == ["site1", "site2", "site3"]
    assert np.isfinite(res["auc_pooled"])
    eps = res["epsilon"]["per_site"]
    assert set(eps) == {"site1", "site2", "site3"} and all(0 < e < np.inf for e in eps.values())
    # every reply: no array with one row per patient, no image-shaped array, no float beyond summaries
    received = [m for d, m in wire if d == "received"]
    assert received
    for m in received:
        for rec in m.content.array_records.values():
            for name, arr in rec.items():
                shp = tuple(arr.shape)
                assert name in ("arrays", "moments", "hist", "weight", "bias"), name
                assert len(shp) < 2 or shp[0] <= 2, (name, shp)  # (1, k) weights, (classes, 3, F), (2, bins)
    types = {m.metadata.message_type for d, m in wire if d == "sent"}
    assert types == {"query.schema", "query.moments", "train", "evaluate"}
    entries = AuditLog(cfg.out_dir / "audit.jsonl").entries()
    rounds = [e for e in entries if e["action"] == "fl.round"]
    assert len(rounds) == 3 * 2  # (2 folds + final) x 2 rounds
    assert all(e["details"]["bytes_sent"] > 0 and e["details"]["bytes_received"] > 0 for e in rounds)
    assert AuditLog(cfg.out_dir / "audit.jsonl").verify()
    model = json.loads((cfg.out_dir / "model" / "model.json").read_text())
    assert len(model["selected"]) == 3 and model["epsilon"]["mode"] == "local"


def test_site_with_other_schema_or_architecture_is_refused_with_the_reason(tmp_path: Path):
    from medlens.learn.federated.apps import Federation
    from medlens.learn.federated.config import from_mapping

    class NoGrid:
        def get_node_ids(self):
            return []

    fed = Federation(NoGrid(), from_mapping({"output": {"dir": str(tmp_path)}}, base_dir=tmp_path), log=lambda s: None)
    fed.reference_schema = {"names": ["a", "b", "clin_dicom_age"], "site": "site1"}
    assert fed._schema_problem("site2", {"names": ["a", "b", "clin_dicom_age"]}) == ""
    msg = fed._schema_problem("site3", {"names": ["a", "c", "clin_dicom_age"]})
    assert "feature schema differs" in msg and "set by site site1" in msg
    assert "1 feature(s) missing (first: ['b'])" in msg and "1 unexpected (first: ['c'])" in msg

    from medlens.learn.federated.training import unet_arrays
    from medlens.segment.unet import UNetConfig

    unet = Federation(NoGrid(), from_mapping({"task": "unet", "output": {"dir": str(tmp_path)}}, base_dir=tmp_path))
    other = UNetConfig(channels=(4, 8, 16, 32))
    layers = {k: list(v.shape) for k, v in unet_arrays(other).items()}
    msg = unet._schema_problem("site3", {"layers": layers, "architecture": other.to_dict()})
    assert "U-Net architecture differs" in msg and "[4, 8, 16, 32] vs [8, 16, 32, 64] channels" in msg
    same = {k: list(v.shape) for k, v in unet_arrays(UNetConfig()).items()}
    assert unet._schema_problem("site1", {"layers": same}) == ""


def _audit_rounds(path: Path) -> list[dict]:
    from medlens.core.audit import AuditLog

    if not path.is_file():
        return []
    return [e["details"] for e in AuditLog(path).entries() if e["action"] == "fl.round"]


@pytest.mark.slow
@pytest.mark.needs_data
def test_real_site_processes_survive_a_killed_site_that_rejoins(small_sites: Path, tmp_path: Path):
    """SuperLink + 3 SuperNode processes on 127.0.0.1; site3 is killed (SIGKILL) mid-run and restarted."""
    import os
    import signal
    import subprocess
    import threading
    import time

    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import _env, serve, site_command

    port = 19141
    out = tmp_path / "out"
    cfg = load_fl_config(
        _write_config(
            small_sites,
            rounds=3,
            round_timeout_s=90,  # a SuperNode starts one ClientApp process per message (~10 s here)
            wait_for_sites_s=120,
            server={"host": "127.0.0.1", "port": port},
            output={"dir": str(out)},
        )
    )
    home = tmp_path / "flwr"
    os.environ["FLWR_HOME"] = str(home)
    result: dict = {}
    server = threading.Thread(target=lambda: result.update(serve(cfg, log=lambda s: None, timeout_s=900)))
    server.start()
    procs: dict[str, subprocess.Popen] = {}

    def start(i: int) -> None:
        cmd = site_command(
            data_dir=small_sites / "sites" / f"site{i}",
            site_id=f"site{i}",
            superlink=f"127.0.0.1:{port}",
            port=port + 10 + i,
            work_dir=tmp_path / f"work{i}",
        )
        procs[f"site{i}"] = subprocess.Popen(
            cmd, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    try:
        time.sleep(3)
        for i in (1, 2, 3):
            start(i)
        deadline = time.monotonic() + 600
        while len(_audit_rounds(out / "audit.jsonl")) < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        os.killpg(procs["site3"].pid, signal.SIGKILL)  # the site dies: no goodbye
        procs["site3"].wait()
        killed_at = len(_audit_rounds(out / "audit.jsonl"))
        while len(_audit_rounds(out / "audit.jsonl")) < killed_at + 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        start(3)  # it comes back
        server.join(900)
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
    assert not server.is_alive()
    assert result["sites"] == ["site1", "site2", "site3"]
    rounds = _audit_rounds(out / "audit.jsonl")
    without = [r for r in rounds if "site3" not in r["sites"]]
    assert without and all(sorted(r["sites"]) == ["site1", "site2"] for r in without)
    last_without = max(rounds.index(r) for r in without)
    assert any("site3" in r["sites"] for r in rounds[last_without + 1 :])  # rejoined and trained again
    assert np.isfinite(result["auc_pooled"])
