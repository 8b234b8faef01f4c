"""The plugin end to end with pytester: record → pass → leak more → fail → update → pass; corrupt baselines;
a crashed worker; GPU pinning under xdist with a fake device list (no GPU needed); no effect on a project
without giacheck cases; markers; the case-result hook; --giacheck-attack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # here, not in a test: pytester drops modules first imported during a test

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
from giacheck.specs import AttackSpec, RunOptions

CASE = "vendor_net:entry-16-bn_train-bs1-stats_none"


def test_vendor_pack(gia):
    gia.regression(CASE, options=RunOptions(budget=AttackSpec(iterations=30)))
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
    """Validated at collection, before any case runs, whatever the flags: a usage error naming the file."""
    path = _baseline(pack)
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    for flags in ((), ("--giacheck-update",), ("--giacheck-update-all",)):
        result = pack.runpytest_subprocess(*flags)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*corrupt baseline*malformed JSON*left untouched*never overwritten*"])
        assert path.read_text() == "{ not json"
        assert not (pack.path / "giacheck-artifacts").exists()


def test_crashed_worker_loses_no_finished_result(pack: pytest.Pytester) -> None:
    pack.makepyfile(test_pack='''
import os

from giacheck.specs import AttackSpec, RunOptions

CASE = "vendor_net:entry-16-bn_train-bs1-stats_none"


def test_a_finishes(gia):
    gia.regression(CASE, options=RunOptions(budget=AttackSpec(iterations=5)))


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


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_p="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--giacheck-profile", "turbo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--giacheck-profile='turbo': valid values are 'smoke' and 'paper'*"])
    result = pytester.runpytest_subprocess("--giacheck-tolerance", "nan")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--giacheck-tolerance='nan': baseline tolerance*finite number >= 0*"])


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*gpu: needs a CUDA device; skipped with a reason*", "*slow:*-m 'not slow'*"])
    assert "gia_case" not in result.stdout.str()  # nothing acted on it: removed


def _outside_threads() -> int:
    """torch's thread count in a fresh process without OMP_NUM_THREADS (what a project's tests get)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout)


PLAIN_TORCH = '''
import json
import os
import sys

import torch


def test_{name}():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    seen = {{"threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}}
    with open(os.path.join(os.environ["SEEN_DIR"], f"{{worker}}-{name}.json"), "w") as fh:
        json.dump(seen, fh)
'''
PYTEST_OWN = {"__pycache__", ".pytest_cache", "stdout", "stderr"}  # pytest's and pytester's (and runpytest-N)


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_plain_torch_project_is_left_alone(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path_factory: pytest.TempPathFactory, xdist: tuple[str, ...]) -> None:
    """giacheck installed, no giacheck case collected: torch keeps its threads, OMP_NUM_THREADS stays absent, and
    nothing appears in the project or is left in the temp folder (under xdist too)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen, tmp = tmp_path_factory.mktemp("seen"), tmp_path_factory.mktemp("tmp")
    monkeypatch.setenv("SEEN_DIR", str(seen))
    monkeypatch.setenv("TMPDIR", str(tmp))  # where a shared-cases folder would be made
    pytester.makepyfile(**{f"test_{name}": PLAIN_TORCH.format(name=name) for name in ("a", "b")})
    before = {p.name for p in pytester.path.iterdir()}
    pytester.runpytest_subprocess(*xdist).assert_outcomes(passed=2)
    outside = _outside_threads()
    records = [json.loads(p.read_text()) for p in seen.glob("*.json")]
    assert len(records) == 2 and all(r == {"threads": outside, "omp": None} for r in records), (outside, records)
    after = {p.name for p in pytester.path.iterdir() if not p.name.startswith("runpytest-")}
    assert after - PYTEST_OWN == before
    assert not list(tmp.iterdir())


def test_threads_default_to_one_where_cases_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module using the gia fixture runs with 1 thread (baselines are recorded with 1); --giacheck-threads
    sets another count; a bad value is a usage error."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makepyfile(test_t='''
import torch


def test_threads(gia):
    with open("threads.txt", "w") as fh:
        fh.write(str(torch.get_num_threads()))
''')
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    assert (pytester.path / "threads.txt").read_text() == "1"
    pytester.runpytest_subprocess("--giacheck-threads", "2").assert_outcomes(passed=1)
    assert (pytester.path / "threads.txt").read_text() == "2"
    result = pytester.runpytest_subprocess("--giacheck-threads", "many")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*--giacheck-threads='many': give a positive number or 'auto'*"])


def test_gpu_marker_skips_without_cuda(pytester: pytest.Pytester) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the marker lets the test run")
    pytester.makepyfile(test_g='''
import pytest


@pytest.mark.gpu
def test_needs_cuda():
    raise AssertionError("should have been skipped")


def test_plain():
    pass
''')
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*marked gpu: needs a CUDA device, and torch finds none here*"])


def test_no_torch_import_without_gpu_items(pytester: pytest.Pytester) -> None:
    """CUDA is asked for only where an item carries the gpu marker: a session without one never imports torch."""
    pytester.makepyfile(test_n="import sys\n\n\ndef test_n():\n    assert 'torch' not in sys.modules\n")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


CHEAP = "lenet_sigmoid-16-bn_eval-bs1-stats_none"
RESULT_HOOK = '''
import json


def pytest_giacheck_case_result(record, report, config):
    with open("hook.jsonl", "a") as fh:
        fh.write(json.dumps({"case_id": record.case_id, "nodeid": report.nodeid, "outcome": record.outcome,
                             "iterations": record.result["iterations"],
                             "on_worker": hasattr(config, "workerinput")}) + "\\n")
'''
TWO_BUDGETS = f'''
from giacheck.specs import AttackSpec, RunOptions

CASE = "{CHEAP}"


def test_two(gia):
    gia.regression(CASE, options=RunOptions(budget=AttackSpec(iterations=2)))


def test_three(gia):
    gia.regression(CASE, options=RunOptions(budget=AttackSpec(iterations=3)))
'''


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_case_result_hook_called_once_per_case(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                               xdist: tuple[str, ...]) -> None:
    """Another plugin gets every finished case's record on the controller, the same as results.jsonl; the same
    case under two budgets is two results (the options are part of the cache key)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makeconftest(RESULT_HOOK)
    pytester.makepyfile(test_hook=TWO_BUDGETS)
    pytester.runpytest_subprocess("--giacheck-update-all", *xdist).assert_outcomes(passed=2)
    calls = [json.loads(line) for line in (pytester.path / "hook.jsonl").read_text().splitlines()]
    assert sorted((c["nodeid"], c["iterations"]) for c in calls) == [
        ("test_hook.py::test_three", 3), ("test_hook.py::test_two", 2)]
    assert all(c["case_id"] == CHEAP and c["outcome"] == "passed" and not c["on_worker"] for c in calls)
    journal = (pytester.path / "giacheck-artifacts" / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["nodeid"] for line in journal) == sorted(c["nodeid"] for c in calls)


