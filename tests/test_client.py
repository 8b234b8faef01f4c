"""Tests of giacheck.client: FedSGD gradient and FedAvg delta against hand-written references, BN bookkeeping."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from giacheck.client import BNStats, bn_modules, simulate_update
from giacheck.models import build
from giacheck.models.registry import mean_cross_entropy
from giacheck.specs import BNMode, ClientSpec, UpdateKind

MODELS = ["resnet18_cifar", "lenet_sigmoid"]
MODES = [BNMode.EVAL, BNMode.TRAIN]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: build(name, 32) for name in MODELS}


def _batch(batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (batch_size,), generator=gen)
    return images, labels


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} changed"


def _assert_close_in_norm(actual: torch.Tensor, expected: torch.Tensor, key: str, rel: float = 1e-4) -> None:
    """Float32 unrolling reorders sums; compare errors to the tensor's norm, not entry by entry."""
    error = torch.linalg.vector_norm(actual.double() - expected.double())
    scale = torch.linalg.vector_norm(expected.double())
    assert error <= rel * scale + 1e-7, f"{key}: |error| {float(error):.3g} vs |expected| {float(scale):.3g}"


def _reference_grads(model: nn.Module, mode: BNMode, images: torch.Tensor, labels: torch.Tensor):
    ref = copy.deepcopy(model)
    ref.train(mode is BNMode.TRAIN)
    params = dict(ref.named_parameters())
    loss = F.cross_entropy(ref(images), labels)  # mean reduction, written out independently of mean_cross_entropy
    grads = torch.autograd.grad(loss, list(params.values()))
    return dict(zip(params, grads, strict=True))


def _reference_fedavg(model: nn.Module, mode: BNMode, images: torch.Tensor, labels: torch.Tensor, steps: int,
                      lr: float) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model)
    ref.train(mode is BNMode.TRAIN)
    old = {n: p.detach().clone() for n, p in ref.named_parameters()}
    opt = torch.optim.SGD(ref.parameters(), lr=lr)  # plain SGD: no momentum, no weight decay
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(ref(images), labels).backward()
        opt.step()
    return {n: p.detach() - old[n] for n, p in ref.named_parameters()}


def test_training_loss_is_mean_cross_entropy() -> None:
    logits = torch.randn(5, 10)
    labels = torch.randint(0, 10, (5,))
    torch.testing.assert_close(mean_cross_entropy(logits, labels), F.cross_entropy(logits, labels, reduction="sum") / 5)


# --- FedSGD -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
def test_fedsgd_equals_hand_computed_gradient(models, name: str, mode: BNMode) -> None:
    model = models[name]
    images, labels = _batch(2)
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=mode, batch_size=2))
    expected = _reference_grads(model, mode, images, labels)
    assert list(update.tensors) == list(expected)
    for key, grad in expected.items():
        torch.testing.assert_close(update.tensors[key], grad, msg=key)
    assert update.kind is UpdateKind.FEDSGD
    assert update.bn_mode is mode
    assert update.batch_size == 2
    assert update.local_steps == 1
    assert update.input_shape == (2, 3, 32, 32)


def test_fedsgd_train_and_eval_differ_on_batchnorm_model(models) -> None:
    images, labels = _batch(2)
    train = simulate_update(models["resnet18_cifar"], images, labels, ClientSpec(bn_mode=BNMode.TRAIN))
    evaluated = simulate_update(models["resnet18_cifar"], images, labels, ClientSpec(bn_mode=BNMode.EVAL))
    assert not torch.allclose(train.tensors["net.fc.weight"], evaluated.tensors["net.fc.weight"])


@pytest.mark.parametrize("name", MODELS)
def test_tensor_keys_are_exactly_the_parameter_names(models, name: str) -> None:
    model = models[name]
    images, labels = _batch(1)
    names = [n for n, _ in model.named_parameters()]
    for spec in (ClientSpec(), ClientSpec(update=UpdateKind.FEDAVG, local_steps=2)):
        update = simulate_update(model, images, labels, spec)
        assert list(update.tensors) == names
        for n, p in model.named_parameters():
            assert update.tensors[n].shape == p.shape
            assert not update.tensors[n].requires_grad


# --- FedAvg -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("steps", [1, 3])
def test_fedavg_equals_hand_unrolled_sgd(models, name: str, mode: BNMode, steps: int) -> None:
    model = models[name]
    images, labels = _batch(2, seed=1)
    lr = 0.05
    spec = ClientSpec(bn_mode=mode, update=UpdateKind.FEDAVG, local_steps=steps, local_lr=lr)
    update = simulate_update(model, images, labels, spec)
    expected = _reference_fedavg(model, mode, images, labels, steps, lr)
    assert list(update.tensors) == list(expected)
    for key, delta in expected.items():
        _assert_close_in_norm(update.tensors[key], delta, key)
    assert update.kind is UpdateKind.FEDAVG
    assert update.local_steps == steps
    assert update.local_lr == lr


