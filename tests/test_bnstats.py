"""Tests of giacheck.attack.bnstats: exact inversion of the running-stat update (property), n = B·H·W, the
recorder, the naive target and the prior."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from giacheck.attack.bnstats import (
    NormStatsRecorder,
    NormTarget,
    elements_per_channel,
    infer_batch_stats,
    naive_stats,
    norm_modules,
    stats_prior,
)
from giacheck.client import BNStats, bn_modules, simulate_update
from giacheck.errors import InvalidUpdateError
from giacheck.models import build
from giacheck.specs import BNMode, ClientSpec, StatsAccess, UpdateKind

FAST = settings(max_examples=60, deadline=None)

momenta = st.one_of(st.none(), st.floats(0.01, 1.0, exclude_min=False, allow_nan=False))


def _snapshot(module: nn.modules.batchnorm._BatchNorm) -> BNStats:
    return BNStats(
        mean=module.running_mean.detach().clone(),
        var=module.running_var.detach().clone(),
        num_batches_tracked=int(module.num_batches_tracked),
        momentum=module.momentum,
    )


def _prepare(bn: nn.modules.batchnorm._BatchNorm, gen: torch.Generator, earlier: int, shape: tuple[int, ...]) -> None:
    """Random running statistics, then ``earlier`` tracked batches (what a cumulative average depends on)."""
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen, dtype=torch.float64) * 2)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen, dtype=torch.float64) * 3 + 0.1)
    bn.train()
    for _ in range(earlier):
        bn(torch.randn(shape, generator=gen, dtype=torch.float64) * 3 + 1)


def _check_inversion(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, dims: tuple[int, ...]) -> None:
    n = x.numel() // x.shape[1]
    before = {"bn": _snapshot(bn)}
    bn.train()
    bn(x)
    after = {"bn": _snapshot(bn)}
    target = infer_batch_stats(before, after, {"bn": n})
    assert target.source is StatsAccess.EXACT
    torch.testing.assert_close(target.mean["bn"], x.mean(dims), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(target.var["bn"], x.var(dims, unbiased=False), rtol=1e-5, atol=1e-5)


# --- exact inversion --------------------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 4), c=st.integers(1, 8), h=st.integers(1, 6), w=st.integers(1, 6),
    momentum=momenta, earlier=st.integers(0, 4), seed=st.integers(0, 2**31 - 1),
)
def test_infer_batch_stats_inverts_batchnorm2d(n: int, c: int, h: int, w: int, momentum: float | None,
                                               earlier: int, seed: int) -> None:
    assume(n * h * w >= 2)
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, momentum=momentum).double()
    _prepare(bn, gen, earlier, (n, c, h, w))
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * 2 - 0.5
    _check_inversion(bn, x, (0, 2, 3))


@FAST
@given(n=st.integers(2, 6), c=st.integers(1, 8), length=st.one_of(st.none(), st.integers(1, 5)),
       momentum=momenta, earlier=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_infer_batch_stats_inverts_batchnorm1d(n: int, c: int, length: int | None, momentum: float | None,
                                               earlier: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = (n, c) if length is None else (n, c, length)
    bn = nn.BatchNorm1d(c, momentum=momentum).double()
    _prepare(bn, gen, earlier, shape)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) + 0.3
    _check_inversion(bn, x, (0,) if length is None else (0, 2))


def test_variance_correction_uses_elements_per_channel_not_batch_size() -> None:
    gen = torch.Generator().manual_seed(0)
    bn = nn.BatchNorm2d(3).double()
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    before = {"bn": _snapshot(bn)}
    bn.train()(x)
    after = {"bn": _snapshot(bn)}
    right = infer_batch_stats(before, after, {"bn": 2 * 4 * 4}).var["bn"]
    wrong = infer_batch_stats(before, after, {"bn": 2}).var["bn"]  # the prior-code trap: n = number of images
    torch.testing.assert_close(right, x.var((0, 2, 3), unbiased=False))
    assert not torch.allclose(wrong, right)


def test_two_steps_between_snapshots_are_refused() -> None:
    bn = nn.BatchNorm2d(4).double().train()
    before = {"bn": _snapshot(bn)}
    bn(torch.randn(2, 4, 3, 3, dtype=torch.float64))
    bn(torch.randn(2, 4, 3, 3, dtype=torch.float64))
    after = {"bn": _snapshot(bn)}
    with pytest.raises(InvalidUpdateError, match="exactly one local step") as info:
        infer_batch_stats(before, after, {"bn": 18})
    assert "'bn'" in str(info.value) and "2 batches" in str(info.value)


def test_zero_steps_are_refused() -> None:
    bn = nn.BatchNorm2d(4).double().eval()
    stats = {"bn": _snapshot(bn)}
    with pytest.raises(InvalidUpdateError, match="exactly one local step"):
        infer_batch_stats(stats, stats, {"bn": 18})


def test_fedavg_client_update_is_refused() -> None:
    model = build("lenet_sigmoid", 32)
    model.net.body.insert(1, nn.BatchNorm2d(12))  # a BN model small enough to train fast
    spec = ClientSpec(bn_mode=BNMode.TRAIN, update=UpdateKind.FEDAVG, local_steps=2)
    update = simulate_update(model, torch.rand(2, 3, 32, 32), torch.tensor([1, 2]), spec)
    with pytest.raises(InvalidUpdateError, match="exactly one local step"):
        infer_batch_stats(update.bn_before, update.bn_after, {"net.body.1": 2 * 16 * 16})


def test_zero_momentum_is_refused() -> None:
    bn = nn.BatchNorm2d(2, momentum=0.0).double().train()
    before = {"bn": _snapshot(bn)}
    bn(torch.randn(2, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(InvalidUpdateError, match="momentum"):
        infer_batch_stats(before, {"bn": _snapshot(bn)}, {"bn": 18})


def test_exact_stats_of_a_real_client_update() -> None:
    """End to end on resnet18_cifar, train mode, bs2, float32: the target equals the client's batch statistics."""
    model = build("resnet18_cifar", 32)
    images, labels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([3, 7])
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=BNMode.TRAIN, batch_size=2))
    reference = copy.deepcopy(model).train()
    recorder = NormStatsRecorder(bn_modules(reference))
    with torch.no_grad(), recorder.recording():
        reference(images)
    elements = _elements_by_hand(model, (2, 3, 32, 32))
    target = infer_batch_stats(update.bn_before, update.bn_after, elements)
    assert set(target.mean) == set(bn_modules(model))
    for name in target.mean:
        torch.testing.assert_close(target.mean[name], recorder.mean[name], rtol=1e-3, atol=2e-4, msg=name)
        torch.testing.assert_close(target.var[name], recorder.var[name], rtol=1e-3, atol=2e-4, msg=name)


