"""The shipped low-dose CT denoiser: checkpoint, ``denoise_ct`` (worked values, bad input), CLI, real data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import medlens
from medlens.core.errors import InputError
from medlens.core.image import Image, ImageMeta, Units
from medlens.learn import encoders
from medlens.learn import lowdose as ld

torch = pytest.importorskip("torch")

SHIPPED = encoders.WEIGHTS_DIR / "sts_ct_denoise_cnn.pt"


def _ct(arr: np.ndarray, *, modality: str = "CT", units: str = Units.HU) -> Image:
    spacing = (3.0, 0.98, 0.98)[-arr.ndim :]
    meta = ImageMeta(modality=modality, units=units, source="test.nii")
    return Image.from_array(arr.astype(np.float32), spacing=spacing, meta=meta)


def _checkpoint(tmp_path, *, bias: float, name: str = "cnn.pt"):
    """A denoise-cnn whose weights are all zero but the last bias: net(x) = bias everywhere."""
    net = encoders.build_denoise_cnn(width=4, depth=3)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net[-1].bias.fill_(bias)
    arch = {"kind": "denoise-cnn", "spatial_dims": 2, "width": 4, "depth": 3}
    spec = {"modality": "CT", "units": "HU", "scaling": "HU / 1000"}
    return encoders.save_checkpoint(net.state_dict(), tmp_path / name, architecture=arch, input_spec=spec)


def test_shipped_denoiser_is_described_hashed_and_small():
    doc = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert doc["sha256"] == encoders.sha256_file(SHIPPED)
    assert SHIPPED.stat().st_size < 500_000
    assert doc["architecture"]["kind"] == "denoise-cnn"
    assert doc["input"]["modality"] == "CT" and doc["input"]["units"] == "HU"
    info = doc["info"]
    train, held = set(info["train_patients"]), set(info["held_out_patients"])
    assert len(train) == len(held) == 10 and not train & held
    assert info["lowdose_model"]["doses"] == [0.1, 0.25]
    assert info["losses"][-1] < info["losses"][0]
    ck = encoders.load_checkpoint(SHIPPED, expect_kind="denoise-cnn")
    assert sum(p.numel() for p in ck.net.parameters()) > 1000


def test_checkpoint_bytes_depend_only_on_the_weights(tmp_path):
    # torch.save names its zip archive after the file; save_checkpoint must not leak the temporary name
    a = _checkpoint(tmp_path, bias=0.01, name="one.pt")
    (tmp_path / "sub").mkdir()
    b = _checkpoint(tmp_path / "sub", bias=0.01, name="one.pt")
    c = _checkpoint(tmp_path, bias=0.02, name="three.pt")
    assert a.read_bytes() == b.read_bytes()
    assert encoders.sha256_file(a) == json.loads(b.with_suffix(".json").read_text())["sha256"]
    assert encoders.sha256_file(c) != encoders.sha256_file(a)


def test_a_changed_checkpoint_is_refused(tmp_path):
    pt = tmp_path / "tampered.pt"
    shutil.copy(SHIPPED, pt)
    shutil.copy(SHIPPED.with_suffix(".json"), pt.with_suffix(".json"))
    with pt.open("r+b") as fh:  # flip one byte near the end (inside the tensor data)
        fh.seek(-200, 2)
        b = fh.read(1)
        fh.seek(-200, 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(InputError, match=r"tampered\.pt: SHA-256 .* does not match"):
        ld.denoise_ct(_ct(np.zeros((16, 16))), checkpoint=pt)


def test_denoise_ct_subtracts_the_predicted_noise_in_hu(tmp_path):
    # net(x) = 0.01 (HU / 1000) everywhere -> the output is the input minus 10 HU, exactly
    pt = _checkpoint(tmp_path, bias=0.01)
    vol = np.random.default_rng(0).uniform(-1000, 1500, size=(5, 20, 24)).astype(np.float32)
    img = _ct(vol)
    before = vol.copy()
    out = ld.denoise_ct(img, checkpoint=pt, batch_slices=2)  # batches 2 + 2 + 1
    np.testing.assert_allclose(np.asarray(out.array), vol - 10.0, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(img.array), before)  # input not modified
    assert out.meta.units == Units.HU and out.meta.modality == "CT" and out.array.dtype == np.float32
    assert "denoise_ct(checkpoint=cnn.pt" in out.meta.history[-1]
    two_d = ld.denoise_ct(_ct(vol[2]), checkpoint=_checkpoint(tmp_path, bias=-0.005, name="b.pt"))
    np.testing.assert_allclose(np.asarray(two_d.array), vol[2] + 5.0, atol=1e-3)


def test_onnx_engine_gives_the_torch_result():
    pytest.importorskip("onnxruntime")
    vol = np.random.default_rng(2).normal(30.0, 80.0, size=(3, 40, 36)).astype(np.float32)
    vol[:, :5] = -1000.0  # air band
    img = _ct(vol)
    a = np.asarray(ld.denoise_ct(img).array)
    b = ld.denoise_ct(img, engine="onnx", batch_slices=2)
    np.testing.assert_allclose(np.asarray(b.array), a, atol=0.1)  # 1e-4 in network units = 0.1 HU
    assert b.meta.history[-1].endswith(",engine=onnx)")
    assert np.abs(a - vol).max() > 1.0  # the shipped network does change the image
    with pytest.raises(InputError, match="engine must be 'torch' or 'onnx', got 'tensorrt'"):
        ld.denoise_ct(img, engine="tensorrt")


def test_denoise_ct_refuses_what_it_was_not_trained_on(tmp_path):
    a = np.zeros((3, 16, 16))
    with pytest.raises(InputError, match=r"test\.nii: denoise_ct needs a CT in HU, got modality 'PT'"):
        ld.denoise_ct(_ct(a, modality="PT", units=Units.SUVBW))
    with pytest.raises(InputError, match="got modality 'MR'"):
        ld.denoise_ct(_ct(a, modality="MR", units=Units.ARBITRARY))
    with pytest.raises(InputError, match=r"found units 'normalised'; give the CT before any intensity"):
        ld.denoise_ct(_ct(a, units=Units.NORMALISED))
    bad = a.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        ld.denoise_ct(_ct(bad))
    with pytest.raises(InputError, match=r"is a 'unet-encoder' network, expected a 'denoise-cnn' one"):
        ld.denoise_ct(_ct(a), checkpoint=encoders.WEIGHTS_DIR / "sts_pet_simclr.pt")
    with pytest.raises(InputError, match=r"nothing\.pt: checkpoint not found"):
        ld.denoise_ct(_ct(a), checkpoint=tmp_path / "nothing.pt")
    with pytest.raises(InputError, match="batch_slices must be at least 1"):
        ld.denoise_ct(_ct(a), batch_slices=0)


def test_cli_denoise_ct_writes_the_api_result(tmp_path):
    from medlens.cli import main
    from medlens.io.api import read_image, write_image

    vol = np.random.default_rng(1).normal(40.0, 30.0, size=(2, 32, 32)).astype(np.float32)
    src = write_image(_ct(vol), tmp_path / "low.nii.gz")
    out = tmp_path / "den.nii.gz"
    assert main(["denoise-ct", str(src), "--out", str(out)]) == 0
    got = np.asarray(read_image(out).array)
    np.testing.assert_allclose(got, np.asarray(ld.denoise_ct(read_image(src)).array), atol=1e-3)
    assert got.std() < vol.std()  # the noise is reduced
    assert main(["denoise-ct", str(src), "--out", str(out), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    assert main(["denoise-ct", str(src), "--out", str(tmp_path / "o.nii.gz"), "--engine", "onnx"]) == 0
    np.testing.assert_allclose(np.asarray(read_image(tmp_path / "o.nii.gz").array), got, atol=0.1)


@pytest.mark.needs_data
def test_cli_denoise_ct_refuses_a_pet_series(sts_dir, tmp_path):
    from medlens.cli import main

    assert main(["denoise-ct", str(sts_dir / "STS_001" / "PET" / "image"), "--out", str(tmp_path / "o.nii.gz")]) == 2
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.needs_data
@pytest.mark.slow
def test_shipped_denoiser_beats_fbp_on_a_held_out_sts_slice(sts_dir):
    from scipy import ndimage

    held = json.loads(SHIPPED.with_suffix(".json").read_text())["info"]["held_out_patients"]
    ct = medlens.read_image(sts_dir / held[0] / "CT" / "image")
    z = ct.shape[0] // 2
    ref = ct.slice2d(z)
    full = np.asarray(ref.array, np.float64)
    low = ld.simulate_low_dose(ref, dose_fraction=0.1, seed=7)
    den = ld.denoise_ct(low)
    p_fbp = ld.psnr_hu(np.asarray(low.array), full)
    p_cnn = ld.psnr_hu(np.asarray(den.array), full)
    assert p_cnn > p_fbp + 3.0, (p_fbp, p_cnn)  # measured: 28.8 -> 32.7 dB
    # soft tissue as in scripts/learn_ship_denoiser.py (reference HU in [-100, 100], eroded 2 px)
    soft = ndimage.binary_erosion((full > -100) & (full < 100), iterations=2)
    err_fbp, err_cnn = (np.asarray(im.array, np.float64)[soft] - full[soft] for im in (low, den))
    assert abs(float(err_cnn.mean())) < 5.0  # measured +2.3 HU
    assert err_cnn.std() < 0.6 * err_fbp.std()  # measured 37.5 vs 72.7 HU


# ---- the shipped diffusion prior (method="diffusion") ------------------------------------------------

PRIOR = encoders.WEIGHTS_DIR / "sts_ct_diffusion_prior.pt"


def _zero_prior(tmp_path, name: str = "zero_prior.pt"):
    """A diffusion-unet with every weight zero: it predicts eps = 0, so DDIM returns its input unchanged."""
    net = encoders.build_diffusion_unet(channels=(16, 16), num_res_blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    arch = {"kind": "diffusion-unet", "channels": [16, 16], "num_res_blocks": 1, "num_train_timesteps": 1000}
    spec = {"modality": "CT", "units": "HU", "scaling": "HU / 1000"}
    return encoders.save_checkpoint(net.state_dict(), tmp_path / name, architecture=arch, input_spec=spec)


def test_shipped_diffusion_prior_is_described_hashed_and_small():
    doc = json.loads(PRIOR.with_suffix(".json").read_text())
    assert doc["sha256"] == encoders.sha256_file(PRIOR)
    assert PRIOR.stat().st_size < 1_000_000
    arch = doc["architecture"]
    assert arch == {
        "kind": "diffusion-unet",
        "channels": [16, 32, 32],
        "num_res_blocks": 1,
        "num_train_timesteps": 1000,
        "schedule": "linear_beta",
    }
    assert doc["input"]["modality"] == "CT" and doc["input"]["units"] == "HU"
    info = doc["info"]
    cnn_info = json.loads(SHIPPED.with_suffix(".json").read_text())["info"]
    # the same patient split as the shipped CNN, so both are evaluated on the same 10 held-out patients
    assert info["train_patients"] == cnn_info["train_patients"]
    assert info["held_out_patients"] == cnn_info["held_out_patients"]
    assert info["seed"] == 0 and info["recipe"]["steps"] == 600 and info["apply"]["ddim_steps"] == 8
    assert info["losses"][-1] < info["losses"][0]
    ck = encoders.load_checkpoint(PRIOR, expect_kind="diffusion-unet")
    assert sum(p.numel() for p in ck.net.parameters()) > 10_000


def test_a_changed_diffusion_prior_is_refused(tmp_path):
    pt = tmp_path / "tampered_prior.pt"
    shutil.copy(PRIOR, pt)
    shutil.copy(PRIOR.with_suffix(".json"), pt.with_suffix(".json"))
    with pt.open("r+b") as fh:
        fh.seek(-200, 2)
        b = fh.read(1)
        fh.seek(-200, 2)
        fh.write(bytes([b[0] ^ 0x01]))
    with pytest.raises(InputError, match=r"tampered_prior\.pt: SHA-256 .* does not match"):
        ld.denoise_ct(_ct(np.zeros((16, 16))), method="diffusion", checkpoint=pt)


def test_method_and_checkpoint_kind_must_agree(tmp_path):
    a = _ct(np.zeros((1, 16, 16)))
    with pytest.raises(InputError, match=r"is a 'denoise-cnn' network, expected a 'diffusion-unet' one"):
        ld.denoise_ct(a, method="diffusion", checkpoint=SHIPPED)
    with pytest.raises(InputError, match=r"is a 'diffusion-unet' network, expected a 'denoise-cnn' one"):
        ld.denoise_ct(a, checkpoint=PRIOR)
    with pytest.raises(InputError, match=r"is a 'diffusion-unet' network, expected a 'denoise-cnn' one"):
        ld.denoise_ct(a, method="cnn", checkpoint=PRIOR)
    with pytest.raises(InputError, match="method must be 'cnn' or 'diffusion', got 'gan'"):
        ld.denoise_ct(a, method="gan")
    with pytest.raises(InputError, match="method 'diffusion' runs with engine 'torch' only"):
        ld.denoise_ct(a, method="diffusion", engine="onnx")
    with pytest.raises(InputError, match="ddim_steps must be at least 1"):
        ld.denoise_ct(a, method="diffusion", ddim_steps=0)
    with pytest.raises(InputError, match=r"test\.nii: denoise_ct needs a CT in HU, got modality 'PT'"):
        ld.denoise_ct(_ct(np.zeros((2, 16, 16)), modality="PT", units=Units.SUVBW), method="diffusion")
    with pytest.raises(InputError, match=r"found units 'normalised'"):
        ld.denoise_ct(_ct(np.zeros((2, 16, 16)), units=Units.NORMALISED), method="diffusion")


def test_diffusion_path_pads_scales_and_crops_exactly(tmp_path):
    # eps = 0 everywhere: x_t* = sqrt(abar) x, each DDIM step rescales by sqrt(abar_prev / abar_t), ending at x
    pt = _zero_prior(tmp_path)
    vol = np.random.default_rng(3).normal(40.0, 60.0, size=(2, 30, 26)).astype(np.float32)  # not multiples of 2
    vol[1] = 25.0  # a constant slice: estimated noise 0, returned as it is
    img = _ct(vol)
    before = vol.copy()
    out = ld.denoise_ct(img, method="diffusion", checkpoint=pt, ddim_steps=3)
    np.testing.assert_allclose(np.asarray(out.array), vol, atol=1e-2)
    np.testing.assert_array_equal(np.asarray(img.array), before)
    assert out.array.shape == vol.shape and out.array.dtype == np.float32
    assert "denoise_ct(method=diffusion,checkpoint=zero_prior.pt" in out.meta.history[-1]


def test_cli_denoise_ct_diffusion_method(tmp_path):
    from medlens.cli import main
    from medlens.io.api import read_image, write_image

    vol = np.random.default_rng(1).normal(40.0, 30.0, size=(1, 32, 32)).astype(np.float32)
    src = write_image(_ct(vol), tmp_path / "low.nii.gz")
    out = tmp_path / "den.nii.gz"
    assert main(["denoise-ct", str(src), "--out", str(out), "--method", "diffusion", "--ddim-steps", "4"]) == 0
    got = np.asarray(read_image(out).array)
    api = ld.denoise_ct(read_image(src), method="diffusion", ddim_steps=4)
    np.testing.assert_allclose(got, np.asarray(api.array), atol=1e-2)
    assert got.std() < vol.std()
    assert main(["denoise-ct", str(src), "--out", str(out), "--method", "diffusion", "--checkpoint", str(SHIPPED)]) == 2
    assert main(["denoise-ct", str(src), "--out", str(tmp_path / "x.nii.gz"), "--method", "unet"]) == 2


@pytest.mark.needs_data
@pytest.mark.slow
def test_shipped_diffusion_prior_beats_fbp_on_a_held_out_sts_slice(sts_dir):
    held = json.loads(PRIOR.with_suffix(".json").read_text())["info"]["held_out_patients"]
    ct = medlens.read_image(sts_dir / held[0] / "CT" / "image")
    ref = ct.slice2d(ct.shape[0] // 2)
    full = np.asarray(ref.array, np.float64)
    low = ld.simulate_low_dose(ref, dose_fraction=0.1, seed=7)
    den = ld.denoise_ct(low, method="diffusion")
    p_fbp = ld.psnr_hu(np.asarray(low.array), full)
    p_dif = ld.psnr_hu(np.asarray(den.array), full)
    assert p_dif > p_fbp + 1.0, (p_fbp, p_dif)
