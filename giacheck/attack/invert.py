"""The inversion loop: signed Adam on pixels in [0,1], step schedule, box constraint, restarts (DESIGN §4).

Restarts, and several attacks on one global model (a case's challenge set), run stacked as one forward and one
double backward (``trials.py``; Adam is element-wise, so one optimizer over the stack is exactly K independent
optimizers), or one after another where the math does not allow it or ``AttackSpec.batched_restarts`` is off.
The loop never synchronizes with the host: the objective curve is
written into a preallocated device tensor and read once at the end. The returned reconstruction is the
restart with the lowest final attack objective, per trial; no ground truth is ever seen here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from giacheck.attack.bnstats import NormTarget
from giacheck.attack.objective import Replica, attack_view
from giacheck.attack.registry import register_attack
from giacheck.attack.trials import StackedReplica
from giacheck.client import ClientUpdate
from giacheck.errors import InvalidCaseError
from giacheck.specs import AttackSpec

__all__ = ["MAX_STACKED", "GradMatch", "GradMatchRescaled", "Reconstruction", "Trial", "invert", "invert_trials",
           "lr_milestones"]

log = logging.getLogger("giacheck.attack")

MAX_STACKED = 8  # attacks (restarts × trials) stacked at once; a trial with more restarts stacks them all


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

    drop_rescaling = False  # see GradMatchRescaled

    def __init__(self, spec: AttackSpec) -> None:
        self.spec = spec

    def __call__(self, model: nn.Module, update: ClientUpdate, *, labels: Any, stats: NormTarget | None,
                 init: torch.Tensor | None, seed: int) -> Reconstruction:
        trial = Trial(update=update, labels=labels, stats=stats, init=init, seed=seed)
        return self.trials(model, [trial])[0]

    def trials(self, model: nn.Module, trials: Sequence[Trial]) -> list[Reconstruction]:
        """Several attacks on one global model at once (:func:`invert_trials`): a case's challenge set."""
        every = max(1, self.spec.iterations // 10) if log.isEnabledFor(logging.DEBUG) else 0
        trials = [dataclasses.replace(t, update=self.view(t.update)) for t in trials]
        return invert_trials(model, trials, spec=self.spec, log_every=every)

    def view(self, update: ClientUpdate) -> ClientUpdate:
        """The update as this attack's objective sees it (:func:`~giacheck.attack.objective.attack_view`)."""
        return attack_view(update, self.spec.distance) if self.drop_rescaling else update

    def objective(self, model: nn.Module, update: ClientUpdate, images: torch.Tensor, *, labels: Any,
                  stats: NormTarget | None) -> float:
        """The objective :meth:`__call__` minimizes, at one batch of ``images`` (B, C, H, W)."""
        device = next(model.parameters()).device
        replica = Replica(model, self.view(update), _to_device(labels, device))
        with torch.no_grad():
            total, _ = replica.objective(self.spec, stats, functional=True)(images.to(device))
        return float(total)


@register_attack("gradmatch_rescaled")
class GradMatchRescaled(GradMatch):
    """``gradmatch`` that attacks a FedSGD update whose defences only rescale it (clipping, noise the replica never
    draws, DP-SGD on one sample) as undefended, under the cosine distance: the same objective, with the factored
    distance and stacked trials (two DP-SGD trials of the GroupNorm ResNet-18 at 32 px, one CPU thread: about 2x
    faster, ``giacheck bench --defences``). Its float rounding differs from ``gradmatch``'s, so it is its own
    attack (and baseline identity)."""

    drop_rescaling = True


def lr_milestones(iterations: int) -> list[int]:
    """The step schedule: the learning rate drops ×0.1 at 3/8, 5/8 and 7/8 of the budget."""
    return sorted({max(1, int(iterations * f)) for f in (3 / 8, 5 / 8, 7 / 8)})


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    """One attack of a batch of trials: the update it inverts and what the attacker knows for it."""

    update: ClientUpdate
    labels: Any
    stats: NormTarget | None = None
    init: torch.Tensor | None = None  # (restarts, B, C, H, W); uniform noise from ``seed`` when None
    seed: int = 0


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
    trial = Trial(update=update, labels=labels, stats=stats, init=init, seed=seed)
    return invert_trials(model, [trial], spec=spec, log_every=log_every)[0]


def invert_trials(model: nn.Module, trials: Sequence[Trial], *, spec: AttackSpec,
                  log_every: int = 0) -> list[Reconstruction]:
    """Run every trial's attack (each with ``spec.restarts`` restarts) on one global model: stacked as one
    forward and one double backward (``trials.py``) when ``spec.batched_restarts`` and the math allow it,
    else one restart after another. Trials are stacked in chunks of at most :data:`MAX_STACKED` attacks
    (restarts × trials; a trial's restarts always together, so a trial with more restarts stacks them all), in
    order. Returns one :class:`Reconstruction` per trial, in order."""
    for t in trials:
        _initial(t, spec)  # a malformed init is refused before any attack runs
    per_chunk = max(1, MAX_STACKED // spec.restarts)
    out: list[Reconstruction] = []
    for start in range(0, len(trials), per_chunk):
        out += _invert_chunk(model, trials[start:start + per_chunk], spec, log_every)
    return out


def _invert_chunk(model: nn.Module, trials: Sequence[Trial], spec: AttackSpec,
                  log_every: int) -> list[Reconstruction]:
    device = next(model.parameters()).device
    inits = [_initial(t, spec) for t in trials]
    labels = [_to_device(t.labels, device) for t in trials]
    updates = [t.update for t in trials for _ in range(spec.restarts)]
    stacked, reason = (StackedReplica.build(model, updates, [y for y in labels for _ in range(spec.restarts)],
                                            [t.stats for t in trials for _ in range(spec.restarts)])
                       if spec.batched_restarts else (None, "batched_restarts is off"))
    if stacked is None:
        log.debug("trials run one after another: %s", reason)
        return [_run_looped(model, t, y, x0, spec, log_every) for t, y, x0 in zip(trials, labels, inits, strict=True)]
    x0 = torch.cat(inits)  # (trials·R, B, C, H, W)
    objective = stacked.objective(spec)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.requires_grad_(True)
        total, _ = objective(x)
        return torch.autograd.grad(total.sum(), x)[0], total.detach()

    def final(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total, dist = objective(x.requires_grad_(True))  # the terms are gradients: they need a graph
        return total.detach(), dist.detach()

    x, curve, finals, seconds = _optimize(x0.to(device), step, final, spec, log_every)
    r = spec.restarts
    return [_reconstruction(x[i * r:(i + 1) * r], curve[:, i * r:(i + 1) * r], finals[0][i * r:(i + 1) * r],
                            finals[1][i * r:(i + 1) * r], labels[i], spec, batched=True, seconds=seconds / len(trials))
            for i in range(len(trials))]


def _initial(trial: Trial, spec: AttackSpec) -> torch.Tensor:
    shape = (spec.restarts, *trial.update.input_shape)
    if trial.init is None:
        gen = torch.Generator(device="cpu").manual_seed(trial.seed)
        return torch.rand(shape, generator=gen)
    if tuple(trial.init.shape) != shape:
        raise InvalidCaseError(f"init has shape {tuple(trial.init.shape)}, expected (restarts, B, C, H, W) = {shape}")
    return trial.init


def _run_looped(model: nn.Module, trial: Trial, labels: Any, init: torch.Tensor, spec: AttackSpec,
                log_every: int) -> Reconstruction:
    """One trial's restarts one after another, each an autograd double backward on the replica."""
    device = next(model.parameters()).device
    replica = Replica(model, trial.update, labels)
    objective = replica.objective(spec, trial.stats, functional=False)

    def step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grads, values = [], []
        for xr in x:
            xr = xr.detach().requires_grad_(True)
            total, _ = objective(xr)
            grads.append(torch.autograd.grad(total, xr)[0])
            values.append(total.detach())
        return torch.stack(grads), torch.stack(values)

    functional = replica.objective(spec, trial.stats, functional=True)

    def final(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            totals, dists = zip(*(functional(xr) for xr in x), strict=True)
        return torch.stack(totals), torch.stack(dists)

    x, curve, (totals, dists), seconds = _optimize(init.to(device), step, final, spec, log_every)
    return _reconstruction(x, curve, totals, dists, labels, spec, batched=False, seconds=seconds)


def _optimize(x0: torch.Tensor, step, final, spec: AttackSpec, log_every: int):
    """Signed Adam on the pixels with the step schedule and the box constraint; the objective curve is written
    into a device tensor and read once at the end (the loop never synchronizes with the host)."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=spec.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=lr_milestones(spec.iterations), gamma=0.1)
    curve = torch.empty(spec.iterations, x.shape[0], device=x.device)
    _sync(x.device)
    start = time.perf_counter()
    for it in range(spec.iterations):
        g, value = step(x.detach())
        curve[it] = value
        x.grad = g.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if log_every and (it + 1) % log_every == 0:
            log.debug("iteration %d/%d objective %s", it + 1, spec.iterations, curve[it].tolist())
    finals = final(x.detach())
    _sync(x.device)  # a GPU's queue drained: the time is the attack's
    return x.detach(), curve, finals, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reconstruction(x: torch.Tensor, curve: torch.Tensor, totals: torch.Tensor, dists: torch.Tensor, labels: Any,
                    spec: AttackSpec, *, batched: bool, seconds: float) -> Reconstruction:
    final_list = totals.tolist()
    return Reconstruction(
        images=x.cpu(),
        objective=tuple(final_list),
        grad_distance=tuple(dists.tolist()),
        selected=min(range(len(final_list)), key=final_list.__getitem__),
        curve=curve.cpu(),
        labels=_to_device(labels, torch.device("cpu")),
        batched=batched,
        iterations=spec.iterations,
        seconds=seconds,
    )


def _to_device(labels: Any, device: torch.device) -> Any:
    """Class labels (a tensor) or detection targets (a dict of tensors) on ``device``."""
    if isinstance(labels, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in labels.items()}
    return labels.to(device)
