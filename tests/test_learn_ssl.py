"""Self-supervised pretraining (SimCLR, MAE), the shipped encoders and their checkpoint checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import medlens
from medlens.core.errors import InputError
from medlens.learn import encoders, ssl
from medlens.learn.deep_features import deep_features
from medlens.segment.unet import UNetConfig

torch = pytest.importorskip("torch")

SHIPPED = encoders.WEIGHTS_DIR / "sts_pet_simclr.pt"


@pytest.fixture(scope="module")
def pet_slices(sts_dir):
    ims = [medlens.read_image(sts_dir / f"STS_00{i}" / "PET" / "image") for i in (1, 2, 3)]
    return ssl.slices_for_pretraining(ims, modality="PT")


def test_nt_xent_identical_views_score_lower_than_random_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    same = float(ssl.nt_xent(z, z.clone(), temperature=0.2))
    rand = float(ssl.nt_xent(z, torch.randn(16, 32, generator=g), temperature=0.2))
    assert same < rand - 1.0
    # with identical views the positive has cosine 1 -> the loss is at most log(2B - 1) and here much lower
    assert same < np.log(31) / 2


def test_shipped_checkpoints_are_described_and_hashed():
    for name in ("sts_pet_simclr", "sts_pet_mae"):
        pt = encoders.WEIGHTS_DIR / f"{name}.pt"
        doc = json.loads(pt.with_suffix(".json").read_text())
        assert doc["sha256"] == encoders.sha256_file(pt)
        assert doc["architecture"]["kind"] == "unet-encoder" and doc["architecture"]["encoder_only"]
        assert doc["input"]["modality"] == "PT" and doc["input"]["units"] == "SUVbw"
        assert doc["info"]["seed"] == 0 and "slices" in doc["info"]["data"]
        assert pt.stat().st_size < 1_000_000
        assert doc["info"]["losses"][-1] < doc["info"]["losses"][0]


def test_simclr_generalises_to_held_out_slices(pet_slices):
    train, held = pet_slices[::2], pet_slices[1::2][:32]
    untrained = ssl.pretrain(train, method="simclr", steps=1, batch_size=16, seed=0, learning_rate=1e-12)
    trained = ssl.pretrain(train, method="simclr", steps=40, batch_size=16, seed=0)
    before = ssl.simclr_loss(untrained.net, untrained.head, held, seed=3)
    after = ssl.simclr_loss(trained.net, trained.head, held, seed=3)
    assert after < before - 0.3  # held-out views of one slice are found among 2 x 32 views more surely


def test_tiny_pretraining_lowers_both_losses(pet_slices):
    for method in ("simclr", "mae"):
        res = ssl.pretrain(pet_slices, method=method, steps=24, batch_size=16, seed=0)
        assert res.losses[-1] < res.losses[0], method


def test_mae_reconstructs_hidden_blocks_of_held_out_slices(pet_slices):
    train, held = pet_slices[::2], pet_slices[1::2][:64]
    hidden = ssl._block_mask(held.shape, 8, 0.5, np.random.default_rng(7))
    inp = torch.from_numpy(np.where(hidden, 0.0, held).astype(np.float32)[:, None])
    errs = {}
    for steps, lr in ((1, 1e-12), (60, 1e-3)):
        res = ssl.pretrain(train, method="mae", steps=steps, batch_size=16, seed=0, mask_ratio=0.5, learning_rate=lr)
        with torch.inference_mode():
            rec = res.net(inp).numpy()[:, 0]
        errs[steps] = float(np.mean((rec - held)[hidden] ** 2))
    assert errs[60] < 0.5 * errs[1]


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    other = UNetConfig(channels=(16, 32, 64, 128))
    with pytest.raises(InputError, match=r"sts_pet_simclr\.pt: the encoder was pretrained for the U-Net .*expected"):
        ssl.load_pretrained_encoder(SHIPPED, config=other)
    with pytest.raises(InputError, match=r"is a 'unet-encoder' network, expected a 'denoise-cnn' one"):
        encoders.load_checkpoint(SHIPPED, expect_kind="denoise-cnn")
    # the same tensors described as another architecture: the first mismatching layer is named
    pt = tmp_path / "wrong.pt"
    shutil.copy(SHIPPED, pt)
    doc = json.loads(SHIPPED.with_suffix(".json").read_text())
    doc["architecture"]["unet"]["channels"] = [16, 32, 64, 128]
    pt.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(
        InputError, match=r"wrong\.pt: the checkpoint does not fit .* has shape \(8, 1, 3, 3\) in the checkpoint"
    ):
        encoders.load_checkpoint(pt)
    # a changed file no longer matches its hash
    doc = json.loads(SHIPPED.with_suffix(".json").read_text())
    doc["sha256"] = "0" * 64
    pt.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="does not match"):
        encoders.load_checkpoint(pt)


def test_modality_the_model_was_not_trained_on_is_refused(sts_dir):
    ct = medlens.read_image(sts_dir / "STS_001" / "CT" / "image")
    mask = medlens.read_mask(sts_dir / "STS_001" / "CT" / "rtstruct", reference=ct, roi="GTV_Mass_CT")
    with pytest.raises(
        InputError, match=r"sts_pet_simclr\.pt was trained on PT \(SUVbw\).*modality 'CT', expected 'PT'"
    ):
        deep_features(ct, mask)
    with pytest.raises(InputError, match="pretrained on 'PT' images, expected 'CT'"):
        ssl.load_pretrained_encoder(SHIPPED, modality="CT")
    with pytest.raises(InputError, match="modality 'CT', expected 'PT' for this pretraining"):
        ssl.slices_for_pretraining([ct], modality="PT")


def test_cli_pretrain_writes_a_loadable_checkpoint(sts_dir, tmp_path):
    from medlens.cli import main

    csv = tmp_path / "cohort.csv"
    rows = ["patient_id,pet_image"] + [f"STS_00{i},{sts_dir}/STS_00{i}/PET/image" for i in (1, 2)]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "enc.pt"
    assert main(["pretrain", str(csv), "--out", str(out), "--method", "mae", "--steps", "4", "--batch-size", "8"]) == 0
    enc = ssl.load_pretrained_encoder(out, config=UNetConfig(), modality="PT")
    assert all(k.startswith("model.") for k in enc) and len(enc) > 10
    assert main(["pretrain", str(csv), "--out", str(out), "--method", "byol"]) == 2
