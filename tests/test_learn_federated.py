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
    """Three sites in Flower's simulation, DP-SGD and SecAgg+: results, audit log, and what crossed the wire."""
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    from medlens.core.audit import AuditLog
    from medlens.learn.federated.config import load_fl_config
    from medlens.learn.federated.runner import simulate

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    cfg = load_fl_config(
        _write_config(
            small_sites,
            privacy={"mode": "local", "noise_multiplier": 1.5, "batch_size": 2},
            secure_aggregation={"enabled": True},
        )
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
    # SecAgg+: a site's update leaves it only masked (an integer vector mod 2**32 in the protocol's
    # ConfigRecord); no train reply holds an array, and masked entries lie far outside the quantised range
    train = [m for m in received if m.metadata.message_type == "train"]
    assert len(train) == 4 * 3 * 6  # 4 protocol stages x 3 sites x 6 rounds
    assert all(len(rec) == 0 for m in train for rec in m.content.array_records.values())
    masked = [
        np.concatenate([bytes_to_ndarray(b).ravel() for b in m.content[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]])
        for m in train
        if Key.MASKED_PARAMETERS in m.content.config_records[RECORD_KEY_CONFIGS]
    ]
    assert len(masked) == 3 * 6 and all(v.max() > 2**22 for v in masked)  # unmasked entries are <= 2**22
    entries = AuditLog(cfg.out_dir / "audit.jsonl").entries()
    rounds = [e for e in entries if e["action"] == "fl.round"]
    assert len(rounds) == 3 * 2  # (2 folds + final) x 2 rounds
    assert all(e["details"]["bytes_sent"] > 0 and e["details"]["bytes_received"] > 0 for e in rounds)
    assert all(e["details"]["secure_aggregation"]["protocol"] == "SecAgg+" for e in rounds)
    start = next(e for e in entries if e["action"] == "fl.start")
    assert start["details"]["secure_aggregation"]["enabled"] is True
    assert AuditLog(cfg.out_dir / "audit.jsonl").verify()
    model = json.loads((cfg.out_dir / "model" / "model.json").read_text())
    assert len(model["selected"]) == 3 and model["epsilon"]["mode"] == "local"
    assert model["secure_aggregation"]["enabled"] is True


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


# ----------------------------------------------------------------------------- SecAgg+, central DP clipping
def test_secure_aggregation_and_central_clipping_config_is_validated(tmp_path: Path):
    from medlens.learn.federated.config import from_mapping

    def cfg(**kw: object):
        return from_mapping(dict(kw), base_dir=tmp_path)

    assert cfg(secure_aggregation=True)["secure_aggregation"]["enabled"] is True  # the short form
    ok = cfg(secure_aggregation={"enabled": True, "num_shares": 5, "reconstruction_threshold": 3}, min_sites=3)
    assert ok["secure_aggregation"]["num_shares"] == 5 and ok["privacy"]["central_clipping"] == "server"
    bad = [
        ({"secure_aggregation": {"enabled": True, "num_shares": 2}}, r"num_shares must be >= 3.*got 2"),
        (
            {"secure_aggregation": {"enabled": True, "num_shares": 3, "reconstruction_threshold": 3}},
            r"reconstruction_threshold must be >= 2 and < num_shares \(3\), got 3",
        ),
        (
            {"secure_aggregation": {"enabled": True, "num_shares": 5, "reconstruction_threshold": 3}},
            r"min_sites \(2\) must be >= 2 and >= reconstruction_threshold \(3\)",
        ),
        ({"secure_aggregation": {"enabled": True, "clipping_range": 0}}, r"clipping_range must be > 0, got 0"),
        ({"secure_aggregation": {"enabled": True, "quantization_range": 2**32}}, r"quantization_range must be"),
        ({"secure_aggregation": {"enabled": True, "max_weight": -1}}, r"max_weight must be a positive number"),
        ({"secure_aggregation": {"enabled": "yes"}}, r"secure_aggregation\.enabled must be bool, got 'yes'"),
        ({"secure_aggregation": {"shares": 3}}, r"unknown key secure_aggregation\.shares"),
        ({"privacy": {"central_clipping": "site"}}, r"privacy\.central_clipping must be server or client, got 'site'"),
        (
            {"secure_aggregation": True, "privacy": {"mode": "central"}},
            r"central_clipping: server clips each site's update at the server.*Set privacy\.central_clipping: client",
        ),
    ]
    for kw, pattern in bad:
        with pytest.raises(InputError, match=pattern):
            cfg(**kw)
    cfg(secure_aggregation=True, privacy={"mode": "central", "central_clipping": "client"})  # the valid pairing


def _rdp_epsilon_by_hand(sigma: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Gaussian mechanisms without subsampling (q = 1), written out.

    RDP of one release at order a: a / (2 sigma^2); composition adds; Opacus' conversion to (ε, δ)
    (Balle et al. 2020): ε(a) = rdp(a) - (log δ + log a) / (a - 1) + log((a - 1) / a), minimised over
    Opacus' default orders 1.1 ... 10.9, 12 ... 63.
    """
    import math

    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    return min(
        rounds * a / (2 * sigma**2) - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a) for a in orders
    )


def test_central_epsilon_per_round_is_the_rdp_formula():
    for sigma, rounds in [(1.0, 1), (1.0, 10), (2.5, 30), (0.7, 3)]:
        assert epsilon([(sigma, 1.0, rounds)], delta=1e-5) == pytest.approx(
            _rdp_epsilon_by_hand(sigma, rounds, 1e-5), rel=1e-9
        )
    # worked by hand: sigma 1, 1 round, best order a = 5.4:
    # 5.4/2 - (ln 1e-5 + ln 5.4)/4.4 + ln(4.4/5.4) = 2.7 + 2.2333 - 0.2048 = 4.7285
    assert _rdp_epsilon_by_hand(1.0, 1, 1e-5) == pytest.approx(4.7285, abs=1e-4)
    # sigma 2.5, 30 rounds, a = 3.1: 30*3.1/12.5 - (ln 1e-5 + ln 3.1)/2.1 + ln(2.1/3.1) = 7.44 + 4.9438 - 0.3895
    assert _rdp_epsilon_by_hand(2.5, 30, 1e-5) == pytest.approx(11.9941, abs=1e-4)


@pytest.fixture(scope="module")
def loop_fed(small_sites: Path):
    """Real ClientApps of the 3 sites in process (LoopbackGrid) and the final-phase preprocessing, computed once."""
    from _fl_loopback import LoopbackGrid
    from medlens.learn.federated.apps import Federation, make_client_app
    from medlens.learn.federated.config import load_fl_config

    nodes = {
        101 + i: {
            "data-dir": str(small_sites / "sites" / f"site{i + 1}"),
            "site-id": f"site{i + 1}",
            "work-dir": str(small_sites / "out" / "site-work" / f"site{i + 1}"),  # the fixture's feature caches
        }
        for i in range(3)
    }
    grid = LoopbackGrid(make_client_app(), nodes)
    base = load_fl_config(_write_config(small_sites, output={"dir": str(small_sites / "loop-base")}))
    fed = Federation(grid, base, log=lambda s: None)
    fed.admit_sites(wait=False)
    assert sorted(fed.accepted.values()) == ["site1", "site2", "site3"], grid.errors
    prep = fed._prep(-1)
    extra = {"fold": -1, "prep": prep, "l2": 1.0 / max(prep["n_train"], 1)}

    def run(name: str, **over: object) -> tuple[dict, dict, list]:
        """One training round from zeros under ``over``: (aggregate, audit entry, wire log)."""
        from medlens.learn.federated.training import logistic_arrays

        cfg = base.with_overrides(**{"output.dir": str(small_sites / f"loop-{name}"), **over})
        wire: list = []

        def tap(d: str, m: object) -> None:  # a copy of the arrays as they arrived (Flower may clip them later)
            a = m.content.array_records.get("arrays") if d == "received" else None  # type: ignore[attr-defined]
            wire.append((d, m, None if a is None else {k: v.numpy().copy() for k, v in a.items()}))

        f = Federation(grid, cfg, log=lambda s: None, wire_log=tap)
        f.accepted, f.site_max_examples, f.reference_schema = fed.accepted, fed.site_max_examples, fed.reference_schema
        f.audit.append(action="fl.start", details={"secure_aggregation": cfg["secure_aggregation"]})
        new, entry = f.train_round(1, logistic_arrays(len(prep["selected"])), extra, phase="test")
        assert not grid.errors, grid.errors
        return new, entry, wire

    plain, plain_entry, plain_wire = run("plain")
    # every site's own update, as the server receives it without secure aggregation
    updates = {
        str(m.content["site"]["site-id"]): (a, float(m.content["metrics"]["num-examples"]))
        for d, m, a in plain_wire
        if d == "received" and m.metadata.message_type == "train"
    }
    return {"run": run, "plain": plain, "updates": updates, "entry": plain_entry, "root": small_sites}


def _bound(weights: list[float], max_weight: float, c: float, T: int, pmax: float) -> float:
    """SecAgg+ vs FedAvg, per parameter: stochastic rounding (< 1 level 2c/T per site, over sum d) plus the
    rounding of the weights d_i = round(n_i T / W) / T, plus float32 rounding of the result."""
    d = np.array([round(n / max_weight * T) / T for n in weights])
    n = np.asarray(weights)
    return len(n) * 2 * c / T / d.sum() + np.abs(d / d.sum() - n / n.sum()).sum() * pmax + 2 * 2**-23 * pmax


@pytest.mark.needs_data
def test_secure_aggregation_equals_fedavg_within_the_quantisation_bound(loop_fed):
    from medlens.learn.federated.secure import quantization_bound, weight_rounding

    plain, updates = loop_fed["plain"], loop_fed["updates"]
    weights = [n for _, n in updates.values()]
    assert len(weights) == 3 and all(n == 4 for n in weights)  # 4 patients per site, all rows in the final phase
    pmax = max(float(np.abs(v).max()) for a, _ in updates.values() for v in a.values())
    manual = {k: sum(a[k] * n for a, n in updates.values()) / sum(weights) for k in plain}
    assert all(np.allclose(manual[k], plain[k], rtol=1e-6) for k in plain)  # FedAvg = the hand-computed average
    diffs = {}
    for name, c, T, W in [("fine", 8.0, 2**22, 7.0), ("coarse", 8.0, 2**12, 7.0)]:
        sa = {"enabled": True, "clipping_range": c, "quantization_range": T, "max_weight": W}
        sec, entry, _ = loop_fed["run"](f"sa-{name}", secure_aggregation=sa)
        bound = _bound(weights, W, c, T, pmax)
        assert quantization_bound(weights, max_weight=W, clipping_range=c, quantization_range=T) + weight_rounding(
            weights, max_weight=W, quantization_range=T
        ) * pmax == pytest.approx(bound - 2 * 2**-23 * pmax, rel=1e-12)
        diffs[name] = max(float(np.abs(sec[k].astype(float) - plain[k]).max()) for k in plain)
        assert diffs[name] <= bound, (name, diffs[name], bound)
        assert entry["secure_aggregation"]["protocol"] == "SecAgg+" and entry["secure_aggregation"]["max_weight"] == W
        assert entry["sites"] == ["site1", "site2", "site3"] and set(entry["loss"]) == {"site1", "site2", "site3"}
    # the coarse grid (4096 levels over [-8, 8]) does move the model, more than the fine one (bounds 6.8e-3, 6.7e-6)
    assert diffs["coarse"] > 1e-4 > 1e-5 > diffs["fine"]


@pytest.mark.needs_data
def test_secure_aggregation_server_never_sees_an_unmasked_update(loop_fed):
    from flwr.common import bytes_to_ndarray
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

    from medlens.core.audit import AuditLog

    c, T, W, M = 8.0, 2**22, 4.0, 2**32
    sec, entry, wire = loop_fed["run"]("sa-wire", secure_aggregation={"enabled": True, "max_weight": W})
    received = [m for d, m, _ in wire if d == "received"]
    assert len(received) == 4 * 3  # setup, share keys, collect masked vectors, unmask: 3 sites each
    masked = {}
    for m in received:
        for rec in m.content.array_records.values():
            assert len(rec) == 0  # the mod emptied the site's ArrayRecord: no array leaves a site
        cfg = m.content.config_records[RECORD_KEY_CONFIGS]
        if Key.MASKED_PARAMETERS in cfg:
            masked[str(m.content["site"]["site-id"])] = [bytes_to_ndarray(b) for b in cfg[Key.MASKED_PARAMETERS]]
    assert sorted(masked) == ["site1", "site2", "site3"]
    for site, vec in masked.items():
        arrays, n = loop_fed["updates"][site]
        # what the site would send unmasked: its weight factor, then its quantised weighted parameters in [0, T]
        honest = [np.array([n / W * T])] + [(np.clip(n / W * arrays[k], -c, c) + c) * T / (2 * c) for k in arrays]
        flat, ref = np.concatenate([v.ravel() for v in vec]), np.concatenate([v.ravel() for v in honest])
        assert flat.max() > T  # masked values spread over [0, 2**32): no quantised vector looks like this
        assert np.all(np.minimum((flat - ref) % M, (ref - flat) % M) > 2)  # every entry is far from its true value
    assert entry["secure_aggregation"]["messages"] == 12
    logged = [e["details"] for e in AuditLog(loop_fed["root"] / "loop-sa-wire" / "audit.jsonl").entries()]
    rounds = [e for e in logged if "secure_aggregation" in e and "round" in e]
    assert len(rounds) == 1 and rounds[0]["secure_aggregation"]["protocol"] == "SecAgg+"
    assert rounds[0]["bytes_received"] > 0 and rounds[0]["sites"] == ["site1", "site2", "site3"]
    assert max(float(np.abs(sec[k] - loop_fed["plain"][k]).max()) for k in sec) < 1e-5


@pytest.mark.needs_data
def test_central_dp_client_and_server_clipping_without_noise_equal_clipped_fedavg(loop_fed):
    updates = loop_fed["updates"]
    zero = {k: np.zeros_like(v) for k, v in next(iter(updates.values()))[0].items()}
    norms = {s: float(np.sqrt(sum((a[k].astype(float) ** 2).sum() for k in a))) for s, (a, _) in updates.items()}
    clip = 0.5 * min(norms.values())  # every site's update is clipped
    expected = {
        k: zero[k] + sum(a[k] * min(1.0, clip / norms[s]) for s, (a, _) in updates.items()) / len(updates) for k in zero
    }
    for mode in ("server", "client"):
        privacy = {"mode": "central", "central_clipping": mode, "noise_multiplier": 0.0, "clipping_norm": clip}
        out, entry, wire = loop_fed["run"](f"dp-{mode}-0", privacy=privacy)
        for k in expected:
            np.testing.assert_allclose(out[k], expected[k], rtol=1e-6, atol=1e-7)
        assert entry["central_clipping"] == mode and entry["epsilon_central"] == float("inf")
        sent = {str(m.content["site"]["site-id"]): a for d, m, a in wire if d == "received"}
        sent_norm = {s: float(np.sqrt(sum((a[k].astype(float) ** 2).sum() for k in a))) for s, a in sent.items()}
        if mode == "client":  # the updates left the sites already clipped (fixedclipping_mod)
            assert all(v == pytest.approx(clip, rel=1e-5) for v in sent_norm.values())
        else:  # the server received them whole and clipped them itself
            assert all(sent_norm[s] == pytest.approx(norms[s], rel=1e-6) for s in norms)
    # client clipping under SecAgg+ (uniform weights: max_weight 1): the same model within the quantisation bound
    sa = {"enabled": True}
    privacy = {"mode": "central", "central_clipping": "client", "noise_multiplier": 0.0, "clipping_norm": clip}
    out, entry, _ = loop_fed["run"]("dp-client-sa", privacy=privacy, secure_aggregation=sa)
    assert entry["secure_aggregation"]["max_weight"] == 1.0
    pmax = max(float(np.abs(v).max()) for v in expected.values())
    bound = _bound([1.0, 1.0, 1.0], 1.0, 8.0, 2**22, pmax)
    assert max(float(np.abs(out[k] - expected[k]).max()) for k in out) <= bound
    # with noise: ε of the round is the RDP formula, and the model moved by the noise
    privacy = {**privacy, "noise_multiplier": 1.0}
    out, entry, _ = loop_fed["run"]("dp-client-1", privacy=privacy)
    assert entry["epsilon_central"] == pytest.approx(_rdp_epsilon_by_hand(1.0, 1, 1e-5), rel=1e-9)
    assert max(float(np.abs(out[k] - expected[k]).max()) for k in out) > 1e-3
