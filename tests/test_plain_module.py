"""Tests of model factories that return a plain ``torch.nn.Module`` (giacheck.models.factories): the entry built
from the module and the flags, the calling convention, missing flags named, wrong normalization claims refused,
and ``giacheck audit`` / ``init-pack`` end to end on such a factory."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from giacheck import specs
from giacheck.cli import main
from giacheck.errors import InvalidCaseError, UnknownModelError
from giacheck.models import build, get_entry, register_alias, registry
from giacheck.models.entry import IMAGENET_MEAN, IMAGENET_STD
from giacheck.pack import Pack

# A vendor's module: factories returning plain modules (the common case) and entries with wrong claims.
PLAINMOD = '''
from torch import nn

from giacheck.models import ModelEntry

CALLS = []


def build():
    """A BatchNorm CNN for 10 classes, any input size: what a vendor has."""
    CALLS.append(())
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def build_sized(input_size, num_classes):
    CALLS.append((input_size, num_classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * input_size * input_size, num_classes))


def build_layernorm(num_classes, resolution=32):
    CALLS.append((resolution, num_classes))
    return nn.Sequential(nn.Flatten(), nn.LayerNorm(3 * resolution * resolution),
                         nn.Linear(3 * resolution * resolution, num_classes))


def build_with_depth(depth):
    return build()


def returns_a_string():
    return "resnet"


def claims_no_batchnorm():
    return ModelEntry(name="claims_no_bn", upstream="test", factory=lambda r, c: build(), default_size=16,
                      num_classes=10)


def claims_batchnorm():
    return ModelEntry(name="claims_bn", upstream="test", factory=build_sized, default_size=16, num_classes=10,
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True)
'''

SPEC = "plainmod:build"


@pytest.fixture(autouse=True)
def plainmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``plainmod`` importable (fresh each test), one torch thread, and aliases a test registers forgotten."""
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "plainmod.py").write_text(PLAINMOD)
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.delitem(sys.modules, "plainmod", raising=False)
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield importlib.import_module("plainmod")
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------- the entry
def test_entry_from_a_plain_module(plainmod: object) -> None:
    entry = get_entry(SPEC, default_size=16, num_classes=10)
    assert (entry.name, entry.upstream, entry.default_size, entry.num_classes) == (SPEC, SPEC, 16, 10)
    assert entry.has_batchnorm and entry.norm_kinds == ("BatchNorm2d",) and entry.task == "classification"
    assert (entry.mean, entry.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert "plain torch.nn.Module Sequential" in entry.description and "ImageNet" in entry.description
    given = get_entry(SPEC, default_size=16, num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert given.mean == (0.5, 0.5, 0.5) and given.std == (0.25, 0.25, 0.25)
    assert "mean as given, std as given" in given.description
    assert plainmod.CALLS == [()], "the module is read once per factory and arguments (cached), no matter the mean"


def test_reading_the_entry_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    get_entry(SPEC, default_size=16, num_classes=10)
    assert torch.equal(torch.rand(3), expected)


def test_build_through_an_alias_is_seeded_like_the_factory(plainmod: object) -> None:
    register_alias("plain_cnn", SPEC, default_size=16, num_classes=10)
    model = build("plain_cnn", 16, seed=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = plainmod.build()
    for (name, got), want in zip(model.net.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(got, want), name
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize(("factory", "norm_kinds"), [("build_sized", ()), ("build_layernorm", ("LayerNorm",))])
def test_factory_gets_the_size_and_classes_its_signature_names(factory: str, norm_kinds: tuple[str, ...],
                                                               plainmod: object) -> None:
    entry = get_entry(f"plainmod:{factory}", default_size=8, num_classes=4)
    assert entry.norm_kinds == norm_kinds and not entry.has_batchnorm
    plainmod.CALLS.clear()
    alias = register_alias(f"plain_{factory}", f"plainmod:{factory}", default_size=8, num_classes=4)
    model = build(alias, 12, num_classes=3)
    assert plainmod.CALLS[-1] == (12, 3), "build passes the case's resolution and classes"
    assert model(torch.rand(1, 3, 12, 12)).shape == (1, 3)


def test_register_alias_of_a_callable_returning_a_module(plainmod: object) -> None:
    name = register_alias("plain_callable", plainmod.build_sized, default_size=8, num_classes=5)
    entry = get_entry(name)
    assert entry.name == "plain_callable" and entry.num_classes == 5 and entry.upstream == "plainmod:build_sized"


# --------------------------------------------------------------------------------------- refused, with why
@pytest.mark.parametrize(("overrides", "missing"), [
    ({"num_classes": 10}, "--input-size"),
    ({"default_size": 16}, "--num-classes"),
    ({}, "--input-size (Pack input_size) and --num-classes"),
])
def test_plain_module_without_size_or_classes_names_the_flag(overrides: dict[str, int], missing: str) -> None:
    with pytest.raises(InvalidCaseError, match=r"plain torch\.nn\.Module") as info:
        get_entry(SPEC, **overrides)
    assert f"missing {missing}" in str(info.value) and "'plainmod:build'" in str(info.value)


def test_required_parameter_without_its_flag_is_named() -> None:
    with pytest.raises(InvalidCaseError, match=r"'plainmod:build_layernorm' needs --num-classes"):
        get_entry("plainmod:build_layernorm", default_size=8)


@pytest.mark.parametrize(("factory", "error", "expected"), [
    ("build_with_depth", UnknownModelError, "required parameter(s) depth"),
    ("returns_a_string", UnknownModelError, "returned str, expected a giacheck.models.ModelEntry or a torch.nn.Module"),
])
def test_factory_outside_the_convention(factory: str, error: type[Exception], expected: str) -> None:
    with pytest.raises(error) as info:
        get_entry(f"plainmod:{factory}", default_size=8, num_classes=4)
    assert expected in str(info.value)


@pytest.mark.parametrize(("spec", "overrides", "expected"), [
    ("plainmod:claims_no_batchnorm", {}, "claims has_batchnorm=False, but the module it builds (Sequential) has "
                                         "normalization layers ['BatchNorm2d']; set has_batchnorm=True"),
    ("plainmod:claims_batchnorm", {}, "claims has_batchnorm=True, but the module it builds (Sequential) has no "
                                      "BatchNorm or LayerNorm layer; set has_batchnorm=False"),
    (SPEC, {"default_size": 16, "num_classes": 10, "has_batchnorm": False}, "claims has_batchnorm=False"),
    ("plainmod:build_sized", {"default_size": 8, "num_classes": 4, "norm_kinds": ("LayerNorm",)},
     "claims norm_kinds=['LayerNorm'], but the module it builds (Sequential) has no BatchNorm or LayerNorm layer"),
])
def test_wrong_normalization_claim_is_refused_at_entry_time(spec: str, overrides: dict[str, object],
                                                            expected: str) -> None:
    with pytest.raises(InvalidCaseError) as info:
        get_entry(spec, **overrides)
    assert f"model {spec!r}" in str(info.value) and expected in str(info.value)


def test_wrong_claim_of_a_registered_model_is_refused_at_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    lenet = registry._REGISTRY["lenet_sigmoid"]
    monkeypatch.setitem(registry._REGISTRY, "lenet_sigmoid",
                        lambda: dataclasses.replace(lenet(), has_batchnorm=True, norm_kinds=("BatchNorm2d",)))
    with pytest.raises(InvalidCaseError, match="'lenet_sigmoid' claims has_batchnorm=True, but the module it builds "
                                               r"\(SigmoidLeNet\) has no BatchNorm"):
        build("lenet_sigmoid", 32)


# ------------------------------------------------------------------------------------------------ the CLI
def test_audit_of_a_plain_module_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A tiny budget (3 iterations): the control cannot reconstruct, so the audit is inconclusive (exit 3)."""
    smoke = specs.PROFILES["smoke"]
    monkeypatch.setitem(specs.PROFILES, "smoke",
                        dataclasses.replace(smoke, attack=dataclasses.replace(smoke.attack, iterations=3)))
    out = tmp_path / "audit"
    code = main(["audit", "--model", SPEC, "--name", "plain_cnn", "--input-size", "16", "--num-classes", "10",
                 "--batch-sizes", "1", "--bn", "eval", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.25,0.5",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    cases = json.loads((out / "results.json").read_text())["cases"]
    assert [c["case_id"] for c in cases] == ["lenet_sigmoid-16-bn_eval-bs1-stats_none",
                                             "plain_cnn-16-bn_eval-bs1-stats_none"]
    assert all(c["result"]["iterations"] == 3 for c in cases)
    entry = get_entry("plain_cnn")
    assert entry.mean == (0.5, 0.5, 0.5) and entry.std == (0.5, 0.25, 0.5) and entry.has_batchnorm


def test_audit_of_a_plain_module_without_input_size(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("giacheck.runner.run_case", lambda *a, **k: pytest.fail("computed on bad input"))
    out = tmp_path / "audit"
    assert main(["audit", "--model", SPEC, "--num-classes", "10", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("giacheck: error: ") and "missing --input-size" in err and "--num-classes" not in \
        err.split("missing ")[1].split("(or")[0]
    assert not out.exists()


@pytest.mark.parametrize(("flags", "expected"), [
    (["--mean", "0.5,0.5"], "--mean '0.5,0.5': give three comma-separated numbers"),
    (["--std", "a,b,c"], "--std 'a,b,c': give three comma-separated numbers"),
    (["--std", "0.5,0,0.5"], "std=(0.5, 0.0, 0.5)"),
])
def test_bad_mean_or_std_flags(flags: list[str], expected: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pack"
    assert main(["init-pack", str(folder), "--model", SPEC, "--input-size", "16", "--num-classes", "10",
                 *flags]) == 2
    assert expected in capsys.readouterr().err
    assert not folder.exists()


def test_init_pack_of_a_plain_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "pack"
    assert main(["init-pack", str(folder), "--model", SPEC, "--name", "plain_pack", "--input-size", "16",
                 "--num-classes", "10", "--bn", "train,eval", "--mean", "0.5,0.5,0.5", "--std", "0.2,0.2,0.2"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "baselines", "test_privacy_pack.py"]
    spec = importlib.util.spec_from_file_location("plain_pack_module", folder / "test_privacy_pack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pack: Pack = module.PACK
    assert (pack.model, pack.input_size, pack.num_classes) == (SPEC, 16, 10)
    assert pack.mean == (0.5, 0.5, 0.5) and pack.std == (0.2, 0.2, 0.2)
    assert pack.case_ids() == ["plain_pack-16-bn_train-bs1-stats_none", "plain_pack-16-bn_eval-bs1-stats_none"]
    assert "plain_pack-16-bn_train-bs1-stats_none" in (folder / "README.md").read_text()
