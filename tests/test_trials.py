"""Stacked trials (``giacheck.attack.trials`` / ``pertrial``): K attacks as one forward and one double backward give
exactly what K separate attacks give — in float64 to 1e-10 for every model family — and fall back to one attack
after another, saying why, wherever the math does not allow stacking."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from giacheck.attack import Trial, invert_trials
from giacheck.attack.bnstats import NormStatsRecorder, NormTarget, norm_modules
from giacheck.attack.objective import Replica
from giacheck.attack.trials import CPU_STACK_ELEMENTS, StackedReplica, largest_activation, stacking_refusal
from giacheck.client import simulate_update
from giacheck.models import build
from giacheck.specs import AttackSpec, BNMode, ClientSpec, StatsAccess, UpdateKind

K = 3


def _trials(name: str, mode: BNMode, batch: int, dtype=torch.float64, **client):
    """A model and K clients with their own random images and labels (each trial its own update)."""
    model = build(name, 32).to(dtype)
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(K, batch, 3, 32, 32, generator=gen, dtype=dtype)
    labels = [torch.randint(0, 10, (batch,), generator=gen) for _ in range(K)]
    spec = ClientSpec(bn_mode=mode, batch_size=batch, **client)
    updates = [simulate_update(model, images[i], labels[i], spec) for i in range(K)]
    return model, updates, labels, images


def _looped(model, updates, labels, stats, spec, x):
    """Each trial on its own replica (the sequential path): objective and its gradient in x."""
    values, grads = [], []
    for i, update in enumerate(updates):
        objective = Replica(model, update, labels[i]).objective(spec, stats[i], functional=False)
        xi = x[i].detach().clone().requires_grad_(True)
        total, _ = objective(xi)
        values.append(total.detach())
        grads.append(torch.autograd.grad(total, xi)[0])
    return torch.stack(values), torch.stack(grads)


def _stacked(model, updates, labels, stats, spec, x):
    replica = StackedReplica(model, updates, labels, stats)
    assert replica._check() is None
    x = x.detach().clone().requires_grad_(True)
    total, _ = replica.objective(spec)(x)
    return total.detach(), torch.autograd.grad(total.sum(), x)[0]


FAMILIES = [
    ("lenet_sigmoid", BNMode.EVAL, 1),
    ("resnet18_cifar", BNMode.EVAL, 1),
    ("resnet18_cifar", BNMode.TRAIN, 2),  # ghost batches: each trial normalized by its own batch
    ("resnet18_preact_cifar", BNMode.TRAIN, 2),  # timm's BatchNormAct2d
    ("resnet18_gn_cifar", BNMode.EVAL, 1),
    ("swin_t_cifar", BNMode.EVAL, 1),  # relative-position bias table
    ("convnext_t_cifar", BNMode.EVAL, 1),  # depthwise kernel, LayerNorm2d, layer scale
]


@pytest.mark.parametrize(("name", "mode", "batch"), FAMILIES)
def test_stacked_equals_separate_in_float64(name: str, mode: BNMode, batch: int) -> None:
    model, updates, labels, _ = _trials(name, mode, batch)
    x = torch.rand(K, batch, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    spec = AttackSpec(tv_weight=0.03)
    v_loop, g_loop = _looped(model, updates, labels, [None] * K, spec, x)
    v_stack, g_stack = _stacked(model, updates, labels, [None] * K, spec, x)
    torch.testing.assert_close(v_stack, v_loop, atol=1e-12, rtol=1e-10)
    for i in range(K):  # every trial's gradient is its own (no cross-talk through BatchNorm or the loss)
        assert float((g_stack[i] - g_loop[i]).norm() / g_loop[i].norm()) < 1e-10


def test_stacked_statistics_prior_is_each_trials_own() -> None:
    """With a BN-statistics target per trial (each its own exact statistics), the prior is computed per trial."""
    model, updates, labels, images = _trials("resnet18_cifar", BNMode.TRAIN, 2)
    stats = []
    for i in range(K):
        replica = Replica(model, updates[i], labels[i])
        recorder = NormStatsRecorder(norm_modules(replica.net))
        with recorder.recording(), torch.no_grad():
            replica.net(images[i] * 0.9 + 0.05)
        stats.append(NormTarget(mean=recorder.mean, var=recorder.var, source=StatsAccess.EXACT))
    x = torch.rand(K, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    spec = AttackSpec(bn_weight=0.1)
    v_loop, g_loop = _looped(model, updates, labels, stats, spec, x)
    v_stack, g_stack = _stacked(model, updates, labels, stats, spec, x)
    torch.testing.assert_close(v_stack, v_loop, atol=1e-12, rtol=1e-10)
    assert float((g_stack - g_loop).norm() / g_loop.norm()) < 1e-10


@pytest.mark.parametrize(("name", "mode", "batch"), [("lenet_sigmoid", BNMode.EVAL, 1),
                                                     ("resnet18_cifar", BNMode.TRAIN, 2)])
def test_invert_trials_reconstructs_as_separate_attacks_in_float64(name: str, mode: BNMode, batch: int) -> None:
    """Whole attacks (restarts × trials stacked, one Adam, selection per trial) equal separate ones in float64."""
    model, updates, labels, _ = _trials(name, mode, batch)
    gen = torch.Generator().manual_seed(4)
    trials = [Trial(update=u, labels=y, init=torch.rand(2, batch, 3, 32, 32, generator=gen, dtype=torch.float64))
              for u, y in zip(updates, labels, strict=True)]
    spec = AttackSpec(iterations=2, restarts=2)
    stacked = invert_trials(model, trials, spec=spec)
    alone = invert_trials(model, trials, spec=dataclasses.replace(spec, batched_restarts=False))
    for s, a in zip(stacked, alone, strict=True):
        assert s.batched and not a.batched
        torch.testing.assert_close(s.images, a.images, atol=1e-10, rtol=0)
        torch.testing.assert_close(torch.tensor(s.objective), torch.tensor(a.objective), atol=1e-10, rtol=0)
        assert s.selected == a.selected


def test_invert_trials_keeps_each_trials_seed_and_order() -> None:
    model, updates, labels, _ = _trials("lenet_sigmoid", BNMode.EVAL, 1, dtype=torch.float32)
    trials = [Trial(update=u, labels=y, seed=10 + i) for i, (u, y) in enumerate(zip(updates, labels, strict=True))]
    spec = AttackSpec(iterations=1, lr=1e-6)
    recs = invert_trials(model, trials, spec=spec)
    for i, rec in enumerate(recs):
        start = torch.rand((1, 1, 3, 32, 32), generator=torch.Generator().manual_seed(10 + i))
        assert float((rec.images - start).abs().max()) < 1e-5  # one tiny step from the trial's own noise
        assert torch.equal(rec.labels, labels[i])


# ----------------------------------------------------------------------------------------------- refusals
def test_refusals_name_the_reason() -> None:
    model, updates, labels, _ = _trials("lenet_sigmoid", BNMode.EVAL, 1, dtype=torch.float32)
    assert stacking_refusal(model, updates, labels) is None
    fedavg = [dataclasses.replace(u, kind=UpdateKind.FEDAVG, local_steps=2) for u in updates]
    assert "FedAvg" in stacking_refusal(model, fedavg, labels)
    defended = [dataclasses.replace(u, defences=("clip1",)) for u in updates]
    assert "defended" in stacking_refusal(model, defended, labels)
    assert "detection" in stacking_refusal(model, updates, [{"boxes": torch.zeros(0, 4)}] * K)
    shapes = [updates[0], dataclasses.replace(updates[1], input_shape=(2, 3, 32, 32)), updates[2]]
    assert "differ" in stacking_refusal(model, shapes, labels)


class _Scaled(nn.Module):
    """A module with a parameter of its own that no per-trial rule knows."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 4)
        self.scale = nn.Parameter(torch.ones(12))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)[:, :12] * self.scale)


