"""The attack's depthwise convolution computes the same math as stock PyTorch, to second order (in float64)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from giacheck.attack.kernels import DepthwiseConv2d, accelerate, stock_kernels


def _cosine(update, target):
    dot = sum((u * t).sum() for u, t in zip(update, target, strict=True))
    return 1.0 - dot / torch.sqrt(sum(u.pow(2).sum() for u in update)) / torch.sqrt(sum(t.pow(2).sum() for t in target))


class _Block(nn.Module):
    """scale → depthwise 7×7 → GELU → pointwise: the pattern of a ConvNeXt block."""

    def __init__(self, channels: int = 6, kernel: int = 7, bias: bool = True) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(1, channels, 1, 1))
        self.dw = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=bias)
        self.pw = nn.Conv2d(channels, 3, 1)

    def forward(self, x):
        return self.pw(F.gelu(self.dw(x * self.scale))).mean((2, 3))


def _second_order(net: nn.Module, x: torch.Tensor, target: list[torch.Tensor]) -> tuple[list, torch.Tensor]:
    """The attack's pattern: the parameter gradient with create_graph, matched to a target, then ∂/∂x."""
    x = x.clone().requires_grad_(True)
    params = list(net.parameters())
    grads = torch.autograd.grad(F.cross_entropy(net(x), torch.arange(x.shape[0]) % 3), params, create_graph=True)
    distance = _cosine(list(grads), target)
    return [g.detach() for g in grads], torch.autograd.grad(distance, x)[0]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv_matches_stock_to_second_order(batch: int, bias: bool) -> None:
    torch.manual_seed(0)
    stock = _Block(bias=bias).double()
    fast = copy.deepcopy(stock)
    assert accelerate(fast) == 1 and type(fast.dw) is DepthwiseConv2d
    x = torch.randn(batch, 6, 9, 9, dtype=torch.float64)
    target = [torch.randn_like(p) for p in stock.parameters()]
    torch.testing.assert_close(fast(x), stock(x), rtol=1e-12, atol=1e-12)
    grads_fast, gx_fast = _second_order(fast, x, target)
    grads_stock, gx_stock = _second_order(stock, x, target)
    for a, b in zip(grads_fast, grads_stock, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx_fast, gx_stock, rtol=1e-10, atol=1e-12)
    assert [n for n, _ in fast.named_parameters()] == [n for n, _ in stock.named_parameters()]


def test_accelerate_leaves_other_convolutions_alone() -> None:
    net = nn.Sequential(
        nn.Conv2d(4, 4, 3, padding=1, groups=4),  # swapped
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),  # strided: stock
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # grouped, not depthwise: stock
        nn.Conv2d(4, 4, 3, padding="same", groups=4),  # string padding: stock
        nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),  # not zero padding: stock
        nn.Conv2d(4, 4, 3, padding=1),  # dense: stock
    )
    assert accelerate(net) == 1
    assert [type(m).__name__ for m in net] == ["DepthwiseConv2d"] + ["Conv2d"] * 5


def test_depthwise_conv_composes_with_func_grad_and_vmap() -> None:
    """The kernel composes with torch.func: vmap over restarts of grad(x ↦ cosine(grad_θ loss(x)))."""
    torch.manual_seed(0)
    stock = _Block().double()
    fast = copy.deepcopy(stock)
    accelerate(fast)
    target = [torch.randn_like(p) for p in stock.parameters()]
    x = torch.randn(2, 1, 6, 9, 9, dtype=torch.float64)  # 2 restarts of a bs1 batch

    def attack_gradient(net):
        params = dict(net.named_parameters())

        def objective(xr):
            def loss(p):
                return F.cross_entropy(torch.func.functional_call(net, p, (xr,)), torch.tensor([1]))

            return _cosine(list(grad(loss)(params).values()), target)

        return vmap(grad(objective))(x)

    torch.testing.assert_close(attack_gradient(fast), attack_gradient(stock), rtol=1e-10, atol=1e-12)


def test_stock_kernels_switch_accelerate_off() -> None:
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4))
    with stock_kernels():
        assert accelerate(net) == 0
    assert accelerate(net) == 1
