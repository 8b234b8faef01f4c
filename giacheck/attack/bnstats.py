"""Normalization statistics the attacker can use as a prior: exact (inverted), naive (Huang), proxy (aux data).

``NormStatsRecorder`` captures per-channel mean and biased variance of every norm layer's *input* during a
forward pass (the statistics a train-mode BatchNorm normalizes with). Targets are :class:`NormTarget`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from giacheck.client import BNStats
from giacheck.errors import InvalidUpdateError
from giacheck.specs import StatsAccess

__all__ = [
    "NormStatsRecorder",
    "NormTarget",
    "elements_per_channel",
    "infer_batch_stats",
    "naive_stats",
    "norm_modules",
    "shape_forward",
    "stats_prior",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class NormTarget:
    """Per-layer target mean and biased variance, keyed by module name, with where they came from."""

    mean: dict[str, torch.Tensor]
    var: dict[str, torch.Tensor]
    source: StatsAccess


def norm_modules(model: nn.Module) -> dict[str, nn.Module]:
    """BatchNorm and LayerNorm modules by name (LayerNorm for the proxy prior on transformers)."""
    kinds = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def _channel_stats(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance per channel: dim 1 for BatchNorm, the last dim for LayerNorm."""
    channels_last = isinstance(module, nn.LayerNorm) and type(module).__name__ != "LayerNorm2d"  # timm's is NCHW
    channel_dim = x.dim() - 1 if channels_last else 1
    dims = [d for d in range(x.dim()) if d != channel_dim]
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    return mean, var


class NormStatsRecorder:
    """Records input statistics of the given norm modules during forwards run inside :meth:`recording`."""

    def __init__(self, modules: Mapping[str, nn.Module]) -> None:
        self.modules = dict(modules)
        self.mean: dict[str, torch.Tensor] = {}
        self.var: dict[str, torch.Tensor] = {}

    @contextmanager
    def recording(self) -> Iterator[NormStatsRecorder]:
        self.mean, self.var = {}, {}
        handles = [m.register_forward_pre_hook(self._hook(name)) for name, m in self.modules.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if name not in self.mean:  # first call only (FedAvg unrolling: the first local step)
                self.mean[name], self.var[name] = _channel_stats(module, args[0])
        return hook


def elements_per_channel(model: nn.Module, input_shape: tuple[int, ...], names: list[str]) -> dict[str, int]:
    """n = B·H·W elements per channel at each named BatchNorm's input, found by one shape-only forward."""
    modules = dict(model.named_modules())
    found: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            found.setdefault(name, args[0].numel() // args[0].shape[1])
        return hook

    shape_forward(model, input_shape, [modules[name].register_forward_pre_hook(hook_for(name)) for name in names])
    return found


def shape_forward(model: nn.Module, input_shape: tuple[int, ...], handles: list) -> None:
    """One no-grad forward of zeros in eval mode, for shapes only (a train-mode forward would update the global
    model's running statistics); then ``handles`` (the hooks that read it) are removed and every mode restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(input_shape, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training


def infer_batch_stats(before: Mapping[str, BNStats], after: Mapping[str, BNStats],
                      elements: Mapping[str, int]) -> NormTarget:
    """Invert the running-statistic update of one local step into the client's exact batch statistics.

    ``mu_B = (mu_new - (1-m) mu_old) / m``, likewise for the stored (unbiased) variance, then
    ``var_biased = var_unbiased · (n-1)/n`` with n = B·H·W (DESIGN §4). ``momentum=None`` (cumulative
    average) uses ``m = 1 / num_batches_tracked``. Updates spanning several steps are refused.
    """
    mean, var = {}, {}
    for name, new in after.items():
        old = before[name]
        steps = new.num_batches_tracked - old.num_batches_tracked
        if steps != 1:
            raise InvalidUpdateError(
                f"exact statistics need exactly one local step, but BatchNorm {name!r} tracked {steps} batches; "
                "use stats_naive or stats_proxy for multi-step (FedAvg) updates")
        m = new.momentum if new.momentum is not None else 1.0 / new.num_batches_tracked
        if not m > 0:
            raise InvalidUpdateError(f"BatchNorm {name!r} has momentum {m}: its running statistics carry no "
                                     "information about the batch (valid: momentum in (0, 1] or None)")
        n = elements[name]
        mean[name] = (new.mean - (1 - m) * old.mean) / m
        unbiased = (new.var - (1 - m) * old.var) / m
        var[name] = unbiased * (n - 1) / n if n > 1 else unbiased
    return NormTarget(mean=mean, var=var, source=StatsAccess.EXACT)


def naive_stats(after: Mapping[str, BNStats]) -> NormTarget:
    """Huang et al.'s baseline: the post-update running statistics, as shared, taken as batch statistics."""
    return NormTarget(mean={k: v.mean for k, v in after.items()}, var={k: v.var for k, v in after.items()},
                      source=StatsAccess.NAIVE)


def stats_prior(recorded_mean: Mapping[str, torch.Tensor], recorded_var: Mapping[str, torch.Tensor],
                target: NormTarget, kind: str) -> torch.Tensor:
    """Distance of recorded statistics to the target.

    ``raw``: ``Σ_l ‖μ−μ*‖₂ + ‖σ²−σ²*‖₂`` (the paper's form, dominated by the deepest, widest layers);
    ``relative``: each term divided by the target's norm, averaged over layers, so every layer counts alike.
    """
    terms = []
    for name, t_mean in target.mean.items():
        d_mean = torch.linalg.vector_norm(recorded_mean[name] - t_mean)
        d_var = torch.linalg.vector_norm(recorded_var[name] - target.var[name])
        if kind == "relative":
            d_mean = d_mean / (torch.linalg.vector_norm(t_mean) + 1e-8)
            d_var = d_var / (torch.linalg.vector_norm(target.var[name]) + 1e-8)
        terms.append(d_mean + d_var)
    total = torch.stack(terms).sum()
    return total / len(terms) if kind == "relative" else total