class _Tied(nn.Module):
    """A weight used outside its own module's call: the per-trial terms cannot see that use."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)[:, :12]
        return self.head(torch.tanh(self.fc(h)) + nn.functional.linear(h, self.fc.weight))


def _tiny_updates(model: nn.Module):
    gen = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 4, (1,), generator=gen) for _ in range(K)]
    updates = [simulate_update(model, torch.rand(1, 3, 4, 4, generator=gen), y, ClientSpec(bn_mode=BNMode.EVAL))
               for y in labels]
    return updates, labels


def test_a_parameter_no_rule_covers_falls_back_to_the_loop() -> None:
    model = _Scaled()
    updates, labels = _tiny_updates(model)
    assert "scale" in stacking_refusal(model, updates, labels) and "_Scaled" in stacking_refusal(model, updates,
                                                                                                   labels)
    recs = invert_trials(model, [Trial(update=u, labels=y) for u, y in zip(updates, labels, strict=True)],
                         spec=AttackSpec(iterations=2))
    assert not any(r.batched for r in recs)


def test_a_weight_used_outside_its_module_fails_the_probe_check() -> None:
    model = _Tied()
    updates, labels = _tiny_updates(model)
    assert stacking_refusal(model, updates, labels) is None  # every module has a rule...
    replica, reason = StackedReplica.build(model, updates, labels, [None] * K)
    assert replica is None and "disagree" in reason  # ...but the probe sees the terms are not the gradient's
    recs = invert_trials(model, [Trial(update=u, labels=y) for u, y in zip(updates, labels, strict=True)],
                         spec=AttackSpec(iterations=2))
    assert not any(r.batched for r in recs)


def test_large_activations_run_alone_on_a_cpu() -> None:
    """ConvNeXt-T at 32 px: its stage-0 activations exceed the CPU stacking limit, so its trials loop."""
    model, updates, labels, _ = _trials("convnext_t_cifar", BNMode.EVAL, 1, dtype=torch.float32)
    assert largest_activation(model, (1, 3, 32, 32)) > CPU_STACK_ELEMENTS
    assert "cache" in stacking_refusal(model, updates, labels)
    small = build("resnet18_cifar", 32)
    assert largest_activation(small, (1, 3, 32, 32)) <= CPU_STACK_ELEMENTS


def test_stacking_leaves_the_global_model_alone() -> None:
    model, updates, labels, _ = _trials("resnet18_cifar", BNMode.TRAIN, 2, dtype=torch.float32)
    state = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    invert_trials(model, [Trial(update=u, labels=y) for u, y in zip(updates, labels, strict=True)],
                  spec=AttackSpec(iterations=2))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not [m for m in model.modules() if "Ghost" in type(m).__name__]  # the replica's copy was swapped


@pytest.mark.parametrize(("name", "mode", "batch"), [("resnet18_cifar", BNMode.TRAIN, 2),
                                                     ("swin_t_cifar", BNMode.EVAL, 1),
                                                     ("convnext_t_cifar", BNMode.EVAL, 1)])
def test_the_stacked_path_runs_on_the_meta_device(name: str, mode: BNMode, batch: int) -> None:
    """What runs on a GPU, shape by shape without one: no CPU-only branch (the cache rule applies on CPUs only), no
    host synchronization that a device tensor would refuse."""
    model, updates, labels, _ = _trials(name, mode, batch, dtype=torch.float32)
    meta = copy.deepcopy(model).to("meta")
    updates = [dataclasses.replace(u, tensors={k: v.to("meta") for k, v in u.tensors.items()}) for u in updates]
    labels = [y.to("meta") for y in labels]
    assert stacking_refusal(meta, updates, labels) is None  # ConvNeXt-T stacks off a CPU
    replica = StackedReplica(meta, updates, labels, [None] * K)
    x = torch.rand(K, batch, 3, 32, 32, device="meta", requires_grad=True)
    total, dist = replica.objective(AttackSpec())(x)
    assert total.shape == dist.shape == (K,) and total.device.type == "meta"
    assert torch.autograd.grad(total.sum(), x)[0].shape == x.shape


# ------------------------------------------------------------------------------------- review regressions
class _TokenBN(nn.Module):
    """BatchNorm over tokens flattened into the batch (timm LeViT's LinearNorm): rows are not images."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = self.bn(self.fc(t).flatten(0, 1)).reshape(t.shape)
        return self.head(torch.tanh(t).mean(1))


def test_ghost_batches_split_by_trial_whatever_a_batchnorm_sees_as_rows() -> None:
    model = _TokenBN().double()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(K, 2, 3, 4, 4, generator=gen, dtype=torch.float64)
    labels = [torch.randint(0, 4, (2,), generator=gen) for _ in range(K)]
    updates = [simulate_update(model, images[i], labels[i], ClientSpec(bn_mode=BNMode.TRAIN, batch_size=2))
               for i in range(K)]
    x = torch.rand(K, 2, 3, 4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v_loop, g_loop = _looped(model, updates, labels, [None] * K, AttackSpec(), x)
    v_stack, g_stack = _stacked(model, updates, labels, [None] * K, AttackSpec(), x)
    torch.testing.assert_close(v_stack, v_loop, atol=1e-12, rtol=1e-10)
    assert float((g_stack - g_loop).norm() / g_loop.norm()) < 1e-10


def test_a_rule_that_fails_on_the_probe_falls_back_with_its_reason() -> None:
    """Train-mode BatchNorm with one value per channel (bs1, tokens pooled away) raises inside the engine."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 6), nn.BatchNorm1d(6), nn.Linear(6, 4))
    gen = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 4, (1,), generator=gen) for _ in range(K)]
    updates = [simulate_update(model, torch.rand(1, 3, 4, 4, generator=gen), y, ClientSpec(bn_mode=BNMode.EVAL))
               for y in labels]
    updates = [dataclasses.replace(u, bn_mode=BNMode.TRAIN) for u in updates]
    replica, reason = StackedReplica.build(model, updates, labels, [None] * K)
    assert replica is None and "failed on the probe" in reason and "ValueError" in reason


def test_bad_updates_are_refused_stacked_as_alone() -> None:
    from giacheck.errors import InvalidUpdateError

    model, updates, labels, _ = _trials("lenet_sigmoid", BNMode.EVAL, 1, dtype=torch.float32)
    name = next(iter(updates[1].tensors))
    nan = dataclasses.replace(updates[1], tensors={**updates[1].tensors,
                                                   name: torch.full_like(updates[1].tensors[name], float("nan"))})
    with pytest.raises(InvalidUpdateError, match="NaN"):
        invert_trials(model, [Trial(update=u, labels=y) for u, y in zip([updates[0], nan], labels, strict=False)],
                      spec=AttackSpec(iterations=1))


def test_the_window_attention_override_is_removed_even_when_the_forward_fails() -> None:
    model, updates, labels, _ = _trials("swin_t_cifar", BNMode.EVAL, 1, dtype=torch.float32)
    replica = StackedReplica(model, updates, labels, [None] * K)
    attention = [m for m in replica.net.modules() if type(m).__name__ == "WindowAttention"]

    def fail(module, args, output):
        raise RuntimeError("a failure inside the attention's forward")

    handle = attention[0].proj.register_forward_hook(fail)  # after the override is in place
    try:
        with pytest.raises(RuntimeError, match="inside the attention"):
            replica.terms(torch.rand(K, 1, 3, 32, 32, requires_grad=True))
    finally:
        handle.remove()
    assert attention and not any("_get_rel_pos_bias" in vars(m) for m in attention)
    total, _ = replica.objective(AttackSpec())(torch.rand(K, 1, 3, 32, 32, requires_grad=True))
    assert total.shape == (K,)  # the replica still works
