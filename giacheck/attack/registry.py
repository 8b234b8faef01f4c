"""Attacks as plug-ins: the :class:`Attack` protocol and its registry (like the model registry).

An attack is made from its budget, ``factory(spec: AttackSpec) -> Attack``, and called with what an
honest-but-curious server holds: the global model, the client's update, the labels it knows or inferred, a
normalization-statistics target (or None), optional starting images and a seed. It never receives ground truth.
The built-in ``gradmatch`` is gradient matching with signed Adam (``invert.py``); a user's attack is registered
with ``@register_attack("name")`` or named ``package.module:Name`` (``giacheck run/audit --attack``,
``pytest --giacheck-attack``, ``Pack(attacker=...)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.plugins import Registry
from giacheck.specs import DEFAULT_ATTACK, AttackSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from giacheck.attack.bnstats import NormTarget
    from giacheck.attack.invert import Reconstruction
    from giacheck.client import ClientUpdate

__all__ = ["ATTACKS", "DEFAULT_ATTACK", "Attack", "list_attacks", "make_attack", "register_attack"]


@runtime_checkable
class Attack(Protocol):
    """Reconstruct the client's images from its update; return every restart's images and the attack's own
    objective per restart (selection among restarts is the attack's, by that objective).

    An attack may also expose ``objective(model, update, images, *, labels, stats) -> float``, its objective at
    given images: the scoring side evaluates it at the true images, on a fresh instance after the attack ran, to
    label a negative attack- or information-limited (:mod:`giacheck.diagnostics`).

    And it may expose ``trials(model, trials: Sequence[giacheck.attack.Trial]) -> list[Reconstruction]``: several
    attacks on one global model at once (a case's challenge set), one reconstruction per trial in order; the
    runner then calls it instead of ``__call__`` once per trial (the built-in attack stacks them)."""

    def __call__(self, model: nn.Module, update: ClientUpdate, *, labels: Any, stats: NormTarget | None,
                 init: torch.Tensor | None, seed: int) -> Reconstruction: ...


ATTACKS: Registry[Any] = Registry("attack", builtins="giacheck.attack.invert")


def register_attack(name: str):
    """Register an attack factory ``(spec: AttackSpec) -> Attack`` (a class or a function) under ``name``."""
    return ATTACKS.register(name)


def list_attacks() -> list[str]:
    """Registered attack names, sorted."""
    return ATTACKS.names()


def make_attack(name: str, spec: AttackSpec) -> Attack:
    """Build the attack ``name`` (registered, or ``package.module:Name``) for budget ``spec``."""
    factory = ATTACKS.get(name or DEFAULT_ATTACK)
    try:
        attack = factory(spec)
    except GiacheckError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidCaseError(f"attack {name!r}: building it from its budget raised {type(exc).__name__}: {exc}; "
                               "an attack factory takes an AttackSpec and returns a callable "
                               "(model, update, *, labels, stats, init, seed) -> Reconstruction") from None
    if not callable(attack):
        raise GiacheckError(f"attack {name!r}: its factory returned {type(attack).__name__}, which is not callable; "
                            "an attack factory takes an AttackSpec and returns a callable "
                            "(model, update, *, labels, stats, init, seed) -> Reconstruction")
    return attack
