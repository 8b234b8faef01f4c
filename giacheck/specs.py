"""Frozen specs for a gradient-inversion case: model, client, threat, attack budget, and the case id.

A case id is readable and stable, every value prefixed with its axis key (DESIGN §3)::

    resnet18_cifar-32-bn_eval-bs1-stats_none[-upd_fedavg4][-init_p0.5][-lab_inferred]

``Case.parse(case.id) == case`` for every valid case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

import numpy as np

from giacheck.errors import InvalidCaseError

__all__ = [
    "PROFILES",
    "AttackSpec",
    "BNMode",
    "Case",
    "ClientSpec",
    "InitKind",
    "LabelKnowledge",
    "ModelSpec",
    "Profile",
    "RunOptions",
    "Selection",
    "StatsAccess",
    "ThreatSpec",
    "UpdateKind",
    "get_profile",
]


DEFENCE_TOKEN = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z_.:]*?)(?P<value>\d+(?:\.\d+)?)?$")


class BNMode(StrEnum):
    """Mode of the client's BatchNorm layers during its local step."""

    TRAIN = "train"
    EVAL = "eval"


class StatsAccess(StrEnum):
    """What the server knows about the client's normalization statistics (DESIGN §3)."""

    NONE = "none"
    NAIVE = "naive"
    EXACT = "exact"
    PROXY = "proxy"


class UpdateKind(StrEnum):
    """FedSGD shares one gradient; FedAvg shares the weight delta of k local SGD steps."""

    FEDSGD = "fedsgd"
    FEDAVG = "fedavg"


class LabelKnowledge(StrEnum):
    """Whether the attacker knows the labels (paper §4.3.1) or infers them (iDLG)."""

    KNOWN = "known"
    INFERRED = "inferred"


class InitKind(StrEnum):
    """Random-noise initialization, or the paper's controlled initialization (§5.3, a diagnostic)."""

    NOISE = "noise"
    CONTROLLED = "controlled"


class Selection(StrEnum):
    """How the returned reconstruction is chosen among restarts."""

    OBJECTIVE = "objective"
    ORACLE = "oracle"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A registered model name (or ``package.module:function``) and the input resolution."""

    name: str
    resolution: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSpec:
    """The simulated client's local training step."""

    bn_mode: BNMode = BNMode.TRAIN
    batch_size: int = 1
    update: UpdateKind = UpdateKind.FEDSGD
    local_steps: int = 1
    local_lr: float = 0.01
    defences: tuple[str, ...] = ()  # the client's defence chain as id tokens, in order (giacheck.defences)

    def __post_init__(self) -> None:
        _coerce(self, bn_mode=BNMode, update=UpdateKind)
        tokens = self.defences.split("+") if isinstance(self.defences, str) else tuple(self.defences)
        bad = [t for t in tokens if not isinstance(t, str) or not DEFENCE_TOKEN.match(t)]
        if bad:
            raise InvalidCaseError(f"ClientSpec.defences={list(tokens)}: cannot read {bad}; write NAME followed by "
                                   "its parameter, e.g. 'clip1.5' (names: letters, '_', '.', ':')")
        object.__setattr__(self, "defences", tuple(tokens))


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreatSpec:
    """What the honest-but-curious server knows besides the model and the update."""

    stats: StatsAccess = StatsAccess.NONE
    labels: LabelKnowledge = LabelKnowledge.KNOWN

    def __post_init__(self) -> None:
        _coerce(self, stats=StatsAccess, labels=LabelKnowledge)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttackSpec:
    """Attack hyper-parameters and budget. ``lr`` is in [0,1] pixel units (signed Adam)."""

    iterations: int = 300
    restarts: int = 1
    lr: float = 0.1
    tv_weight: float = 1e-2
    bn_weight: float = 1e-2
    bn_prior: str = "relative"  # "raw": sum of L2 norms (paper); "relative": each layer's norm / target norm
    proxy_candidates: int = 4
    batched_restarts: bool = True
    distance: str = "cosine"  # the update distance (giacheck.attack.distance): "cosine" or "l2"

    def __post_init__(self) -> None:
        problems = []
        if self.iterations < 1:
            problems.append(f"iterations={self.iterations} (valid: >= 1)")
        if self.restarts < 1:
            problems.append(f"restarts={self.restarts} (valid: >= 1)")
        if not self.lr > 0:
            problems.append(f"lr={self.lr} (valid: > 0)")
        if self.tv_weight < 0 or self.bn_weight < 0:
            problems.append(f"tv_weight={self.tv_weight}, bn_weight={self.bn_weight} (valid: >= 0)")
        if self.bn_prior not in ("raw", "relative"):
            problems.append(f"bn_prior={self.bn_prior!r} (valid: 'raw', 'relative')")
        if self.proxy_candidates < 1:
            problems.append(f"proxy_candidates={self.proxy_candidates} (valid: >= 1)")
        if self.distance not in DISTANCES:
            problems.append(f"distance={self.distance!r} (valid: {', '.join(map(repr, DISTANCES))})")
        if problems:
            raise InvalidCaseError("invalid attack spec: " + "; ".join(problems))


