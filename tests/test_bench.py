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
