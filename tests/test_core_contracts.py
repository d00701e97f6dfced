"""Core contracts: Image owns a read-only copy, units fit the dtype, one require(), one config-file rule,
one off-grid-mask rule, U-Net cases built from Images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medlens import FormatError, GeometryError, Image, InputError, Units
from medlens.core.errors import MissingDependencyError, require
from medlens.core.image import UNIT_DTYPE_KINDS

_DTYPES = [np.bool_, np.uint8, np.int16, np.int32, np.uint16, np.float32, np.float64]
_SMALL = hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=5)


# ---- Image owns a read-only copy ------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_DTYPES).flatmap(lambda dt: hnp.arrays(dt, _SMALL)), st.booleans())
def test_mutating_the_callers_array_never_changes_the_image(arr, through_view):
    before = arr.copy()
    given_arr = arr[...] if through_view else arr  # a writeable view is no safer than the array
    img = Image(given_arr, np.eye(4))
    assert not img.array.flags.writeable
    assert not np.shares_memory(img.array, arr)
    arr[...] = np.ones_like(arr) if arr.dtype != np.bool_ else ~arr
    np.testing.assert_array_equal(img.array, before)
    with pytest.raises(ValueError):
        img.array[(0,) * img.ndim] = 1


def test_read_only_array_is_kept_without_a_copy_but_a_read_only_view_of_a_writeable_one_is_copied():
    owned = np.arange(24, dtype=np.int16).reshape(2, 3, 4).copy()  # owns its data (a reshape is a view)
    owned.flags.writeable = False
    img = Image(owned, np.eye(4))
    assert img.array is owned  # nothing can write to it: shared, documented
    again = img.with_meta(units=Units.HU)
    assert again.array is img.array  # derivations share the pixels
    base = np.zeros((2, 3, 4))
    view = base.view()
    view.flags.writeable = False  # read-only, but its base is not
    img2 = Image(view, np.eye(4))
    base[0, 0, 0] = 5.0
    assert img2.array[0, 0, 0] == 0.0 and not np.shares_memory(img2.array, base)


def test_readers_hand_their_pixels_over_without_a_second_copy(ct_phantom_dir):
    from medlens.io import read_image

    img = read_image(ct_phantom_dir / "dicom" / "image")
    assert img.array.flags.owndata or not img.array.base.flags.writeable  # the reader's own buffer
    assert not img.array.flags.writeable


# ---- units against dtype --------------------------------------------------------------------
_UNITS = [Units.MASK, Units.LABEL, Units.HU, Units.SUVBW, Units.BQML, Units.NORMALISED, Units.ARBITRARY, Units.UNKNOWN]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(_UNITS), st.sampled_from(_DTYPES))
def test_units_dtype_table(units, dtype):
    arr = np.zeros((2, 2), dtype=dtype)
    allowed = UNIT_DTYPE_KINDS.get(units, "biuf")
    if np.dtype(dtype).kind in allowed:
        assert Image.from_array(arr, units=units).meta.units == units
    else:
        with pytest.raises(InputError, match=f"units {units!r} need a .* array, got dtype {np.dtype(dtype)}"):
            Image.from_array(arr, units=units)


def test_units_table_worked_cases():
    for units, dtype in [(Units.MASK, np.uint8), (Units.LABEL, np.float32), (Units.LABEL, np.bool_),
                         (Units.HU, np.bool_), (Units.SUVBW, np.bool_), (Units.NORMALISED, np.int16)]:  # fmt: skip
        with pytest.raises(InputError):
            Image.from_array(np.zeros((2, 2), dtype), units=units)
    for units, dtype in [(Units.MASK, np.bool_), (Units.LABEL, np.uint8), (Units.HU, np.int16),
                         (Units.HU, np.float32), (Units.SUVBW, np.float32), (Units.UNKNOWN, np.bool_),
                         (Units.ARBITRARY, np.uint16)]:  # fmt: skip
        Image.from_array(np.zeros((2, 2), dtype), units=units)


def test_with_array_derives_units_by_one_rule():
    ct = Image.from_array(np.arange(8, dtype=np.int16).reshape(2, 2, 2), units=Units.HU)
    mask = ct.with_array(ct.array > 3)
    assert mask.meta.units == Units.MASK
    assert mask.with_array(mask.array.astype(np.uint8)).meta.units == Units.LABEL
    assert ct.with_array(ct.array.astype(np.float32)).meta.units == Units.HU  # still fits: kept
    label = mask.with_array(mask.array.astype(np.uint8))
    assert label.with_array(label.array * 0.5).meta.units == Units.UNKNOWN
    with pytest.raises(InputError, match="units 'HU' need"):
        ct.with_array(ct.array > 3, units=Units.HU)  # an explicit mismatch is refused


# ---- require ---------------------------------------------------------------------------------
def test_require_names_the_install_command():
    with pytest.raises(
        MissingDependencyError, match=r"'medlens_no_such_pkg' is needed for testing .*medlens\[dl\]"
    ) as e:
        require("medlens_no_such_pkg.sub", extra="dl", purpose="testing")
    assert e.value.exit_code == 5 and isinstance(e.value, ImportError)
    with pytest.raises(MissingDependencyError, match="pip install pynrrd"):
        require("nrrd_missing_here", package="pynrrd")
    assert require("json").dumps([1]) == "[1]"


_NO_MODULE = """
import sys
sys.modules[{mod!r}] = None  # 'import {mod}' now raises ImportError, as without the package
from medlens.cli import main
sys.exit(main({argv!r}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("mod", "extra_args"), [("torch", []), ("onnxruntime", ["--backend", "onnx"])])
def test_segment_unet_without_the_package_exits_5(tmp_path, mod, extra_args):
    from medlens.io import write_image

    img = Image.from_array(np.zeros((4, 16, 16), np.float32), spacing=(2, 1, 1), modality="PT", units=Units.SUVBW)
    write_image(img, tmp_path / "pet.nii.gz")
    argv = ["segment", str(tmp_path / "pet.nii.gz"), "--out", str(tmp_path / "m.nii.gz"), "--method", "unet"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    r = subprocess.run(
        [sys.executable, "-c", _NO_MODULE.format(mod=mod, argv=argv + extra_args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 5, r.stderr
    assert f"the optional package '{mod}' is needed" in r.stderr and "pip install 'medlens[dl]'" in r.stderr
    assert not (tmp_path / "m.nii.gz").exists()


# ---- one rule for config files ----------------------------------------------------------------
def _loaders():
    from medlens.pipeline.config import load_config
    from medlens.preprocess.recipe import Recipe
    from medlens.radiomics.settings import load_preset, load_settings

    return {
        "recipe": Recipe.from_yaml,
        "settings": load_settings,
        "preset": load_preset,
        "run config": load_config,
    }


_BAD_KEY = {
    "recipe": "steps: [zscore]\nstpes: []\n",
    "settings": "no_such_section: 1\n",
    "preset": "no_such_section: 1\n",
    "run config": "name: x\nno_such_key: 1\n",
}


@pytest.mark.parametrize("loader", ["recipe", "settings", "preset", "run config"])
@pytest.mark.parametrize(
    ("case", "content", "error"),
    [
        ("missing", None, InputError),
        ("not yaml", b"steps: [zscore\n", FormatError),
        ("not utf-8", b"name: \xff\xfe\n", FormatError),
        ("not a mapping", b"- zscore\n- gaussian\n", FormatError),
        ("bad key", "bad key", InputError),
    ],
)
def test_one_rule_for_config_files(tmp_path, loader, case, content, error):
    p = tmp_path / "c.yaml"
    if content == "bad key":
        p.write_text(_BAD_KEY[loader])
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(error) as info:
        _loaders()[loader](p)
    assert "c.yaml" in str(info.value)  # the message names the file
    assert type(info.value).exit_code == {InputError: 2, FormatError: 3}[error]


# ---- one rule for off-grid masks --------------------------------------------------------------
def _grid_pair():
    img = Image.from_array(np.random.default_rng(0).normal(size=(6, 8, 8)), spacing=(2.0, 1.0, 1.0), units=Units.HU)
    off = Image.from_array(np.ones((6, 8, 8), bool), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 3.0))
    return img, off


_OFF_GRID = r"the .* is on a different grid from the image .*origin \(0, 0, 0\) vs \(0, 0, 3\) mm"


def test_off_grid_mask_is_one_geometry_error_everywhere(tmp_path):
    from medlens.io import read_mask, write_image
    from medlens.preprocess.recipe import Recipe
    from medlens.radiomics import extract
    from medlens.segment.metrics import dice

    img, off = _grid_pair()
    on = img.with_array(np.ones(img.shape, bool))
    write_image(off.with_array(off.array.astype(np.uint8)), tmp_path / "lab.nii.gz")
    calls = {
        "radiomics": lambda: extract(img, off),
        "metrics": lambda: dice(off, on),
        "read_mask": lambda: read_mask(tmp_path / "lab.nii.gz", reference=img),
        "recipe": lambda: Recipe.from_dict({"steps": ["zscore"]}).apply(img, off),
    }
    for name, call in calls.items():
        with pytest.raises(GeometryError, match=_OFF_GRID) as info:
            call()
        assert info.value.exit_code == 4, name
    with pytest.raises(GeometryError, match=r"lab\.nii\.gz: the label image is on a different grid"):
        read_mask(tmp_path / "lab.nii.gz", reference=img)


# ---- U-Net cases from Images ------------------------------------------------------------------
def test_unet_case_is_built_from_images(sts_dir):
    from medlens.io import read_image, read_mask
    from medlens.segment.unet import load_case, make_case

    pet_dir, rs_dir = sts_dir / "STS_001" / "PET" / "image", sts_dir / "STS_001" / "PET" / "rtstruct"
    pet = read_image(pet_dir)
    mask = read_mask(rs_dir, reference=pet, roi="GTV_Mass_PET")
    case = make_case(pet, mask)
    assert case.patient_id == pet.meta.patient_id and case.image is pet and case.mask is mask
    via_paths = load_case(pet_dir, rs_dir)  # the thin wrapper reads through medlens.io, then make_case
    np.testing.assert_array_equal(via_paths.mask.array, mask.array)
    np.testing.assert_array_equal(via_paths.image.array, pet.array)
    with pytest.raises(InputError, match="the U-Net needs SUVbw"):
        make_case(pet.with_meta(units=Units.BQML), mask)
    with pytest.raises(GeometryError, match="different grid"):
        make_case(pet, Image(mask.array[:-1], mask.affine, mask.meta))  # one slice short
    with pytest.raises(InputError, match="needs two medlens Images"):
        make_case(str(pet_dir), mask)  # type: ignore[arg-type]