DISTANCES = ("cosine", "l2")
DEFAULT_ATTACK = "gradmatch"  # the built-in attack: gradient matching with signed Adam (DESIGN §4)
BUDGET_FIELDS = ("iterations", "restarts", "lr", "tv_weight", "bn_weight", "bn_prior", "proxy_candidates", "distance")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How a case is run, besides the case itself: the same for a claim's case and its control.

    Args:
        seed: seeds the model initialization, the attack's noise and any controlled initialization.
        data: image source spec (see :func:`giacheck.data.open_source`).
        budget: attack hyper-parameters and budget overriding the profile's.
    """

    seed: int = 0
    data: str = "bundled"
    budget: AttackSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InvalidCaseError(f"seed={self.seed!r} (valid: an integer in [0, 2**63))")
        if not isinstance(self.data, str) or not self.data:
            raise InvalidCaseError(f"data={self.data!r} (valid: bundled, imagefolder:PATH, cifar10:PATH)")
        if self.budget is not None and not isinstance(self.budget, AttackSpec):
            raise InvalidCaseError(f"budget={self.budget!r} (valid: a giacheck.specs.AttackSpec or None)")


_ID_RE = re.compile(
    r"^(?P<model>[A-Za-z0-9_.:]+)-(?P<res>\d+)-bn_(?P<bn>[a-z]+)-bs(?P<bs>\d+)-stats_(?P<stats>[a-z]+)"
    r"(?:-upd_(?P<upd>fedsgd|fedavg)(?P<steps>\d+)?)?(?:-init_p(?P<p>\d+(?:\.\d+)?))?(?:-lab_(?P<lab>[a-z]+))?"
    r"(?:-atk_(?P<atk>[A-Za-z0-9_.:]+))?$"
)
_ID_FORM = "MODEL-RES-bn_{train|eval}-bsN-stats_{none|naive|exact|proxy}[-upd_fedavgK][-init_pP][-lab_inferred]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One cell of the test matrix: model × client × threat (+ optional controlled initialization)."""

    model: ModelSpec
    client: ClientSpec = field(default_factory=ClientSpec)
    threat: ThreatSpec = field(default_factory=ThreatSpec)
    init_p: float | None = None  # controlled initialization: fraction of true pixels replaced by noise
    attack: str = DEFAULT_ATTACK  # a registered attack name or ``package.module:Name`` (giacheck.attack.registry)

    @property
    def init(self) -> InitKind:
        return InitKind.NOISE if self.init_p is None else InitKind.CONTROLLED

    @property
    def id(self) -> str:
        """The readable, stable case id (see module docstring)."""
        parts = [
            self.model.name,
            str(self.model.resolution),
            f"bn_{self.client.bn_mode}",
            f"bs{self.client.batch_size}",
            f"stats_{self.threat.stats}",
        ]
        if self.client.update is UpdateKind.FEDAVG:
            parts.append(f"upd_fedavg{self.client.local_steps}")
        if self.init_p is not None:
            parts.append(f"init_p{format_number(self.init_p)}")
        if self.threat.labels is not LabelKnowledge.KNOWN:
            parts.append(f"lab_{self.threat.labels}")
        if self.attack != DEFAULT_ATTACK:
            parts.append(f"atk_{self.attack}")
        return "-".join(parts)

    def __str__(self) -> str:
        return self.id

    def with_(self, **changes: object) -> Case:
        """Return a copy with top-level fields replaced."""
        return replace(self, **changes)

    @classmethod
    def parse(cls, case_id: str) -> Case:
        """Parse a case id; raise :class:`InvalidCaseError` naming the bad part and the valid form."""
        m = _ID_RE.match(case_id.strip())
        if m is None:
            raise InvalidCaseError(f"malformed case id {case_id!r}; expected {_ID_FORM}, "
                                   "e.g. 'resnet18_cifar-32-bn_eval-bs1-stats_none'")
        g = m.groupdict()
        bn = _enum(BNMode, g["bn"], "bn", case_id)
        stats = _enum(StatsAccess, g["stats"], "stats", case_id)
        labels = _enum(LabelKnowledge, g["lab"] or "known", "lab", case_id)
        update, steps = UpdateKind.FEDSGD, 1
        if g["upd"] == "fedavg":
            update, steps = UpdateKind.FEDAVG, int(g["steps"] or 1)
        elif g["upd"] == "fedsgd" and g["steps"]:
            raise InvalidCaseError(f"case id {case_id!r}: 'upd_fedsgd' takes no step count (FedSGD is one gradient)")
        return cls(
            model=ModelSpec(name=g["model"], resolution=int(g["res"])),
            client=ClientSpec(bn_mode=bn, batch_size=int(g["bs"]), update=update, local_steps=steps),
            threat=ThreatSpec(stats=stats, labels=labels),
            init_p=float(g["p"]) if g["p"] is not None else None,
            attack=g["atk"] or DEFAULT_ATTACK,
        )


