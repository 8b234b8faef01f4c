"""The attacker's replica of the client and the inversion objective (paper Eq. 1, §4.3; DESIGN §4).

The update distance (``distance.py``: ``1 − cos`` by default, or L2) over the whole concatenated update,
``+ λ_TV·TV(x)`` and, when a statistics target is given,
``+ λ_BN·prior``. Everything is a pure function of the image batch, so that ``torch.func`` can take its
gradient too. A FedSGD objective run one restart at a time computes the cosine's terms for wide, few-row layers
without forming their gradients (``lowrank.py``; the same math); several attacks at once stack instead
(``trials.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math

import torch
from torch import nn
from torch.func import functional_call, grad

from giacheck.attack.bnstats import NormStatsRecorder, NormTarget, norm_modules, stats_prior
from giacheck.attack.distance import from_terms, update_distance
from giacheck.attack.kernels import accelerate, using_stock_kernels
from giacheck.attack.lowrank import LowRankPlan, plan_low_rank
from giacheck.client import ClientUpdate, LocalStep, local_training, loss_of, plan_steps
from giacheck.defences import make_defences, rescales_only
from giacheck.errors import InvalidUpdateError
from giacheck.specs import AttackSpec, BNMode, Distance, UpdateKind

__all__ = ["Replica", "attack_view", "check_update", "replica_steps", "total_variation"]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: mean absolute difference of horizontal and vertical neighbours."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


# Where a clipping norm times the update's norm is below this, the cosine's 1e-12 guard would move the objective
# by more than 1e-7 of itself (float32's rounding) when the chain is dropped: it is kept.
_GUARD_MARGIN = 1e-5


def attack_view(update: ClientUpdate, distance: Distance | str) -> ClientUpdate:
    """``update`` as the ``gradmatch_rescaled`` attack sees it. Under the cosine distance, a FedSGD update of one
    client whose defence chain only rescales it (``defences.rescales_only``: clipping, noise the replica never
    draws, DP-SGD on one sample) is attacked as undefended: ``1 − cos(s·g, t) = 1 − cos(g, t)`` for every
    ``s > 0``, even one that depends on the images, so the objective is the same function of the images, and
    the factored distance and stacking apply to it. The cosine's 1e-12 guard breaks the identity where a clipping
    norm times the update's norm nears it (:data:`_GUARD_MARGIN`). Anything else is returned as it is."""
    if not update.defences or Distance(distance) is not Distance.COSINE:
        return update
    if update.kind is not UpdateKind.FEDSGD or update.clients > 1:
        return update
    defences = make_defences(update.defences)
    if not rescales_only(defences, update.input_shape[0]):
        return update
    norms = [getattr(d, "max_norm", None) or getattr(d, "max_grad_norm", None) for d in defences]
    target_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in update.tensors.values()))
    if any(n is not None and n * target_norm < _GUARD_MARGIN for n in norms):
        return update
    client = dataclasses.replace(update.spec, defences=()) if update.spec is not None else None
    return dataclasses.replace(update, defences=(), spec=client)


