"""K independent attacks on one global model as one forward and one double backward (DESIGN §4).

A trial is one attack: its own image batch (B images), labels, client update and statistics target; restarts
of one attack are trials that share an update. :class:`StackedReplica` stacks the trials' images along the batch
axis, runs the replica once, takes one backward of ``Σ_k L_k`` to every layer's output and forms each trial's
update distance from per-trial terms (``pertrial.py``): the forward and backward convolutions keep their own
kernels at K times the batch (no per-trial weights, so none becomes a grouped convolution as under ``vmap``), and
a large layer's per-trial weight gradient is factored where it has few rows. The objective of trial k depends only
on trial k's images, so one backward of ``Σ_k objective_k`` gives every trial its own gradient, and one Adam over
the stack is exactly K Adams (element-wise). The same math as K separate attacks (float64: 1e-10,
``tests/test_trials.py``); in float32 a trial's rounding depends on the trials it is stacked with.

Where the math does not allow it, :func:`stacking_refusal` says why and the attacks run one after another:
a multi-step (FedAvg) update or a defence (each trial's parameters move apart), detection targets, trials
that differ in shape, BN mode or shared tensors, a module whose own parameters no rule covers, a train-mode
BatchNorm of another kind or one without running statistics, and on a CPU a model whose activations are large
(:data:`CPU_STACK_ELEMENTS`). The engine is checked once per replica on seeded probes against each trial run
alone, as ``lowrank.py`` checks its plan; a disagreement, or a rule that fails on the probe, refuses stacking.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from giacheck.attack.bnstats import NormTarget, shape_forward, stats_prior
from giacheck.attack.distance import from_terms
from giacheck.attack.kernels import accelerate
from giacheck.attack.objective import check_update
from giacheck.attack.pertrial import GhostBatchNorm, GhostBatchNormAct, Taps, make_rule, uncovered
from giacheck.client import ClientUpdate, loss_of
from giacheck.specs import AttackSpec, BNMode, UpdateKind

__all__ = ["CPU_STACK_ELEMENTS", "StackedReplica", "largest_activation", "stacking_refusal"]

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)

# On a CPU a trial whose largest activation holds more elements than this runs alone: its layers are already
# operations large enough that stacking only adds cache misses (one thread, K = 8 stacked against 8 in a row:
# ResNet-18 at 32 px, 65k elements, 1.47x; Swin-T, 98k, 1.74x; ConvNeXt-T, 393k, 0.93-1.05x, and 0.96x at K = 2).
CPU_STACK_ELEMENTS = 2**18


def stacking_refusal(model: nn.Module, updates: Sequence[ClientUpdate], labels: Sequence[Any]) -> str | None:
    """Why these trials cannot run stacked (None: they can); checked before any replica is built."""
    first = updates[0]
    if any(u.kind is not UpdateKind.FEDSGD or u.local_steps > 1 for u in updates):
        return "a multi-step (FedAvg) update: each trial's local training moves its own copy of the weights"
    if any(u.clients > 1 or u.client.augment != "none" for u in updates):
        return "an aggregated or augmented update: each trial runs its own local steps"
    if any(u.defences for u in updates):
        return "a defended update: defences act on each trial's whole update"
    if any(not isinstance(y, torch.Tensor) for y in labels):
        return "detection targets (a dict per batch): the loss couples the batch"
    if any(u.input_shape != first.input_shape or u.bn_mode is not first.bn_mode
           or list(u.tensors) != list(first.tensors) for u in updates):
        return "trials differ in batch shape, BN mode or the tensors they share"
    if first.bn_mode is BNMode.TRAIN:
        others = [n for n, m in model.named_modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and type(m) not in _BN_TYPES
                  and not _is_bn_act(m)]
        if others:
            return f"train-mode BatchNorm of a kind without ghost batches: {others[0]}"
    else:
        batch_stats = [n for n, m in model.named_modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None]
        if batch_stats:  # eval mode without running statistics normalizes by the batch: trials would mix
            return f"BatchNorm without running statistics (normalizes by the batch in eval mode): {batch_stats[0]}"
    device = next(model.parameters()).device
    if device.type == "cpu" and (largest := largest_activation(model, first.input_shape)) > CPU_STACK_ELEMENTS:
        return (f"on a CPU, a trial's largest activation ({largest} elements, more than {CPU_STACK_ELEMENTS}) "
                "is already a cache-sized operation: stacking would not pay")
    missing = uncovered(_replica_net(model, first.bn_mode, 1), set(first.tensors))
    if missing:
        return "no per-trial rule for " + ", ".join(missing[:3]) + (f" and {len(missing) - 3} more"
                                                                    if len(missing) > 3 else "")
    return None


def largest_activation(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Elements of the largest module output of one trial (a shape-only forward in eval mode, nothing updated)."""
    largest = 0

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    shape_forward(model, input_shape, [m.register_forward_hook(hook) for m in model.modules()])
    return largest