_E = TypeVar("_E", bound=StrEnum)


def _coerce(spec: object, **fields: type[StrEnum]) -> None:
    """Turn plain strings into their enums (``bn_mode="train"`` works), rejecting unknown values."""
    for name, kind in fields.items():
        value = getattr(spec, name)
        if not isinstance(value, kind):
            try:
                object.__setattr__(spec, name, kind(value))
            except ValueError:
                valid = ", ".join(kind)
                raise InvalidCaseError(f"{type(spec).__name__}.{name}={value!r}; valid: {valid}") from None


def _enum(kind: type[_E], value: str, key: str, case_id: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        valid = ", ".join(f"{key}_{v}" for v in kind)
        raise InvalidCaseError(f"case id {case_id!r}: unknown value '{key}_{value}'; valid: {valid}") from None


def format_number(p: float) -> str:
    """Shortest exact positional form (``0.1``, ``1``, ``0.00001``): ids must round-trip, so no ``1e-05``."""
    return np.format_float_positional(p, trim="-")


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A named budget: profiles scale the attack, never the claim (DESIGN §6)."""

    name: str
    attack: AttackSpec
    needs_gpu: bool
    description: str


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        attack=AttackSpec(iterations=400, restarts=1, lr=0.1, tv_weight=3e-2),
        needs_gpu=False,
        description=("CPU, CI-sized: 32x32 adapted models, 400 iterations, one restart. TV 3e-2 and 400 iterations "
                     "were chosen on resnet18_cifar eval bs1 over bundled images 0-2 (SSIM 0.75/0.87/0.81 at TV 3e-2 "
                     "vs 0.39/0.75/0.87 at TV 1e-2, 300 it) and apply to every case alike"),
    ),
    "paper": Profile(
        name="paper",
        attack=AttackSpec(iterations=4000, restarts=8, lr=0.1, tv_weight=3e-2),
        needs_gpu=True,
        description="GPU: canonical resolutions, thousands of iterations, several restarts",
    ),
}


def get_profile(name: str) -> Profile:
    """Return the named profile or raise listing the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InvalidCaseError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}") from None