class Replica:
    """The attacker's copy of the global model, run like the client: same BN mode, same loss, same unrolling.

    The replica's BatchNorm layers keep their running statistics frozen (the attacker's forwards must not
    change them), and it only ever sees the shared update, the labels it knows and its own dummy images.
    """

    def __init__(self, model: nn.Module, update: ClientUpdate, labels: torch.Tensor) -> None:
        net = copy.deepcopy(model)
        accelerate(net)  # same math, faster second-order pass (kernels.py); the client keeps the stock modules
        net.train(update.bn_mode is BNMode.TRAIN)
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = False  # train: normalize with batch stats, update nothing
        named = dict(net.named_parameters())
        check_update(update, named)
        for name, p in named.items():
            p.requires_grad_(name in update.tensors)  # leaves for the autograd path; grad() ignores the flag
        self.net = net
        self.update = update
        self.labels = labels
        self.names = list(update.tensors)
        self.params = {n: named[n] for n in self.names}
        self.frozen = {n: p for n, p in named.items() if n not in update.tensors}
        self.buffers = dict(net.named_buffers())
        self.target = [update.tensors[n] for n in self.names]
        self.target_by_name = dict(zip(self.names, self.target, strict=True))
        self.target_norm = math.sqrt(sum(float(t.double().pow(2).sum()) for t in self.target))
        self.norms = norm_modules(net)
        self.loss = loss_of(net)
        self.client = update.client
        self.defences = make_defences(update.defences)
        self.steps = replica_steps(update)
        self.low_rank = self._plan_low_rank()

    def _plan_low_rank(self) -> LowRankPlan:
        """The factored distance (``lowrank.py``) for an undefended FedSGD update; probed on seeded noise."""
        plain = self.update.kind is UpdateKind.FEDSGD and self.update.clients == 1 and self.steps[0][0].whole
        if not plain or self.defences or using_stock_kernels():
            return LowRankPlan({}, {})
        gen = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.rand(self.update.input_shape, generator=gen).to(self.target[0])  # its device and dtype
        return plan_low_rank(self.net, lambda: self.loss(self.net(probe), self.labels), self.params,
                             self.target_by_name)

    def dummy_update(self, x: torch.Tensor, recorder: NormStatsRecorder | None = None, *,
                     functional: bool = True) -> list[torch.Tensor]:
        """The update the client would share for images ``x`` (FedSGD gradient or unrolled FedAvg delta; under
        secure aggregation the mean over the clients' equal shares of ``x``).

        ``functional=True`` differentiates with ``torch.func.grad`` (composable with ``torch.func`` transforms);
        ``False`` with ``torch.autograd.grad(create_graph=True)``, which is faster for a single restart.
        Per-sample gradients (DP-SGD) are taken one sample at a time.
        """

        def loss_fn(params: dict[str, torch.Tensor], x: torch.Tensor, y) -> torch.Tensor:
            if params is self.params:  # the module's own parameters: skip functional_call's swapping
                logits = self.net(x)
            else:
                logits = functional_call(self.net, ({**params, **self.frozen}, self.buffers), (x,))
            return self.loss(logits, y)

        if functional:
            batch_grad = grad(loss_fn)
        else:
            def batch_grad(params: dict[str, torch.Tensor], x: torch.Tensor, y) -> dict[str, torch.Tensor]:
                grads = torch.autograd.grad(loss_fn(params, x, y), list(params.values()), create_graph=True)
                return dict(zip(params, grads, strict=True))
        def sample_grad(params, x, y) -> dict[str, torch.Tensor]:
            """Each sample's gradient, one sample at a time: on a CPU faster than ``vmap`` over them (a DP-SGD
            smoke trial of the 32×32 ResNet-18: 364 s with ``vmap``, 160–210 s this way)."""
            grads = [batch_grad(params, x[i:i + 1], y[i:i + 1]) for i in range(x.shape[0])]
            return {name: torch.stack([g[name] for g in grads]) for name in grads[0]}

        def grad_fn(params, step, x, y, per_sample=False):
            fn = sample_grad if per_sample else batch_grad
            return fn(params, step.images(x), step.targets(y))

        if recorder is not None:
            with recorder.recording():
                return self._unroll(grad_fn, x)
        return self._unroll(grad_fn, x)

    def _unroll(self, grad_fn, x: torch.Tensor) -> list[torch.Tensor]:
        """The client's local training (``client.local_training``, the very function the client ran) on ``x``,
        once per aggregated client on its share of the batch."""
        clients = self.update.clients
        # Aggregation is classification-only (validation), so only tensor labels are ever split.
        labels = self.labels.chunk(clients) if clients > 1 else (self.labels,)
        parts = []
        for xs, ys, steps in zip(x.chunk(clients), labels, self.steps, strict=True):
            parts.append(local_training(
                self.params, lambda params, step, per_sample=False, xs=xs, ys=ys:
                grad_fn(params, step, xs, ys, per_sample), self.client, self.defences, steps=steps, generator=None))
        return [sum(p[n] for p in parts) / len(parts) if len(parts) > 1 else parts[0][n] for n in self.names]

    def distance(self, x: torch.Tensor, kind: str, recorder: NormStatsRecorder | None = None) -> torch.Tensor:
        """The update distance of images ``x`` (one batch) to the client's update."""
        return update_distance(kind, self.dummy_update(x, recorder), self.target, self.target_norm)

    def objective(self, spec: AttackSpec, stats: NormTarget | None, *, functional: bool = True):
        """Return ``f(x) -> (objective, update distance)`` for one restart's image batch ``x``."""
        use_prior = stats is not None and spec.bn_weight > 0
        recorder = NormStatsRecorder({n: self.norms[n] for n in stats.mean}) if use_prior else None

        factored = not functional and bool(self.low_rank)

        def distance(x: torch.Tensor) -> torch.Tensor:
            if not factored:
                return update_distance(spec.distance, self.dummy_update(x, recorder, functional=functional),
                                       self.target, self.target_norm)
            with recorder.recording() if recorder is not None else contextlib.nullcontext():
                dot, norm_sq = self.low_rank.distance_terms(lambda: self.loss(self.net(x), self.labels),
                                                            self.params, self.target_by_name)
            return from_terms(spec.distance, dot, norm_sq, self.target_norm)

        def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            dist = distance(x)
            total = dist + spec.tv_weight * total_variation(x)
            if use_prior:
                total = total + spec.bn_weight * stats_prior(recorder.mean, recorder.var, stats, spec.bn_prior)
            return total, dist

        return f


def replica_steps(update: ClientUpdate) -> list[list[LocalStep]]:
    """The local steps the replica runs for each aggregated client: the client's own draws where the attacker
    knows their seed (``update.draws_seed``; client ``k`` of an aggregate drew with ``draws_seed + k``), else a
    fixed order without augmentation."""
    count = update.input_shape[0] // update.clients
    resolution = update.input_shape[-1]
    return [plan_steps(update.client, count, resolution,
                       torch.Generator().manual_seed(update.draws_seed + k) if update.draws_seed is not None else None)
            for k in range(update.clients)]


def check_update(update: ClientUpdate, params: dict[str, nn.Parameter]) -> None:
    """Reject updates the attack cannot use, naming the tensor: unknown names, wrong shapes, NaN/Inf, all zero."""
    if not update.tensors:
        raise InvalidUpdateError("the client update holds no tensors")
    total = 0.0
    for name, t in update.tensors.items():
        if name not in params:
            raise InvalidUpdateError(f"update tensor {name!r} is not a parameter of the model")
        if t.shape != params[name].shape:
            raise InvalidUpdateError(f"update tensor {name!r} has shape {tuple(t.shape)}, "
                                     f"the model's parameter has {tuple(params[name].shape)}")
        if not torch.isfinite(t).all():
            raise InvalidUpdateError(f"update tensor {name!r} contains NaN or Inf; a diverged client update "
                                     "cannot be inverted (check the client's learning rate and inputs)")
        total += float(t.double().abs().sum())
    if total == 0.0:
        raise InvalidUpdateError("the client update is all zeros: it carries no information to invert")
