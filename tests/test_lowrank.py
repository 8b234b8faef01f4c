"""The factored update distance (attack/lowrank.py) is the stock one: same objective, same ∂/∂x (float64)."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from giacheck.attack.bnstats import NormTarget
from giacheck.attack.kernels import stock_kernels
from giacheck.attack.objective import Replica
from giacheck.client import simulate_update
from giacheck.specs import AttackSpec, BNMode, ClientSpec, StatsAccess, UpdateKind

SPEC = AttackSpec(iterations=1, restarts=1, lr=0.1, tv_weight=3e-2, bn_weight=1e-2)


class _Net(nn.Module):
    """Wide layers on few rows (factored) beside a wide-input stem (not), with the traps a hook must survive:
    a strided padded convolution, a linear layer on tokens called twice, an in-place op on a factored layer's
    output, BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        # rows = batch 2 × positions (× calls); factored where rows·(in + out) < in·out
        self.stem = nn.Conv2d(3, 4, 3, padding=1)  # 512 rows against 27 × 4: materialized
        self.bn = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 48, 3, stride=8, padding=1, bias=False)  # 8 rows against 36 × 48: factored
        self.mix = nn.Linear(48, 40)  # twice on 2 × 4 tokens, 16 rows: factored
        self.head = nn.Linear(40, 5)  # 2 rows: factored

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        y = self.down(h)
        y.add_(0.1)  # in place on a factored layer's output
        tokens = y.flatten(2).transpose(1, 2)  # (B, 4, 48)
        t = self.mix(tokens) + self.mix(tokens.flip(1))  # one weight, two calls
        return self.head(torch.tanh(t).mean(1))


class _Tied(_Net):
    """``mix.weight`` also used outside the module's own call: the factorization would miss that use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        tokens = self.down(h).flatten(2).transpose(1, 2)
        t = self.mix(tokens) + F.linear(tokens, self.mix.weight)
        return self.head(torch.tanh(t).mean(1))


def _replicas(net: nn.Module, bn_mode: BNMode, update=UpdateKind.FEDSGD) -> tuple[Replica, Replica]:
    torch.manual_seed(1)
    net = net.double()
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    labels = torch.tensor([1, 3])
    update = simulate_update(net, images, labels, ClientSpec(bn_mode=bn_mode, batch_size=2, update=update,
                                                             local_steps=2 if update is UpdateKind.FEDAVG else 1))
    fast = Replica(net, update, labels)
    with stock_kernels():
        stock = Replica(net, update, labels)
    return fast, stock


def _value_and_grad(replica: Replica, x: torch.Tensor, stats: NormTarget | None = None):
    x = x.clone().requires_grad_(True)
    total, dist = replica.objective(SPEC, stats, functional=False)(x)
    return total.detach(), dist.detach(), torch.autograd.grad(total, x)[0]


@pytest.mark.parametrize("bn_mode", [BNMode.TRAIN, BNMode.EVAL])
def test_factored_distance_matches_stock_to_second_order(bn_mode: BNMode) -> None:
    fast, stock = _replicas(_Net(), bn_mode)
    assert set(fast.low_rank.modules) == {"down", "mix", "head"} and not stock.low_rank
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for a, b in zip(_value_and_grad(fast, x), _value_and_grad(stock, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_factored_distance_with_the_statistics_prior() -> None:
    fast, stock = _replicas(_Net(), BNMode.TRAIN)
    target = NormTarget(mean={"bn": torch.rand(4, dtype=torch.float64)},
                        var={"bn": torch.rand(4, dtype=torch.float64) + 0.5}, source=StatsAccess.EXACT)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for a, b in zip(_value_and_grad(fast, x, target), _value_and_grad(stock, x, target), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_a_weight_used_outside_its_layer_drops_the_plan(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="giacheck.attack.lowrank"):
        fast, stock = _replicas(_Tied(), BNMode.EVAL)
    assert not fast.low_rank
    assert "used outside its layer's call" in caplog.text
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for a, b in zip(_value_and_grad(fast, x), _value_and_grad(stock, x), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fedavg_updates_are_not_factored() -> None:
    fast, _ = _replicas(_Net(), BNMode.TRAIN, update=UpdateKind.FEDAVG)
    assert not fast.low_rank


def test_the_functional_path_stays_stock_and_agrees() -> None:
    """Looped attacks' final values, proxy selection and the objective at the truth use the functional path; it
    must give the same number."""
    fast, _ = _replicas(_Net(), BNMode.TRAIN)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        functional = fast.objective(SPEC, None, functional=True)(x)
    factored = fast.objective(SPEC, None, functional=False)(x.clone().requires_grad_(True))
    for a, b in zip(functional, factored, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-10, atol=1e-13)
