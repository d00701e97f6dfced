"""One table of exit codes for every command that takes inputs and writes outputs.

The same mistake gives the same documented code in every command, and it is found before any
reading or computing: the functions that read or compute are replaced by a sentinel that records
the call, so each bad case asserts both the code and that nothing was computed; a good case per
command shows the sentinel is reached (so the check could fail).

Codes (``medlens.cli._common``): missing IN 2, OUT in a place that cannot be written 2, OUT whose
name names no format the command writes (``.xyz``) 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import medlens
from medlens.cli import main
from medlens.cli._common import BAD_OUTPUT_SUFFIX_EXIT, MISSING_INPUT_EXIT, UNWRITABLE_OUTPUT_EXIT

Args = Callable[[dict[str, Path], Path], list[str]]

# command -> (argument builder from the fixture files and OUT, a good OUT name)
FILE_OUTPUT: dict[str, tuple[Args, str]] = {
    "convert": (lambda f, out: ["convert", str(f["image"]), str(out)], "ct.nii.gz"),
    "preprocess": (lambda f, out: ["preprocess", str(f["image"]), str(out), "--recipe", str(f["recipe"])], "p.nrrd"),
    "register": (lambda f, out: ["register", str(f["image"]), str(f["image"]), "--out", str(out)], "moved.mha"),
    "mask": (lambda f, out: ["mask", str(f["image"]), str(f["mask"]), "--out", str(out)], "m.nii.gz"),
    "segment": (lambda f, out: ["segment", str(f["image"]), "--out", str(out)], "seg.nii.gz"),
    "features": (lambda f, out: ["features", str(f["image"]), str(f["mask"]), "--out", str(out)], "f.csv"),
    "features-batch": (lambda f, out: ["features-batch", str(f["cases"]), "--out", str(out)], "t.csv"),
}

# command -> argument builder for commands whose output is a folder (or a database file)
FOLDER_OUTPUT: dict[str, Args] = {
    "deid": lambda f, out: ["deid", str(f["folder"]), str(out)],
    "export-bids": lambda f, out: ["export-bids", str(f["catalog"]), str(out)],
    "catalog scan": lambda f, out: ["catalog", "scan", str(f["folder"]), "--db", str(out / "cat.duckdb")],
}

# which fixture file is the command's first input (replaced by a missing path)
FIRST_INPUT = {"features-batch": "cases", "deid": "folder", "export-bids": "catalog", "catalog scan": "folder"}


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    arr = np.zeros((4, 8, 8), np.int16)
    arr[1:3, 2:6, 2:6] = 100
    img = medlens.Image.from_array(arr, spacing=(2.0, 1.0, 1.0), modality="CT", units="HU")
    f = {"image": tmp_path / "ct.nii.gz", "mask": tmp_path / "mask.nii.gz", "recipe": tmp_path / "r.yaml"}
    medlens.write_image(img, f["image"])
    medlens.write_image(img.with_array((arr > 0).astype(np.uint8)), f["mask"])
    f["recipe"].write_text("name: r\nsteps:\n  - resample: {spacing_mm: [2.0, 2.0, 2.0]}\n")
    f["cases"] = tmp_path / "cases.csv"
    f["cases"].write_text("image,mask\nct.nii.gz,mask.nii.gz\n")
    f["folder"] = tmp_path / "dicom_in"
    f["folder"].mkdir()
    f["catalog"] = tmp_path / "cat.duckdb"
    f["catalog"].write_bytes(b"")
    f["a_file"] = tmp_path / "not_a_folder.txt"
    f["a_file"].write_text("x")
    return f


@pytest.fixture()
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace every reader / compute entry point the commands call by a recorder that fails."""
    import medlens.catalog
    import medlens.catalog.bids
    import medlens.io.api
    import medlens.io.deid

    calls: list[str] = []

    def sentinel(name: str) -> Callable[..., None]:
        def f(*args: object, **kwargs: object) -> None:
            calls.append(name)
            raise RuntimeError(f"{name} was called")

        return f

    for mod, attr in (
        (medlens.io.api, "read_image"),
        (medlens.io.api, "read_mask"),
        (medlens, "read_image"),
        (medlens, "read_mask"),
        (medlens.io.deid, "deidentify"),
        (medlens.catalog.bids, "export_bids"),
        (medlens.catalog, "scan"),
    ):
        monkeypatch.setattr(mod, attr, sentinel(f"{mod.__name__}.{attr}"))
    return calls


