"""The benchmark runs and reports its three ratios (figures are measured by `giacheck bench`, not asserted here)."""

from __future__ import annotations

import json

from giacheck.cli import main


def test_bench_reports_the_three_ratios(capsys) -> None:
    assert main(["bench", "--steps", "1", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("attack_over_train", "giacheck_over_bare", "batched_speedup"):
        assert report[key] > 0
    assert report["model"] == "resnet18_cifar"


def test_kernel_bench_reports_stock_and_giacheck_per_model(capsys) -> None:
    assert main(["bench", "--kernels", "lenet_sigmoid", "--steps", "1", "--repeats", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "lenet_sigmoid" and row["stock_iter_s"] > 0 and row["kernels_iter_s"] > 0


def test_kernel_bench_rejects_an_unknown_model_before_any_compute(capsys) -> None:
    assert main(["bench", "--kernels", "convnext_q"]) != 0
    assert "unknown model 'convnext_q'" in capsys.readouterr().err
