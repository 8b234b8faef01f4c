"""The update's cosine distance without forming the largest weight gradients (FedSGD, one restart).

A linear layer applied to ``n`` rows (batch × tokens) has the weight gradient ``∂L/∂W = Gᵀ A``, with
``G = ∂L/∂y`` (n × out) and ``A`` its input (n × in); a convolution is the same with ``A`` its im2col patches
(n = batch × output positions, in = C_in·k_h·k_w). The cosine distance needs only two numbers per layer::

    ⟨∂L/∂W, T⟩ = Σ G ∘ (A Tᵀ)            ‖∂L/∂W‖² = Σ (G Gᵀ) ∘ (A Aᵀ)

so where ``n·(in + out) < in·out`` the update's largest tensors — and their cosine terms and second-order
products — are never formed. That is the late, low-resolution stages: ResNet-18's layer3-4 at 32 px (16-64
positions against 2,304-4,608 × 256-512 weights), most of Swin-T and ConvNeXt-T. The same math, float
rounding aside (equal to 1e-10 in float64, ``tests/test_lowrank.py``); ``giacheck bench --kernels``
measures whole iterations.

The plan is made once per replica from a probe forward, and checked there against the materialized
gradient: a weight also used outside its module's own call (tying, a functional re-use) would break the
factorization, so a mismatch drops the plan and the replica runs stock.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LowRankPlan", "plan_low_rank"]

log = logging.getLogger(__name__)

_Call = tuple[torch.Tensor, torch.Tensor]  # (the layer's input, its output)


def _eligible(module: nn.Module) -> bool:
    """Stock dense layers whose forward is exactly ``linear`` / ``conv2d`` of their own weight."""
    if type(module) is nn.Linear:
        return True
    return (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and isinstance(module.padding, tuple))


def _rows(module: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """The layer's input as an (n, in) matrix: tokens for a linear layer, im2col patches for a convolution."""
    if isinstance(module, nn.Linear):
        return a.reshape(-1, a.shape[-1])
    cols = F.unfold(a, module.kernel_size, module.dilation, module.padding, module.stride)  # (B, K, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _out_rows(module: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """``∂L/∂y`` as an (n, out) matrix, rows in the order of :func:`_rows`."""
    if isinstance(module, nn.Linear):
        return g.reshape(-1, g.shape[-1])
    return g.flatten(2).transpose(1, 2).reshape(-1, g.shape[1])


class _Taps:
    """Forward hooks that keep each call's input and output of the given modules."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.calls: dict[str, list[_Call]] = {}

    @contextlib.contextmanager
    def recording(self) -> Iterator[dict[str, list[_Call]]]:
        self.calls = {name: [] for name in self.modules}
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        try:
            yield self.calls
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor | None:
            if not args:  # called with keywords only: not taken, so the plan's check fails and drops the plan
                return None
            # hand on a copy of the output, so that a later in-place op on it cannot change what is
            # differentiated (it is small: n·out, by the plan's rule). The input needs none: the layer's own
            # backward saves it, so stock autograd (and the plan's check) refuses a model that modifies it.
            self.calls[name].append((args[0], output))
            return output.clone()
        return hook


class LowRankPlan:
    """Which layers' weight-gradient terms are computed factored, and how (see the module docstring)."""

    def __init__(self, modules: dict[str, nn.Module], weights: dict[str, str]) -> None:
        self.modules = modules  # module name -> module
        self.weights = weights  # module name -> its weight's name in the update
        self._taps = _Taps(modules)

    def __bool__(self) -> bool:
        return bool(self.modules)

    def distance_terms(self, forward: Callable[[], torch.Tensor], params: dict[str, torch.Tensor],
                       target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(⟨g, t⟩, ‖g‖²)`` of the update ``g`` of ``forward()``'s loss over ``params`` (create_graph)."""
        factored = set(self.weights.values())
        rest = [n for n in params if n not in factored]
        with self._taps.recording() as calls:
            loss = forward()
        outputs = [y for name in self.modules for _, y in calls[name]]
        grads = torch.autograd.grad(loss, outputs + [params[n] for n in rest], create_graph=True,
                                    allow_unused=True)
        grad_outputs, grad_rest = iter(grads[:len(outputs)]), grads[len(outputs):]
        dots, norms = [], []
        for n, g in zip(rest, grad_rest, strict=True):
            if g is not None:
                dots.append((g * target[n]).sum())
                norms.append(g.pow(2).sum())
        for name, module in self.modules.items():
            pairs = [(a, next(grad_outputs)) for a, _ in calls[name]]
            pairs = [(a, g) for a, g in pairs if g is not None]
            if not pairs:
                continue
            a = torch.cat([_rows(module, a) for a, _ in pairs])
            g = torch.cat([_out_rows(module, g) for _, g in pairs])
            t = target[self.weights[name]].reshape(g.shape[1], -1)
            dots.append((g * (a @ t.T)).sum())
            norms.append(((g @ g.T) * (a @ a.T)).sum())
        return torch.stack(dots).sum(), torch.stack(norms).sum()


def plan_low_rank(net: nn.Module, forward: Callable[[], torch.Tensor], params: dict[str, torch.Tensor],
                  target: dict[str, torch.Tensor]) -> LowRankPlan:
    """Plan the factored layers of ``net`` for an update over ``params`` (its ``target`` by name), where
    ``n·(in + out) < in·out``; ``forward()`` runs the loss on a probe input of the attack's shape. The plan is
    checked against the stock terms on that probe and dropped, with a warning, when they disagree."""
    candidates = {name: m for name, m in net.named_modules() if _eligible(m) and _weight_name(name) in params}
    if not candidates:
        return LowRankPlan({}, {})
    taps = _Taps(candidates)
    with torch.no_grad(), taps.recording() as calls:
        forward()
    chosen: dict[str, nn.Module] = {}
    for name, module in candidates.items():
        rows = sum(_rows(module, a).shape[0] for a, _ in calls[name])
        out_features, in_features = module.weight.shape[0], module.weight[0].numel()
        if calls[name] and rows * (in_features + out_features) < in_features * out_features:
            chosen[name] = module
    plan = LowRankPlan(chosen, {name: _weight_name(name) for name in chosen})
    return plan if plan and _agrees(plan, forward, params, target) else LowRankPlan({}, {})


def _weight_name(module_name: str) -> str:
    return f"{module_name}.weight" if module_name else "weight"


def _agrees(plan: LowRankPlan, forward: Callable[[], torch.Tensor], params: dict[str, torch.Tensor],
            target: dict[str, torch.Tensor]) -> bool:
    """The factored ``⟨g,t⟩`` and ``‖g‖²`` match the materialized ones to 1e-3 (in cosine units and
    relatively): float rounding is ~1e-6, a weight used outside its layer's own call is far more."""
    grads = torch.autograd.grad(forward(), list(params.values()))
    dot = sum(float((g * target[n]).double().sum()) for n, g in zip(params, grads, strict=True))
    norm_sq = sum(float(g.double().pow(2).sum()) for g in grads)
    t_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in target.values()))
    f_dot, f_norm_sq = (float(v.detach()) for v in plan.distance_terms(forward, params, target))
    if abs(f_dot - dot) <= 1e-3 * math.sqrt(norm_sq) * t_norm and abs(f_norm_sq - norm_sq) <= 1e-3 * norm_sq:
        return True
    log.warning("factored update distance disagrees with the materialized one (<g,t> %.6g vs %.6g, |g|^2 %.6g "
                "vs %.6g): a weight is used outside its layer's call; the attack runs without factoring",
                f_dot, dot, f_norm_sq, norm_sq)
    return False
