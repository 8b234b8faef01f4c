"""Tests of giacheck.cli: ``run`` prints and writes a result, errors exit 2 with the message, ``models`` lists
the registry, and the console script is declared."""

from __future__ import annotations

import importlib
import json
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from giacheck.cli import main
from giacheck.models import list_models

ROOT = Path(__file__).resolve().parents[1]
CASE = "lenet_sigmoid-32-bn_eval-bs1-stats_none"


def test_run_json_and_artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", CASE, "--iterations", "5", "--json", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert printed["case_id"] == CASE
    assert set(printed["ssim"]) >= {"mean", "max", "per_image"}
    assert printed["iterations"] == 5
    assert printed["selection"] == "objective"
    png, written = tmp_path / f"{CASE}.png", tmp_path / f"{CASE}.json"
    assert png.is_file() and written.is_file()
    stored = json.loads(written.read_text())
    assert stored["ssim"] == printed["ssim"]
    with Image.open(png) as image:
        assert image.size == (32 * 4, 2 * 32 * 4)  # one column, original above reconstruction, 4x
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([png.name, written.name])


def test_run_restarts_and_seed(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", CASE, "--iterations", "3", "--restarts", "2", "--seed", "4", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["restarts"] == 2 and printed["seed"] == 4 and printed["attack"]["restarts"] == 2


def test_run_plain_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", CASE, "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{CASE}: SSIM mean ")
    assert "2 iterations x 1 restarts" in out


def test_run_malformed_case_id_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nonsense"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("giacheck: error: ")
    assert "malformed case id" in captured.err and "'nonsense'" in captured.err


def test_run_invalid_case_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "lenet_sigmoid-30-bn_eval-bs1-stats_none", "--iterations", "1"]) == 2
    assert "multiple of 4" in capsys.readouterr().err


def test_run_missing_dataset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", CASE, "--data", "imagefolder:/nonexistent", "--iterations", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_invalid_budget_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", CASE, "--iterations", "0"]) == 2
    assert "argument --iterations: 0 is out of range; give a whole number >= 1" in capsys.readouterr().err


def test_unknown_profile_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", CASE, "--profile", "smok"]) == 2, "argparse's usage error is returned, not raised"
    assert "invalid choice: 'smok' (choose from 'paper', 'smoke')" in capsys.readouterr().err


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["name"]: row for row in rows}
    assert list(by_name) == list_models()
    resnet = by_name["resnet18_cifar"]
    assert resnet["has_batchnorm"] is True
    assert resnet["default_size"] == 32 and resnet["num_classes"] == 10
    assert "BatchNorm2d" in resnet["norm_kinds"]
    assert by_name["lenet_sigmoid"]["has_batchnorm"] is False


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in list_models():
        assert name in out


def test_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["scripts"]["giacheck"]
    assert target == "giacheck.cli:main"
    module_name, _, attr = target.partition(":")
    assert getattr(importlib.import_module(module_name), attr) is main


def test_pytest_plugin_entry_point_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"]["giacheck"] == "giacheck.plugin"
    importlib.import_module("giacheck.plugin")
