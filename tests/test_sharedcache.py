"""Cases shared between xdist workers are computed once per run: a second process waits and reuses."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from giacheck.sharedcache import SharedResults

pytest_plugins = ["pytester"]


def _slow_compute(folder: str, key: str, out: str) -> None:
    def compute():
        time.sleep(1.5)
        return {"value": 42}, 1.5

    result, wall, reused = SharedResults(Path(folder)).get_or_compute(key, compute)
    Path(out).write_text(json.dumps({"result": result, "wall": wall, "reused": reused}))


def test_two_processes_compute_a_case_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_slow_compute, args=(str(tmp_path / "shared"), "case-a", str(o))) for o in outs]
    start = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    elapsed = time.perf_counter() - start
    answers = [json.loads(o.read_text()) for o in outs]
    assert sorted(a["reused"] for a in answers) == [False, True]  # one computed, the other waited and reused
    assert all(a["result"] == {"value": 42} and a["wall"] == 1.5 for a in answers)
    assert elapsed < 2 * 1.5 + 20  # not a timing claim: only that nobody computed twice in a row and hung


def test_an_unreadable_file_is_recomputed_and_replaced(tmp_path: Path) -> None:
    shared = SharedResults(tmp_path)
    shared.get_or_compute("k", lambda: ("first", 1.0))
    (stored,) = tmp_path.glob("*.pt")
    stored.write_bytes(b"not a torch file")
    assert shared.get_or_compute("k", lambda: ("second", 2.0)) == ("second", 2.0, False)
    assert shared.get_or_compute("k", lambda: ("third", 3.0)) == ("second", 2.0, True)


def test_a_failed_computation_leaves_nothing_behind(tmp_path: Path) -> None:
    shared = SharedResults(tmp_path)

    def boom():
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        shared.get_or_compute("k", boom)
    assert shared.get_or_compute("k", lambda: ("ok", 1.0)) == ("ok", 1.0, False)


SHARED_PACK = '''
import os

import torch
from torch import nn

from giacheck.models import ModelEntry
from giacheck.specs import AttackSpec, RunOptions


def _factory(resolution, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * resolution * resolution, num_classes), nn.Sigmoid())


def entry():
    return ModelEntry(name="tiny", upstream="test", factory=_factory, default_size=16, num_classes=4)


CASE = "test_pack:entry-16-bn_eval-bs1-stats_none"


def test_same_case_on_every_worker(gia, request):
    folder = request.config.workerinput["giacheck_shared_results"]
    with open(f"shared-{request.config.workerinput['workerid']}.txt", "w") as fh:
        fh.write(f"{folder} {os.stat(folder).st_mode & 0o777:o}")
    # one trial (one private image, one seed): with two, each worker may compute one and reuse the other's
    gia.regression(CASE, options=RunOptions(image="rocket", budget=AttackSpec(iterations=3)))
'''


def test_xdist_workers_share_a_case(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--dist each`` runs the test on both workers: one computes the case, the other reuses it, through one
    private folder outside the project that is gone after the run."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makepyfile(test_pack=SHARED_PACK)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "each", "--giacheck-update-all")
    result.assert_outcomes(passed=2)
    journal = (pytester.path / "giacheck-artifacts" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["origin"] for line in journal) == ["another worker", "computed"]
    (first, mode), (second, _) = (p.read_text().split() for p in sorted(pytester.path.glob("shared-gw*.txt")))
    assert first == second and mode == "700"  # one private folder for the run, in the temp folder
    assert not Path(first).exists() and not Path(first).is_relative_to(pytester.path)  # removed at the end
    assert not (pytester.path / "giacheck-artifacts" / ".shared").exists()
