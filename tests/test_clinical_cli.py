"""``medlens clinical ...`` commands: output, JSON, exit codes."""

from __future__ import annotations

import json

from medlens.cli import main


def test_lungrads_command(capsys) -> None:
    assert main(["clinical", "lungrads", "--mean-diameter", "7.9", "--type", "solid", "--status", "new"]) == 0
    out = capsys.readouterr().out
    assert "category 4A" in out and "[solid.new.4A]" in out and "mean_diameter_mm=7.9" in out
    assert main(["clinical", "lungrads", "--mean-diameter", "6.0", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["category"] == "3" and doc["trail"][0]["rule"] == "solid.baseline.3"
    # part-solid without its solid component: bad input, exit code 2, message names the parameter
    assert main(["clinical", "lungrads", "--mean-diameter", "9", "--type", "part_solid"]) == 2
    assert "solid_mean_diameter_mm" in capsys.readouterr().err
    assert main(["clinical", "lungrads", "--mean-diameter", "9", "--status", "later"]) == 2


def test_measure_then_lungrads_from_json(sts_dir, tmp_path, capsys) -> None:
    d = sts_dir / "STS_003" / "CT"
    out = tmp_path / "m.json"
    assert (
        main(["clinical", "measure", str(d / "image"), str(d / "rtstruct"), "--roi", "GTV_Mass_CT", "--json", str(out)])
        == 0
    )
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"{doc['long_axis_mm']:.2f}" in printed and doc["units"] == "HU"
    assert main(["clinical", "lungrads", "--from-json", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["trail"][-1]["values"]["mean_diameter_mm"] == doc["mean_diameter_mm"]
    # growth needs both prior arguments
    assert main(["clinical", "measure", str(d / "image"), str(d / "rtstruct"), "--prior", str(d / "image")]) == 2