def test_fedavg_one_step_is_minus_lr_times_gradient(models) -> None:
    model = models["lenet_sigmoid"]
    images, labels = _batch(3, seed=2)
    lr = 0.1
    grad = simulate_update(model, images, labels, ClientSpec())
    delta = simulate_update(model, images, labels, ClientSpec(update=UpdateKind.FEDAVG, local_steps=1, local_lr=lr))
    for key in grad.tensors:
        torch.testing.assert_close(delta.tensors[key], -lr * grad.tensors[key], rtol=1e-4, atol=1e-7)


# --- BatchNorm running statistics -------------------------------------------------------------------------


def test_train_mode_changes_running_stats(models) -> None:
    images, labels = _batch(2)
    update = simulate_update(models["resnet18_cifar"], images, labels, ClientSpec(bn_mode=BNMode.TRAIN))
    names = list(bn_modules(models["resnet18_cifar"]))
    assert list(update.bn_before) == names == list(update.bn_after)
    for name in names:
        before, after = update.bn_before[name], update.bn_after[name]
        assert after.num_batches_tracked == before.num_batches_tracked + 1
        assert not torch.equal(after.mean, before.mean), name
        assert not torch.equal(after.var, before.var), name


def test_train_mode_fedavg_tracks_one_batch_per_step(models) -> None:
    images, labels = _batch(2)
    spec = ClientSpec(bn_mode=BNMode.TRAIN, update=UpdateKind.FEDAVG, local_steps=3)
    update = simulate_update(models["resnet18_cifar"], images, labels, spec)
    for name, after in update.bn_after.items():
        assert after.num_batches_tracked == update.bn_before[name].num_batches_tracked + 3


@pytest.mark.parametrize("update_kind", list(UpdateKind))
def test_eval_mode_keeps_running_stats(models, update_kind: UpdateKind) -> None:
    images, labels = _batch(2)
    spec = ClientSpec(bn_mode=BNMode.EVAL, update=update_kind, local_steps=2)
    update = simulate_update(models["resnet18_cifar"], images, labels, spec)
    assert update.bn_before  # the model has BatchNorm
    for name, after in update.bn_after.items():
        before = update.bn_before[name]
        assert after.num_batches_tracked == before.num_batches_tracked
        assert torch.equal(after.mean, before.mean)
        assert torch.equal(after.var, before.var)


def test_bn_before_equals_server_running_stats(models) -> None:
    model = models["resnet18_cifar"]
    images, labels = _batch(1)
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=BNMode.TRAIN))
    for name, module in bn_modules(model).items():
        stats = update.bn_before[name]
        assert isinstance(stats, BNStats)
        assert torch.equal(stats.mean, module.running_mean)
        assert torch.equal(stats.var, module.running_var)
        assert stats.num_batches_tracked == int(module.num_batches_tracked)


def test_model_without_batchnorm_records_no_stats(models) -> None:
    images, labels = _batch(1)
    update = simulate_update(models["lenet_sigmoid"], images, labels, ClientSpec(bn_mode=BNMode.TRAIN))
    assert update.bn_before == {} and update.bn_after == {}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("update_kind", list(UpdateKind))
@pytest.mark.parametrize("name", MODELS)
def test_server_model_is_not_modified(models, name: str, mode: BNMode, update_kind: UpdateKind) -> None:
    model = models[name]
    was_training = model.training
    model.train(mode is BNMode.EVAL)  # the opposite of the client's mode: the client must not flip it
    try:
        state = _state(model)
        images, labels = _batch(2)
        simulate_update(model, images, labels, ClientSpec(bn_mode=mode, update=update_kind, local_steps=2))
        _assert_same_state(state, _state(model))
        assert model.training == (mode is BNMode.EVAL)
        assert all(p.grad is None for p in model.parameters())
        assert all(p.requires_grad for p in model.parameters())
    finally:
        model.train(was_training)


def test_momentum_is_read_from_each_module() -> None:
    model = build("resnet18_cifar", 32)
    bns = bn_modules(model)
    names = list(bns)
    first, second = names[0], names[-1]
    bns[first].momentum = 0.03
    bns[second].momentum = None
    images, labels = _batch(2)
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=BNMode.TRAIN))
    assert update.bn_before[first].momentum == 0.03
    assert update.bn_after[first].momentum == 0.03
    assert update.bn_before[second].momentum is None
    assert update.bn_after[second].momentum is None
    for name in names[1:-1]:
        assert update.bn_before[name].momentum == bns[name].momentum == 0.1
    # and each module's momentum really drove its update: mu_new = (1-m) mu_old + m mu_B (None: m = 1/tracked)
    inputs = _bn_inputs(model, images, [first, second])
    for name, m in ((first, 0.03), (second, 1.0 / update.bn_after[second].num_batches_tracked)):
        batch_mean = inputs[name].mean(dim=(0, 2, 3))
        expected = (1 - m) * update.bn_before[name].mean + m * batch_mean
        torch.testing.assert_close(update.bn_after[name].mean, expected, rtol=1e-4, atol=1e-6)


def _bn_inputs(model: nn.Module, images: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    ref = copy.deepcopy(model).train()
    modules = dict(ref.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_pre_hook(lambda m, args, n=n: seen.__setitem__(n, args[0].detach()))
               for n in names]
    with torch.no_grad():
        ref(images)
    for h in handles:
        h.remove()
    return seen
