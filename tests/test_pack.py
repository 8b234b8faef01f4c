"""Privacy test packs: the grid, rules and verdicts (no compute), and a vendor's pack end to end with pytester:
scaffold with ``init-pack`` → record → pass → the model changes and leaks more → the pack fails, readably."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from _evidence import _batch_of_8_with_one_leak, _evidence, _image, _trial

from giacheck import claims
from giacheck.cli import main
from giacheck.errors import InvalidCaseError, UnknownModelError
from giacheck.models import get_entry, register_alias
from giacheck.pack import Grid, InvalidPackError, Pack, Rule, default_control
from giacheck.specs import Case, ModelSpec

pytest_plugins = ["pytester"]

# A vendor's CNN (not in the registry). At 16 px with a training-mode client at bs4 it keeps the images (smoke
# SSIM 0.089); FROZEN_BN=1 is a model change that freezes BatchNorm (running statistics in the forward), and the
# same update then leaks more (0.320).
VENDOR_NET = '''
import os

from torch import nn

from giacheck.examples import FrozenBatchNorm2d
from giacheck.models import ModelEntry


def _factory(resolution, num_classes):
    bn = FrozenBatchNorm2d if os.environ.get("FROZEN_BN") == "1" else nn.BatchNorm2d
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), bn(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), bn(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1), bn(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def classifier():
    return ModelEntry(name="vendor_cnn", upstream="vendor", factory=_factory, default_size=32, num_classes=10,
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True)


def broken():
    raise RuntimeError("weights server unreachable")
'''


@pytest.fixture
def vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "vendor_net.py").write_text(VENDOR_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("vendor_net", None)
    return "vendor_net:classifier"


# ------------------------------------------------------------------------------------------------ grid and rules
def test_grid_takes_strings_and_enums() -> None:
    grid = Grid(batch_sizes=(1, 8), bn="train,eval", stats=["none", "exact"], updates="fedsgd,fedavg4")
    model = ModelSpec(name="m", resolution=16)
    assert [str(b) for b in grid.bn] == ["train", "eval"] and len(list(grid.cases(model))) == 2 * 2 * 2 * 2
    steps = {c.client.local_steps for c in grid.cases(ModelSpec(name="m", resolution=16))}
    assert steps == {1, 4}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_sizes": (0,)}, r"batch_sizes=\[0\] \(valid: positive integers\)"),
    ({"bn": "training"}, r"bn=\['training'\] \(valid: train, eval\)"),
    ({"stats": "bogus"}, r"valid: none, naive, exact, proxy"),
    ({"updates": "fedavg0"}, r"fedavgK with K >= 1"),
    ({"updates": "sgd"}, r"updates=\['sgd'\]"),
    ({"batch_sizes": ()}, r"batch_sizes is empty"),
    ({"bn": "train,train"}, r"repeats a value"),
])
def test_grid_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidPackError, match=match):
        Grid(**kwargs)


def test_rule_conditions() -> None:
    case = Case.parse("m-32-bn_train-bs8-stats_exact")
    assert Rule("all", max_ssim=0.3).applies(case)
    assert Rule("big batches", max_ssim=0.1, where="bs>=8").applies(case)
    assert not Rule("small", max_ssim=0.1, where="bs<8").applies(case)
    assert Rule("train exact", max_ssim=0.1, where="bn=train, stats=exact").applies(case)
    assert not Rule("eval", max_ssim=0.1, where="bn=eval,stats=exact").applies(case)
    assert Rule("not fedavg", max_ssim=0.1, where="update=fedsgd").applies(case)


@pytest.mark.parametrize(("where", "match"), [
    ("bs=>8", r"cannot read condition 'bs=>8'.*KEY one of model, res, bn, bs"),
    ("batch>=8", r"cannot read condition 'batch>=8'"),
    ("bs>=eight", r"bs compares with a number"),
    ("bn>=train", r"bn takes = or !="),
])
def test_rule_rejects_bad_conditions(where: str, match: str) -> None:
    with pytest.raises(InvalidPackError, match=match):
        Rule("r", max_ssim=0.3, where=where)


def test_rule_rejects_bad_threshold() -> None:
    with pytest.raises(InvalidPackError, match=r"max_ssim=2 \(valid: None, or a number in \[-1, 1\]\)"):
        Rule("r", max_ssim=2)


# ------------------------------------------------------------------------------------------------ the pack
def test_plan_lists_cases_and_what_is_not_applicable(vendor: str) -> None:
    pack = Pack(name="vendor_plan", model=vendor, input_size=16,
                grid=Grid(batch_sizes=(1, 4), bn="train,eval", stats="none,exact"))
    plan = pack.plan()
    ids = [c.id for c in plan.cases]
    assert ids[0] == "vendor_plan-16-bn_train-bs1-stats_none" and len(ids) == 6
    assert [cid for cid, _ in plan.not_applicable] == ["vendor_plan-16-bn_eval-bs1-stats_exact",
                                                       "vendor_plan-16-bn_eval-bs4-stats_exact"]
    assert get_entry("vendor_plan").default_size == 16  # the pack's overrides travel with its name
    assert pack.control_id == default_control(16) == "lenet_sigmoid-16-bn_eval-bs1-stats_none"


def test_plan_lists_every_invalid_configuration() -> None:
    pack = Pack(name="lenet_plan", model="lenet_sigmoid", grid=Grid(batch_sizes=(1, 64), bn="train,eval"))
    with pytest.raises(InvalidPackError) as err:
        pack.plan()
    text = str(err.value)
    assert "3 invalid configuration(s) or control" in text
    assert "lenet_plan-32-bn_train-bs1-stats_none: bn_train on lenet_plan, which has no BatchNorm" in text
    assert "batch size 64 is larger than the 12 images available" in text


def test_control_must_be_a_valid_case_outside_the_grid(vendor: str) -> None:
    grid = Grid(batch_sizes=1, bn="train")
    with pytest.raises(InvalidPackError, match=r"control vendor_ctl-16-bn_train-bs1-stats_none is also a config"):
        Pack(name="vendor_ctl", model=vendor, input_size=16, grid=grid,
             control="vendor_ctl-16-bn_train-bs1-stats_none").plan()
    with pytest.raises(InvalidPackError, match=r"control lenet_sigmoid-16-bn_train-bs1-stats_none: .*no BatchNorm"):
        Pack(name="vendor_ctl2", model=vendor, input_size=16, grid=grid,
             control="lenet_sigmoid-16-bn_train-bs1-stats_none").plan()


def test_bad_models_are_named(vendor: str) -> None:
    with pytest.raises(UnknownModelError, match=r"cannot import module 'nosuchpkg.mod'"):
        Pack(name="nope", model="nosuchpkg.mod:fn").plan()
    with pytest.raises(UnknownModelError, match=r"'vendor_net:broken' raised RuntimeError: weights server unreachable"):
        Pack(name="broken_pack", model="vendor_net:broken").plan()
    with pytest.raises(InvalidPackError, match=r"pack name 'my-pack'"):
        Pack(name="my-pack", model=vendor)


def test_alias_is_idempotent_and_guarded(vendor: str) -> None:
    assert register_alias("vendor_alias", vendor, default_size=16) == "vendor_alias"
    assert register_alias("vendor_alias", vendor, default_size=16) == "vendor_alias"  # every worker imports
    with pytest.raises(InvalidCaseError, match=r"already registered"):
        register_alias("vendor_alias", vendor, default_size=32)
    with pytest.raises(InvalidCaseError, match=r"built-in model name"):
        register_alias("resnet18_cifar", vendor)


def test_judge_applies_every_rule_and_needs_the_control(vendor: str) -> None:
    pack = Pack(name="vendor_judge", model=vendor, input_size=16, grid=Grid(batch_sizes=(1, 8)),
                rules=(Rule("no configuration leaks an identifiable image"),
                       Rule("bs >= 8 stays below SSIM 0.1", max_ssim=0.1, where="bs>=8")))
    good = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.9, 0.001)])]))
    small, big = "vendor_judge-16-bn_train-bs1-stats_none", "vendor_judge-16-bn_train-bs8-stats_none"
    assert pack.judge(_evidence(small, [_trial(small, "a", [_image(0.2, 0.4)])]), good).passed
    verdict = pack.judge(_evidence(big, [_trial(big, "a", [_image(0.2, 0.4)] + [_image(0.0, 0.9)] * 7)]), good)
    assert verdict.verdict is claims.Verdict.FAIL
    assert verdict.message.startswith("rule 'bs >= 8 stays below SSIM 0.1': ") and "0.200 > 0.1" in verdict.message
    weak = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.4, 0.3)])]))
    assert pack.judge(_evidence(small, [_trial(small, "a", [_image(0.05, 0.5)])]), weak).verdict is \
        claims.Verdict.INCONCLUSIVE, "a control that does not re-identify proves nothing"
    uncovered = Pack(name="vendor_judge2", model=vendor, rules=(Rule("big", max_ssim=0.1, where="bs>=8"),))
    other = small.replace("judge", "judge2")
    assert uncovered.judge(_evidence(other, [_trial(other, "a", [_image(0.5, 0.5)])]), None).kind == "regression"


# ------------------------------------------------------------------------------------------------ end to end
def test_init_pack_record_pass_then_leak_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makepyfile(vendor_net=VENDOR_NET)
    monkeypatch.chdir(pytester.path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("FROZEN_BN", raising=False)
    sys.modules.pop("vendor_net", None)
    code = main(["init-pack", "privacy", "--model", "vendor_net:classifier", "--name", "vendor_cnn",
                 "--input-size", "16", "--batch-sizes", "4", "--bn", "train", "--threshold", "0.3"])
    assert code == 0, capsys.readouterr().err
    pack_dir = pytester.path / "privacy"
    assert sorted(p.name for p in pack_dir.iterdir()) == ["README.md", "baselines", "test_privacy_pack.py"]
    assert "vendor_cnn-16-bn_train-bs4-stats_none" in (pack_dir / "README.md").read_text()

    # record the baselines (beside the pack), then the unchanged model passes
    result = pytester.runpytest_subprocess("privacy", "--giacheck-update-all")
    result.assert_outcomes(passed=2)
    baseline = pack_dir / "baselines" / "smoke" / "vendor_cnn" / "vendor_cnn-16-bn_train-bs4-stats_none.json"
    control = baseline.with_name("lenet_sigmoid-16-bn_eval-bs1-stats_none.json")
    recorded_case, recorded_control = (json.loads(p.read_text())["challenge"] for p in (baseline, control))
    assert recorded_control["leaks"] and not recorded_case["leaks"] and recorded_case["trials"] == 2
    recorded = recorded_case["max_ssim"]
    before = baseline.read_bytes()
    result = pytester.runpytest_subprocess("privacy")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*giacheck summary*", "*vendor_cnn-16-bn_train-bs4-stats_none*infeasible*pass*"])

    # the vendor changes the model (BatchNorm frozen): the same update leaks more, and the pack says so
    monkeypatch.setenv("FROZEN_BN", "1")
    result = pytester.runpytest_subprocess("privacy")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*vendor_cnn-16-bn_train-bs4-stats_none (highest image SSIM): LEAKAGE ROSE above the recorded baseline — "
        f"measured SSIM 0.*, recorded {recorded:.3f}, tolerance 0.060 (one-sided)*"])
    assert baseline.read_bytes() == before, "a failing run never rewrites a baseline"


def test_pack_as_an_installed_package_finds_its_baselines(pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack shipped as a package (baselines as package data) runs with ``pytest --pyargs`` from anywhere."""
    pytester.makepyfile(vendor_net=VENDOR_NET)
    package = pytester.mkpydir("acme_privacy")
    (package / "test_privacy.py").write_text(
        "from pathlib import Path\nimport pytest\nfrom giacheck.pack import Grid, Pack, Rule\n"
        "PACK = Pack(name='acme', model='vendor_net:classifier', input_size=16, grid=Grid(batch_sizes=4),\n"
        "            rules=(Rule('no configuration exceeds SSIM 0.3', max_ssim=0.3),),\n"
        "            baselines=Path(__file__).parent / 'baselines')\n"
        "def test_control(gia):\n    gia.pack_control(PACK)\n"
        "@pytest.mark.parametrize('case_id', PACK.case_ids())\n"
        "def test_configuration(gia, case_id):\n    gia.pack_case(PACK, case_id)\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))  # as if pip-installed
    monkeypatch.delenv("FROZEN_BN", raising=False)
    elsewhere = pytester.mkdir("elsewhere")
    monkeypatch.chdir(elsewhere)
    pytester.runpytest_subprocess("--pyargs", "acme_privacy", "--giacheck-update-all").assert_outcomes(passed=2)
    assert (package / "baselines" / "smoke" / "acme" / "acme-16-bn_train-bs4-stats_none.json").is_file()
    assert not (elsewhere / "baselines").exists()
    pytester.runpytest_subprocess("--pyargs", "acme_privacy").assert_outcomes(passed=2)


def test_scaffolded_module_rebuilds_the_same_pack(tmp_path: Path) -> None:
    """``init-pack`` writes the pack it was given: rules (with ``where``), control, seed; it imports and plans."""
    import importlib.util

    from giacheck.scaffold import PACK_MODULE, scaffold_pack

    pack = Pack(name="acme_roundtrip", model="giacheck.examples:classifier", input_size=16, num_classes=10,
                grid=Grid(batch_sizes=(1, 8), bn="train,eval", stats="none,exact"),
                rules=(Rule("no configuration exceeds SSIM 0.3", max_ssim=0.3),
                       Rule("bs >= 8 is infeasible", max_ssim=0.1, where="bs>=8")),
                control="lenet_sigmoid-32-bn_eval-bs1-stats_none", seed=3)
    written = scaffold_pack(tmp_path / "pack", pack)
    assert written["module"].name == PACK_MODULE
    spec = importlib.util.spec_from_file_location("scaffolded_pack", written["module"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rebuilt = module.PACK
    assert rebuilt.baselines == tmp_path / "pack" / "baselines"
    assert rebuilt == dataclasses.replace(pack, baselines=rebuilt.baselines)
    assert rebuilt.case_ids() == pack.case_ids()
    readme = written["readme"].read_text()
    assert "acme_roundtrip-16-bn_eval-bs8-stats_none" in readme and "Not applicable" in readme


@pytest.mark.parametrize(("where", "match"), [
    ("bn=trian", r"bn='trian' is not a value of bn \(valid: train, eval\)"),
    ("stats=exakt", r"stats='exakt' is not a value of stats"),
    ("update=sgd", r"update='sgd' is not a value of update"),
])
def test_rule_values_must_be_values_of_their_axis(where: str, match: str) -> None:
    """A typo must not make a rule silently cover nothing."""
    with pytest.raises(InvalidPackError, match=match):
        Rule("r", max_ssim=0.1, where=where)


def test_rule_values_are_read_as_ids_spell_them() -> None:
    case = Case.parse("m-16-bn_eval-bs1-stats_none-upd_fedavg1-def_clip1.5")
    assert Rule("r", max_ssim=0.1, where="update=fedavg,defences=clip1.50").applies(case)
    assert not Rule("r", max_ssim=0.1, where="defences=").applies(case)


# ------------------------------------------------------------------------------------------ worst case, not mean
def test_a_batch_of_8_with_one_leaked_image_fails_the_pack_rule(vendor: str) -> None:
    evidence, batch_mean = _batch_of_8_with_one_leak()
    pack = Pack(name="vendor", model=vendor, input_size=32, grid=Grid(batch_sizes=(8,), bn=("eval",)),
                rules=(Rule("bs >= 8 is infeasible", max_ssim=0.3, where="bs>=8"),))
    assert batch_mean <= 0.3, "the old batch-mean rule would have passed this batch"
    assert evidence.test.reidentified == 1 and evidence.worst.position == 3
    control = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.8, 0.001)])]))
    verdict = pack.judge(evidence, control)
    assert verdict.verdict is claims.Verdict.FAIL, verdict.message
    assert "re-identified" in verdict.message or "SSIM" in verdict.message


def test_a_max_ssim_rule_reads_the_most_leaking_image_not_the_mean(vendor: str) -> None:
    pack = Pack(name="vendor", model=vendor, input_size=32, grid=Grid(batch_sizes=(4,), bn=("eval",)),
                rules=(Rule("every image below 0.3", max_ssim=0.3),))
    ev = _evidence("vendor-32-bn_eval-bs4-stats_none",
                   [_trial("vendor-32-bn_eval-bs4-stats_none", "a",
                           [_image(0.531, 0.2), _image(0.1, 0.6), _image(0.1, 0.6), _image(0.08, 0.6)])])
    control = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.8, 0.001)])]))
    verdict = pack.judge(ev, control)
    assert verdict.verdict is claims.Verdict.FAIL and "0.531 > 0.3" in verdict.message