def _elements_by_hand(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    reference = copy.deepcopy(model).eval()
    found: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            found[name] = args[0].shape[0] * args[0][0, 0].numel()
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in bn_modules(reference).items()]
    with torch.no_grad():
        reference(torch.zeros(input_shape))
    for h in handles:
        h.remove()
    return found


# --- elements per channel ---------------------------------------------------------------------------------

def test_elements_per_channel_resnet18_cifar() -> None:
    model = build("resnet18_cifar", 32).eval()
    names = list(bn_modules(model))
    found = elements_per_channel(model, (2, 3, 32, 32), names)
    assert found == _elements_by_hand(model, (2, 3, 32, 32))
    assert found["net.bn1"] == 2 * 32 * 32
    assert found["net.layer1.1.bn2"] == 2 * 32 * 32
    assert found["net.layer2.0.bn1"] == found["net.layer2.0.downsample.1"] == 2 * 16 * 16
    assert found["net.layer3.1.bn2"] == 2 * 8 * 8
    assert found["net.layer4.1.bn2"] == 2 * 4 * 4


def test_elements_per_channel_leaves_the_model_alone() -> None:
    model = build("resnet18_cifar", 32)  # train mode, as built
    state = {k: v.clone() for k, v in model.state_dict().items()}
    elements_per_channel(model, (1, 3, 32, 32), list(bn_modules(model)))
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"


# --- recorder ---------------------------------------------------------------------------------------------


def test_recorder_batchnorm2d_matches_hand_computed_stats() -> None:
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 3), nn.BatchNorm2d(4))
    x = torch.randn(3, 3, 9, 9, generator=gen)
    recorder = NormStatsRecorder(norm_modules(net))
    assert set(recorder.modules) == {"1", "4"}
    with torch.no_grad(), recorder.recording() as rec:
        net(x)
    assert rec is recorder
    h1 = net[0](x)
    h4 = net[3](net[2](net[1](h1)))
    for name, h in (("1", h1), ("4", h4)):
        torch.testing.assert_close(recorder.mean[name], h.mean((0, 2, 3)))
        torch.testing.assert_close(recorder.var[name], h.var((0, 2, 3), unbiased=False))


def test_recorder_layernorm_uses_last_dim_as_channel() -> None:
    gen = torch.Generator().manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8))
    x = torch.randn(2, 5, 6, generator=gen)
    recorder = NormStatsRecorder(norm_modules(net))
    with torch.no_grad(), recorder.recording():
        net(x)
    h = net[0](x)
    torch.testing.assert_close(recorder.mean["1"], h.mean((0, 1)))
    torch.testing.assert_close(recorder.var["1"], h.var((0, 1), unbiased=False))
    assert recorder.mean["1"].shape == (8,)


