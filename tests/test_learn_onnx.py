"""ONNX export of the learn networks: ONNX Runtime gives the torch output."""

from __future__ import annotations

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.learn import encoders
from medlens.learn.onnx_export import OnnxModel, export_checkpoint

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


SHIPPED = sorted(p.stem for p in encoders.WEIGHTS_DIR.glob("*.pt"))


def test_every_shipped_model_is_listed():
    # a new shipped model is covered by the parametrised test below automatically; these must be there
    assert {
        "sts_pet_simclr",
        "sts_pet_mae",
        "sts_ct_simclr",
        "sts_mr_simclr",
        "sts_ct_denoise_cnn",
        "sts_ct_diffusion_prior",
    } <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_onnx_equals_torch(tmp_path, name):
    pt = encoders.WEIGHTS_DIR / f"{name}.pt"
    onnx_path = export_checkpoint(pt, tmp_path / f"{name}.onnx")
    ck = encoders.load_checkpoint(pt, encoder_only=True)
    rng = np.random.default_rng(0)
    kind = ck.architecture["kind"]
    if kind == "unet-encoder":
        x = rng.uniform(0, 2, size=(3, 1, 64, 64)).astype(np.float32)
        with torch.inference_mode():
            ref = encoders.encoder_forward(ck.net, torch.from_numpy(x)).numpy()
        assert ref.shape == (3, 64, 8, 8)
    elif kind == "diffusion-unet":
        # the noise predictor takes (x_t, t): a grid other than the training patches', two timesteps
        x = rng.normal(0.0, 0.5, size=(2, 1, 48, 40)).astype(np.float32)
        t = np.array([30, 700], np.int64)
        with torch.inference_mode():
            ref = ck.net(torch.from_numpy(x), timesteps=torch.from_numpy(t)).numpy()
        got = OnnxModel(onnx_path)(x, t)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
        return
    else:
        assert kind == "denoise-cnn"
        # HU / 1000 of soft tissue with noise, on a grid other than the export example's (dynamic axes)
        x = rng.normal(0.04, 0.1, size=(2, 1, 72, 56)).astype(np.float32)
        with torch.inference_mode():
            ref = ck.net(torch.from_numpy(x)).numpy()
    got = OnnxModel(onnx_path)(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_denoise_cnn_and_diffusion_onnx_equal_torch(tmp_path):
    torch.manual_seed(0)
    x = np.random.default_rng(1).normal(size=(2, 1, 48, 40)).astype(np.float32)
    cnn = encoders.build_denoise_cnn(width=8, depth=4)
    arch = {"kind": "denoise-cnn", "width": 8, "depth": 4}
    pt = encoders.save_checkpoint(
        cnn.state_dict(), tmp_path / "cnn.pt", architecture=arch, input_spec={"modality": "CT", "units": "HU"}
    )
    got = OnnxModel(export_checkpoint(pt))(x)
    with torch.inference_mode():
        np.testing.assert_allclose(got, cnn.eval()(torch.from_numpy(x)).numpy(), atol=1e-4)
    net = encoders.build_diffusion_unet(channels=(16, 16), num_res_blocks=1)
    arch = {"kind": "diffusion-unet", "channels": [16, 16], "num_res_blocks": 1}
    pt = encoders.save_checkpoint(
        net.state_dict(), tmp_path / "ddpm.pt", architecture=arch, input_spec={"modality": "CT", "units": "HU"}
    )
    t = np.array([10, 500], np.int64)
    got = OnnxModel(export_checkpoint(pt))(x[:, :, :32, :32], t)
    with torch.inference_mode():
        ref = net.eval()(torch.from_numpy(x[:, :, :32, :32]), timesteps=torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(InputError, match="takes 2 inputs"):
        OnnxModel(tmp_path / "ddpm.onnx")(x)