def _replica_net(model: nn.Module, bn_mode: BNMode, trials: int) -> nn.Module:
    """The attacker's copy: giacheck's kernels, the client's BN mode, BatchNorm frozen and ghost-batched."""
    net = copy.deepcopy(model)
    accelerate(net)
    net.train(bn_mode is BNMode.TRAIN)
    for module in net.modules():
        if type(module) in _BN_TYPES or _is_bn_act(module):
            module.__class__ = GhostBatchNormAct if _is_bn_act(module) else GhostBatchNorm
            module.trials = trials
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False  # train: normalize with batch stats, update nothing
    return net


def _is_bn_act(module: nn.Module) -> bool:
    """timm's ``BatchNormAct2d``: a stock BatchNorm2d forward followed by ``drop`` and ``act``."""
    return type(module).__name__ == "BatchNormAct2d" and isinstance(module, nn.BatchNorm2d) \
        and hasattr(module, "act") and hasattr(module, "drop")


class StackedReplica:
    """The replica of K trials (see the module docstring); build with :meth:`build`."""

    def __init__(self, model: nn.Module, updates: Sequence[ClientUpdate], labels: Sequence[torch.Tensor],
                 stats: Sequence[NormTarget | None]) -> None:
        first = updates[0]
        self.k, self.batch = len(updates), first.input_shape[0]
        self.input_shape = first.input_shape
        net = _replica_net(model, first.bn_mode, self.k)
        names = set(first.tensors)
        self.net, self.labels, self.stats = net, list(labels), list(stats)
        self.loss = loss_of(net)
        self.rules = {}
        for mod_name, module in net.named_modules():
            own = [p for p, _ in module.named_parameters(recurse=False) if _full(mod_name, p) in names]
            if own:
                self.rules[mod_name] = make_rule(mod_name, module, own)
        self.taps = Taps({n: r.module for n, r in self.rules.items()})
        # gradients are taken at layer outputs; a parameter that needs none costs no weight gradient in the
        # backward (giacheck's depthwise kernel computes every input's gradient it is asked for)
        needed = {_full(n, p) for n, r in self.rules.items() if r.needs_param_grad for p in r.params}
        self.update_params = {n: p for n, p in net.named_parameters() if n in names}
        for name, p in net.named_parameters():
            p.requires_grad_(name in needed)
        same = all(u is first for u in updates)
        self.targets = {
            mod_name: {p: _stack([u.tensors[_full(mod_name, p)] for u in updates], same) for p in rule.params}
            for mod_name, rule in self.rules.items()}
        # each trial's ‖T_k‖, accumulated in float64 as ``Replica.target_norm`` (a tensor: no host sync)
        norms = {id(u): torch.stack([t.double().pow(2).sum() for t in u.tensors.values()]).sum().sqrt()
                 for u in updates}
        dtype = next(iter(first.tensors.values())).dtype
        self.target_norm = torch.stack([norms[id(u)] for u in updates]).to(dtype)
        modules = dict(net.named_modules())
        self.norms = {n: modules[n] for n in stats[0].mean} if stats[0] is not None else {}

    @classmethod
    def build(cls, model: nn.Module, updates: Sequence[ClientUpdate], labels: Sequence[Any],
              stats: Sequence[NormTarget | None]) -> tuple[StackedReplica | None, str | None]:
        """The stacked replica, or None and the reason it cannot be used (:func:`stacking_refusal`, or a
        disagreement with the materialized gradients on seeded probes)."""
        if len(updates) < 2:
            return None, "a single trial"
        if {s is None for s in stats} == {True, False} or len({tuple(s.mean) for s in stats if s}) > 1:
            return None, "trials differ in their statistics target"
        params = dict(model.named_parameters())
        for update in {id(u): u for u in updates}.values():
            check_update(update, params)  # bad input is an error, stacked or not
        reason = stacking_refusal(model, updates, labels)
        if reason is not None:
            return None, reason
        try:
            replica = cls(model, updates, labels, stats)
            problem = replica._check()
        except (RuntimeError, ValueError) as exc:  # a layer the rules do not fit: the loop still runs it
            return None, f"the stacked replica failed on the probe ({type(exc).__name__}: {exc})"
        return (replica, None) if problem is None else (None, problem)

    def terms(self, x: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Per-trial ``(⟨g_k, T_k⟩, ‖g_k‖²)`` for images ``x`` (K, B, C, H, W), differentiable in ``x``, and the
        per-trial input statistics of the prior's norm layers when ``record``."""
        k = self.k
        recorded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        install = {n: functools.partial(r.install, k) for n, r in self.rules.items()}
        handles = [m.register_forward_pre_hook(_stats_hook(n, k, recorded)) for n, m in self.norms.items()] \
            if record else []
        try:
            with self.taps.recording(install) as taps:
                logits = self.net(x.reshape(k * self.batch, *x.shape[2:]))
        finally:
            for h in handles:
                h.remove()
        loss = sum(self.loss(part, y) for part, y in zip(logits.split(self.batch), self.labels, strict=True))
        sources = {n: r.gradient_sources(taps.calls[n], taps.sources[n]) for n, r in self.rules.items()}
        flat = [t for n in self.rules for t in sources[n]]
        grads = iter(torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True))
        dot = norm = torch.zeros(k, dtype=x.dtype, device=x.device)
        for n, rule in self.rules.items():
            g = [next(grads) for _ in sources[n]]
            found = rule.terms(taps.calls[n], g, taps.sources[n], self.targets[n], k)
            if found is not None:
                dot, norm = dot + found[0], norm + found[1]
        return dot, norm, recorded

    def objective(self, spec: AttackSpec):
        """``f(x (K,B,C,H,W)) -> (objective (K,), update distance (K,))``, trial by trial as ``Replica``'s."""
        use_prior = self.stats[0] is not None and spec.bn_weight > 0

        def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dot, norm, recorded = self.terms(x, record=use_prior)
            dist = from_terms(spec.distance, dot, norm, self.target_norm)
            total = dist + spec.tv_weight * _total_variation(x)
            if use_prior:
                prior = torch.stack([
                    stats_prior({n: m[i] for n, (m, _) in recorded.items()},
                                {n: v[i] for n, (_, v) in recorded.items()}, target, spec.bn_prior)
                    for i, target in enumerate(self.stats)])
                total = total + spec.bn_weight * prior
            return total, dist

        return f

    def _check(self) -> str | None:
        """The stacked terms equal each trial's materialized ones on seeded probes (1e-3 relative, as
        ``lowrank.py``'s check): float rounding is ~1e-6, a rule that does not fit the model is far more. The
        reference runs every trial alone through the stock path (one ghost group, so a train-mode BatchNorm is
        stock), with TF32 off so that a GPU's rounding is not mistaken for a wrong rule."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand((self.k, *self.input_shape), generator=gen).to(next(self.net.parameters()))
        with _full_precision():
            dot, norm = (t.detach() for t in self.terms(x.requires_grad_(True))[:2])
            refs = self._reference_terms(x.detach())
        for i, (ref_dot, ref_norm) in enumerate(refs):
            scale = math.sqrt(ref_norm) * float(self.target_norm[i])
            if abs(float(dot[i]) - ref_dot) > 1e-3 * scale or abs(float(norm[i]) - ref_norm) > 1e-3 * ref_norm:
                return (f"the stacked per-trial terms disagree with trial {i}'s gradient (<g,t> {float(dot[i]):.6g} "
                        f"vs {ref_dot:.6g}, |g|^2 {float(norm[i]):.6g} vs {ref_norm:.6g}): a parameter is used "
                        "outside its module's call, or samples interact")
        return None

    def _reference_terms(self, x: torch.Tensor) -> list[tuple[float, float]]:
        """Each trial's ``(⟨g, T⟩, ‖g‖²)`` from its materialized gradient, the trial run alone."""
        params = self.update_params
        flags = {n: p.requires_grad for n, p in params.items()}
        ghosts = [m for m in self.net.modules() if isinstance(m, GhostBatchNorm)]
        for p in params.values():
            p.requires_grad_(True)
        for m in ghosts:
            m.trials = 1
        out = []
        try:
            for i in range(self.k):
                grads = torch.autograd.grad(self.loss(self.net(x[i]), self.labels[i]), list(params.values()),
                                            allow_unused=True)
                dot = norm = 0.0
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        module, _, local = n.rpartition(".")
                        dot += float((g.double() * self.targets[module][local][i].double()).sum())
                        norm += float(g.double().pow(2).sum())
                out.append((dot, norm))
        finally:
            for n, p in params.items():
                p.requires_grad_(flags[n])
            for m in ghosts:
                m.trials = self.k
        return out


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """cuDNN without TF32 (its default on Ampere and later), for the probe check only."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False):
        yield


def _stack(tensors: list[torch.Tensor], same: bool) -> torch.Tensor:
    """(K, …): a view when every trial shares one update (restarts), else a copy."""
    return tensors[0].unsqueeze(0).expand(len(tensors), *tensors[0].shape) if same else torch.stack(tensors)


def _full(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """``objective.total_variation`` per trial of (K, B, C, H, W)."""
    return ((x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
            + (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1))


def _stats_hook(name: str, k: int, recorded: dict):
    """Per-trial mean and biased variance of a norm layer's input (``bnstats._channel_stats``, trial by trial)."""
    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if name in recorded:  # first call only, as NormStatsRecorder
            return
        x = args[0]
        channels_last = isinstance(module, nn.LayerNorm) and type(module).__name__ != "LayerNorm2d"
        per = x.reshape(k, -1, *x.shape[1:])
        channel = per.dim() - 1 if channels_last else 2
        dims = [d for d in range(1, per.dim()) if d != channel]
        var, mean = torch.var_mean(per, dim=dims, correction=0)
        recorded[name] = (mean, var)
    return hook
