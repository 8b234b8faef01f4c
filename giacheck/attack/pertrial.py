"""Per-trial weight-gradient terms of K trials stacked along the batch axis, one rule per kind of layer.

K independent attacks run as one forward of their stacked images (trial-major: trial k owns rows
``k·n/K … (k+1)·n/K − 1`` of every activation). One backward gives ``G = ∂(Σ_k L_k)/∂y`` at each layer's output
``y``; since trials do not interact, trial k's rows of ``G`` are ``∂L_k/∂y``. From those rows and the layer's
input each rule forms, per trial, ``⟨g_k, T_k⟩`` and ``‖g_k‖²`` of the layer's own parameters — the two numbers
the update distance needs (``distance.py``) — the way per-sample-gradient engines do:

- ``nn.Linear`` / ``nn.Conv2d`` (groups 1): ``g_k = G_kᵀ A_k`` (``A`` the input rows, im2col patches for a
  convolution), factored with block-diagonal Gram products ``Σ (G_k G_kᵀ) ∘ (A_k A_kᵀ)`` where
  ``n_k·(in + out) < in·out`` (``lowrank.py``'s rule, per trial), else materialized per trial: one ``bmm`` for a
  linear layer, the convolution's own weight-gradient kernel with the trials as K groups for a convolution;
- giacheck's depthwise convolution (``kernels.py``): the weight gradient as one grouped convolution over K·C groups;
- BatchNorm (eval, or per trial in train mode: ghost batches), LayerNorm (timm's ``LayerNorm2d`` included),
  GroupNorm: ``Σ G ∘ x̂`` and ``Σ G`` over the trial's rows, ``x̂`` the normalized input;
- timm's ``WindowAttention`` (the relative-position bias table) and ``ConvNeXtBlock`` (layer scale ``gamma``).

A module with parameters of its own that no rule covers makes the model unbatchable (:func:`uncovered`); the
engine then falls back to one attack after another (``trials.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from giacheck.attack.kernels import DepthwiseConv2d

__all__ = ["GhostBatchNorm", "GhostBatchNormAct", "Taps", "make_rule", "uncovered"]

Terms = tuple[torch.Tensor, torch.Tensor]  # (⟨g_k, T_k⟩ (K,), ‖g_k‖² (K,))


class GhostBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A train-mode BatchNorm that normalizes each trial's rows by their own batch statistics, so K stacked trials
    compute exactly what K separate client batches would: the input's leading axis is split into ``trials`` equal,
    trial-major groups (whatever the layer's rows are: images, or tokens flattened into the batch). In eval mode,
    or for one trial: stock."""

    trials: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.trials == 1:
            return super().forward(x)
        k = self.trials
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        return _unghost(F.batch_norm(_ghost_view(x, k), None, None, weight, bias, True, 0.0, self.eps), x)

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``x̂``: the input normalized as :meth:`forward` does, before the affine weight and bias."""
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)
        return _unghost(F.batch_norm(_ghost_view(x, self.trials), None, None, None, None, True, 0.0, self.eps), x)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")


class GhostBatchNormAct(GhostBatchNorm):
    """timm's ``BatchNormAct2d`` (BatchNorm, then its ``drop`` and ``act``) with ghost batches; the
    pre-activation output goes to ``sink`` while a rule records (its gradient is the affine's)."""

    sink: list | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.sink is not None:
            self.sink.append(y)
            y = y.clone()  # an in-place activation must not change what is differentiated
        return self.act(self.drop(y))


class _Sink:
    """A handle that stops a :class:`GhostBatchNormAct` from recording."""

    def __init__(self, module: GhostBatchNormAct, sources: list) -> None:
        self.module = module
        module.sink = sources

    def remove(self) -> None:
        self.module.sink = None


class _Restore:
    """A handle that removes an instance attribute a rule set (the class's own attribute shows again)."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module, self.name = module, name

    def remove(self) -> None:
        self.module.__dict__.pop(self.name, None)


def _ghost_view(x: torch.Tensor, k: int) -> torch.Tensor:
    """(K·g, C, …) as (g, K·C, …): batch_norm over it normalizes each trial's channel by the trial's own rows."""
    ghost = x.shape[0] // k
    return x.reshape(k, ghost, *x.shape[1:]).transpose(0, 1).reshape(ghost, k * x.shape[1], *x.shape[2:])


def _unghost(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_ghost_view`, back to ``like``'s layout."""
    ghost, k = y.shape[0], like.shape[0] // y.shape[0]
    return y.reshape(ghost, k, *like.shape[1:]).transpose(0, 1).reshape(like.shape)


@dataclass
class _Call:
    args: tuple[Any, ...]
    output: torch.Tensor  # the module's output, as differentiated (the rest of the net sees a clone)


@dataclass
class Taps:
    """Forward hooks that keep each call's inputs and output of the tapped modules (outputs handed on as clones,
    so a later in-place op cannot change what is differentiated), plus tensors rules create themselves."""

    modules: dict[str, nn.Module]
    calls: dict[str, list[_Call]] = field(default_factory=dict)
    sources: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # extra gradient sources per module

    @contextlib.contextmanager
    def recording(self, install: dict[str, Callable] | None = None) -> Iterator[Taps]:
        """Within the block, ``install[name](sources)`` hooks of a rule are in place too (they return handles)."""
        self.calls = {name: [] for name in self.modules}
        self.sources = {name: [] for name in self.modules}
        handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]
        try:
            for name, fn in (install or {}).items():
                handles += fn(self.sources[name])
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            self.calls[name].append(_Call(args, output))
            return output.clone()
        return hook


