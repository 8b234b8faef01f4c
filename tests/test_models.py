"""Tests of giacheck.models: the registry is the test matrix; lookup errors; vendor factories; CIFAR ResNets."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from giacheck.errors import GiacheckError, InvalidCaseError, UnknownModelError
from giacheck.models import ModelEntry, NormalizedModel, build, get_entry, list_models, register_model, registry

VENDOR_MODULE = "giacheck_test_vendor_models"

VENDOR_SOURCE = '''
"""A vendor's own model, named by 'module:function' (written by tests/test_models.py)."""

from torch import nn

from giacheck.models import ModelEntry


class DropoutNet(nn.Module):
    def __init__(self, resolution, num_classes):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * resolution * resolution, num_classes)

    def forward(self, x):
        return self.fc(self.drop(x.flatten(1)))


def vendor_net(**overrides):
    """A linear classifier behind a dropout layer."""
    return ModelEntry(name="vendor_net", upstream="tests", factory=DropoutNet, default_size=8, num_classes=3,
                      mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125), **overrides)


def returns_a_dict(**overrides):
    """Not a ModelEntry."""
    return {"name": "oops"}


NOT_CALLABLE = 3
'''


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails loudly: models must build offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted during a model build")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def vendor_module(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway importable module holding model factories, removed from ``sys.modules`` afterwards."""
    (tmp_path / f"{VENDOR_MODULE}.py").write_text(textwrap.dedent(VENDOR_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield VENDOR_MODULE
    sys.modules.pop(VENDOR_MODULE, None)


def _tensors(out: object) -> list[torch.Tensor]:
    """Every tensor in a model output (detection heads return nested lists/tuples/dicts)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []


# ------------------------------------------------------------------------------------------------- the registry
def test_registry_is_not_empty_and_sorted() -> None:
    names = list_models()
    assert {"lenet_sigmoid", "resnet18_cifar", "resnet18_preact_cifar"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", list_models())
def test_registered_model_builds_offline_and_runs(name: str, no_network: None) -> None:
    """Built once per model (the zoo is large): offline build, eval forward, dropout/drop-path off."""
    entry = get_entry(name)
    assert entry.name == name, "the registry key is the entry's name"
    assert entry.check_resolution(entry.default_size) is None
    assert len(entry.mean) == len(entry.std) == 3
    model = build(name, entry.default_size)
    assert isinstance(model, NormalizedModel)
    x = torch.rand(2, 3, entry.default_size, entry.default_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.eval()(x)
    if entry.task == "classification":
        assert out.shape == (2, entry.num_classes)
    assert all(torch.isfinite(t).all() for t in _tensors(out))

    for module_name, module in model.named_modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            assert module.p == 0.0, module_name
        if type(module).__name__ == "DropPath":
            assert module.drop_prob == 0.0, module_name
        assert getattr(module, "drop_rate", 0.0) in (0, 0.0, None), f"{module_name}.drop_rate"
    model.train()  # a train-mode forward is deterministic once stochastic layers are off
    with torch.no_grad():
        first, second = _tensors(model(x)), _tensors(model(x))
    assert first and len(first) == len(second)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", list_models())
def test_registered_function_has_a_one_line_docstring(name: str) -> None:
    doc = registry._REGISTRY[name].__doc__
    assert doc and doc.strip() and "\n" not in doc.strip()


def test_build_is_seeded() -> None:
    a, b, c = build("lenet_sigmoid", 32, seed=3), build("lenet_sigmoid", 32, seed=3), build("lenet_sigmoid", 32, seed=4)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build("lenet_sigmoid", 32, seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_build_num_classes() -> None:
    model = build("lenet_sigmoid", 32, num_classes=5)
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5)


# ----------------------------------------------------------------------------------------------- unknown names
def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_entry("resnet18_cifr")
    assert isinstance(info.value, GiacheckError)
    message = str(info.value)
    assert "'resnet18_cifr'" in message
    assert "Did you mean: " in message
    assert "resnet18_cifar" in message.split("Did you mean: ")[1].split("?")[0]
    assert "package.module:function" in message  # says how to fix it


def test_unknown_name_message_is_not_keyerror_quoted() -> None:
    with pytest.raises(UnknownModelError) as info:
        build("nonexistent_model_xyz", 32)
    assert not str(info.value).startswith('"')


# ---------------------------------------------------------------------------------------------- registration
def test_duplicate_registration_raises() -> None:
    def giacheck_throwaway_model() -> ModelEntry:
        """Throwaway."""
        return get_entry("lenet_sigmoid")

    try:
        assert register_model(giacheck_throwaway_model) is giacheck_throwaway_model
        assert "giacheck_throwaway_model" in list_models()
        with pytest.raises(ValueError, match="already registered"):
            register_model(giacheck_throwaway_model)
    finally:
        registry._REGISTRY.pop("giacheck_throwaway_model", None)
    assert "giacheck_throwaway_model" not in list_models()


def test_duplicate_of_a_builtin_name_raises_and_keeps_the_original() -> None:
    list_models()  # built-ins registered
    original = registry._REGISTRY["lenet_sigmoid"]

    def lenet_sigmoid() -> ModelEntry:
        """Impostor."""
        raise AssertionError("impostor called")

    try:
        with pytest.raises(ValueError, match="lenet_sigmoid"):
            register_model(lenet_sigmoid)
        assert registry._REGISTRY["lenet_sigmoid"] is original
    finally:
        registry._REGISTRY["lenet_sigmoid"] = original


def test_overrides_of_unset_fields() -> None:
    assert get_entry("lenet_sigmoid", sizes=(32,)).check_resolution(36) is not None


def test_overrides_of_fields_the_entry_sets() -> None:
    assert get_entry("lenet_sigmoid", num_classes=100).num_classes == 100


# ------------------------------------------------------------------------------------ 'package.module:function'
def test_module_function_entry_builds_and_runs(vendor_module: str) -> None:
    spec = f"{vendor_module}:vendor_net"
    entry = get_entry(spec)
    assert entry.name == "vendor_net" and entry.num_classes == 3
    model = build(spec, 8)
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)
    drop = model.net.drop
    assert drop.p == 0.0  # build switches the vendor's dropout off too
    model.train()
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model(x), model(x))


def test_module_function_missing_module() -> None:
    with pytest.raises(UnknownModelError, match="cannot import module 'giacheck_no_such_module'"):
        get_entry("giacheck_no_such_module:anything")


def test_module_function_missing_function(vendor_module: str) -> None:
    with pytest.raises(UnknownModelError, match="has no 'nope'"):
        get_entry(f"{vendor_module}:nope")


def test_module_function_not_callable(vendor_module: str) -> None:
    with pytest.raises(UnknownModelError, match="has no callable 'NOT_CALLABLE'"):
        get_entry(f"{vendor_module}:NOT_CALLABLE")


def test_module_function_returning_something_else(vendor_module: str) -> None:
    with pytest.raises(UnknownModelError,
                       match=r"returned dict, expected a giacheck\.models\.ModelEntry or a torch\.nn\.Module"):
        get_entry(f"{vendor_module}:returns_a_dict")


# ---------------------------------------------------------------------------------------------- resolutions
def test_check_resolution_rejects_non_multiple() -> None:
    entry = get_entry("lenet_sigmoid")
    problem = entry.check_resolution(30)
    assert problem is not None
    assert "lenet_sigmoid" in problem and "multiple of 4" in problem and "30" in problem
    assert entry.check_resolution(32) is None
    assert entry.check_resolution(36) is None


def test_check_resolution_rejects_too_small() -> None:
    problem = get_entry("lenet_sigmoid").check_resolution(4)
    assert problem is not None and ">= 8" in problem


def test_check_resolution_fixed_sizes() -> None:
    entry = get_entry("lenet_sigmoid", sizes=(32, 64))
    assert entry.check_resolution(64) is None
    problem = entry.check_resolution(48)
    assert problem is not None and "[32, 64]" in problem and "48" in problem


def test_build_rejects_bad_resolution() -> None:
    with pytest.raises(InvalidCaseError, match="multiple of 4"):
        build("lenet_sigmoid", 30)


# ------------------------------------------------------------------------------------------------ CIFAR ResNets
@pytest.fixture(scope="module")
def resnet18_cifar() -> NormalizedModel:
    return build("resnet18_cifar", 32)


@pytest.fixture(scope="module")
def resnet18_preact_cifar() -> NormalizedModel:
    return build("resnet18_preact_cifar", 32)


def test_resnet18_cifar_last_bn_of_each_block_is_not_zero(resnet18_cifar: NormalizedModel) -> None:
    """``zero_init_last=False``: timm zeros ``bn2.weight`` of every BasicBlock by default."""
    last = {n: p for n, p in resnet18_cifar.named_parameters()
            if n.startswith("net.layer") and n.endswith("bn2.weight")}
    assert len(last) == 8  # 4 stages x 2 BasicBlocks
    for name, weight in last.items():
        assert bool((weight != 0).all()), name


def test_resnet18_preact_cifar_last_conv_of_each_block_is_not_zero(resnet18_preact_cifar: NormalizedModel) -> None:
    """timm's pre-activation basic block zero-initializes ``conv2.weight`` instead (``zero_init_last``)."""
    last = {n: p for n, p in resnet18_preact_cifar.named_parameters()
            if n.startswith("net.stages.") and n.endswith("conv2.weight")}
    assert len(last) == 8
    for name, weight in last.items():
        assert float(weight.detach().abs().sum()) > 0, name


def _assert_cifar_stem(conv: nn.Module, pool: nn.Module, model: nn.Module) -> None:
    assert isinstance(conv, nn.Conv2d)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.in_channels == 3
    assert isinstance(pool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet18_cifar_stem(resnet18_cifar: NormalizedModel) -> None:
    _assert_cifar_stem(resnet18_cifar.net.conv1, resnet18_cifar.net.maxpool, resnet18_cifar)


def test_resnet18_preact_cifar_stem(resnet18_preact_cifar: NormalizedModel) -> None:
    _assert_cifar_stem(resnet18_preact_cifar.net.stem.conv, resnet18_preact_cifar.net.stem.pool,
                       resnet18_preact_cifar)


def test_resnet18_cifar_keeps_full_resolution_in_first_stage(resnet18_cifar: NormalizedModel) -> None:
    shapes = {}

    def record(module: nn.Module, args: object, out: torch.Tensor) -> None:
        shapes["layer1"] = out.shape

    handle = resnet18_cifar.net.layer1.register_forward_hook(record)
    try:
        with torch.no_grad():
            resnet18_cifar.eval()(torch.rand(1, 3, 32, 32))
    finally:
        handle.remove()
    assert shapes["layer1"][-2:] == (32, 32)


def test_resnet_entries_declare_batchnorm() -> None:
    for name in ("resnet18_cifar", "resnet18_preact_cifar"):
        entry = get_entry(name)
        assert entry.has_batchnorm and "BatchNorm2d" in entry.norm_kinds
    lenet = get_entry("lenet_sigmoid")
    assert not lenet.has_batchnorm and lenet.norm_kinds == ()


# --------------------------------------------------------------------------------------------- NormalizedModel
def test_normalized_model_uses_entry_mean_and_std(vendor_module: str) -> None:
    entry = get_entry(f"{vendor_module}:vendor_net")
    wrapped = NormalizedModel(nn.Identity(), entry)
    x = torch.rand(2, 3, 4, 4)
    out = wrapped(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, c] - entry.mean[c]) / entry.std[c])


def test_normalized_model_built_from_registry(resnet18_cifar: NormalizedModel) -> None:
    entry = get_entry("resnet18_cifar")
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor(entry.mean).view(1, 3, 1, 1)
    std = torch.tensor(entry.std).view(1, 3, 1, 1)
    resnet18_cifar.eval()
    with torch.no_grad():
        torch.testing.assert_close(resnet18_cifar(x), resnet18_cifar.net((x - mean) / std))
    assert "mean" not in resnet18_cifar.state_dict() and "std" not in resnet18_cifar.state_dict()
