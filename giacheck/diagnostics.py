"""Auditor-side diagnostics that use the private images: the attack's own objective at the truth.

A negative result means one of two things (the paper's contribution 2): the attack stopped short of a solution
known to exist (its final objective is above the objective of the true images: *attack-limited*), or it reached
the truth's objective and still does not re-identify the image (the update does not determine the image:
*information-limited*). Telling them apart needs the objective at the true images, which only the scoring side
may compute. It is evaluated on a fresh instance of the attack, after the attack has returned; nothing here
reaches the attack, and ``giacheck.attack`` never imports this module (tests check both).
"""

from __future__ import annotations

from typing import Any

import torch

from giacheck.attack import NormTarget, make_attack
from giacheck.client import ClientUpdate
from giacheck.specs import AttackSpec

__all__ = ["truth_objective"]


def truth_objective(name: str, spec: AttackSpec, model: torch.nn.Module, update: ClientUpdate, images: torch.Tensor,
                    *, labels: Any, stats: NormTarget | None) -> float | None:
    """The objective of attack ``name`` (budget ``spec``) at ``images`` (the client's true batch), with the labels
    and statistics target the attacker had; None when the attack does not expose an ``objective`` method.

    A plug-in attack exposes its objective as ``objective(model, update, images, *, labels, stats) -> float``;
    without it its negatives are labelled neither attack- nor information-limited.
    """
    attack = make_attack(name, spec)  # a fresh instance: the one that ran never sees the truth
    objective = getattr(attack, "objective", None)
    if objective is None:
        return None
    device = next(model.parameters()).device
    return float(objective(model, update, images.to(device), labels=labels, stats=stats))
