"""Sharding across machines with pytest-split, end to end with pytester: one run records the baselines and a
durations file (``--store-durations --durations-path``), ``--splits 2 --group 1|2`` then select disjoint shards
whose union is every test, each shard runs into its own artifacts folder against the one shared baselines folder
(one serially, one with ``-n 2`` inside the shard, refreshing its durations under xdist) and passes, and
``giacheck report`` merges the shards' ``results.json`` into one report that lists every case of both."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from giacheck.cli import main
from giacheck.report import load_results

pytest_plugins = ["pytester"]

# lenet_sigmoid has no BatchNorm: eval mode and no statistics are its only threat model. Two suite modules, as
# suites/ has one per table/figure; no case appears in both (a case is cached per process, not per suite).
SUITES = {
    "test_shard_table": [f"lenet_sigmoid-32-bn_eval-bs{bs}-stats_none" for bs in (1, 2)],
    "test_shard_ladder": [f"lenet_sigmoid-32-bn_eval-bs{bs}-stats_none-init_p0.5" for bs in (1, 2)],
}
SUITE = '''
import pytest

from giacheck.specs import AttackSpec, RunOptions


@pytest.mark.parametrize("case", {cases!r})
def test_regression(gia, case):
    gia.regression(case, options=RunOptions(budget=AttackSpec(iterations=5)))
'''
ALL = {(suite, case) for suite, cases in SUITES.items() for case in cases}


@pytest.fixture
def suites(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(**{name: SUITE.format(cases=cases) for name, cases in SUITES.items()})
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return pytester


def _rows(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """The cases a run wrote into its ``--giacheck-artifacts`` folder, by (suite, case id)."""
    cases = json.loads((folder / "results.json").read_text())["cases"]
    rows = {(row["suite"], row["case_id"]): row for row in cases}
    assert len(rows) == len(cases)
    return rows


def _baselines(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "baselines").rglob("*.json"))}


def test_shards_split_run_and_merge(suites: pytest.Pytester) -> None:
    root = suites.path
    durations = root / "durations.json"

    # record the baselines and the durations in one serial run. The first test also carries the process's warm-up
    # (torch import, first model build), so duration_based_chunks usually splits 1 | 3 and both of shard 2's
    # workers get work; the assertions below hold for any split that leaves no shard empty.
    result = suites.runpytest_subprocess("--store-durations", "--durations-path", str(durations),
                                         "--giacheck-update-all", "--giacheck-artifacts", "full")
    result.assert_outcomes(passed=len(ALL))
    result.stdout.fnmatch_lines([f"*[[]pytest-split[]] Stored test durations in {durations}*"])
    full = _rows(root / "full")
    assert set(full) == ALL
    stored = json.loads(durations.read_text())
    assert set(stored) == {row["nodeid"] for row in full.values()}
    assert all(seconds > 0 for seconds in stored.values())
    recorded = _baselines(root)
    assert set(recorded) == {f"baselines/smoke/{suite}/{case}.json" for suite, case in ALL}

    # one shard per machine: same checkout (durations file and baselines), its own artifacts folder
    shards: dict[int, dict[tuple[str, str], dict[str, Any]]] = {}
    # shard 2 runs under xdist and refreshes its tests' durations: the controller merges every worker's reports
    for group, extra in ((1, ()), (2, ("-n", "2", "--store-durations"))):
        result = suites.runpytest_subprocess("--splits", "2", "--group", str(group), "--durations-path",
                                             str(durations), "--giacheck-artifacts", f"shard{group}", *extra)
        rows = shards[group] = _rows(root / f"shard{group}")
        assert rows, f"shard {group} selected no test"
        result.assert_outcomes(passed=len(rows))
        assert "No test durations found" not in result.stdout.str()
        if not extra:  # xdist workers do the selection and their lines do not reach the controller's output
            result.stdout.fnmatch_lines(["*Splitting tests with algorithm: duration_based_chunks*"])
            estimate = re.search(rf"Running group {group}/2 \(estimated duration: ([\d.]+)s\)", result.stdout.str())
            assert estimate, result.stdout.str()
            selected = sum(stored[row["nodeid"]] for row in rows.values())
            assert float(estimate[1]) == pytest.approx(selected, abs=0.006)  # the split read the stored file
        else:
            result.stdout.fnmatch_lines(["*created: 2/2 workers*", "*[[]pytest-split[]] Stored test durations*"])
            refreshed = json.loads(durations.read_text())
            assert set(refreshed) == set(stored)  # merged: the other shard's entries are kept as they were
            shard_ids = {row["nodeid"] for row in rows.values()}
            assert all(refreshed[n] == stored[n] for n in set(stored) - shard_ids)
            assert all(refreshed[n] != stored[n] for n in shard_ids)  # both workers' tests, not just the last one's
        for key, row in rows.items():
            assert row["outcome"] == "passed"
            assert row["baseline"]["status"] == "pass", row["baseline"]
            assert Path(row["baseline"]["path"]) == Path("baselines", "smoke", key[0], f"{key[1]}.json")
            # same seed and thread count in another process (and under xdist): the recorded number is reproduced
            assert row["result"]["ssim"]["mean"] == pytest.approx(full[key]["result"]["ssim"]["mean"], abs=1e-6)
            assert (root / f"shard{group}" / "smoke" / key[0] / f"{key[1]}.png").is_file()
    assert not set(shards[1]) & set(shards[2])
    assert set(shards[1]) | set(shards[2]) == ALL
    assert _baselines(root) == recorded  # shards read the shared baselines and never write them

    # merge the shards into one report
    out = root / "report"
    assert main(["report", str(root / "shard1" / "results.json"), str(root / "shard2" / "results.json"),
                 "--out", str(out)]) == 0
    assert {"report.html", "report.md", "ladder-lenet_sigmoid.png"} <= {p.name for p in out.iterdir()}
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert f"{len(ALL)} cases" in md
    for group, rows in shards.items():
        for suite, case in rows:
            assert f"| {suite} | `{case}` |" in md
            assert f"(<../shard{group}/smoke/{suite}/{case}.png>)" in md  # each image from the shard that ran it
            assert case in page
    assert all(row.image is not None for row in load_results([root / "shard1", root / "shard2"]))
    assert page.count("data:image/png;base64,") >= len(ALL) + 1  # every case's grid image and the ladder plot
    assert "src=\"http" not in page and "href=\"http" not in page  # self-contained
