"""Recipes (YAML, validation, masks across resampling) and the preprocess/register commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medlens.core.errors import InputError
from medlens.core.image import Image, Units

REPO = Path(__file__).resolve().parents[1]


def _ct() -> Image:
    rng = np.random.default_rng(0)
    _, y, x = np.indices((10, 32, 32))
    arr = np.where((y - 16) ** 2 + (x - 16) ** 2 < 100, 50.0, -800.0) + rng.normal(0, 15, (10, 32, 32))
    return Image.from_array(arr.astype(np.float32), spacing=(3.0, 1.0, 1.0), modality="CT", units=Units.HU)


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "recipes").glob("*.yaml")))
def test_preprocess_example_recipes_load_and_round_trip(path: Path) -> None:
    from medlens.preprocess import Recipe

    r = Recipe.from_yaml(path)
    assert r.name == path.stem and r.steps
    assert Recipe.from_dict(r.to_dict()) == r


def test_preprocess_recipe_applies_in_order_and_carries_mask(tmp_path: Path) -> None:
    from medlens.preprocess import Recipe, window

    ct = _ct()
    mask = ct.with_array(ct.array > 0)
    yml = tmp_path / "r.yaml"
    yml.write_text(
        "name: t\nsteps:\n  - resample: {spacing_mm: 2.0}\n  - percentile_clip: {percentiles: [1, 99]}\n  - zscore\n"
    )
    r = Recipe.from_yaml(yml)
    out = r.apply(ct, mask=mask)
    assert out.spacing == pytest.approx((2.0, 2.0, 2.0)) and out.meta.units == Units.NORMALISED
    assert [h.split("(")[0] for h in out.meta.history] == ["resample", "percentile_clip", "zscore"]
    # z-score used the mask carried to the new grid: inside it, mean 0 and std 1
    from medlens.preprocess import resample_to_reference

    m2 = resample_to_reference(mask, out).array
    assert out.array[m2].mean() == pytest.approx(0.0, abs=1e-3) and out.array[m2].std() == pytest.approx(1.0, abs=1e-3)
    # same as calling the functions by hand
    r2 = Recipe.from_dict({"steps": [{"window": {"preset": "lung"}}]})
    np.testing.assert_array_equal(r2.apply(ct).array, window(ct, preset="lung").array)


def test_preprocess_recipe_errors_name_what_is_allowed(tmp_path: Path) -> None:
    from medlens.preprocess import Recipe

    with pytest.raises(InputError, match=r"unknown preprocessing step 'sharpen'; allowed steps: .*clahe_2d"):
        Recipe.from_dict({"steps": ["sharpen"]})
    with pytest.raises(
        InputError,
        match=r"step 1: step 'gaussian_filter': unknown parameter\(s\) \['sigma'\]; allowed: "
        r"sigma_mm, truncate",
    ):
        Recipe.from_dict({"steps": [{"gaussian_filter": {"sigma": 1.0}}]})
    with pytest.raises(InputError, match=r"missing required parameter\(s\) \['sigma_mm'\]"):
        Recipe.from_dict({"steps": ["gaussian_filter"]})
    with pytest.raises(InputError, match="unknown top-level key"):
        Recipe.from_dict({"steps": ["zscore"], "stpes": []})
    with pytest.raises(InputError, match="non-empty list"):
        Recipe.from_dict({"steps": []})
    with pytest.raises(InputError, match="no such recipe file"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [zscore\n")
    from medlens.core.errors import FormatError

    with pytest.raises(FormatError, match="not valid YAML"):
        Recipe.from_yaml(bad)


def test_preprocess_cli_runs_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import medlens
    from medlens.cli import main

    src = tmp_path / "ct.nii.gz"
    medlens.write_image(_ct(), src)
    out = tmp_path / "out.nii.gz"
    code = main(["preprocess", str(src), str(out), "--recipe", str(REPO / "examples/recipes/ct-soft-tissue.yaml")])
    assert code == 0, capsys.readouterr().err
    res = medlens.read_image(out)
    from medlens.preprocess import Recipe

    # the command wrote exactly what the recipe computes through the Python API (float32 on disk)
    expected = Recipe.from_yaml(REPO / "examples/recipes/ct-soft-tissue.yaml").apply(medlens.read_image(src))
    assert res.spacing == pytest.approx((2.0, 2.0, 2.0)) and res.shape == expected.shape
    np.testing.assert_allclose(res.array, expected.array, rtol=0, atol=1e-6)
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [blur]\n")
    assert main(["preprocess", str(src), str(out), "--recipe", str(bad)]) == 2
    assert "unknown preprocessing step 'blur'" in capsys.readouterr().err


@pytest.mark.slow
def test_preprocess_cli_register_pet_to_ct(sts_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import medlens
    from medlens.cli import main

    case = sts_dir / "STS_003"
    out, tfm, png = tmp_path / "pet_on_ct.nii.gz", tmp_path / "pet_to_ct.tfm", tmp_path / "fusion.png"
    code = main(
        [
            "register",
            str(case / "CT/image"),
            str(case / "PET/image"),
            "--out",
            str(out),
            "--transform",
            str(tfm),
            "--overlay",
            str(png),
            "--iterations",
            "60",
        ]
    )
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "rigid registration (mi)" in text.out and "final metric" in text.out
    moved = medlens.read_image(out)
    ct = medlens.read_image(case / "CT/image")
    assert moved.same_grid(ct, atol_mm=1e-2) and tfm.read_text().startswith("#Insight") and png.stat().st_size > 1000
    assert main(["register", str(case / "CT/image"), str(case / "PET/image"), "--out", str(out), "--metric", "xx"]) == 2
    assert "metric must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_preprocess_cli_register_passes_the_petct_inputs(
    sts_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from medlens.cli import main

    reg = importlib.import_module("medlens.preprocess.register")  # the module (the package exports the function)
    seen: list[dict] = []
    real = reg.register

    def spy(fixed, moving, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw)
        return real(fixed, moving, **{**kw, "iterations": 5, "on_failure": "warn"})

    monkeypatch.setattr(reg, "register", spy)
    case = sts_dir / "STS_003"
    args = ["register", str(case / "CT/image"), str(case / "PET/image"), "--out", str(tmp_path / "m.nii.gz")]
    assert main([*args, "--petct", "--moving-mask", str(case / "PET/rtstruct")]) == 0, capsys.readouterr().err
    kw = seen[-1]
    assert kw["fixed_window_hu"] == (40.0, 400.0) and kw["fixed_blur_fwhm_mm"] == 7.0 and kw["moving_log1p"] is True
    assert kw["moving_mask"] is not None and kw["moving_mask"].array.any()
    # explicit options override the preset; without them the metric sees the raw images
    assert main([*args, "--petct", "--fixed-window-hu", "50", "350", "--fixed-blur-fwhm-mm", "5"]) == 0
    kw = seen[-1]
    assert kw["fixed_window_hu"] == (50.0, 350.0) and kw["fixed_blur_fwhm_mm"] == 5.0 and kw["moving_log1p"] is True
    assert main(args) == 0
    kw = seen[-1]
    assert kw["fixed_window_hu"] is None and kw["fixed_blur_fwhm_mm"] == 0.0 and kw["moving_log1p"] is False
    # a window of zero width is an input error (exit 2) naming the option
    assert main([*args, "--fixed-window-hu", "40", "0"]) == 2
    assert "window" in capsys.readouterr().err
