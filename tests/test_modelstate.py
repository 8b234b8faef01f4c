"""Tests of the model-state axis (:mod:`giacheck.modelstate`): BN calibration on auxiliary images only (never the
client's or the re-identification pool's), seeds kept apart (model, client, attack), warm starts cached and
reused, and a vendor checkpoint audited through ``giacheck audit --weights``, a pack and the plugin, where a
changed file makes its baselines stale."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from giacheck import modelstate, runner
from giacheck.cli import main
from giacheck.data import open_source
from giacheck.errors import InvalidCaseError
from giacheck.models import build, registry
from giacheck.specs import CALIBRATION_IMAGES, AttackSpec, Case, RunOptions

pytest_plugins = ["pytester"]

TINYMOD = '''
from torch import nn
from giacheck.models import ModelEntry


def _factory(resolution, num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def tiny_cnn():
    return ModelEntry(name="tiny_cnn", upstream="test", factory=_factory, default_size=16, num_classes=10,
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True)
'''
TINY = "tinymod:tiny_cnn"
QUICK = AttackSpec(iterations=5, tv_weight=3e-2)


@pytest.fixture(autouse=True)
def tinymod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tinymod`` importable (here and in pytester subprocesses), a private warm-start cache, one thread."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "tinymod.py").write_text(TINYMOD)
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.setenv("PYTHONPATH", str(modules))
    monkeypatch.delitem(sys.modules, "tinymod", raising=False)
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    monkeypatch.setattr(modelstate, "_MEMORY", {})
    monkeypatch.setenv("GIACHECK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield modules
    torch.set_num_threads(threads)


def _trained_checkpoint(path: Path, *, steps: int = 5) -> Path:
    """The vendor's checkpoint: tiny_cnn trained for a few SGD steps on random images, saved as safetensors."""
    import tinymod

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = tinymod._factory(16, 10)
    images, labels = torch.rand(8, 3, 16, 16, generator=gen), torch.arange(8)
    for _ in range(steps):  # plain SGD by hand: torch.optim's lazy imports do not survive pytester's module reset
        grads = torch.autograd.grad(nn.functional.cross_entropy(net(images), labels), list(net.parameters()))
        with torch.no_grad():
            for p, g in zip(net.parameters(), grads, strict=True):
                p -= 0.1 * g
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def _tamper(path: Path) -> None:
    """Change one weight of the checkpoint in place (another file, another sha256)."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    state["0.weight"] = state["0.weight"] + 1e-3
    save_file(state, str(path))


# ------------------------------------------------------------------------------------------ the axis and its data
def test_state_is_an_axis_of_the_case_id() -> None:
    case = Case.parse("resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm20")
    assert case.state == "warm20" and Case.parse(case.id) == case
    assert Case.parse("resnet18_cifar-32-bn_eval-bs1-stats_none").state == "random"
    assert "state_" not in case.with_(state="random").id, "the default state stays out of ids (baselines unchanged)"
    with pytest.raises(InvalidCaseError, match=r"state 'warm0' .*valid: random, bncal, warmN"):
        Case.parse("resnet18_cifar-32-bn_eval-bs1-stats_none-state_warm0")


def test_calibration_never_touches_the_clients_or_the_pools_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every image the calibration decodes is an auxiliary one: not in the client's batch, not in the
    re-identification pool (checked on the indices the source decodes, for the bundled source and a batch of 4)."""
    source = open_source("bundled", num_classes=10)
    loaded: list[tuple[str, int]] = []
    stage = ["client"]
    original_load = type(source).load

    def spy(self, i):
        loaded.append((stage[0], i))
        return original_load(self, i)

    def calibrate(*args, **kwargs):
        stage[0] = "state"
        try:
            return original_calibrate(*args, **kwargs)
        finally:
            stage[0] = "pool"

    original_calibrate = modelstate.auxiliary_views
    monkeypatch.setattr(type(source), "load", spy)
    monkeypatch.setattr(modelstate, "auxiliary_views", calibrate)
    result = runner.run_case("resnet18_cifar-32-bn_eval-bs4-stats_none-state_bncal",
                             options=RunOptions(image="rocket", budget=AttackSpec(iterations=1)))
    names = [source.image_name(i) for i in range(len(source))]
    by_stage = {s: {names[i] for t, i in loaded if t == s} for s in ("client", "state", "pool")}
    assert by_stage["state"] == set(result.model_state.images) == set(CALIBRATION_IMAGES)
    assert not by_stage["state"] & set(result.manifest.images), "calibration saw a client image"
    assert not by_stage["state"] & by_stage["pool"], "calibration saw a re-identification pool image"
    assert by_stage["pool"] and not by_stage["pool"] & set(result.manifest.images)
    assert result.model_state.views == 126 and result.model_state.bn_modules == 20