@pytest.mark.parametrize("command", sorted(FILE_OUTPUT))
def test_bad_output_suffix_same_code_before_compute(command: str, files, computed, tmp_path: Path, capsys) -> None:
    args, _ = FILE_OUTPUT[command]
    code = main(args(files, tmp_path / "out.xyz"))
    err = capsys.readouterr().err
    assert code == BAD_OUTPUT_SUFFIX_EXIT == 3, err
    assert "out.xyz: cannot tell the output format from the name" in err
    assert computed == []


@pytest.mark.parametrize("command", sorted(FILE_OUTPUT) + sorted(FOLDER_OUTPUT))
def test_missing_input_same_code_before_compute(command: str, files, computed, tmp_path: Path, capsys) -> None:
    key = FIRST_INPUT.get(command, "image")
    files = {**files, key: tmp_path / "missing" / files[key].name}
    if command in FILE_OUTPUT:
        args, good = FILE_OUTPUT[command]
        argv = args(files, tmp_path / good)
    else:
        argv = FOLDER_OUTPUT[command](files, tmp_path / "out_dir")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == MISSING_INPUT_EXIT == 2, err
    assert f"{files[key]}: no such file or folder" in err
    assert computed == []


@pytest.mark.parametrize("command", sorted(FILE_OUTPUT) + sorted(FOLDER_OUTPUT))
def test_unwritable_output_same_code_before_compute(command: str, files, computed, capsys) -> None:
    below_a_file = files["a_file"] / "sub"  # a folder cannot be created inside a regular file (even as root)
    if command in FILE_OUTPUT:
        args, good = FILE_OUTPUT[command]
        argv = args(files, below_a_file / good)
    else:
        argv = FOLDER_OUTPUT[command](files, below_a_file)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == UNWRITABLE_OUTPUT_EXIT == 2, err
    assert f"cannot be written: {files['a_file']} is a file, not a folder" in err
    assert computed == []


@pytest.mark.parametrize("command", sorted(FILE_OUTPUT) + sorted(FOLDER_OUTPUT))
def test_good_arguments_reach_the_computation(command: str, files, computed, tmp_path: Path) -> None:
    # the control: with valid IN/OUT the (replaced) computation runs, so the checks above could fail
    if command in FILE_OUTPUT:
        args, good = FILE_OUTPUT[command]
        argv = args(files, tmp_path / "new_folder" / good)
    else:
        argv = FOLDER_OUTPUT[command](files, tmp_path / "new_out")
    assert main(argv) == 1  # the sentinel's RuntimeError: an unexpected error
    assert computed


def test_other_commands_missing_input(files, computed, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.nii.gz")
    assert main(["info", missing]) == MISSING_INPUT_EXIT
    assert main(["evaluate-seg", missing, str(files["mask"])]) == MISSING_INPUT_EXIT
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl")]) == MISSING_INPUT_EXIT
    assert computed == []


def test_output_that_is_a_folder_or_a_file(files, computed, tmp_path: Path, capsys) -> None:
    (tmp_path / "out.nii.gz").mkdir()
    assert main(["convert", str(files["image"]), str(tmp_path / "out.nii.gz")]) == 2
    assert "is a folder; an output file name is needed" in capsys.readouterr().err
    assert main(["deid", str(files["folder"]), str(files["a_file"])]) == 2
    assert "is a file; an output folder is needed" in capsys.readouterr().err
    assert computed == []
