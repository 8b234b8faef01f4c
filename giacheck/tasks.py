"""Tasks as objects: what a client trains on, which images it may hold, and what the attack may assume.

A model entry names its task (``ModelEntry.task``); the task says which images are eligible for a client batch,
what targets the client trains with (the attacker knows them, DESIGN §4), whether independent trials may be
batched through the model, and whether labels can be inferred from the update. A user's task is registered
with ``@register_task("name")`` or named ``package.module:Name`` in its model entry.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from giacheck.data import ImageBatch, ImageSource, select_batch
from giacheck.errors import DatasetError
from giacheck.plugins import Registry

__all__ = ["TASKS", "Classification", "Detection", "Task", "get_task", "register_task"]


@runtime_checkable
class Task(Protocol):
    """What :func:`giacheck.runner.run_case` asks of a task."""

    name: str
    batchable_trials: bool  # restarts and trials may run stacked through the model and its loss (attack/trials.py)
    labels_inferable: bool  # the labels can be inferred from the update (iDLG, giacheck.attack.labels)

    def client_batch(self, source: ImageSource, *, batch_size: int, size: int,
                     first: str | None = None) -> ImageBatch:
        """The client's private batch, drawn from the eligible images of ``source`` (starting with the image
        named ``first``, when given: one trial of a challenge set)."""
        ...

    def targets(self, batch: ImageBatch, device: torch.device) -> Any:
        """The training targets of ``batch`` (what the client's loss and the attacker's replica use)."""
        ...


TASKS: Registry[Task] = Registry("task")


def register_task(name: str):
    """Register a task object (an instance implementing :class:`Task`) under ``name``."""
    return TASKS.register(name)


def get_task(name: str) -> Task:
    """The registered task ``name`` (``ModelEntry.task``), or ``package.module:Name``."""
    return TASKS.get(name)


class Classification:
    """One class label per image: every image of the source is eligible; labels can be inferred."""

    name = "classification"
    batchable_trials = True
    labels_inferable = True

    def client_batch(self, source: ImageSource, *, batch_size: int, size: int,
                     first: str | None = None) -> ImageBatch:
        return select_batch(source, batch_size=batch_size, size=size, first=first)

    def targets(self, batch: ImageBatch, device: torch.device) -> torch.Tensor:
        return batch.labels.to(device)


class Detection:
    """YOLO detection with ground-truth boxes known to the attacker: only images with box annotations are
    eligible; the loss's target assignment couples the batch, so restarts and trials run one after another."""

    name = "detection"
    batchable_trials = False
    labels_inferable = False

    def client_batch(self, source: ImageSource, *, batch_size: int, size: int,
                     first: str | None = None) -> ImageBatch:
        from giacheck.models.yolo import annotated_images

        annotated = annotated_images()
        if first is not None and first not in annotated:
            raise DatasetError(f"a detection case's private image must have box annotations; {first!r} has none "
                               f"(valid: {', '.join(sorted(annotated))})")
        eligible = [i for i in range(len(source)) if source.image_name(i) in annotated]
        if first is not None:
            at = next((k for k, i in enumerate(eligible) if source.image_name(i) == first), 0)
            eligible = eligible[at:] + eligible[:at]
        indices = eligible[:batch_size]
        if len(indices) < batch_size:
            raise DatasetError(f"a detection case with batch size {batch_size} needs that many images with box "
                               f"annotations; {source.name} has {len(indices)} ({', '.join(sorted(annotated))})")
        return source.batch(indices, size)

    def eligible(self, source: ImageSource) -> list[str]:
        """The images that may be private: those with box annotations."""
        from giacheck.models.yolo import annotated_images

        annotated = annotated_images()
        return [source.image_name(i) for i in range(len(source)) if source.image_name(i) in annotated]

    def targets(self, batch: ImageBatch, device: torch.device) -> dict[str, torch.Tensor]:
        from giacheck.models.yolo import detection_targets

        return detection_targets(batch.names, device)


register_task("classification")(Classification())
register_task("detection")(Detection())
