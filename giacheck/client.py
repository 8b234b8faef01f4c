"""Simulate one federated client update: a FedSGD gradient or a FedAvg weight delta (DESIGN §4).

``local_training`` is the client's training, written once: the simulation here and the attacker's replica
(``attack/objective.py``) both call it, with the client's defence chain (``defences.py``).

The client trains a private copy of the global model, so the server's model keeps its global state. BatchNorm
running statistics before and after the local step are recorded with each module's own momentum, because the
``naive`` and ``exact`` threat models read them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from giacheck.defences import DPSGD, Defence, DefenceStage, make_defences
from giacheck.errors import WeightsError
from giacheck.models.registry import mean_cross_entropy
from giacheck.models.weights import describe_nonfinite, nonfinite_tensors
from giacheck.specs import Augment, BNMode, ClientSpec, HyperKnowledge, UpdateKind, parse_optimizer

__all__ = [
    "BNStats",
    "ClientUpdate",
    "LocalStep",
    "Optimizer",
    "bn_modules",
    "check_finite_model",
    "local_training",
    "loss_of",
    "plan_steps",
    "simulate_update",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BNStats:
    """Running statistics of one BatchNorm module (``momentum=None`` means a cumulative average)."""

    mean: torch.Tensor
    var: torch.Tensor
    num_batches_tracked: int
    momentum: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientUpdate:
    """What the client shares: per-parameter tensors keyed by name, plus BN running statistics.

    ``tensors`` holds the gradient (FedSGD) or ``new - old`` weights (FedAvg); under secure aggregation, the mean
    of ``clients`` clients' updates, ``input_shape`` then covering all their images. ``spec`` is the local training
    the attacker's replica reruns, and ``draws_seed`` the seed of its data order and augmentation draws where the
    attacker knows it (``hp_draws``), else ``None`` (the replica draws its own order, without augmentation).
    The private images are not here.
    """

    kind: UpdateKind
    tensors: dict[str, torch.Tensor]
    bn_before: dict[str, BNStats]
    bn_after: dict[str, BNStats]
    bn_mode: BNMode
    batch_size: int
    local_steps: int
    local_lr: float
    input_shape: tuple[int, ...]
    defences: tuple[str, ...] = ()  # the client's defence chain (id tokens), which the server is assumed to know
    spec: ClientSpec | None = None  # None: plain SGD from the fields above
    draws_seed: int | None = None
    clients: int = 1
    captured: dict[str, Any] | None = None  # a real framework client's round: what the server saw (giacheck.fl)

    @property
    def client(self) -> ClientSpec:
        """The local training that produced this update, as the attacker's replica reruns it."""
        if self.spec is not None:
            return self.spec
        return ClientSpec(bn_mode=self.bn_mode, batch_size=self.batch_size, update=self.kind,
                          local_steps=self.local_steps, local_lr=self.local_lr, defences=self.defences)

    def seen_by_server(self, hyper: HyperKnowledge) -> ClientUpdate:
        """This update as a server that knows ``hyper`` of the local training receives it: ``draws`` keeps the
        seed of the client's data order and augmentation; ``known`` drops it; ``unknown`` also replaces the
        training by one full-batch plain-SGD step at lr 0.01 (FedAvg) without augmentation. The defence chain
        stays known."""
        hyper = HyperKnowledge(hyper)
        if hyper is HyperKnowledge.DRAWS:
            return self
        if hyper is HyperKnowledge.KNOWN:
            return dataclasses.replace(self, draws_seed=None)
        assumed = ClientSpec(bn_mode=self.bn_mode, batch_size=self.batch_size, update=self.kind, local_steps=1,
                             defences=self.defences)
        return dataclasses.replace(self, spec=assumed, local_steps=1, local_lr=assumed.local_lr, draws_seed=None)


