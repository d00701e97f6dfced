"""Transfer of the SSL encoder to patient-level classification: pooling, fusion, subsets, CLI, a real-data smoke."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest

from medlens.cli import main
from medlens.core.errors import InputError
from medlens.learn import encoders
from medlens.learn import transfer_cls as T

torch = pytest.importorskip("torch")
SHIPPED = encoders.WEIGHTS_DIR / "sts_pet_simclr.pt"


def test_masked_spatial_pool_and_attention_pool_worked_values():
    # one slice, one channel, a 2x2 feature map; the 4x4 mask covers the top-left quadrant fully and
    # half of the top-right one -> weights on the 2x2 grid 1.0, 0.5, 0, 0
    feat = torch.tensor([[[[2.0, 8.0], [100.0, -100.0]]]])
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2, :2] = 1
    mask[0, 0, :2, 2] = 1
    pooled = T.masked_spatial_pool(feat, mask)
    assert pooled.shape == (1, 1)
    assert float(pooled) == pytest.approx((2.0 * 1.0 + 8.0 * 0.5) / 1.5)  # = 4
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert T.attention_pool(h, None).tolist() == pytest.approx([0.5, 0.5])
    # softmax([0, ln 3]) = [1/4, 3/4]
    assert T.attention_pool(h, torch.tensor([[0.0], [math.log(3.0)]])).tolist() == pytest.approx([0.25, 0.75])


def test_late_fusion_adds_log_odds_and_removes_the_prior_once():
    out = T.late_fusion_logit(np.array([1.0, -2.0]), np.array([0.5, 0.0]), prior=0.25)
    # logit(0.25) = ln(1/3)
    assert out.tolist() == pytest.approx([1.5 + math.log(3.0), -2.0 + math.log(3.0)])
    # an uninformative clinical model (it predicts the prior) leaves the image's log-odds unchanged
    assert T.late_fusion_logit(np.array([0.7]), np.array([math.log(0.25 / 0.75)]), 0.25).tolist() == pytest.approx(
        [0.7]
    )


def test_suvmax_baseline_reads_the_largest_value_inside_the_mask():
    s = np.zeros((2, 8, 8), np.float32)
    m = np.zeros((2, 8, 8), np.float32)
    s[0, 0, 0], s[1, 4, 4], s[1, 5, 5] = 9.0, 2.0, 1.5  # the 9.0 lies outside the mask
    m[:, 3:7, 3:7] = 1
    x = T.suvmax_matrix([T.Bag("A", 1, s, m)])
    assert x.shape == (1, 1) and x[0, 0] == pytest.approx(math.log(10.0))  # 2.0 network units x 5 = SUV 10


def test_nested_subsets_are_nested_stratified_and_seeded():
    ids = [f"P{i:02d}" for i in range(30)]
    y = [1 if i % 3 == 0 else 0 for i in range(30)]  # 10 positive, 20 negative
    lab = dict(zip(ids, y, strict=True))
    sub = T.nested_stratified_subsets(ids, y, (1.0, 0.1, 0.5, 0.25), seed=3)
    assert list(sub) == [0.1, 0.25, 0.5, 1.0]
    pos = [sum(lab[p] for p in sub[f]) for f in sub]
    neg = [len(sub[f]) - n for f, n in zip(sub, pos, strict=True)]
    # max(1, round(f * n_class)) per class; round(2.5) = 2 (to even)
    assert pos == [1, 2, 5, 10] and neg == [2, 5, 10, 20]
    fr = list(sub)
    for a, b in itertools.pairwise(fr):
        assert set(sub[a]) < set(sub[b])
    assert T.nested_stratified_subsets(ids, y, (0.1, 0.25), seed=3)[0.25] == sub[0.25]
    assert T.nested_stratified_subsets(ids, y, (0.25,), seed=4)[0.25] != sub[0.25]
    with pytest.raises(InputError, match="fractions must be in"):
        T.nested_stratified_subsets(ids, y, (0.0,))


def test_stratified_patient_folds_hold_out_every_patient_once_with_both_classes():
    ids = [f"P{i:02d}" for i in range(51)]
    y = [1] * 19 + [0] * 32
    folds = T.stratified_patient_folds(ids, y, k=5, seed=0)
    held = [p for _, te in folds for p in te]
    assert sorted(held) == ids
    for tr, te in folds:
        assert not set(tr) & set(te)
        assert sum(ids.index(p) < 19 for p in te) in (3, 4)  # 19 positives over 5 folds
    with pytest.raises(InputError, match="smaller class"):
        T.stratified_patient_folds(ids[:6], [1, 1, 0, 0, 0, 0], k=3)


def test_gtv_slices_centre_a_window_on_each_masked_slice():
    x = np.zeros((3, 20, 20), np.float32)
    x[1, 10, 12] = 5.0
    m = np.zeros((3, 20, 20), bool)
    m[1, 9:12, 11:14] = True  # centroid (10, 12)
    s, mk = T.gtv_slices(x, m, roi=(8, 8))
    assert s.shape == (1, 8, 8) and mk.shape == (1, 8, 8)
    assert s[0, 4, 4] == 5.0 and s.sum() == 5.0  # the centroid lands at (h // 2, w // 2)
    assert mk.sum() == 9 and mk[0, 3:6, 3:6].all()
    with pytest.raises(InputError, match="empty"):
        T.gtv_slices(x, np.zeros_like(m))


def test_summary_auc_and_paired_difference_worked_values():
    y = [1, 1, 0, 0]
    perfect = [0.9, 0.8, 0.2, 0.1]
    half = [0.9, 0.1, 0.8, 0.2]  # pairs (pos, neg): 0.9>0.8, 0.9>0.2, 0.1<0.8, 0.1<0.2 -> AUC 0.5
    rows = [
        {"fraction": 1.0, "n_labelled": 4, "arm": a, "patient_id": f"P{i}", "label": y[i], "probability": p[i]}
        for a, p in (("scratch", half), ("pretrained", perfect))
        for i in range(4)
    ]
    s = {e["arm"]: e for e in T.summarise_cls(rows, n_boot=200)}
    assert s["scratch"]["auc"] == pytest.approx(0.5) and s["pretrained"]["auc"] == pytest.approx(1.0)
    assert s["pretrained"]["difference"] == pytest.approx(0.5) and s["pretrained"]["vs"] == "scratch"
    assert "difference" not in s["scratch"]
    table = T.markdown_table(list(s.values()))
    assert "| 100 % | 4 | 0.500 [" in table and "+0.500 [" in table


def _bags(n: int = 4, seed: int = 0) -> list[T.Bag]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = rng.random((3, 64, 64), dtype=np.float32)
        m = np.zeros((3, 64, 64), np.float32)
        m[:, 24:40, 24:40] = 1
        out.append(T.Bag(f"P{i}", i % 2, s, m, {"age": 50.0 + i, "sex_male": float(i % 2)}))
    return out


def test_arms_share_the_head_initialisation_and_the_probe_keeps_the_encoder():
    from medlens.learn.ssl import load_pretrained_encoder
    from medlens.segment.unet import UNetConfig

    cfg = UNetConfig()
    enc = load_pretrained_encoder(SHIPPED, config=cfg, modality="PT")
    torch.manual_seed(5)
    a = T.build_classifier(cfg).state_dict()
    torch.manual_seed(5)
    b = T.build_classifier(cfg, encoder_state=enc).state_dict()
    heads = [k for k in a if not k.startswith("encoder.")]
    assert heads and all(torch.equal(a[k], b[k]) for k in heads)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    common = dict(pooling="attention", steps=2, batch_bags=2, max_slices=2, lr_encoder=1e-2, lr_head=1e-2)
    kw = dict(unet_config=cfg, encoder_state=enc, weight_decay=0.0, seed=5, **common)
    probe = T._train_arm(_bags(), freeze=True, **kw).state_dict()
    tuned = T._train_arm(_bags(), freeze=False, **kw).state_dict()
    assert all(torch.equal(probe[k], b[k]) for k in b if k.startswith("encoder."))
    assert any(not torch.equal(probe[k], b[k]) for k in heads)  # the probe's head did train
    assert any(not torch.equal(tuned[k], b[k]) for k in b if k.startswith("encoder."))


def _write_cohort(path, rows, header=("patient_id", "lung_metastasis", "pet_image", "pet_rtstruct")):
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_cli_refuses_a_missing_label_column_and_bad_fractions(tmp_path, capsys):
    cohort = _write_cohort(tmp_path / "c.csv", [("A", "x", "y")], header=("patient_id", "pet_image", "pet_rtstruct"))
    assert main(["transfer-cls", str(cohort), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "lung_metastasis" in err and "missing ['lung_metastasis']" in err and "--label" in err
    assert main(["transfer-cls", str(cohort), "--out", str(tmp_path / "o"), "--label", "death"]) == 2
    cohort2 = _write_cohort(tmp_path / "c2.csv", [("A", "2", "x", "y")])
    assert main(["transfer-cls", str(cohort2), "--out", str(tmp_path / "o")]) == 2
    assert "must be 0 or 1, found '2'" in capsys.readouterr().err
    assert main(["transfer-cls", str(cohort2), "--out", str(tmp_path / "o"), "--fractions", "0.1,abc"]) == 2
    assert main(["transfer-cls", str(cohort2), "--out", str(tmp_path / "o"), "--fractions", "0,1"]) == 2
    assert main(["transfer-cls", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_checkpoint_of_another_architecture(tmp_path, capsys):
    net = encoders.build_denoise_cnn(width=4, depth=2)
    ck = encoders.save_checkpoint(
        net.state_dict(),
        tmp_path / "dn.pt",
        architecture={"kind": "denoise-cnn", "width": 4, "depth": 2},
        input_spec={"modality": "CT", "units": "HU", "scaling": "x"},
    )
    cohort = _write_cohort(tmp_path / "c.csv", [("A", "1", "x", "y")])
    code = main(["transfer-cls", str(cohort), "--out", str(tmp_path / "o"), "--checkpoint", str(ck)])
    assert code == 2
    assert "is a 'denoise-cnn' network, expected a 'unet-encoder' one" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _six(sts_dir, tmp_path, image="PET"):
    with (sts_dir / "cohort.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    pos = [r for r in rows if r["lung_metastasis"] == "1"][:3]
    neg = [r for r in rows if r["lung_metastasis"] == "0"][:3]
    return _write_cohort(
        tmp_path / "six.csv",
        [
            (
                r["patient_id"],
                r["lung_metastasis"],
                sts_dir / r["patient_id"] / image / "image",
                sts_dir / r["patient_id"] / image / "rtstruct",
            )
            for r in pos + neg
        ],
    )


@pytest.mark.needs_data
def test_cli_refuses_an_image_of_another_modality(sts_dir, tmp_path, capsys):
    cohort = _six(sts_dir, tmp_path, image="CT")  # CT series in the PET columns (patients 1-20 have CT)
    with cohort.open() as fh:
        first = next(csv.DictReader(fh))["patient_id"]
    if int(first[-3:]) > 20:
        pytest.skip("the first positive STS patient has no CT")
    assert main(["transfer-cls", str(cohort), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "has modality 'CT', expected 'PT'" in err and "sts_pet_simclr.pt" in err


@pytest.mark.needs_data
@pytest.mark.slow
def test_real_sts_smoke_six_patients_and_the_crop_cache(sts_dir, tmp_path):
    cohort = _six(sts_dir, tmp_path)
    logs: list[str] = []
    kw = dict(fractions=(0.5, 1.0), k=3, steps=2, cache_dir=tmp_path / "cache", n_boot=50)
    doc = T.run_transfer_cls(cohort, tmp_path / "out", log=logs.append, **kw)
    assert doc["n_patients"] == 6 and doc["n_positive"] == 3
    arms = [
        "scratch",
        "pretrained",
        "probe",
        "suvmax",
        "clinical",
        "scratch+clinical",
        "pretrained+clinical",
        "probe+clinical",
    ]
    preds = doc["predictions"]
    for f in (0.5, 1.0):
        for a in arms:
            got = sorted(r["patient_id"] for r in preds if r["fraction"] == f and r["arm"] == a)
            assert len(got) == 6 and len(set(got)) == 6  # every patient held out exactly once
    assert all(0.0 < r["probability"] < 1.0 for r in preds)
    # 4 training patients per fold (2 + 2): 50 % keeps one of each class
    assert {r["n_labelled"] for r in preds if r["fraction"] == 0.5} == {2}
    with (tmp_path / "out" / "transfer_cls.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["arm"] for r in table] == arms * 2
    assert json.loads((tmp_path / "out" / "transfer_cls.json").read_text())["settings"]["folds"] == 3
    # the second run reads the cached crops (no DICOM) and reproduces every probability (seeded)
    doc2 = T.run_transfer_cls(cohort, tmp_path / "out2", log=logs.append, **kw)
    assert any("crop cache" in s for s in logs)
    assert [r["probability"] for r in doc2["predictions"]] == pytest.approx([r["probability"] for r in preds])
    bags = T.load_bags(cohort, input_spec=doc_input(), cache_dir=tmp_path / "cache")
    b = bags[0]
    assert b.slices.shape[1:] == (64, 64) and len(b.slices) == len(b.masks) and b.masks.max() == 1.0
    assert set(b.clinical) == set(T.CLINICAL_COLUMNS) and b.clinical["age"] is not None


def doc_input():
    from medlens.learn.ssl import INPUT_SPECS

    return INPUT_SPECS["PT"]


def test_repeat_bootstrap_equals_the_fusion_helpers_for_one_repeat_and_averages_repeats():
    from medlens.learn.fusion import _bootstrap_ci, paired_auc_difference

    rng = np.random.default_rng(1)
    y = np.array([1] * 8 + [0] * 12)
    pa, pb = rng.random(20), rng.random(20) + 0.3 * y
    auc, lo, hi = T._repeat_mean_auc_ci(y, pb[None], None, n_boot=300, seed=2)
    assert (lo, hi) == pytest.approx(_bootstrap_ci(y, pb, n_boot=300, seed=2))
    assert auc == pytest.approx(paired_auc_difference(y, np.zeros(20), pb, n_bootstrap=1)["difference"] + 0.5)
    d = paired_auc_difference(y, pa, pb, n_bootstrap=300, seed=2)
    got = T._repeat_mean_auc_ci(y, pb[None], pa[None], n_boot=300, seed=2)
    assert got == pytest.approx((d["difference"], d["ci95_low"], d["ci95_high"]))
    # two repeats: the mean of the two AUCs
    perfect = np.where(y == 1, 0.9, 0.1)
    two = T._repeat_mean_auc_ci(y, np.stack([perfect, 1.0 - perfect]), None, n_boot=50, seed=0)
    assert two[0] == pytest.approx(0.5)
    rows = [
        {
            "repeat": r,
            "fraction": 1.0,
            "n_labelled": 4,
            "arm": "scratch",
            "patient_id": f"P{i}",
            "label": int(y[i]),
            "probability": float([perfect, 1.0 - perfect][r][i]),
        }
        for r in (0, 1)
        for i in range(20)
    ]
    (s,) = T.summarise_cls(rows, n_boot=50)
    assert s["auc_repeats"] == pytest.approx([1.0, 0.0]) and s["auc"] == pytest.approx(0.5) and s["repeats"] == 2


def test_mean_pooling_classifier_is_the_head_of_the_mean_slice_feature():
    from medlens.segment.unet import UNetConfig

    torch.manual_seed(0)
    net = T.build_classifier(UNetConfig(), pooling="mean").eval()
    b = _bags(1)[0]
    x, m = torch.from_numpy(b.slices[:, None]), torch.from_numpy(b.masks[:, None])
    with torch.inference_mode():
        h = net.slice_features(x, m)
        want = net.head(h.mean(dim=0))
        assert float(net(x, m)) == pytest.approx(float(want), abs=1e-6)
        assert float(net(x[[1, 0, 2]], m[[1, 0, 2]])) == pytest.approx(float(want), abs=1e-5)  # order-free
    with pytest.raises(InputError, match="pooling must be"):
        T.build_classifier(UNetConfig(), pooling="max")
