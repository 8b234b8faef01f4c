"""The inversion loop: signed Adam on pixels in [0,1], step schedule, box constraint, restarts (DESIGN §4).

Restarts run batched with ``torch.func.vmap`` over a leading restart axis (Adam is element-wise, so one
optimizer over the stacked restarts is exactly R independent optimizers), or one after another when
``AttackSpec.batched_restarts`` is off. The loop never synchronizes with the host: the objective curve is
written into a preallocated device tensor and read once at the end. The returned reconstruction is the
restart with the lowest final attack objective; no ground truth is ever seen here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import grad, vmap

from giacheck.attack.bnstats import NormTarget
from giacheck.attack.objective import Replica
from giacheck.attack.registry import register_attack
from giacheck.client import ClientUpdate
from giacheck.errors import InvalidCaseError
from giacheck.specs import AttackSpec

__all__ = ["GradMatch", "Reconstruction", "invert", "lr_milestones"]

log = logging.getLogger("giacheck.attack")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconstruction:
    """Every restart's final images and scores; ``selected`` is chosen by the attack objective."""

    images: torch.Tensor  # (R, B, C, H, W) on the CPU
    objective: tuple[float, ...]  # final objective per restart
    grad_distance: tuple[float, ...]  # final update distance per restart (the attack's ``spec.distance``)
    selected: int
    curve: torch.Tensor  # (iterations, R) objective per iteration
    labels: Any  # class labels (B,) or detection targets (dict of tensors)
    batched: bool
    iterations: int
    seconds: float

    @property
    def best(self) -> torch.Tensor:
        return self.images[self.selected]


@register_attack("gradmatch")
class GradMatch:
    """Gradient matching (Geiping et al.; DESIGN §4): the update distance plus TV and a statistics prior, signed
    Adam on pixels in [0,1] with a step schedule and the box constraint, restarts selected by the objective."""

    def __init__(self, spec: AttackSpec) -> None:
        self.spec = spec

    def __call__(self, model: nn.Module, update: ClientUpdate, *, labels: Any, stats: NormTarget | None,
                 init: torch.Tensor | None, seed: int) -> Reconstruction:
        every = max(1, self.spec.iterations // 10) if log.isEnabledFor(logging.DEBUG) else 0
        return invert(model, update, labels=labels, spec=self.spec, stats=stats, init=init, seed=seed,
                      log_every=every)

    def objective(self, model: nn.Module, update: ClientUpdate, images: torch.Tensor, *, labels: Any,
                  stats: NormTarget | None) -> float:
        """The objective :meth:`__call__` minimizes, at one batch of ``images`` (B, C, H, W)."""
        device = next(model.parameters()).device
        replica = Replica(model, update, _to_device(labels, device))
        with torch.no_grad():
            total, _ = replica.objective(self.spec, stats, functional=True)(images.to(device))
        return float(total)


def lr_milestones(iterations: int) -> list[int]:
    """The step schedule: the learning rate drops ×0.1 at 3/8, 5/8 and 7/8 of the budget."""
    return sorted({max(1, int(iterations * f)) for f in (3 / 8, 5 / 8, 7 / 8)})


def invert(
    model: nn.Module,
    update: ClientUpdate,
    *,
    labels: Any,
    spec: AttackSpec,
    stats: NormTarget | None = None,
    init: torch.Tensor | None = None,
    seed: int = 0,
    log_every: int = 0,
) -> Reconstruction:
    """Reconstruct the client's images from ``update``.

    Args:
        model: the global model as the server holds it (pixels in [0,1] in).
        update: the client's shared update.
        labels: the labels the attacker knows or inferred, shape (B,).
        spec: hyper-parameters and budget.
        stats: a normalization-statistics target for the prior (exact, naive or proxy), or None.
        init: starting images (R, B, C, H, W); random uniform noise when None.
        seed: seeds the noise initialization.
        log_every: log progress every this many iterations (0: never).
    """
    device = next(model.parameters()).device
    replica = Replica(model, update, _to_device(labels, device))
    shape = (spec.restarts, *update.input_shape)
    if init is None:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        init = torch.rand(shape, generator=gen)
    elif tuple(init.shape) != shape:
        raise InvalidCaseError(f"init has shape {tuple(init.shape)}, expected (restarts, B, C, H, W) = {shape}")
    x = init.to(device).clone().requires_grad_(True)
    step_fn = _step_function(replica, spec, stats)
    opt = torch.optim.Adam([x], lr=spec.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=lr_milestones(spec.iterations), gamma=0.1)
    curve = torch.empty(spec.iterations, spec.restarts, device=device)
    start = time.perf_counter()
    for it in range(spec.iterations):
        g, value = step_fn(x.detach())
        curve[it] = value
        x.grad = g.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if log_every and (it + 1) % log_every == 0:
            log.debug("iteration %d/%d objective %s", it + 1, spec.iterations, curve[it].tolist())
    final, dist = _final_values(replica, spec, stats, x.detach())
    seconds = time.perf_counter() - start
    final_list = final.tolist()
    return Reconstruction(
        images=x.detach().cpu(),
        objective=tuple(final_list),
        grad_distance=tuple(dist.tolist()),
        selected=min(range(len(final_list)), key=final_list.__getitem__),
        curve=curve.cpu(),
        labels=_to_device(labels, torch.device("cpu")),
        batched=_batched(spec),
        iterations=spec.iterations,
        seconds=seconds,
    )


def _to_device(labels: Any, device: torch.device) -> Any:
    """Class labels (a tensor) or detection targets (a dict of tensors) on ``device``."""
    if isinstance(labels, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in labels.items()}
    return labels.to(device)


def _batched(spec: AttackSpec) -> bool:
    return spec.batched_restarts and spec.restarts > 1


def _step_function(replica: Replica, spec: AttackSpec, stats: NormTarget | None):
    """``x (R,B,C,H,W) -> (∂objective/∂x, objective (R,))``: vmap over restarts, or a loop of autograd calls."""
    if _batched(spec):
        objective = replica.objective(spec, stats, functional=True)

        def objective_twice(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            total, _ = objective(x)
            return total, total

        batched = vmap(grad(objective_twice, has_aux=True))

        def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():  # grad() computes what it needs; nothing else may build a graph
                return batched(x)

        return step
    objective = replica.objective(spec, stats, functional=False)

    def looped(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grads, values = [], []
        for xr in x:
            xr = xr.detach().requires_grad_(True)
            total, _ = objective(xr)
            grads.append(torch.autograd.grad(total, xr)[0])
            values.append(total.detach())
        return torch.stack(grads), torch.stack(values)

    return looped


def _final_values(replica: Replica, spec: AttackSpec, stats: NormTarget | None,
                  x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Objective and gradient distance of each restart's final images (selection uses the objective)."""
    objective = replica.objective(spec, stats, functional=True)
    with torch.no_grad():
        if _batched(spec):
            return vmap(objective)(x)
        totals, dists = zip(*(objective(xr) for xr in x), strict=True)
        return torch.stack(totals), torch.stack(dists)
