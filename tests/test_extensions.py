"""Extensions written outside the package (``tests/extensions/gia_extensions.py``), plugged in through the seams:
an attack (DLG: L2 distance, L-BFGS), a defence (top-k sparsification) and a task (soft-label classification)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from giacheck.errors import InvalidCaseError
from giacheck.runner import run_case
from giacheck.specs import AttackSpec, Case, RunOptions

pytest_plugins = ["pytester"]

EXTENSIONS = Path(__file__).parent / "extensions"
REPO = Path(__file__).parent.parent
LENET = "lenet_sigmoid-16-bn_eval-bs1-stats_none"
BUDGET = RunOptions(budget=AttackSpec(iterations=60))


@pytest.fixture(autouse=True)
def extensions(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXTENSIONS))
    import gia_extensions

    return gia_extensions


def test_registered_attack_runs_and_is_named_in_the_result() -> None:
    result = run_case(f"{LENET}-atk_dlg", options=BUDGET)
    assert result.case_id == f"{LENET}-atk_dlg" and result.attack.name == "dlg"
    assert result.ssim_mean > 0.9  # DLG inverts the sigmoid LeNet (Zhu et al.); measured 0.996
    builtin = run_case(LENET, options=BUDGET)
    assert builtin.attack.name == "gradmatch" and builtin.case_id == LENET


def test_attack_named_by_import_path() -> None:
    result = run_case(f"{LENET}-atk_gia_extensions:DLG", options=BUDGET)
    assert result.attack.name == "gia_extensions:DLG" and Case.parse(result.case_id).attack == "gia_extensions:DLG"


def test_unknown_attack_lists_close_matches_before_compute() -> None:
    with pytest.raises(InvalidCaseError, match=r"unknown attack 'dgl'.*Did you mean: dlg"):
        run_case(f"{LENET}-atk_dgl", options=BUDGET)


def test_defence_plug_in_changes_what_the_client_shares() -> None:
    plain = run_case(LENET, options=BUDGET)
    sparse = run_case(f"{LENET}-def_topk0.01", options=BUDGET)
    assert sparse.case_id.endswith("-def_topk0.01")
    assert sparse.ssim_mean < plain.ssim_mean - 0.3  # 1 % of the gradient kept: measured 0.16 against 0.91


def test_defence_with_a_bad_parameter_is_refused_before_compute() -> None:
    with pytest.raises(InvalidCaseError, match=r"defence 'topk2'.*fraction in \(0, 1\]"):
        run_case(f"{LENET}-def_topk2", options=BUDGET)


def test_task_plug_in_sets_targets_and_what_the_attacker_may_infer() -> None:
    result = run_case("soft_lenet-16-bn_eval-bs1-stats_none", options=BUDGET)
    assert result.ssim_mean > 0.5
    with pytest.raises(InvalidCaseError, match="labels cannot be inferred for soft_lenet's task 'soft_labels'"):
        run_case("soft_lenet-16-bn_eval-bs1-stats_none-lab_inferred", options=BUDGET)


PACK = '''
from giacheck import Grid, Pack, Rule, AttackSpec

PACK = Pack(name="dlgpack", model="lenet_sigmoid", input_size=16, attacker="dlg", attack=AttackSpec(iterations=40),
            grid=Grid(batch_sizes=(2,), bn=("eval",)), rules=(Rule("nothing leaks", max_ssim=0.3),),
            baselines="baselines")


def test_control(gia):
    gia.pack_control(PACK)


import pytest

@pytest.mark.parametrize("case_id", PACK.case_ids())
def test_configuration(gia, case_id):
    gia.pack_case(PACK, case_id)
'''


def test_attack_plug_in_through_a_pack(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(EXTENSIONS))
    pytester.makepyfile(test_dlg_pack=PACK)
    pytester.makeconftest("pytest_plugins = ['gia_extensions']")
    result = pytester.runpytest_subprocess("--giacheck-update-all", "-p", "no:cacheprovider")
    rows = [json.loads(line) for line in (pytester.path / "giacheck-artifacts" / "results.jsonl").read_text()
            .splitlines()]
    ids = {row["case_id"] for row in rows}
    assert ids == {"lenet_sigmoid-16-bn_eval-bs1-stats_none-atk_dlg", "dlgpack-16-bn_eval-bs2-stats_none-atk_dlg"}
    assert all(row["result"]["attack"]["name"] == "dlg" for row in rows)
    assert sorted(p.name for p in (pytester.path / "baselines" / "smoke" / "dlgpack").iterdir()) == sorted(
        f"{i}.json" for i in ids)
    result.assert_outcomes(passed=1, failed=1)  # the control reconstructs; DLG also inverts bs2 (a leak)


def test_attack_plug_in_through_a_suite_claim(tmp_path: Path) -> None:
    """The Table 1 positive control run with DLG: its baseline lives beside the built-in attack's and is never
    compared with it. The smoke budget is cut to 30 evaluations (``budget_patch``) to keep this test short."""
    baselines = tmp_path / "baselines"
    suite = Path("smoke") / "test_table1_legacy_cnn"
    shutil.copytree(REPO / "baselines" / suite, baselines / suite)
    builtin = baselines / suite / "resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm100.json"
    before = builtin.read_bytes()
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "test_table1_legacy_cnn.py"), "-q",
               "-k", "test_post_act_inference_mode_update_is_feasible", "-p", "gia_extensions", "-p", "budget_patch",
               "--giacheck-attack", "dlg", "--giacheck-baselines", str(baselines),
               "--giacheck-artifacts", str(tmp_path / "artifacts"), "-p", "no:cacheprovider"]
    env = {**__import__("os").environ, "PYTHONPATH": str(EXTENSIONS)}
    # a cold cache computes the float64 warm start first (~330 s on one core)
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500)
    row = json.loads((tmp_path / "artifacts" / "results.jsonl").read_text().splitlines()[0])
    assert row["case_id"] == "resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm100-atk_dlg", first.stdout[-2000:]
    assert row["baseline"]["status"] == "missing" and "no baseline recorded" in first.stdout
    recorded = subprocess.run([*command, "--giacheck-update-all"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=1500)
    dlg = builtin.parent / "resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm100-atk_dlg.json"
    assert dlg.exists(), recorded.stdout[-2000:]
    assert builtin.read_bytes() == before
