"""Grad-CAM for the shipped U-Net and a patch classifier trained here on real STS PET patches.

Sanity check (Adebayo et al., NeurIPS 2018): after cascading re-initialisation of the weights, top layer
first, the map must change. The bound: Spearman rank correlation with the trained model's map below 0.5,
i.e. the two maps share less than a quarter of their rank variance; a map that stays above it while the
network is destroyed is driven by the input, not by what the model learned. As a control, recomputing
the map of the unchanged model must give a rank correlation of 1.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("monai")

RHO_MAX = 0.5


@pytest.fixture(scope="module")
def sts_pet(sts_dir):
    import medlens

    cases = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(1, 17):
            d = sts_dir / f"STS_{i:03d}" / "PET"
            pet = medlens.read_image(d / "image")
            cases.append((f"STS_{i:03d}", pet, medlens.read_mask(d / "rtstruct", reference=pet, roi="GTV_Mass_PET")))
    return cases


def test_unet_gradcam_nifti_and_randomisation(sts_pet, tmp_path) -> None:
    import medlens
    from medlens.learn.explain import gradcam_unet, overlay_png, randomisation_check, spearman
    from medlens.segment.unet import DEFAULT_MODEL_DIR, load_model

    _, pet, mask = sts_pet[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cam = gradcam_unet(pet)
    assert cam.same_grid(pet) and cam.dtype == np.float32
    a = np.asarray(cam.array)
    assert a.max() == pytest.approx(1.0) and a.min() >= 0.0
    m = np.asarray(mask.array)
    # the map's mass lies more inside the expert's lesion than a uniform map's would
    assert a[m].sum() / a.sum() > m.mean()
    # NIfTI on the input's grid
    p = medlens.write_image(cam, tmp_path / "cam.nii.gz")
    back = medlens.read_image(p)
    assert back.same_grid(pet, atol_mm=1e-3) and np.allclose(back.array, a, atol=1e-6)
    z = int(np.argmax(m.sum(axis=(1, 2))))
    png = overlay_png(pet.array[z], a[z], tmp_path / "cam.png", mask2d=m[z], spacing_mm=pet.spacing[1:])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    net, _ = load_model(DEFAULT_MODEL_DIR)

    def explain(n):
        return gradcam_unet(pet, net=n).array

    assert spearman(a, explain(net)) == pytest.approx(1.0, abs=1e-6)  # control: same model, same map
    steps = randomisation_check(net, explain, steps=4, seed=0)
    assert all(s.spearman < RHO_MAX for s in steps), steps
    # the trained model was not touched
    assert spearman(a, explain(net)) == pytest.approx(1.0, abs=1e-6)
    pp = gradcam_unet(pet, net=net, method="gradcampp").array
    assert pp.shape == a.shape and pp.max() == pytest.approx(1.0)


@pytest.mark.slow
def test_patch_classifier_gradcam_and_randomisation(sts_pet) -> None:
    from medlens.learn.explain import (
        classifier_accuracy,
        gradcam_patches,
        lesion_patches,
        randomisation_check,
        spearman,
        train_patch_classifier,
    )

    train = lesion_patches(sts_pet[:12], seed=0)
    test = lesion_patches(sts_pet[12:], seed=1)
    assert set(train.patient) & set(test.patient) == set()
    net = train_patch_classifier(train, epochs=20, seed=0)
    # held-out patients: better than the majority class (background is 4 of 7 patches)
    majority = max(test.labels.mean(), 1 - test.labels.mean())
    acc = classifier_accuracy(net, test)
    assert acc > majority, (acc, majority)
    pos = test.patches[test.labels == 1]
    pmask = test.masks[test.labels == 1]
    cams = gradcam_patches(net, pos)
    assert cams.shape == pos.shape
    inside = np.array([c[m].sum() / c.sum() for c, m in zip(cams, pmask, strict=True)])
    assert np.mean(inside / pmask.mean(axis=(1, 2))) > 1.0
    assert spearman(cams, gradcam_patches(net, pos)) == pytest.approx(1.0, abs=1e-6)
    steps = randomisation_check(net, lambda n: gradcam_patches(n, pos), seed=0)
    assert [s.layers_randomised for s in steps] == list(range(1, 8))
    assert steps[0].layer == "fc" and steps[-1].layer == "features.conv1.0"
    assert all(s.spearman < RHO_MAX for s in steps), steps
