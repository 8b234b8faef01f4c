"""Simulate one federated client update: a FedSGD gradient or a FedAvg weight delta (DESIGN §4).

The client trains a private copy of the global model, so the server's model keeps its global state. BatchNorm
running statistics before and after the local step are recorded with each module's own momentum, because the
``naive`` and ``exact`` threat models read them.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from giacheck.specs import BNMode, ClientSpec, UpdateKind

__all__ = ["BNStats", "ClientUpdate", "bn_modules", "loss_of", "simulate_update", "task_loss"]

log = logging.getLogger("giacheck.client")


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


def bn_modules(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm module (timm's ``BatchNormAct2d`` included) that tracks running statistics, by name."""
    return {
        name: m for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    }


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The default training loss: mean cross-entropy (client and attacker must agree on the reduction)."""
    return F.cross_entropy(logits, labels, reduction="mean")


def loss_of(model: nn.Module):
    """The model's own training loss (``NormalizedModel.loss``, e.g. a detection loss), else :func:`task_loss`."""
    return getattr(model, "loss", task_loss)


def simulate_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, spec: ClientSpec) -> ClientUpdate:
    """Run the client's local training on a private copy of ``model`` and return what it shares."""
    client = copy.deepcopy(model)
    client.train(spec.bn_mode is BNMode.TRAIN)
    before = _snapshot(client)
    params = dict(client.named_parameters())
    loss_fn = loss_of(client)
    if spec.update is UpdateKind.FEDSGD:
        grads = torch.autograd.grad(loss_fn(client(images), labels), list(params.values()))
        tensors = {name: g.detach() for name, g in zip(params, grads, strict=True)}
    else:
        start = {name: p.detach().clone() for name, p in params.items()}
        for _ in range(spec.local_steps):
            grads = torch.autograd.grad(loss_fn(client(images), labels), list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads, strict=True):
                    p.sub_(spec.local_lr * g)
        tensors = {name: (p.detach() - start[name]) for name, p in params.items()}
    return ClientUpdate(
        kind=spec.update,
        tensors=tensors,
        bn_before=before,
        bn_after=_snapshot(client),
        bn_mode=spec.bn_mode,
        batch_size=images.shape[0],
        local_steps=spec.local_steps if spec.update is UpdateKind.FEDAVG else 1,
        local_lr=spec.local_lr,
        input_shape=tuple(images.shape),
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
