"""Client defences as plug-ins: what the client applies to its training before it shares the update.

A defence is named in a case id as a token, its registered name followed by its parameter (``clip1.5``: clip
the shared update to norm 1.5); several are chained with ``+`` in the order the client applies them
(``-def_clip1.5+mydefence0.1``). It acts at one stage of the client's local training:

- ``step``: on each local step's gradient, before the step (FedSGD: on its one gradient);
- ``update``: on the shared update, after local training;
- ``sample``: on each sample's gradient (DP-SGD), which needs per-sample gradients (not shipped yet).

The same chain runs in the client simulation and in the attacker's replica (``client.local_training``): the
server is assumed to know the client's defence configuration, never its random draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import torch

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.plugins import Registry
from giacheck.specs import DEFENCE_TOKEN, format_number

__all__ = ["DEFENCES", "ClipUpdateNorm", "Defence", "DefenceStage", "Identity", "make_defences", "parse_token",
           "register_defence"]



class DefenceStage(StrEnum):
    """Where in the client's local training a defence acts."""

    SAMPLE = "sample"
    STEP = "step"
    UPDATE = "update"


@runtime_checkable
class Defence(Protocol):
    """A client defence: its id token, parameters for manifests, its stage and what it does to tensors."""

    name: str
    stage: DefenceStage

    @property
    def token(self) -> str: ...

    def params(self) -> dict[str, Any]: ...

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Return the defended tensors (differentiably: the replica runs it inside the attack's objective)."""
        ...


DEFENCES: Registry[Any] = Registry("defence")


def register_defence(name: str):
    """Register a defence factory ``(value: float | None) -> Defence`` under ``name`` (its id token prefix:
    letters and '_' only, since the parameter follows it directly)."""
    if not isinstance(name, str) or not DEFENCE_TOKEN.fullmatch(name) or DEFENCE_TOKEN.fullmatch(name)["value"]:
        raise ValueError(f"defence name {name!r}: use lower-case letters and '_' (a digit would read as its "
                         "parameter in ids such as 'clip1.5')")
    return DEFENCES.register(name)


def parse_token(token: str) -> tuple[str, float | None]:
    """``clip1.5`` -> ``("clip", 1.5)``; ``identity`` -> ``("identity", None)``."""
    m = DEFENCE_TOKEN.match(token)
    if m is None:
        raise InvalidCaseError(f"defence {token!r}: write NAME followed by its parameter, e.g. 'clip1.5' "
                               "(names are letters, '_', '.', ':'; the parameter a plain decimal number)")
    return m["name"], float(m["value"]) if m["value"] is not None else None


def make_defences(tokens: Sequence[str]) -> list[Defence]:
    """Defence objects for id tokens, in the order given (the order the client applies them)."""
    defences = []
    for token in tokens:
        name, value = parse_token(token)
        factory = DEFENCES.get(name)
        try:
            defence = factory(value)
        except GiacheckError:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidCaseError(f"defence {token!r}: {exc}") from None
        if not isinstance(defence, Defence):
            raise InvalidCaseError(f"defence {token!r}: its factory returned {type(defence).__name__}, which lacks "
                                   "the Defence protocol (name, stage, token, params(), apply())")
        defences.append(defence)
    return defences


def _norm(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.pow(2).sum() for t in tensors.values()]).sum().sqrt()


@register_defence("identity")
class Identity:
    """No defence (a pipeline check: the update is shared as computed)."""

    name = "identity"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None = None) -> None:
        if value is not None:
            raise InvalidCaseError(f"defence identity takes no parameter, got {value:g}")

    @property
    def token(self) -> str:
        return "identity"

    def params(self) -> dict[str, Any]:
        return {}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return tensors


@register_defence("clip")
class ClipUpdateNorm:
    """Scale the shared update down to L2 norm at most ``max_norm`` (the whole update, all tensors together)."""

    name = "clip"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        if value is None or not math.isfinite(value) or value <= 0:
            raise InvalidCaseError(f"defence clip needs a positive maximum norm, e.g. 'clip1.5'; got {value!r}")
        self.max_norm = value

    @property
    def token(self) -> str:
        return f"clip{format_number(self.max_norm)}"

    def params(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        scale = torch.clamp(self.max_norm / (_norm(tensors) + 1e-12), max=1.0)
        return {name: t * scale for name, t in tensors.items()}
