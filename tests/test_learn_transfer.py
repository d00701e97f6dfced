"""Transfer of the SSL encoder into the segmentation U-Net, deep features, label-efficiency summaries."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.learn import encoders, ssl
from medlens.learn.deep_features import deep_features
from medlens.learn.transfer import bootstrap_mean_ci, label_efficiency, summarise_label_efficiency
from medlens.segment.unet import UNetConfig, load_case, train

torch = pytest.importorskip("torch")
SHIPPED = encoders.WEIGHTS_DIR / "sts_pet_simclr.pt"


@pytest.fixture(scope="module")
def cases(sts_dir):
    return [
        load_case(sts_dir / p / "PET" / "image", sts_dir / p / "PET" / "rtstruct", patient_id=p)
        for p in ("STS_001", "STS_002", "STS_003", "STS_004")
    ]


@pytest.mark.slow
def test_pretrained_encoder_initialises_the_unet_down_path(cases):
    enc = ssl.load_pretrained_encoder(SHIPPED, config=UNetConfig(), modality="PT")
    res = train(cases[:1], UNetConfig(), epochs=0, initial_state=enc)
    own = res.net.state_dict()
    for k, v in enc.items():
        assert torch.equal(own[k], v), k
    scratch = train(cases[:1], UNetConfig(), epochs=0).net.state_dict()
    dec = [k for k in own if k not in enc]
    assert dec and all(torch.equal(own[k], scratch[k]) for k in dec)  # same seeded decoder in both arms
    with pytest.raises(InputError, match="layers the U-Net lacks"):
        train(cases[:1], UNetConfig(), epochs=0, initial_state={"head.weight": torch.zeros(1)})


def test_deep_features_describe_the_lesion(cases):
    f1 = deep_features(cases[0].image, cases[0].mask)
    f2 = deep_features(cases[1].image, cases[1].mask)
    assert len(f1) == 64 and all(k.startswith("deep_sts_pet_simclr_") for k in f1)
    assert all(np.isfinite(v) for v in f1.values())
    v1, v2 = np.array(list(f1.values())), np.array(list(f2.values()))
    assert np.linalg.norm(v1 - v2) > 1e-3
    # the lesion differs from a background box of the same size
    m = np.asarray(cases[0].mask.array)
    bg = np.roll(m, 12, axis=2) & ~m
    fb = np.array(list(deep_features(cases[0].image, cases[0].mask.with_array(bg)).values()))
    assert np.linalg.norm(v1 - fb) > 0.1 * np.linalg.norm(v1)
    with pytest.raises(InputError, match=r"mask .* is empty"):
        deep_features(cases[0].image, cases[0].mask.with_array(np.zeros_like(m)))


def test_bootstrap_and_summary_worked_values():
    mean, lo, hi = bootstrap_mean_ci([0.2, 0.4, 0.6, 0.8], seed=0)
    assert mean == pytest.approx(0.5) and 0.2 <= lo < 0.5 < hi <= 0.8
    rows = [
        {"fraction": 0.1, "n_labelled": 2, "init": a, "patient_id": p, "dice": d, "fold": 0}
        for a, p, d in [
            ("scratch", "A", 0.2),
            ("scratch", "B", 0.4),
            ("pretrained", "A", 0.5),
            ("pretrained", "B", 0.5),
        ]
    ]
    (s,) = summarise_label_efficiency(rows)
    assert s["scratch"][0] == pytest.approx(0.3) and s["pretrained"][0] == pytest.approx(0.5)
    assert s["difference"][0] == pytest.approx(0.2)  # (0.3 + 0.1) / 2


@pytest.mark.slow
def test_label_efficiency_runs_patient_level_folds(cases):
    enc = ssl.load_pretrained_encoder(SHIPPED, config=UNetConfig(), modality="PT")
    rows = label_efficiency(cases, encoder_state=enc, fractions=(1.0,), k=2, epochs_full=1)
    assert len(rows) == 2 * len(cases)  # each patient held out once, in both arms
    for arm in ("scratch", "pretrained"):
        assert sorted(r["patient_id"] for r in rows if r["init"] == arm) == sorted(c.patient_id for c in cases)
    assert all(0.0 <= r["dice"] <= 1.0 for r in rows)