class _Rule:
    """Per-trial terms of one module's own parameters (those in the update), from its taps."""

    needs_param_grad = False  # whether the rule differentiates through the parameter itself

    def __init__(self, name: str, module: nn.Module, params: list[str]) -> None:
        self.name, self.module, self.params = name, module, params  # params: local names ("weight", "bias")

    def install(self, k: int, sources: list[torch.Tensor]) -> list[Any]:
        """Extra hooks a rule needs during the stacked forward (their handles); ``sources`` collects tensors."""
        return []

    def gradient_sources(self, calls: list[_Call], sources: list[torch.Tensor]) -> list[torch.Tensor]:
        """The tensors whose gradients :meth:`terms` needs: each call's output by default."""
        return [c.output for c in calls]

    def terms(self, calls: list[_Call], grads: list[torch.Tensor | None], sources: list[torch.Tensor],
              targets: dict[str, torch.Tensor], k: int) -> Terms | None:
        raise NotImplementedError


def _sum_terms(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Terms:
    """Σ over a rule's parameters of the (dot, norm²) of each per-trial gradient ``g`` (K, …) against ``t``."""
    dot = sum((g * t).flatten(1).sum(1) for g, t in pairs)
    norm = sum(g.pow(2).flatten(1).sum(1) for g, _ in pairs)
    return dot, norm


def _live(calls: list[_Call], grads: list[torch.Tensor | None]) -> list[tuple[_Call, torch.Tensor]]:
    return [(c, g) for c, g in zip(calls, grads, strict=True) if g is not None]


class _Dense(_Rule):
    """``nn.Linear`` and ``nn.Conv2d`` (groups 1): ``g_k = G_kᵀ A_k``, factored or materialized per trial."""

    def _rows(self, a: torch.Tensor, k: int) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return a.reshape(k, -1, a.shape[-1])
        cols = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # (K·B, in, L)
        return cols.reshape(k, -1, *cols.shape[1:]).transpose(2, 3).reshape(k, -1, cols.shape[1])

    def _out_rows(self, g: torch.Tensor, k: int) -> torch.Tensor:
        if isinstance(self.module, nn.Linear):
            return g.reshape(k, -1, g.shape[-1])
        return g.reshape(k, -1, g.shape[1], g[0, 0].numel()).transpose(2, 3).reshape(k, -1, g.shape[1])

    def terms(self, calls, grads, sources, targets, k):
        live = _live(calls, grads)
        if not live:
            return None
        m = self.module
        pairs, dot, norm = [], 0, 0
        if "bias" in self.params:
            pairs.append((sum(self._out_rows(g, k).sum(1) for _, g in live), targets["bias"]))
        if "weight" in self.params:
            t = targets["weight"]
            rows = sum(self._out_rows(g, k).shape[1] for _, g in live)
            n_out, n_in = m.weight.shape[0], m.weight[0].numel()
            if rows * (n_in + n_out) < n_in * n_out:  # factored: the (out × in) gradient is never formed
                a = _cat([self._rows(c.args[0], k) for c, _ in live])  # (K, n, in)
                g = _cat([self._out_rows(g, k) for _, g in live])  # (K, n, out)
                t = t.reshape(k, n_out, n_in)
                dot = (g * torch.bmm(a, t.transpose(1, 2))).sum((1, 2))
                norm = (torch.bmm(g, g.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
            else:
                pairs.append((sum(self._weight_grad(c.args[0], g, k) for c, g in live), t))
        if pairs:
            d, q = _sum_terms(pairs)
            dot, norm = dot + d, norm + q
        return dot, norm

    def _weight_grad(self, a: torch.Tensor, g: torch.Tensor, k: int) -> torch.Tensor:
        """Per-trial ``G_kᵀ A_k`` (K, out, …): a batched matmul, or for a convolution its weight gradient with the
        trials as K groups (the convolution's own kernels, no im2col)."""
        m = self.module
        if isinstance(m, nn.Linear):
            return torch.bmm(self._out_rows(g, k).transpose(1, 2), self._rows(a, k))
        grouped_a = _trials_as_channels(a, k)
        grouped_g = _trials_as_channels(g, k)
        w = torch.nn.grad.conv2d_weight(grouped_a, (k * m.weight.shape[0], *m.weight.shape[1:]), grouped_g,
                                        m.stride, m.padding, m.dilation, groups=k)
        return w.reshape(k, *m.weight.shape)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    """The rows of every call of a layer, (K, n, …); no copy for a layer called once."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _trials_as_channels(x: torch.Tensor, k: int) -> torch.Tensor:
    """(K·B, C, …) as (B, K·C, …): trial k's channels are group k of a grouped convolution."""
    b = x.shape[0] // k
    return x.reshape(k, b, *x.shape[1:]).transpose(0, 1).reshape(b, k * x.shape[1], *x.shape[2:])


class _Depthwise(_Rule):
    """giacheck's depthwise convolution: ``∂L/∂w[k, c] = Σ_b xcorr(x[k, b, c], G[k, b, c])`` for all (k, c) as
    one grouped convolution (the batch as each group's input channels)."""

    def terms(self, calls, grads, sources, targets, k):
        live = _live(calls, grads)
        if not live:
            return None
        m, weight_grad, bias_grad = self.module, 0, 0
        for c, g in live:
            x = c.args[0]
            rows, channels, height, width = x.shape
            b = rows // k
            xs = x.reshape(k, b, channels, height, width).transpose(1, 2).reshape(1, k * channels * b, height, width)
            gs = g.reshape(k, b, channels, *g.shape[2:]).transpose(1, 2).reshape(k * channels, b, *g.shape[2:])
            weight_grad = weight_grad + F.conv2d(xs, gs, padding=m.padding, groups=k * channels).reshape(
                k, *m.weight.shape)
            bias_grad = bias_grad + g.reshape(k, b, channels, -1).sum((1, 3))
        pairs = [(weight_grad, targets["weight"])] if "weight" in self.params else []
        if "bias" in self.params:
            pairs.append((bias_grad, targets["bias"]))
        return _sum_terms(pairs)


class _Norm(_Rule):
    """BatchNorm, LayerNorm (timm's channels-first ``LayerNorm2d`` too) and GroupNorm: ``Σ G ∘ x̂`` and ``Σ G``."""

    def _normalized(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``x̂`` and its channel dimension."""
        m = self.module
        if isinstance(m, GhostBatchNorm):
            return m.normalized(x), 1
        if isinstance(m, nn.GroupNorm):
            return F.group_norm(x, m.num_groups, None, None, m.eps), 1
        if type(m).__name__ == "LayerNorm2d":
            return F.layer_norm(x.permute(0, 2, 3, 1), m.normalized_shape, None, None, m.eps).permute(0, 3, 1, 2), 1
        return F.layer_norm(x, m.normalized_shape, None, None, m.eps), -1

    def terms(self, calls, grads, sources, targets, k):
        live = _live(calls, grads)
        if not live:
            return None
        weight_grad, bias_grad = 0, 0
        for c, g in live:
            xhat, channel = self._normalized(c.args[0])
            weight_grad = weight_grad + _per_trial_channel_sum(g * xhat, channel, k, self.module.weight.shape)
            bias_grad = bias_grad + _per_trial_channel_sum(g, channel, k, self.module.weight.shape)
        pairs = [(weight_grad, targets["weight"])] if "weight" in self.params else []
        if "bias" in self.params:
            pairs.append((bias_grad, targets["bias"]))
        return _sum_terms(pairs)


def _per_trial_channel_sum(v: torch.Tensor, channel: int, k: int, shape: torch.Size) -> torch.Tensor:
    """Σ over each trial's rows and every non-parameter dimension: (K, *shape)."""
    if channel == -1:  # LayerNorm: the parameter spans the trailing dims
        return v.reshape(k, -1, *shape).sum(1)
    return v.reshape(k, -1, v.shape[1], v[0, 0].numel()).sum((1, 3))


class _NormAct(_Norm):
    """:class:`GhostBatchNormAct`: the gradient at the pre-activation output (recorded by the module)."""

    def install(self, k: int, sources: list[torch.Tensor]) -> list[Any]:
        return [_Sink(self.module, sources)]

    def gradient_sources(self, calls, sources):
        return sources


class _WindowAttention(_Rule):
    """timm's Swin ``WindowAttention``: the bias table is expanded per trial before it is gathered into the
    attention logits, so the gradient at the expanded table is each trial's own."""

    needs_param_grad = True

    def install(self, k: int, sources: list[torch.Tensor]) -> list[Any]:
        def before(mod: nn.Module, args: tuple[Any, ...]) -> None:
            rows, n = args[0].shape[0], mod.window_area
            table = mod.relative_position_bias_table.unsqueeze(0).expand(k, -1, -1)
            sources.append(table)

            def bias() -> torch.Tensor:
                b = table[:, mod.relative_position_index.view(-1)].view(k, n, n, -1).permute(0, 3, 1, 2)
                return b.unsqueeze(1).expand(k, rows // k, *b.shape[1:]).reshape(rows, *b.shape[1:])

            mod._get_rel_pos_bias = bias  # this instance, until the recording ends (_Restore)

        return [self.module.register_forward_pre_hook(before), _Restore(self.module, "_get_rel_pos_bias")]

    def gradient_sources(self, calls, sources):
        return sources

    def terms(self, calls, grads, sources, targets, k):
        live = [g for g in grads if g is not None]
        if not live:
            return None
        return _sum_terms([(sum(live), targets["relative_position_bias_table"])])


class _ConvNeXtBlock(_Rule):
    """timm's ``ConvNeXtBlock`` layer scale: ``∂L/∂γ_k = Σ G ∘ u`` over trial k, ``u`` the MLP branch's output
    and ``G`` the gradient at the block's output (drop-path is the identity in an attack)."""

    def install(self, k: int, sources: list[torch.Tensor]) -> list[Any]:
        return [self.module.mlp.register_forward_hook(lambda mod, args, output: sources.append(output))]

    def terms(self, calls, grads, sources, targets, k):
        live = [(g, u) for g, u in zip(grads, sources, strict=True) if g is not None]
        if not live:
            return None
        gamma_grad = 0
        for g, u in live:
            u = u if self.module.use_conv_mlp else u.permute(0, 3, 1, 2)
            gamma_grad = gamma_grad + _per_trial_channel_sum(g * u, 1, k, self.module.gamma.shape)
        return _sum_terms([(gamma_grad, targets["gamma"])])


def make_rule(name: str, module: nn.Module, params: list[str]) -> _Rule | None:
    """The rule for ``module``'s own parameters ``params`` (local names), or None where none applies."""
    kind = type(module)
    if kind is nn.Linear or (kind is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
                             and isinstance(module.padding, tuple)):
        return _Dense(name, module, params)
    if kind is DepthwiseConv2d:
        return _Depthwise(name, module, params)
    if kind is GhostBatchNormAct:
        return _NormAct(name, module, params)
    if isinstance(module, GhostBatchNorm | nn.GroupNorm | nn.LayerNorm):
        return _Norm(name, module, params)
    if kind.__name__ == "WindowAttention" and params == ["relative_position_bias_table"] \
            and hasattr(module, "relative_position_index") and hasattr(module, "_get_rel_pos_bias"):
        return _WindowAttention(name, module, params)
    if kind.__name__ == "ConvNeXtBlock" and params == ["gamma"] and hasattr(module, "mlp"):
        return _ConvNeXtBlock(name, module, params)
    return None


def uncovered(net: nn.Module, names: set[str]) -> list[str]:
    """The modules (with their class) whose own parameters in ``names`` no rule covers."""
    out = []
    for mod_name, module in net.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False) if _full(mod_name, p) in names]
        if own and make_rule(mod_name, module, own) is None:
            out.append(f"{mod_name or '<root>'} ({type(module).__name__}: {', '.join(own)})")
    return out


def _full(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param
