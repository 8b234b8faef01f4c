"""Simulate one federated client update: a FedSGD gradient or a FedAvg weight delta (DESIGN §4).

``local_training`` is the client's training, written once: the simulation here and the attacker's replica
(``attack/objective.py``) both call it, with the client's defence chain (``defences.py``).

The client trains a private copy of the global model, so the server's model keeps its global state. BatchNorm
running statistics before and after the local step are recorded with each module's own momentum, because the
``naive`` and ``exact`` threat models read them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from giacheck.defences import Defence, DefenceStage, make_defences
from giacheck.errors import InvalidCaseError, WeightsError
from giacheck.models.registry import mean_cross_entropy
from giacheck.models.weights import describe_nonfinite, nonfinite_tensors
from giacheck.specs import BNMode, ClientSpec, UpdateKind

__all__ = [
    "BNStats",
    "ClientUpdate",
    "bn_modules",
    "check_finite_model",
    "local_training",
    "loss_of",
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

    ``tensors`` holds the gradient (FedSGD) or ``new - old`` weights (FedAvg). The private images are not here.
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

    @property
    def client(self) -> ClientSpec:
        """The local training that produced this update, as the attacker's replica reruns it."""
        return ClientSpec(bn_mode=self.bn_mode, batch_size=self.batch_size, update=self.kind,
                          local_steps=self.local_steps, local_lr=self.local_lr, defences=self.defences)


def bn_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm module (timm's ``BatchNormAct2d`` included) that tracks running statistics, by name."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def loss_of(model: nn.Module):
    """The model's own training loss (``NormalizedModel.loss``, e.g. a detection loss), else mean cross-entropy."""
    return getattr(model, "loss", mean_cross_entropy)


GradFn = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def local_training(params: dict[str, torch.Tensor], grad_fn: GradFn, spec: ClientSpec,
                   defences: Sequence[Defence] = (), *, generator: torch.Generator | None = None
                   ) -> dict[str, torch.Tensor]:
    """The client's local training, shared by the client simulation and the attacker's replica.

    Args:
        params: the global model's trained parameters by name (the first ``grad_fn`` call gets this very dict).
        grad_fn: the training loss's gradient at given parameters, by name.
        spec: FedSGD (one gradient) or FedAvg (``local_steps`` plain SGD steps at ``local_lr``).
        defences: applied in order at their stage (``giacheck.defences``).
        generator: the randomness of the defences.

    Returns:
        The shared update by name: the gradient (FedSGD) or ``new − old`` parameters (FedAvg).
    """
    step_defences = [d for d in defences if d.stage is DefenceStage.STEP]
    update_defences = [d for d in defences if d.stage is DefenceStage.UPDATE]
    unsupported = [d.token for d in defences if d.stage not in (DefenceStage.STEP, DefenceStage.UPDATE)]
    if unsupported:
        raise InvalidCaseError(f"defences {unsupported} act per sample, which needs per-sample gradients; valid "
                               "here: defences at the 'step' or 'update' stage")

    def gradient(at: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        g = grad_fn(at)
        for defence in step_defences:
            g = defence.apply(g, generator=generator)
        return g

    if spec.update is UpdateKind.FEDSGD:
        update = gradient(params)
    else:
        current = params
        for _ in range(spec.local_steps):
            g = gradient(current)
            current = {n: current[n] - spec.local_lr * g[n] for n in params}
        update = {n: current[n] - params[n] for n in params}
    for defence in update_defences:
        update = defence.apply(update, generator=generator)
    return update


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


def simulate_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: ClientSpec, *,
                    seed: int = 0) -> ClientUpdate:
    """Run the client's local training on a private copy of ``model`` and return what it shares.

    ``seed`` seeds the client's own randomness (its defences' draws).

    Raises:
        WeightsError: the global model's own parameters or buffers are not finite (checked before training).
    """
    check_finite_model(model)
    client = copy.deepcopy(model)
    client.train(spec.bn_mode is BNMode.TRAIN)
    before = _snapshot(client)
    params = dict(client.named_parameters())
    loss_fn = loss_of(client)

    def grad_fn(at: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = client(images) if at is params else functional_call(client, at, (images,))
        grads = torch.autograd.grad(loss_fn(outputs, labels), list(at.values()))
        return {name: g.detach() for name, g in zip(at, grads, strict=True)}

    generator = torch.Generator(device=images.device).manual_seed(seed)
    tensors = local_training(params, grad_fn, spec, make_defences(spec.defences), generator=generator)
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
    )


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