def test_auxiliary_images_of_another_source_are_its_last_outside_the_batch(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "images"
    for k in range(8):
        (root / f"c{k}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (30 * k, 10, 10)).save(root / f"c{k}" / "a.png")
    source = open_source(f"imagefolder:{root}", num_classes=10)
    names = [source.image_name(i) for i in range(len(source))]
    assert modelstate.auxiliary_images(source, exclude=[names[-1]]) == tuple(names[-4:-1])


def test_bn_calibration_sets_running_statistics_and_restores_momentum() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3))
    images = torch.rand(64, 3, 5, 5)
    assert modelstate.calibrate_bn(net, images, chunk=16) == 1
    bn = net[1]
    with torch.no_grad():
        x = net[0](images)
    assert bn.momentum == 0.3 and net.training
    torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-6)
    chunks = [c.var(dim=(0, 2, 3), unbiased=True) for c in x.split(16)]
    torch.testing.assert_close(bn.running_var, torch.stack(chunks).mean(0), rtol=1e-5, atol=1e-6)


def test_bncal_is_reused_within_a_process_and_identical() -> None:
    source = open_source("bundled", num_classes=10)

    def calibrated() -> dict[str, torch.Tensor]:
        model = build(TINY, 16, seed=2)
        record = modelstate.prepare_state(model, "bncal", source=source, images=("astronaut",), resolution=16,
                                          model_seed=2, pinned_seed=None, task=None, model_name=TINY, weights=None,
                                          device=torch.device("cpu"))
        assert record.bn_modules == 2 and record.changed
        return {k: v.clone() for k, v in model.state_dict().items()}

    first = calibrated()
    assert len(modelstate._MEMORY) == 1
    second = calibrated()
    assert all(torch.equal(first[k], second[k]) for k in first)
    modelstate._MEMORY.clear()
    assert all(torch.equal(first[k], v) for k, v in calibrated().items()), "the cache changes no number"


