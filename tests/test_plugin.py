"""The plugin end to end with pytester: record → pass → leak more → fail → update → pass; corrupt baselines;
a crashed worker; GPU pinning under xdist with a fake device list (no GPU needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

VENDOR_NET = '''
"""A vendor's small CNN. FROZEN_BN=1 freezes BatchNorm: the client effectively runs eval-mode BN."""
import os

from torch import nn

from giacheck.examples import FrozenBatchNorm2d
from giacheck.models import ModelEntry


def _factory(resolution, num_classes):
    bn = FrozenBatchNorm2d if os.environ.get("FROZEN_BN") == "1" else nn.BatchNorm2d
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), bn(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), bn(16),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * resolution * resolution, num_classes))


def entry():
    return ModelEntry(name="vendor_net", upstream="vendor", factory=_factory, default_size=16, num_classes=10,
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True)
'''

PACK = '''
from giacheck.specs import AttackSpec

CASE = "vendor_net:entry-16-bn_train-bs1-stats_none"


def test_vendor_pack(gia):
    gia.regression(CASE, attack=AttackSpec(iterations=30))
'''

CASE = "vendor_net:entry-16-bn_train-bs1-stats_none"


@pytest.fixture
def pack(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(vendor_net=VENDOR_NET, test_pack=PACK)
    pytester.makeini("[pytest]\ngiacheck_tolerance = 0.02\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("FROZEN_BN", raising=False)
    return pytester


def _baseline(pytester: pytest.Pytester) -> Path:
    return pytester.path / "baselines" / "smoke" / "test_pack" / f"{CASE}.json"


def test_life_cycle(pack: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # no baseline yet: fail and say how to record
    result = pack.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline recorded at*--giacheck-update*"])
    assert not _baseline(pack).exists()

    # record: rewrites and fails
    result = pack.runpytest_subprocess("--giacheck-update")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline rewritten*"])
    recorded = json.loads(_baseline(pack).read_text())
    assert recorded["case_id"] == CASE and 0 < recorded["ssim"]["mean"] <= 1

    # same model: passes; the table, results.json and the PNG are there
    result = pack.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*giacheck summary*", f"*{CASE}*regression*", "*results.json*"])
    results = json.loads((pack.path / "giacheck-artifacts" / "results.json").read_text())
    assert [c["case_id"] for c in results["cases"]] == [CASE]
    assert (pack.path / "giacheck-artifacts" / "smoke" / "test_pack" / f"{CASE}.png").exists()

    # the vendor freezes BatchNorm (the client now runs eval-mode BN): leakage rises above the baseline
    monkeypatch.setenv("FROZEN_BN", "1")
    result = pack.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LEAKAGE ROSE above the recorded baseline*measured SSIM*recorded*tolerance 0.020*"])
    assert json.loads(_baseline(pack).read_text()) == recorded  # a failing run never writes

    # accept the new level: --giacheck-update rewrites and fails, the next run passes
    pack.runpytest_subprocess("--giacheck-update").assert_outcomes(failed=1)
    assert json.loads(_baseline(pack).read_text())["ssim"]["mean"] > recorded["ssim"]["mean"]
    pack.runpytest_subprocess().assert_outcomes(passed=1)


def test_update_all_rewrites_and_passes(pack: pytest.Pytester) -> None:
    pack.runpytest_subprocess("--giacheck-update-all").assert_outcomes(passed=1)
    assert _baseline(pack).exists()


def test_corrupt_baseline_is_reported_and_left_untouched(pack: pytest.Pytester) -> None:
    path = _baseline(pack)
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    for flags in ((), ("--giacheck-update",), ("--giacheck-update-all",)):
        result = pack.runpytest_subprocess(*flags)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*corrupt baseline*left untouched*"])
        assert path.read_text() == "{ not json"


def test_crashed_worker_loses_no_finished_result(pack: pytest.Pytester) -> None:
    pack.makepyfile(test_pack='''
import os

from giacheck.specs import AttackSpec

CASE = "vendor_net:entry-16-bn_train-bs1-stats_none"


def test_a_finishes(gia):
    gia.regression(CASE, attack=AttackSpec(iterations=5))


def test_b_crashes_the_worker():
    os._exit(3)
''')
    result = pack.runpytest_subprocess("-n", "1", "-p", "no:randomly", "--giacheck-update-all")
    result.stdout.fnmatch_lines(["*worker*crashed*"])
    journal = (pack.path / "giacheck-artifacts" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["case_id"] for line in journal] == [CASE]
    assert json.loads((pack.path / "giacheck-artifacts" / "results.json").read_text())["cases"][0]["case_id"] == CASE
    assert _baseline(pack).exists()


PINNING = '''
import os


def test_where_am_i():
    worker = os.environ["PYTEST_XDIST_WORKER"]
    with open(f"gpu-{worker}.txt", "w") as fh:
        fh.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
'''


def test_one_gpu_per_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**{f"test_p{i}": PINNING for i in range(4)})
    result = pytester.runpytest_subprocess("-n", "2", "--giacheck-gpus", "3,5", "--giacheck-device", "cuda")
    result.assert_outcomes(passed=4)
    seen = {p.name: p.read_text() for p in pytester.path.glob("gpu-gw*.txt")}
    assert seen == {"gpu-gw0.txt": "3", "gpu-gw1.txt": "5"}


def test_auto_workers_equal_gpu_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**{f"test_p{i}": PINNING for i in range(3)})
    result = pytester.runpytest_subprocess("-n", "auto", "--giacheck-gpus", "0,1,2", "--giacheck-device", "cuda")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*3 workers*"])


def test_outer_visible_list_is_respected(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    pytester.makepyfile(**{f"test_p{i}": PINNING for i in range(2)})
    pytester.runpytest_subprocess("-n", "2", "--giacheck-device", "cuda").assert_outcomes(passed=2)
    assert sorted(p.read_text() for p in pytester.path.glob("gpu-gw*.txt")) == ["6", "7"]


def test_more_workers_than_gpus_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p=PINNING)
    result = pytester.runpytest_subprocess("-n", "3", "--giacheck-gpus", "0,1", "--giacheck-device", "cuda")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*3 xdist workers but only 2 GPUs*--giacheck-oversubscribe*"])
    result = pytester.runpytest_subprocess("-n", "3", "--giacheck-gpus", "0,1", "--giacheck-device", "cuda",
                                           "--giacheck-oversubscribe")
    result.assert_outcomes(passed=1)


def test_bad_profile_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--giacheck-profile", "turbo")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--giacheck-profile='turbo': valid values are 'smoke' and 'paper'*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*gia_case(case_id)*", "*gpu:*", "*slow:*"])


def test_threads_option_sets_torch_threads(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makepyfile(test_t='''
import torch


def test_threads():
    with open("threads.txt", "w") as fh:
        fh.write(str(torch.get_num_threads()))
''')
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert (pytester.path / "threads.txt").read_text() == "1"  # the default baselines are recorded with
    pytester.runpytest_subprocess("--giacheck-threads", "2").assert_outcomes(passed=1)
    assert (pytester.path / "threads.txt").read_text() == "2"
    result = pytester.runpytest_subprocess("--giacheck-threads", "many")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--giacheck-threads='many': give a positive number or 'auto'*"])