def bn_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm module (timm's ``BatchNormAct2d`` included) that tracks running statistics, by name."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def loss_of(model: nn.Module):
    """The model's own training loss (``NormalizedModel.loss``, e.g. a detection loss), else mean cross-entropy."""
    return getattr(model, "loss", mean_cross_entropy)


@dataclass(frozen=True, slots=True)
class LocalStep:
    """One local step's view of the client's images: which of them (``index``; ``None``: all, in order) and the
    augmentation drawn for each (horizontal ``flips``; crop ``shifts`` into the image zero-padded by ``pad``).

    Its methods are differentiable in the images, so the replica runs the very same step on its dummy batch.
    """

    index: torch.Tensor | None = None
    flips: torch.Tensor | None = None  # bool, one per selected image
    shifts: torch.Tensor | None = None  # (n, 2) long: the crop's top-left corner in the padded image
    pad: int = 0
    batch_size: int | None = None  # the configured mini-batch size (DP-SGD divides by it, as Opacus does)

    @property
    def whole(self) -> bool:
        """The step sees every image as it is (no selection, no augmentation)."""
        return self.index is None and self.flips is None and self.shifts is None

    def images(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            x = x[self.index.to(x.device)]
        if self.shifts is not None:
            h, w = x.shape[-2:]
            padded = nn.functional.pad(x, (self.pad,) * 4)
            x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(self.shifts.tolist())])
        if self.flips is not None:
            x = torch.where(self.flips.to(x.device)[:, None, None, None], x.flip(-1), x)
        return x

    def targets(self, y: Any) -> Any:
        return y if self.index is None else y[self.index.to(y.device)]


def plan_steps(spec: ClientSpec, count: int, resolution: int, draws: torch.Generator | None) -> list[LocalStep]:
    """The client's local steps over its ``count`` images: FedSGD one, FedAvg ``local_steps`` epochs of shuffled
    mini-batches (``spec.minibatch``, the last one smaller when it does not divide), each with its augmentation.

    ``draws`` (a CPU generator) draws the order and the augmentation; ``None``: the replica does not know them,
    and runs a fixed order (seed 0) without augmentation.
    """
    augment = spec.augment if draws is not None else Augment.NONE
    draws = draws if draws is not None else torch.Generator().manual_seed(0)
    epochs = spec.local_steps if spec.update is UpdateKind.FEDAVG else 1
    size = spec.minibatch or count
    steps = []
    for _ in range(epochs):
        order = torch.randperm(count, generator=draws) if size < count else None
        for start in range(0, count, size):
            index = order[start:start + size] if order is not None else None
            n = count if index is None else len(index)
            flips = torch.rand(n, generator=draws) < 0.5 if augment in (Augment.FLIP, Augment.CROPFLIP) else None
            pad = resolution // 8  # 4 pixels at 32 px, as the CIFAR recipes' RandomCrop(32, padding=4)
            shifts = (torch.randint(0, 2 * pad + 1, (n, 2), generator=draws)
                      if augment in (Augment.CROP, Augment.CROPFLIP) and pad > 0 else None)
            steps.append(LocalStep(index=index, flips=flips, shifts=shifts, pad=pad, batch_size=size))
    return steps


GradFn = Callable[..., dict[str, torch.Tensor]]  # (params, step, per_sample=False) -> gradients by name


