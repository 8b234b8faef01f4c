"""Reject a case that makes no sense before any compute, saying what was given and what is valid (opacus style).

Besides the axes of the grammar, a case must fit in memory (:mod:`giacheck.memory`): the estimate for its model,
resolution, batch size and stacked attacks against the memory the device has.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from giacheck.attack.registry import ATTACKS
from giacheck.data import ImageSource
from giacheck.defences import DPSGD, aggregation_size, make_defences
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.memory import memory_problem
from giacheck.models import ModelEntry, get_entry
from giacheck.specs import AXIS, BNMode, Case, LabelKnowledge, StatsAccess, UpdateKind, parse_state
from giacheck.tasks import get_task

__all__ = ["VALIDATORS", "CaseProblem", "check_case", "validate"]


class CaseProblem(str):
    """One reason a case makes no sense: its message (the string itself) and the grammar axis it concerns."""

    axis: str

    def __new__(cls, axis: str, message: str) -> CaseProblem:
        problem = super().__new__(cls, message)
        problem.axis = axis
        return problem


Validator = Callable[[Case, ModelEntry, "ImageSource | None"], list[str]]


def validate(case: Case, *, entry: ModelEntry | None = None, source: ImageSource | None = None,
             device: str | torch.device | None = None, restarts: int = 1) -> list[CaseProblem]:
    """Return every problem with ``case`` (empty when it is valid), axis by axis. Unknown models raise at once.

    Args:
        case: the case to check.
        entry: the model's entry (looked up from ``case.model.name`` when None).
        source: the image source the client draws from; batch-size checks are skipped when None.
        device: where the case will run, for the memory check; None: it must fit in the host's memory or in
            the free memory of the CUDA device, if there is one.
        restarts: the attack's restarts that run batched through the model (1 when they run one after another).
    """
    entry = entry or get_entry(case.model.name)
    problems = [CaseProblem(axis, message) for axis, check in VALIDATORS.items()
                for message in check(case, entry, source)]
    if not any(p.axis in ("res", "bs") for p in problems):  # the estimate builds the model at this resolution
        memory = memory_problem(entry, case.model.resolution, batch_size=case.client.batch_size,
                                restarts=max(restarts, 1), device=device)
        if memory:
            problems.append(CaseProblem("res", memory))
    return problems


def _resolution(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    problem = entry.check_resolution(case.model.resolution)
    return [problem] if problem else []


def _batch_size(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    bs, problems = case.client.batch_size, []
    if bs < 1:
        problems.append(f"batch size {bs} (valid: >= 1)")
    if source is not None and bs > len(source):
        problems.append(f"batch size {bs} is larger than the {len(source)} images available in {source.name} "
                        f"(valid: 1..{len(source)})")
    if bs > entry.num_classes:
        problems.append(f"batch size {bs} needs distinct labels, but {entry.name} has only {entry.num_classes} "
                        f"classes (valid: 1..{entry.num_classes})")
    return problems


def _bn_mode(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    if not entry.has_batchnorm and case.client.bn_mode is BNMode.TRAIN:
        return [f"bn_train on {entry.name}, which has no BatchNorm: the client's forward does not depend on the "
                "mode; use bn_eval"]
    return []


def _stats(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    stats, client, problems = case.threat.stats, case.client, []
    if not entry.has_batchnorm and stats in (StatsAccess.EXACT, StatsAccess.NAIVE):
        problems.append(f"stats_{stats} needs BatchNorm running statistics, but {entry.name} has no BatchNorm "
                        "(valid: stats_none, or stats_proxy on models with normalization layers)")
    if stats is StatsAccess.PROXY and not entry.norm_kinds:
        problems.append(f"stats_proxy needs normalization layers, but {entry.name} has none (valid: stats_none)")
    if stats is StatsAccess.EXACT and entry.has_batchnorm:
        if client.bn_mode is not BNMode.TRAIN:
            problems.append("stats_exact with bn_eval: an eval-mode client does not update its running statistics, "
                            "so there is nothing to invert (valid: bn_train, or stats_naive/none)")
        if client.update is UpdateKind.FEDAVG and (client.local_steps != 1 or client.minibatch is not None):
            problems.append(f"stats_exact with {client.local_steps} local epoch(s) of mini-batches of "
                            f"{client.minibatch or client.batch_size}: exact statistics can only be "
                            "inverted from a single step (valid: upd_fedavg1 or FedSGD; or stats_naive/proxy)")
    return problems


def _update(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    client, problems = case.client, []
    if client.update is UpdateKind.FEDAVG and client.local_steps < 1:
        problems.append(f"upd_fedavg{client.local_steps} (valid: at least one local step)")
    if not client.local_lr > 0:
        problems.append(f"client local_lr={client.local_lr} (valid: > 0)")
    if entry.task != "classification" and (client.minibatch is not None or client.augment != "none"):
        problems.append(f"mini-batches or augmentation on {entry.name}'s task {entry.task!r}: its targets are "
                        "per batch, not per image (valid: the whole batch, aug_none)")
    return problems


def _init(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    if case.init_p is not None and not 0.0 <= case.init_p <= 1.0:
        return [f"init_p{case.init_p:g} (valid: a noise fraction in [0, 1])"]
    return []


def _labels(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    if case.threat.labels is LabelKnowledge.INFERRED and not get_task(entry.task).labels_inferable:
        return [f"lab_inferred: labels cannot be inferred for {entry.name}'s task {entry.task!r} (valid: lab_known)"]
    return []


def _defences(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    """Each defence of the chain must be known and accept its parameter, and fit the rest of the case."""
    try:
        defences = make_defences(case.client.defences)
    except GiacheckError as exc:
        return [str(exc)]
    problems = []
    classification = entry.task == "classification"
    if any(isinstance(d, DPSGD) for d in defences):
        if not classification:
            problems.append(f"dpsgd on {entry.name}'s task {entry.task!r}: per-sample gradients need a loss that "
                            "is a mean over independent samples (valid: classification models)")
        if case.threat.stats in (StatsAccess.EXACT, StatsAccess.NAIVE):
            problems.append(f"stats_{case.threat.stats} with dpsgd: Opacus replaces BatchNorm by GroupNorm, which "
                            "keeps no running statistics (valid: stats_none or stats_proxy)")
    clients = aggregation_size(defences)
    if clients > 1:
        if case.threat.stats is not StatsAccess.NONE:
            problems.append(f"stats_{case.threat.stats} with secagg{clients}: the server sees the clients' mean "
                            "update, not one client's statistics or a batch to match a proxy to (valid: stats_none)")
        if case.threat.labels is LabelKnowledge.INFERRED:
            problems.append(f"lab_inferred with secagg{clients}: label inference reads one client's last layer "
                            "(valid: lab_known)")
        if not classification:
            problems.append(f"secagg on {entry.name}'s task {entry.task!r}: the other clients' targets are drawn "
                            "as class labels (valid: classification models)")
        if source is not None and clients * case.client.batch_size >= len(source):
            problems.append(f"secagg{clients} at batch size {case.client.batch_size} needs "
                            f"{clients * case.client.batch_size} private images and one more for the "
                            f"re-identification pool; {source.name} has {len(source)}")
    return problems


def _state(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    kind, _ = parse_state(case.state)
    if kind == "warm" and entry.task != "classification":
        return [f"state_{case.state} trains on auxiliary images with class labels; {entry.name}'s task "
                f"{entry.task!r} has none for them (valid: state_random, state_bncal, state_ckpt)"]
    return []


def _attack(case: Case, entry: ModelEntry, source: ImageSource | None) -> list[str]:
    try:
        ATTACKS.get(case.attack)
    except GiacheckError as exc:
        return [str(exc)]
    return []


#: One validator per axis of the case grammar (``giacheck.specs.AXES``), run in this order.
VALIDATORS: dict[str, Validator] = {
    "res": _resolution, "bs": _batch_size, "bn": _bn_mode, "stats": _stats, "state": _state, "update": _update,
    "init": _init, "labels": _labels, "defences": _defences, "attack": _attack,
}
assert set(VALIDATORS) <= set(AXIS), "a validator for an axis the grammar does not have"


def check_case(case: Case, *, entry: ModelEntry | None = None, source: ImageSource | None = None,
               device: str | torch.device | None = None, restarts: int = 1) -> None:
    """Raise :class:`InvalidCaseError` listing every problem :func:`validate` finds (same arguments)."""
    problems = validate(case, entry=entry, source=source, device=device, restarts=restarts)
    if problems:
        raise InvalidCaseError(f"invalid case {case.id}: " + "; ".join(problems))