def test_bncal_leaves_a_layernorm_model_unchanged_and_says_so() -> None:
    model = build("convnext_t_cifar", 32, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = open_source("bundled", num_classes=10)
    record = modelstate.prepare_state(model, "bncal", source=source, images=("astronaut",), resolution=32,
                                      model_seed=0, pinned_seed=None, task=None, model_name="convnext_t_cifar",
                                      weights=None, device=torch.device("cpu"))
    assert not record.changed and record.bn_modules == 0 and "no BatchNorm: unchanged" in record.label
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------------------- seeds
def test_model_seed_is_apart_from_the_attack_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same model seed under two attack seeds gives the very same model (and two attacks); another model
    seed another model. All three seeds are recorded."""
    models: list[dict[str, torch.Tensor]] = []
    simulate = runner.simulate_update

    def spy(model, *args, **kwargs):
        models.append({k: v.clone() for k, v in model.state_dict().items()})
        return simulate(model, *args, **kwargs)

    monkeypatch.setattr(runner, "simulate_update", spy)
    results = [runner.run_case(f"{TINY}-16-bn_eval-bs1-stats_none",
                               options=RunOptions(seed=seed, model_seed=model_seed, budget=QUICK))
               for seed, model_seed in ((1, 7), (2, 7), (1, 8))]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    assert not all(torch.equal(models[0][k], models[2][k]) for k in models[0])
    assert not torch.equal(results[0].reconstruction, results[1].reconstruction), "the attack seed still matters"
    assert results[1].manifest.seeds == {"model": 7, "client": 2, "attack": 2}
    assert results[1].model_state.pinned_seed == 7 and results[1].to_dict()["model_state"]["model_seed"] == 7


# ------------------------------------------------------------------------------------------------- warm starts
def test_warm_start_is_cached_and_reused(tmp_path: Path) -> None:
    source = open_source("bundled", num_classes=10)
    from giacheck.tasks import get_task

    def warm() -> tuple[dict[str, torch.Tensor], str]:
        model = build(TINY, 16, seed=3)
        record = modelstate.prepare_state(model, "warm4", source=source, images=("astronaut", "chelsea"),
                                          resolution=16, model_seed=3, pinned_seed=None,
                                          task=get_task("classification"), model_name=TINY, weights=None,
                                          device=torch.device("cpu"))
        assert record.steps == 4 and "not trained" in record.label
        assert record.recipe == {**modelstate.WARM_RECIPE, "dtype": "float64"}, "a BatchNorm model trains in float64"
        return {k: v.clone() for k, v in model.state_dict().items()}, record.cache

    random_init = build(TINY, 16, seed=3).state_dict()
    first, how = warm()
    assert how == "computed" and not torch.equal(first["net.0.weight"], random_init["net.0.weight"])
    again, how = warm()
    assert how == "memory" and all(torch.equal(first[k], again[k]) for k in first)
    modelstate._MEMORY.clear()  # another process: the file on disk
    again, how = warm()
    assert how == "disk" and all(torch.equal(first[k], again[k]) for k in first)
    (cached,) = (tmp_path / "cache" / "warm").glob("*.safetensors")
    cached.write_bytes(b"truncated")
    modelstate._MEMORY.clear()
    again, how = warm()
    assert how == "computed" and all(torch.equal(first[k], again[k]) for k in first), "a bad cache file is redone"


def test_warm_start_of_a_batchnorm_model_runs_in_float64_and_returns_float32() -> None:
    source = open_source("bundled", num_classes=10)
    views = modelstate.auxiliary_views(source, ("astronaut",), 16)
    model = build(TINY, 16, seed=3)
    reference = build(TINY, 16, seed=3).double()
    modelstate.warm_start(model, views, steps=3, seed=0, targets=views.labels)
    modelstate._sgd_steps(reference, views.images.double(), views.labels, steps=3, seed=0,
                          recipe=modelstate.warm_recipe(reference))
    assert all(v.dtype in (torch.float32, torch.int64) for v in model.state_dict().values())
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value.to(model.state_dict()[key].dtype)), key


def test_warm_start_without_batchnorm_keeps_the_model_dtype_and_a_failure_restores_dtype_and_mode() -> None:
    source = open_source("bundled", num_classes=10)
    views = modelstate.auxiliary_views(source, ("astronaut",), 8)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Flatten(),
                                torch.nn.Linear(144, 10)).double()
    modelstate.warm_start(plain, views, steps=2, seed=0, targets=views.labels)
    assert all(p.dtype == torch.float64 for p in plain.parameters()), "no BatchNorm: trains in its own dtype"

    class Breaks(torch.nn.Module):  # BatchNorm (so float64 training), a half-precision head, a failing forward
        def __init__(self) -> None:
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(3)
            self.head = torch.nn.Linear(3, 10).half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = Breaks().eval()
    with pytest.raises(RuntimeError, match="boom"):
        modelstate.warm_start(model, views, steps=1, seed=0, targets=views.labels)
    assert model.bn.weight.dtype == torch.float32 and model.bn.running_mean.dtype == torch.float32
    assert model.head.weight.dtype == torch.float16 and not model.training, "each tensor's dtype and the mode back"


def test_warm_recipe_names_float64_only_where_there_is_batchnorm() -> None:
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(2, 4))
    assert modelstate.warm_recipe(plain) == modelstate.WARM_RECIPE
    assert modelstate.warm_recipe(build(TINY, 16, seed=0))["dtype"] == "float64"
    untracked = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False))
    assert modelstate.warm_recipe(untracked)["dtype"] == "float64", "batch statistics alone amplify rounding"


def test_warm_start_refuses_a_detection_model_before_compute() -> None:
    with pytest.raises(InvalidCaseError, match=r"invalid case .*: state_warm5 trains on auxiliary images with class"):
        runner.run_case("yolov8n-64-bn_eval-bs1-stats_none-state_warm5", options=RunOptions(budget=QUICK))


# -------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_through_run_case_records_its_hash(tmp_path: Path) -> None:
    ckpt = _trained_checkpoint(tmp_path / "vendor.safetensors")
    result = runner.run_case(f"{TINY}-16-bn_train-bs1-stats_none", weights=str(ckpt), options=RunOptions(budget=QUICK))
    assert result.case_id.endswith("-state_ckpt")
    assert result.model_state.sha256 == modelstate.file_sha256(ckpt) and result.model_state.weights == str(ckpt)
    with pytest.raises(InvalidCaseError, match="state_ckpt needs a weights file"):
        runner.run_case(f"{TINY}-16-bn_train-bs1-stats_none-state_ckpt", options=RunOptions(budget=QUICK))
    with pytest.raises(InvalidCaseError, match="a weights file was given for a state_bncal case"):
        runner.run_case(f"{TINY}-16-bn_train-bs1-stats_none-state_bncal", weights=str(ckpt))


def test_checkpoint_of_another_shape_is_named_before_compute(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    wrong = tmp_path / "wrong.safetensors"
    save_file({"0.weight": torch.zeros(4, 3, 3, 3)}, str(wrong))
    code = main(["audit", "--model", TINY, "--input-size", "16", "--weights", str(wrong), "--out",
                 str(tmp_path / "audit")])
    err = capsys.readouterr().err
    assert code == 2 and "0.weight: file (4, 3, 3, 3) vs model (8, 3, 3, 3)" in err
    assert not (tmp_path / "audit").exists(), "nothing written"


def test_vendor_checkpoint_audited_with_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _trained_checkpoint(tmp_path / "vendor.safetensors")
    out = tmp_path / "audit"
    code = main(["audit", "--model", TINY, "--input-size", "16", "--bn", "train", "--weights", str(ckpt),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 1), printed
    results = json.loads((out / "results.json").read_text())
    cases = {c["case_id"]: c for c in results["cases"]}
    case = cases["tiny_cnn-16-bn_train-bs1-stats_none-state_ckpt"]
    assert case["result"]["model_state"]["sha256"] == modelstate.file_sha256(ckpt)
    assert case["identity"]["weights"] == modelstate.file_sha256(ckpt)
    control = cases["lenet_sigmoid-16-bn_eval-bs1-stats_none"]
    assert control["result"]["model_state"]["state"] == "random", "the control keeps its own state"


PLUGIN_TEST = '''
from giacheck.specs import AttackSpec, RunOptions


def test_checkpoint(gia):
    gia.regression("tinymod:tiny_cnn-16-bn_train-bs1-stats_none", options=RunOptions(budget=AttackSpec(iterations=5)))
'''


def test_plugin_weights_record_then_a_changed_file_is_stale(pytester: pytest.Pytester, tmp_path: Path) -> None:
    ckpt = _trained_checkpoint(tmp_path / "vendor.safetensors")
    pytester.makepyfile(test_ckpt=PLUGIN_TEST)
    flag = f"--giacheck-weights=tinymod:tiny_cnn={ckpt}"
    pytester.runpytest_subprocess(flag, "--giacheck-update-all", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    (baseline,) = (pytester.path / "baselines").rglob("*.json")
    assert baseline.name == "tinymod:tiny_cnn-16-bn_train-bs1-stats_none-state_ckpt.json"
    recorded = baseline.read_bytes()
    assert json.loads(recorded)["model_state"]["sha256"] == modelstate.file_sha256(ckpt)
    pytester.runpytest_subprocess(flag, "-p", "no:cacheprovider").assert_outcomes(passed=1)
    sha = modelstate.file_sha256(ckpt)
    _tamper(ckpt)
    result = pytester.runpytest_subprocess(flag, "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"stale baseline *: recorded under weights={sha}, this run "
                                 f"weights={modelstate.file_sha256(ckpt)};*"])
    assert baseline.read_bytes() == recorded, "a stale baseline is reported, never rewritten"
    bad = pytester.runpytest_subprocess("--giacheck-weights=tinymod:tiny_cnn", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--giacheck-weights 'tinymod:tiny_cnn': write MODEL=PATH*"])


def test_init_pack_with_weights_records_then_a_changed_file_is_stale(pytester: pytest.Pytester,
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = _trained_checkpoint(pytester.path / "vendor.safetensors")
    monkeypatch.chdir(pytester.path)
    assert main(["init-pack", "privacy", "--model", TINY, "--name", "vendor", "--input-size", "16",
                 "--weights", str(ckpt)]) == 0
    module = (pytester.path / "privacy" / "test_privacy_pack.py").read_text()
    assert re.search(r"weights=Path\(__file__\)\.parent / '\.\./vendor\.safetensors'", module), module
    assert "states=('ckpt',)" in module
    pytester.runpytest_subprocess("privacy", "--giacheck-update-all", "-p", "no:cacheprovider").assert_outcomes(
        passed=2)
    baseline = pytester.path / "privacy" / "baselines" / "smoke" / "vendor" / (
        "vendor-16-bn_train-bs1-stats_none-state_ckpt.json")
    recorded = modelstate.file_sha256(ckpt)
    assert json.loads(baseline.read_text())["model_state"]["sha256"] == recorded
    _tamper(ckpt)
    result = pytester.runpytest_subprocess("privacy", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"stale baseline *{baseline.name}: recorded under weights={recorded}, this run "
                                 f"weights={modelstate.file_sha256(ckpt)};*"])


def test_timm_state_dict_on_disk_loads_into_the_canonical_model(tmp_path: Path) -> None:
    """What a researcher with timm weights on disk does (README): a file with timm's own keys for ``resnet18``
    (here saved from timm at random initialization, standing in for a Hugging Face cache file) starts the
    canonical model; the update then depends on those weights."""
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    case = "resnet18-64-bn_eval-bs1-stats_none"
    options = RunOptions(weights=str(path))
    assert runner.image_signal(case, options=options) != runner.image_signal(case)
    with pytest.raises(Exception, match=r"fc\.weight: file \(1000, 512\) vs model \(10, 512\)"):
        runner.image_signal("resnet18_cifar-32-bn_eval-bs1-stats_none", options=options)


STATE_TEST = '''
from giacheck.specs import AttackSpec, RunOptions

QUICK = RunOptions(budget=AttackSpec(iterations=3))


def test_bn_model(gia):
    gia.regression("tinymod:tiny_cnn-16-bn_eval-bs1-stats_none-state_warm3", options=QUICK)


def test_model_without_batchnorm(gia):
    gia.regression("lenet_sigmoid-16-bn_eval-bs1-stats_none", options=QUICK)
'''


def test_giacheck_state_rejudges_a_suite_in_another_state(pytester: pytest.Pytester) -> None:
    """``--giacheck-state bncal`` runs every case BN-calibrated whatever state its id names, and leaves a model
    without BatchNorm as it is (calibration would not change it); bad values are usage errors."""
    pytester.makepyfile(test_states=STATE_TEST)
    pytester.runpytest_subprocess("--giacheck-state=bncal", "--giacheck-update-all",
                                  "-p", "no:cacheprovider").assert_outcomes(passed=2)
    names = sorted(p.name for p in (pytester.path / "baselines").rglob("*.json"))
    assert names == ["lenet_sigmoid-16-bn_eval-bs1-stats_none.json",
                     "tinymod:tiny_cnn-16-bn_eval-bs1-stats_none-state_bncal.json"]
    for value, message in (("ckpt", "*give the file instead, --giacheck-weights MODEL=PATH*"),
                           ("warm", "*model state 'warm' (valid: random, bncal, warmN*")):
        bad = pytester.runpytest_subprocess(f"--giacheck-state={value}", "-p", "no:cacheprovider")
        assert bad.ret == pytest.ExitCode.USAGE_ERROR
        bad.stderr.fnmatch_lines([message])