ECHO_ATTACK = '''
from giacheck.attack.registry import ATTACKS, register_attack


@register_attack("echo")
def echo(spec):
    """The built-in attack under another name."""
    return ATTACKS.get("gradmatch")(spec)


register_attack("other")(echo)
'''


def test_attack_option_applies_to_cases_without_one(pytester: pytest.Pytester,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pytester.makeconftest(ECHO_ATTACK)
    pytester.makepyfile(test_atk=f'''
from giacheck.specs import AttackSpec, RunOptions


def test_default(gia):
    gia.regression("{CHEAP}", options=RunOptions(budget=AttackSpec(iterations=2)))


def test_own(gia):
    gia.regression("{CHEAP}-atk_other", options=RunOptions(budget=AttackSpec(iterations=2)))
''')
    result = pytester.runpytest_subprocess("--giacheck-attack", "echo", "--giacheck-update-all")
    result.assert_outcomes(passed=2)
    journal = [json.loads(line) for line in (pytester.path / "giacheck-artifacts" / "results.jsonl").read_text()
               .splitlines()]
    assert sorted(r["case_id"] for r in journal) == [f"{CHEAP}-atk_echo", f"{CHEAP}-atk_other"]
    result = pytester.runpytest_subprocess("--giacheck-attack", "ecco")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--giacheck-attack='ecco': unknown attack 'ecco'. Did you mean: echo? Valid: echo, "
                                 "gradmatch, gradmatch_rescaled, other*"])


STALE = """
from giacheck.specs import AttackSpec, RunOptions


def test_case(gia):
    gia.regression("lenet_sigmoid-16-bn_eval-bs1-stats_none", options=RunOptions(budget=AttackSpec(iterations=ITER)))
"""


def test_baseline_recorded_under_another_budget_is_stale(pytester: pytest.Pytester) -> None:
    """Recorded at 3 iterations, run at 4: the check fails as stale, naming the field, and leaves the file as it was;
    an update flag re-records it."""
    pytester.makepyfile(test_stale=STALE.replace("ITER", "3"))
    pytester.runpytest_subprocess("--giacheck-update-all", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    path = pytester.path / "baselines" / "smoke" / "test_stale" / "lenet_sigmoid-16-bn_eval-bs1-stats_none.json"
    before = path.read_bytes()
    pytester.makepyfile(test_stale=STALE.replace("ITER", "4"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stale baseline*recorded under iterations=3, this run iterations=4*"])
    assert path.read_bytes() == before
    pytester.runpytest_subprocess("--giacheck-update-all", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    assert json.loads(path.read_text())["attack"]["iterations"] == 4