def local_training(params: dict[str, torch.Tensor], grad_fn: GradFn, spec: ClientSpec,
                   defences: Sequence[Defence] = (), *, steps: Sequence[LocalStep],
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The client's local training, shared by the client simulation and the attacker's replica.

    Args:
        params: the global model's trained parameters by name (the first ``grad_fn`` call gets this very dict).
        grad_fn: ``grad_fn(at, step, per_sample=False)``, the training loss's gradient at parameters ``at`` on
            ``step``'s images, by name; with ``per_sample=True`` each sample's (a leading axis of samples).
        spec: FedSGD (one gradient) or FedAvg (``steps`` of the optimizer ``spec.optimizer`` at ``local_lr``,
            with ``weight_decay``), as ``torch.optim`` computes them.
        defences: applied in order at their stage (``giacheck.defences``); ``aggregate`` ones are the runner's.
        steps: the local steps (:func:`plan_steps`).
        generator: the randomness of the defences (``None``: no noise, as the replica runs them).

    Returns:
        The shared update by name: the gradient (FedSGD) or ``new − old`` parameters (FedAvg).
    """
    by_stage = {stage: [d for d in defences if d.stage is stage] for stage in DefenceStage}

    def gradient(at: dict[str, torch.Tensor], step: LocalStep) -> dict[str, torch.Tensor]:
        if by_stage[DefenceStage.SAMPLE]:
            g = grad_fn(at, step, per_sample=True)
            for defence in by_stage[DefenceStage.SAMPLE]:
                g = defence.apply(g, generator=generator, **({"batch_size": step.batch_size}
                                                             if isinstance(defence, DPSGD) else {}))
        else:
            g = grad_fn(at, step)
        for defence in by_stage[DefenceStage.STEP]:
            g = defence.apply(g, generator=generator)
        return g

    if spec.update is UpdateKind.FEDSGD:
        update = gradient(params, steps[0])
    else:
        optimizer = Optimizer(spec)
        current = params
        for step in steps:
            current = optimizer.step(current, gradient(current, step))
        update = {n: current[n] - params[n] for n in params}
    for defence in by_stage[DefenceStage.UPDATE]:
        update = defence.apply(update, generator=generator)
    return update


class Optimizer:
    """The client's optimizer as a pure function of parameters and gradients, step for step the update of
    ``torch.optim.SGD`` (momentum, dampening 0, Nesterov, weight decay) or ``torch.optim.Adam`` (default betas
    and eps, L2 weight decay), so that the replica can differentiate through it."""

    BETAS, EPS = (0.9, 0.999), 1e-8

    def __init__(self, spec: ClientSpec) -> None:
        self.kind, self.momentum = parse_optimizer(spec.optimizer)
        self.lr, self.weight_decay = spec.local_lr, spec.weight_decay
        self.state: dict[str, tuple[torch.Tensor, ...]] = {}
        self.t = 0

    def step(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.t += 1
        out = {}
        for n, p in params.items():
            g = grads[n] + self.weight_decay * p if self.weight_decay else grads[n]
            out[n] = p - self.lr * self._direction(n, g)
        return out

    def _direction(self, name: str, g: torch.Tensor) -> torch.Tensor:
        if self.kind == "adam":
            (b1, b2), t = self.BETAS, self.t
            m, v = self.state.get(name, (torch.zeros_like(g), torch.zeros_like(g)))
            m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            self.state[name] = (m, v)
            positive = v > 0  # sqrt's derivative at 0 is infinite: take it only where v > 0 (there m = 0 too)
            root = torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), torch.zeros_like(v))
            return (m / (1 - b1 ** t)) / (root / math.sqrt(1 - b2 ** t) + self.EPS)
        if self.kind == "sgd":
            return g
        buf = self.momentum * self.state[name][0] + g if name in self.state else g
        self.state[name] = (buf,)
        return g + self.momentum * buf if self.kind == "nesterov" else buf


def check_finite_model(model: nn.Module) -> None:
    """Refuse a global model whose own parameters or buffers hold NaN or Inf, naming the tensors.

    Raises:
        WeightsError: some parameter or buffer is not finite.
    """
    found = nonfinite_tensors([*model.named_parameters(), *model.named_buffers()])
    if found:
        raise WeightsError(
            f"the global model's own weights are non-finite in {len(found)} tensor(s) — {describe_nonfinite(found)} — "
            "before the client trains: the NaN/Inf comes from the model (its weights file, its factory or the "
            "preparation of its state), not from the client's learning rate or images. Valid: a global model "
            "whose every parameter and buffer is finite."
        )


DRAWS_OFFSET = 1_000_003  # the client's training draws are seeded apart from its defences' noise


def simulate_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: ClientSpec, *,
                    seed: int = 0) -> ClientUpdate:
    """Run the client's local training on a private copy of ``model`` and return what it shares.

    ``seed`` seeds the client's own randomness: its defences' noise, and (offset) its data order and
    augmentation draws.

    Raises:
        WeightsError: the global model's own parameters or buffers are not finite (checked before training).
    """
    check_finite_model(model)
    client = copy.deepcopy(model)
    client.train(spec.bn_mode is BNMode.TRAIN)
    before = _snapshot(client)
    params = dict(client.named_parameters())
    loss_fn = loss_of(client)
    per_sample = _PerSample(client, loss_fn)

    def grad_fn(at: dict[str, torch.Tensor], step: LocalStep, per_sample_grads: bool = False
                ) -> dict[str, torch.Tensor]:
        x, y = step.images(images), step.targets(labels)
        if per_sample_grads:
            return per_sample(at, x, y)
        outputs = client(x) if at is params else functional_call(client, at, (x,))
        grads = torch.autograd.grad(loss_fn(outputs, y), list(at.values()))
        return {name: g.detach() for name, g in zip(at, grads, strict=True)}

    draws_seed = seed + DRAWS_OFFSET
    steps = plan_steps(spec, images.shape[0], images.shape[-1], torch.Generator().manual_seed(draws_seed))
    generator = torch.Generator(device=images.device).manual_seed(seed)
    tensors = local_training(params, lambda at, step, per_sample=False: grad_fn(at, step, per_sample), spec,
                             make_defences(spec.defences), steps=steps, generator=generator)
    return ClientUpdate(
        kind=spec.update,
        tensors={name: t.detach() for name, t in tensors.items()},
        bn_before=before,
        bn_after=_snapshot(client),
        bn_mode=spec.bn_mode,
        batch_size=images.shape[0],
        local_steps=spec.local_steps if spec.update is UpdateKind.FEDAVG else 1,
        local_lr=spec.local_lr,
        input_shape=tuple(images.shape),
        defences=spec.defences,
        spec=spec,
        draws_seed=draws_seed,
    )


class _PerSample:
    """Per-sample gradients of the client's loss with Opacus' grad-sample module on a copy of the client
    (parameters loaded from ``at`` on each call, so the client's own stay the global model's). Its
    expanded-weights mode (``"ew"``): the hook modes fail on residual blocks that add in place (timm's ResNets)."""

    def __init__(self, client: nn.Module, loss_fn: Callable) -> None:
        self.client, self.loss_fn, self.module = client, loss_fn, None

    def __call__(self, at: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        from opacus.grad_sample import get_gsm_class  # lazy: only DP-SGD needs it

        if self.module is None:
            net = copy.deepcopy(self.client)
            for m in net.modules():  # Opacus records activations only in training mode: flag the layers it hooks,
                if getattr(m, "inplace", False) is True:
                    m.inplace = False  # an in-place activation would overwrite the view Opacus' hooks return
                if next(m.parameters(recurse=False), None) is not None \
                        and not isinstance(m, nn.modules.batchnorm._BatchNorm):  # leaving BN and dropout as set
                    m.training = True
            self.module = get_gsm_class("ew")(net, loss_reduction="mean")
        named = dict(self.module._module.named_parameters())
        with torch.no_grad():
            for name, value in at.items():
                named[name].copy_(value)
        for p in named.values():
            p.grad, p.grad_sample = None, None
        with warnings.catch_warnings():  # the images need no gradient here; Opacus' hooks still fire correctly
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            self.loss_fn(self.module(x), y).backward()
        return {name: named[name].grad_sample.detach().clone() for name in at}


def _snapshot(model: nn.Module) -> dict[str, BNStats]:
    return {
        name: BNStats(
            mean=m.running_mean.detach().clone(),
            var=m.running_var.detach().clone(),
            num_batches_tracked=int(m.num_batches_tracked),
            momentum=m.momentum,
        )
        for name, m in bn_modules(model).items()
    }
