"""The benchmark runs and reports its rows (figures are measured by `giacheck bench`, not asserted here)."""

from __future__ import annotations

import json

from giacheck.cli import main


def test_bench_reports_one_row_per_model_with_stacked_and_sequential_trials(capsys) -> None:
    assert main(["bench", "--models", "lenet_sigmoid", "--trials", "2", "--steps", "1", "--repeats", "1",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["models"]
    assert row["model"] == "lenet_sigmoid" and row["resolution"] == 32 and row["trials"] == 2
    for key in ("train_step_s", "attack_iter_s", "bare_iter_s", "sequential_iter_s", "batched_iter_s", "speedup",
                "attack_over_train", "giacheck_over_bare"):
        assert row[key] > 0, key
    assert row["stacked"] is True and row["fallback"] is None
    assert report["threads"] >= 1


def test_bench_names_why_a_model_runs_one_after_another(capsys, monkeypatch) -> None:
    """A model the CPU rule refuses (ConvNeXt-T at 32 px in the default set; here LeNet under a zero limit)."""
    monkeypatch.setattr("giacheck.attack.trials.CPU_STACK_ELEMENTS", 0)
    assert main(["bench", "--models", "lenet_sigmoid", "--trials", "2", "--steps", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "lenet_sigmoid: runs one after another: on a CPU, a trial's largest activation" in out


def test_bench_measures_peak_memory_in_fresh_processes(capsys) -> None:
    assert main(["bench", "--models", "lenet_sigmoid", "--trials", "2", "--steps", "1", "--repeats", "1",
                 "--memory", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["peak_sequential_mb"] > 50 and row["peak_batched_mb"] > 50  # a process with torch imported


def test_bench_rejects_an_unknown_model_before_any_compute(capsys) -> None:
    assert main(["bench", "--models", "resnet19"]) != 0
    assert "unknown model 'resnet19'" in capsys.readouterr().err


def test_kernel_bench_reports_stock_and_giacheck_per_model(capsys) -> None:
    assert main(["bench", "--kernels", "lenet_sigmoid", "--steps", "1", "--repeats", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == "lenet_sigmoid" and row["stock_iter_s"] > 0 and row["kernels_iter_s"] > 0


def test_kernel_bench_rejects_an_unknown_model_before_any_compute(capsys) -> None:
    assert main(["bench", "--kernels", "convnext_q"]) != 0
    assert "unknown model 'convnext_q'" in capsys.readouterr().err


def test_defence_bench_compares_the_two_attacks_per_chain(capsys) -> None:
    assert main(["bench", "--defences", "dpsgd1", "--steps", "1", "--repeats", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["chain"] == "dpsgd1" and row["trials"] == 2 and row["stacked"] is True
    assert row["defended_iter_s"] > 0 and row["rescaled_iter_s"] > 0


def test_defence_bench_refuses_a_chain_that_does_more_than_rescale(capsys) -> None:
    assert main(["bench", "--defences", "clip1+prune0.9"]) != 0
    assert "'clip1+prune0.9': not a chain that only rescales" in capsys.readouterr().err