def test_recorder_keeps_first_call_resets_and_removes_hooks() -> None:
    bn = nn.BatchNorm2d(2)
    recorder = NormStatsRecorder({"bn": bn})
    first, second = torch.randn(2, 2, 3, 3), torch.randn(2, 2, 3, 3) + 5
    with recorder.recording():
        bn(first)
        bn(second)  # FedAvg unrolling: only the first local step's statistics count
    torch.testing.assert_close(recorder.mean["bn"], first.mean((0, 2, 3)))
    assert not bn._forward_pre_hooks
    with recorder.recording():
        bn(second)
    torch.testing.assert_close(recorder.mean["bn"], second.mean((0, 2, 3)))
    bn(first)  # outside the context: not recorded
    torch.testing.assert_close(recorder.mean["bn"], second.mean((0, 2, 3)))


def test_recorder_is_differentiable() -> None:
    bn = nn.BatchNorm2d(2)
    x = torch.randn(2, 2, 3, 3, requires_grad=True)
    recorder = NormStatsRecorder({"bn": bn})
    with recorder.recording():
        bn(x)
    (g,) = torch.autograd.grad(recorder.var["bn"].sum() + recorder.mean["bn"].sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_norm_modules_finds_batchnorm_and_layernorm() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.LayerNorm(4), nn.BatchNorm1d(4))
    assert list(norm_modules(net)) == ["1", "3", "4"]
    model = build("resnet18_cifar", 32)
    assert list(norm_modules(model)) == list(bn_modules(model))


# --- naive target and prior -------------------------------------------------------------------------------


def test_naive_stats_are_the_shared_running_stats() -> None:
    stats = {"a": BNStats(mean=torch.ones(3), var=torch.full((3,), 2.0), num_batches_tracked=4, momentum=0.1)}
    target = naive_stats(stats)
    assert target.source is StatsAccess.NAIVE
    assert torch.equal(target.mean["a"], torch.ones(3)) and torch.equal(target.var["a"], torch.full((3,), 2.0))


def _target(seed: int, sizes: tuple[int, ...]) -> NormTarget:
    """Random per-layer targets, with means bounded away from 0 (the relative prior's 1e-8 guard is absolute)."""
    gen = torch.Generator().manual_seed(seed)

    def mean(c: int) -> torch.Tensor:
        sign = torch.randint(0, 2, (c,), generator=gen) * 2 - 1
        return sign * (torch.rand(c, generator=gen, dtype=torch.float64) * 2 + 0.5)

    return NormTarget(
        mean={f"l{i}": mean(c) for i, c in enumerate(sizes)},
        var={f"l{i}": torch.rand(c, generator=gen, dtype=torch.float64) + 0.1 for i, c in enumerate(sizes)},
        source=StatsAccess.EXACT,
    )


@pytest.mark.parametrize("kind", ["raw", "relative"])
def test_stats_prior_is_zero_at_the_target(kind: str) -> None:
    target = _target(0, (3, 5, 2))
    assert float(stats_prior(target.mean, target.var, target, kind)) == 0.0


@FAST
@given(seed=st.integers(0, 2**31 - 1), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
       scale=st.floats(1e-2, 1e3), kind=st.sampled_from(["raw", "relative"]))
def test_stats_prior_positive_and_relative_scale_invariant(seed: int, sizes: list[int], scale: float,
                                                           kind: str) -> None:
    target = _target(seed, tuple(sizes))
    recorded = _target(seed + 1, tuple(sizes))
    value = stats_prior(recorded.mean, recorded.var, target, kind)
    assert value > 0
    if kind == "relative":
        scaled_target = NormTarget(mean={k: v * scale for k, v in target.mean.items()},
                                   var={k: v * scale for k, v in target.var.items()}, source=target.source)
        scaled = stats_prior({k: v * scale for k, v in recorded.mean.items()},
                             {k: v * scale for k, v in recorded.var.items()}, scaled_target, kind)
        torch.testing.assert_close(scaled, value, rtol=1e-5, atol=0.0)


def test_stats_prior_formulas() -> None:
    target = _target(0, (3, 4))
    recorded = _target(1, (3, 4))
    diffs = [
        (torch.linalg.vector_norm(recorded.mean[k] - target.mean[k]),
         torch.linalg.vector_norm(recorded.var[k] - target.var[k]),
         torch.linalg.vector_norm(target.mean[k]), torch.linalg.vector_norm(target.var[k]))
        for k in target.mean
    ]
    raw = sum(dm + dv for dm, dv, _, _ in diffs)
    relative = sum(dm / tm + dv / tv for dm, dv, tm, tv in diffs) / len(diffs)
    torch.testing.assert_close(stats_prior(recorded.mean, recorded.var, target, "raw"), raw)
    torch.testing.assert_close(stats_prior(recorded.mean, recorded.var, target, "relative"), relative)
