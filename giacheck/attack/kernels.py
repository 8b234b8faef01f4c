"""A faster, numerically equivalent depthwise convolution for the attack's second-order pass.

The attack differentiates a gradient: every iteration runs the network's backward with ``create_graph`` and
then differentiates that. For grouped convolutions, stock PyTorch's ``aten::_convolution_double_backward``
loops over the groups — one small convolution per channel — so a ConvNeXt-T block with 384 channels costs
384 convolutions per iteration, and the loop is most of ConvNeXt's attack time on a CPU.
:class:`_DepthwiseConv` gives the convolution a backward made of two *grouped first-order* convolutions,
which autograd then differentiates without that loop (one CPU thread, bs1, one block: 28 → 4 ms for 384
channels at 8×8, 51 → 4 ms for 768 at 4×4; ``giacheck bench --kernels`` measures whole attack iterations).

:func:`accelerate` swaps it into the attacker's replica only; the client's update is always computed with the
stock module. It is an exact reformulation (float rounding aside: ≈ 2e-7 relative in float32; equal to 1e-10
in float64 through the second order, ``tests/test_kernels.py``), and it composes with ``torch.func``.
A fused backward for the cosine distance was tried as well and dropped: 1.8× faster in isolation, it gained
0-5 % of a whole ResNet-18 or Swin-T iteration, measured interleaved with ``giacheck bench``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthwiseConv2d", "accelerate", "stock_kernels", "using_stock_kernels"]

_STOCK = False


@contextlib.contextmanager
def stock_kernels() -> Iterator[None]:
    """Within this block replicas stay stock: no depthwise kernel, no factored distance (``lowrank.py``);
    for ``giacheck bench --kernels``."""
    global _STOCK
    previous, _STOCK = _STOCK, True
    try:
        yield
    finally:
        _STOCK = previous


def using_stock_kernels() -> bool:
    """True inside :func:`stock_kernels`."""
    return _STOCK


class _DepthwiseConv(torch.autograd.Function):
    """A stride-1, dilation-1 depthwise convolution whose backward is built from differentiable convolutions."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]):
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        batch, channels, height, width = x.shape
        grad_x = F.conv_transpose2d(grad, weight, padding=ctx.padding, groups=channels)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            # ∂L/∂w[c] = Σ_b xcorr(x[b, c], grad[b, c]): one group per channel, the batch as its input channels
            per_channel = x.transpose(0, 1).reshape(1, channels * batch, height, width)
            grad_w = F.conv2d(per_channel, grad.transpose(0, 1), padding=ctx.padding,
                              groups=channels).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and names) computed by :class:`_DepthwiseConv`; see :func:`accelerate`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _DepthwiseConv.apply(input, weight, bias, self.padding)


def _is_plain_depthwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups > 1 and m.groups == m.in_channels == m.out_channels
            and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple))


def accelerate(net: nn.Module) -> int:
    """Swap every plain depthwise ``nn.Conv2d`` (stride 1, dilation 1, zero padding) of ``net`` for
    :class:`DepthwiseConv2d` in place — parameters, buffers and names untouched. Returns how many."""
    if _STOCK:
        return 0
    count = 0
    for module in net.modules():
        if _is_plain_depthwise(module):
            module.__class__ = DepthwiseConv2d
            count += 1
    return count
