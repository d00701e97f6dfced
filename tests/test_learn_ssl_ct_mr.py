"""Self-supervised pretraining on CT and MR: scaling, data reading, the shipped CT/MR encoders and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.core.image import Image, ImageMeta, Units
from medlens.learn import encoders, ssl
from medlens.learn.deep_features import deep_features
from medlens.segment.unet import UNetConfig

torch = pytest.importorskip("torch")

SHIPPED = {m: encoders.WEIGHTS_DIR / f"sts_{m.lower()}_simclr.pt" for m in ("CT", "MR")}
UNITS = {"PT": Units.SUVBW, "CT": Units.HU, "MR": Units.ARBITRARY}


def _image(arr: np.ndarray, modality: str) -> Image:
    meta = ImageMeta(modality=modality, units=UNITS[modality], source=f"{modality.lower()}.nii")
    return Image.from_array(np.asarray(arr, np.float32), spacing=(3.0, 1.0, 1.0), meta=meta)


def test_mr_input_is_the_volume_scaled_by_its_995th_percentile():
    vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    top = np.percentile(vol, 99.5)  # 994.005 (linear interpolation)
    x = ssl.network_input(_image(vol, "MR"), "MR")
    assert x[0, 0, 0] == 0.0
    np.testing.assert_allclose(x[4, 9, 7], 497.0 / top, rtol=1e-6)  # voxel 497
    np.testing.assert_allclose(x.max(), 999.0 / top, rtol=1e-6)
    # per-volume scaling: a scanner gain (x 3.7) does not change the network input
    np.testing.assert_allclose(ssl.network_input(_image(3.7 * vol, "MR"), "MR"), x, rtol=1e-5)
    assert float(ssl.network_input(_image(np.full((2, 4, 4), 5.0), "MR"), "MR").max()) == 1.0
    bright = vol.copy()
    bright[0, 0, 0] = 1e6  # clipped at 2
    assert ssl.network_input(_image(bright, "MR"), "MR")[0, 0, 0] == 2.0
    with pytest.raises(InputError, match=r"99\.5th percentile is 0; expected positive MR signal"):
        ssl.network_input(_image(np.zeros((2, 4, 4)), "MR"), "MR")
    spec = ssl.INPUT_SPECS["MR"]
    assert spec["units"] == Units.ARBITRARY and "99.5" in spec["scaling"] and "per-volume" in spec["scaling"]
    assert ssl.INPUT_SPECS["CT"]["scaling"] == "clip(HU, -1000, 1000) / 1000 + 1"


def test_random_windows_come_from_the_slice_and_skip_empty_ones():
    vol = np.full((2, 100, 120), -1000.0)  # air
    vol[:, 20:60, 30:90] = 40.0  # a soft-tissue block
    img = _image(vol, "CT")
    wins = ssl.slices_for_pretraining([img], modality="CT", crops=8, seed=3)
    again = ssl.slices_for_pretraining([img], modality="CT", crops=8, seed=3)
    np.testing.assert_array_equal(wins, again)
    assert wins.shape[1:] == (64, 64) and 1 <= len(wins) <= 16
    # every window has >= 5 % body (HU > -900 -> network value > 0.1), and values are air 0 or tissue 1.04
    assert all(float(np.mean(w > 0.1)) >= 0.05 for w in wins)
    assert np.all(np.isclose(wins, 0.0) | np.isclose(wins, 1.04)) and np.isclose(wins, 1.04).any()
    centre = ssl.slices_for_pretraining([img], modality="CT")
    assert centre.shape == (2, 64, 64)
    with pytest.raises(InputError, match="crops must be at least 1"):
        ssl.slices_for_pretraining([img], modality="CT", crops=0)
    with pytest.raises(InputError, match="modality 'CT', expected 'MR' for this pretraining"):
        ssl.slices_for_pretraining([img], modality="MR")


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_shipped_ct_and_mr_encoders_are_described_and_hashed(modality):
    pt = SHIPPED[modality]
    doc = json.loads(pt.with_suffix(".json").read_text())
    assert doc["sha256"] == encoders.sha256_file(pt)
    assert doc["architecture"]["kind"] == "unet-encoder" and doc["architecture"]["ssl"] == "simclr"
    assert doc["input"] == ssl.INPUT_SPECS[modality]
    assert doc["info"]["seed"] == 0 and doc["info"]["losses"][-1] < doc["info"]["losses"][0]
    assert doc["info"]["seconds"] < 300  # trained in under 5 minutes here
    assert pt.stat().st_size < 500_000
    enc = ssl.load_pretrained_encoder(pt, config=UNetConfig(), modality=modality)
    assert len(enc) > 10


def test_ct_and_mr_encoders_refuse_other_modalities():
    rng = np.random.default_rng(0)
    mask = np.zeros((3, 40, 40), bool)
    mask[1, 15:25, 15:25] = True
    pet = _image(rng.uniform(0, 5, (3, 40, 40)), "PT")
    ct = _image(rng.uniform(-100, 100, (3, 40, 40)), "CT")
    mr = _image(rng.uniform(0, 900, (3, 40, 40)), "MR")
    m = Image.from_array(mask, spacing=(3.0, 1.0, 1.0))
    with pytest.raises(InputError, match=r"sts_ct_simclr\.pt was trained on CT \(HU\).*modality 'PT', expected 'CT'"):
        deep_features(pet, m, checkpoint=SHIPPED["CT"])
    with pytest.raises(InputError, match=r"sts_ct_simclr\.pt was trained on CT \(HU\).*modality 'MR', expected 'CT'"):
        deep_features(mr, m, checkpoint=SHIPPED["CT"])
    with pytest.raises(InputError, match=r"sts_mr_simclr\.pt was trained on MR \(arbitrary\).*modality 'CT'"):
        deep_features(ct, m, checkpoint=SHIPPED["MR"])
    with pytest.raises(InputError, match="pretrained on 'MR' images, expected 'PT'"):
        ssl.load_pretrained_encoder(SHIPPED["MR"], modality="PT")
    # the modality they were trained on is accepted: 64 features
    assert len(deep_features(ct, m, checkpoint=SHIPPED["CT"])) == 64
    assert len(deep_features(mr, m, checkpoint=SHIPPED["MR"])) == 64


@pytest.mark.needs_data
@pytest.mark.slow
def test_cli_pretrain_on_mr_t1_beside_a_cohort_csv(sts_dir, tmp_path):
    from medlens.cli import main

    for pid in ("STS_002", "STS_003"):  # the STS layout: <patient_id>/MR_T1/image beside the CSV
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "MR_T1").symlink_to(sts_dir / pid / "MR_T1")
    csv = tmp_path / "cohort.csv"
    csv.write_text("patient_id,lung_metastasis\nSTS_002,0\nSTS_003,1\nSTS_999,0\n")
    images = ssl.images_from_cohort(csv, modality="MR")
    assert [im.meta.modality for im in images] == ["MR", "MR"]
    out = tmp_path / "mr.pt"
    args = ["pretrain", str(csv), "--out", str(out), "--modality", "MR", "--steps", "2", "--batch-size", "8"]
    assert main([*args, "--crops", "2"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["input"]["modality"] == "MR" and "99.5" in doc["input"]["scaling"]
    assert doc["info"]["crops"] == 2 and "--crops 2" in doc["info"]["command"]
    ssl.load_pretrained_encoder(out, modality="MR")
    assert main(["pretrain", str(csv), "--out", str(out), "--modality", "US"]) == 2
    (tmp_path / "empty.csv").write_text("patient_id\nSTS_999\n")
    with pytest.raises(InputError, match=r"no column 'mr_image' for MR images and no <patient_id>/MR_T1/image"):
        ssl.images_from_cohort(tmp_path / "empty.csv", modality="MR")
