"""Reject a case that makes no sense before any compute, saying what was given and what is valid (opacus style)."""

from __future__ import annotations

from giacheck.data import ImageSource
from giacheck.defences import make_defences
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.models import ModelEntry, get_entry
from giacheck.specs import BNMode, Case, LabelKnowledge, StatsAccess, UpdateKind
from giacheck.tasks import get_task

__all__ = ["check_case", "validate"]


def validate(case: Case, *, entry: ModelEntry | None = None, source: ImageSource | None = None) -> list[str]:
    """Return every problem with ``case`` (empty when it is valid). Unknown models raise at once.

    Args:
        case: the case to check.
        entry: the model's entry (looked up from ``case.model.name`` when None).
        source: the image source the client draws from; batch-size checks are skipped when None.
    """
    entry = entry or get_entry(case.model.name)
    client, threat = case.client, case.threat
    problems = []
    resolution_problem = entry.check_resolution(case.model.resolution)
    if resolution_problem:
        problems.append(resolution_problem)
    if client.batch_size < 1:
        problems.append(f"batch size {client.batch_size} (valid: >= 1)")
    if source is not None and client.batch_size > len(source):
        problems.append(f"batch size {client.batch_size} is larger than the {len(source)} images available in "
                        f"{source.name} (valid: 1..{len(source)})")
    if client.batch_size > entry.num_classes:
        problems.append(f"batch size {client.batch_size} needs distinct labels, but {entry.name} has only "
                        f"{entry.num_classes} classes (valid: 1..{entry.num_classes})")
    if not entry.has_batchnorm:
        if client.bn_mode is BNMode.TRAIN:
            problems.append(f"bn_train on {entry.name}, which has no BatchNorm: the client's forward does not depend "
                            "on the mode; use bn_eval")
        if threat.stats in (StatsAccess.EXACT, StatsAccess.NAIVE):
            problems.append(f"stats_{threat.stats} needs BatchNorm running statistics, but {entry.name} has no "
                            "BatchNorm (valid: stats_none, or stats_proxy on models with normalization layers)")
    if threat.stats is StatsAccess.PROXY and not entry.norm_kinds:
        problems.append(f"stats_proxy needs normalization layers, but {entry.name} has none (valid: stats_none)")
    if threat.stats is StatsAccess.EXACT and entry.has_batchnorm:
        if client.bn_mode is not BNMode.TRAIN:
            problems.append("stats_exact with bn_eval: an eval-mode client does not update its running statistics, "
                            "so there is nothing to invert (valid: bn_train, or stats_naive/none)")
        if client.update is UpdateKind.FEDAVG and client.local_steps != 1:
            problems.append(f"stats_exact with {client.local_steps} local steps: exact statistics can only be "
                            "inverted from a single step (valid: upd_fedavg1 or FedSGD; or stats_naive/proxy)")
    if client.update is UpdateKind.FEDAVG and client.local_steps < 1:
        problems.append(f"upd_fedavg{client.local_steps} (valid: at least one local step)")
    if not client.local_lr > 0:
        problems.append(f"client local_lr={client.local_lr} (valid: > 0)")
    if case.init_p is not None and not 0.0 <= case.init_p <= 1.0:
        problems.append(f"init_p{case.init_p:g} (valid: a noise fraction in [0, 1])")
    if threat.labels is LabelKnowledge.INFERRED and not get_task(entry.task).labels_inferable:
        problems.append(f"lab_inferred: labels cannot be inferred for {entry.name}'s task {entry.task!r} "
                        "(valid: lab_known)")
    problems += _defence_problems(client.defences)
    return problems


def _defence_problems(tokens: tuple[str, ...]) -> list[str]:
    """Each defence of the chain must be known and accept its parameter."""
    try:
        make_defences(tokens)
    except GiacheckError as exc:
        return [str(exc)]
    return []


def check_case(case: Case, *, entry: ModelEntry | None = None, source: ImageSource | None = None) -> None:
    """Raise :class:`InvalidCaseError` listing every problem :func:`validate` finds."""
    problems = validate(case, entry=entry, source=source)
    if problems:
        raise InvalidCaseError(f"invalid case {case.id}: " + "; ".join(problems))
