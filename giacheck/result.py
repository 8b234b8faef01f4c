"""The result of one case: scores, curves, the attack's identity, the threat, timings and provenance.

Every part is a small frozen dataclass; ``Result.to_dict()`` is the JSON form that results files, baselines and
reports read, and ``to_state``/``from_state`` the form xdist workers share (plain values and two tensors, read
back with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import torch

from giacheck.jsonio import finite
from giacheck.specs import AttackSpec, Selection

__all__ = ["AttackInfo", "Manifest", "Oracle", "ProxyChoiceRecord", "Reid", "Result", "StateRecord", "Threat",
           "Timings", "Truth"]


class _Part:
    """A result part whose JSON form is its fields (``dataclasses.asdict``), read back field by field."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttackInfo:
    """Which attack ran, with which budget (its identity in baselines), and how it ran."""

    name: str
    spec: AttackSpec
    batched: bool
    patch_size: int  # the secondary score's patch size

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self.spec), "batched": self.batched,
                "patch_size": self.patch_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackInfo:
        data = dict(data)
        name, batched, patch = data.pop("name"), data.pop("batched"), data.pop("patch_size")
        return cls(name=name, spec=AttackSpec(**data), batched=batched, patch_size=patch)


@dataclass(frozen=True, slots=True, kw_only=True)
class Oracle(_Part):
    """The best-SSIM restart: an auditor's upper bound, labelled, never the attack's result."""

    restart: int
    ssim_mean: float
    selected_restart: int
    selection: str = str(Selection.ORACLE)
    note: str = "best SSIM against the private images over restarts: an upper bound, not the attack result"


@dataclass(frozen=True, slots=True, kw_only=True)
class Truth(_Part):
    """The attack's objective at the true images: an auditor-side diagnostic (:mod:`giacheck.diagnostics`)."""

    objective: float | None  # None: the attack does not expose its objective
    note: str = "attack objective at the private images: a scoring-side diagnostic, never seen by the attack"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reid(_Part):
    """Re-identification of each reconstructed image against a held-out pool (:mod:`giacheck.reid`), in the
    order of the private images; ``image`` names the trial's private image (the first of its batch)."""

    image: str
    per_image: list[dict[str, Any]]  # giacheck.reid.Reidentification.to_dict(), one per private image
    pool_size: int
    pool: str  # what the pool is: its source and what it excludes


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyChoiceRecord:
    """Which auxiliary batch gave the proxy statistics, and every candidate's update distance."""

    candidates: int
    chosen: int
    grad_distances: list[float]
    pool: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Threat(_Part):
    """What the attacker knew or inferred; optional parts are None when they do not apply."""

    stats: str
    labels: str
    label_accuracy: float | None = None  # lab_inferred: multiset accuracy of the inferred labels
    inferred_labels: list[int] | None = None
    proxy: ProxyChoiceRecord | None = None
    init_ssim: float | None = None  # controlled initialization: SSIM of the start (a diagnostic)
    init_fraction: float | None = None  # the fraction of pixels replaced to give that start (giacheck.ladder)
    denoised_ssim: float | None = None  # the best gradient-free denoiser of the start (giacheck.ladder)
    defences: list[dict[str, Any]] | None = None  # the client's defence chain, known to the server: token, params
    privacy: list[dict[str, Any]] | None = None  # (ε, δ) of each noise-adding defence (giacheck.defences.privacy)
    hyper: str | None = None  # what the server knew of the local training (HyperKnowledge)
    assumed: str | None = None  # what the replica assumed where it did not know
    clients: int | None = None  # secure aggregation: the clients whose mean update the server saw
    framework: dict[str, Any] | None = None  # a captured framework client: its name, version, what the server saw

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}  # unset parts left out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Threat:
        data = dict(data)
        if data.get("proxy") is not None:
            data["proxy"] = ProxyChoiceRecord(**data["proxy"])
        return cls(**data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings(_Part):
    """Wall-clock seconds of each stage of the trial; ``attack_s`` is this trial's share of an attack run stacked
    with the case's other trials, and ``total_s`` the sum of the stages."""

    build_s: float
    client_s: float
    prepare_s: float
    attack_s: float
    per_iteration_s: float
    metrics_s: float
    total_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest(_Part):
    """Provenance: versions, device, seed, git revision, metric definition, data and model."""

    versions: dict[str, str | None]
    device: str
    device_name: str
    seed: int
    git_revision: str | None
    metric: dict[str, Any]
    platform: str
    data: str
    images: tuple[str, ...]
    model: str
    seeds: dict[str, int] = field(default_factory=dict)  # model (initialization), client, attack
    model_change: str | None = None  # how the run changed the model before training (DP-SGD: BatchNorm→GroupNorm)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{**data, "images": tuple(data["images"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRecord:
    """The global model's state and how it was made (:mod:`giacheck.modelstate`)."""

    state: str  # the case's state token: random, bncal, warmN, ckpt
    label: str  # one line a report shows
    model_seed: int  # seeds the random initialization every state starts from (ckpt: overwritten by the file)
    pinned_seed: int | None = None  # RunOptions.model_seed when given (None: the trial's seed)
    images: tuple[str, ...] = ()  # auxiliary images the state was estimated or trained on
    views: int = 0
    bn_modules: int = 0  # BatchNorm modules whose running statistics the state set
    changed: bool = False  # whether the state differs from random initialization
    steps: int = 0
    recipe: dict[str, Any] | None = None
    cache: str | None = None  # warm: "computed", "memory" or "disk"
    weights: str | None = None  # ckpt: the file
    sha256: str | None = None  # ckpt: the file's sha256 (part of the baseline identity)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__slots__}
        data["images"] = list(self.images)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StateRecord:
        return cls(**{**data, "images": tuple(data.get("images", ()))})


_PARTS = {"attack": AttackInfo, "oracle": Oracle, "threat": Threat, "timings": Timings, "manifest": Manifest,
          "reid": Reid, "truth": Truth, "model_state": StateRecord}
_TENSOR_FIELDS = ("original", "reconstruction")
_TUPLE_FIELDS = ("ssim", "psnr", "patch_ssim", "curve")


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Scores, curves, timings and provenance of one attack; images kept as tensors (not in ``to_dict``)."""

    case_id: str
    profile: str
    seed: int
    ssim: tuple[float, ...]
    psnr: tuple[float, ...]
    patch_ssim: tuple[float, ...]  # secondary, permutation-tolerant score (metrics.patch_matched_ssim)
    objective: float
    grad_distance: float  # the attack's update distance (``attack.spec.distance``) at the selected restart
    curve: tuple[float, ...]  # objective of the selected restart, per iteration
    iterations: int
    restarts: int
    selection: Selection
    oracle: Oracle
    attack: AttackInfo
    threat: Threat
    timings: Timings
    manifest: Manifest
    reid: Reid
    truth: Truth
    model_state: StateRecord
    original: torch.Tensor = field(repr=False)
    reconstruction: torch.Tensor = field(repr=False)
    utility: dict[str, Any] | None = None  # the defended update's usefulness beside the undefended one's

    @property
    def ssim_mean(self) -> float:
        return sum(self.ssim) / len(self.ssim)

    @property
    def ssim_max(self) -> float:
        return max(self.ssim)

    @property
    def patch_ssim_mean(self) -> float:
        return sum(self.patch_ssim) / len(self.patch_ssim)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no tensors); ``ssim`` holds per-image, mean and max."""
        psnr_mean = sum(self.psnr) / len(self.psnr)
        return {
            "case_id": self.case_id,
            "profile": self.profile,
            "seed": self.seed,
            "ssim": {"per_image": list(self.ssim), "mean": self.ssim_mean, "max": self.ssim_max},
            "psnr": {"per_image": [finite(v) for v in self.psnr], "mean": finite(psnr_mean)},
            "secondary": {"patch_matched_ssim": {"per_image": list(self.patch_ssim), "mean": self.patch_ssim_mean,
                                                 "note": "secondary, permutation-tolerant; claims use ssim"}},
            "objective": self.objective,
            "grad_distance": self.grad_distance,
            "curve": list(self.curve),
            "iterations": self.iterations,
            "restarts": self.restarts,
            "selection": str(self.selection),
            **{name: getattr(self, name).to_dict() for name in _PARTS},
            **({"utility": self.utility} if self.utility is not None else {}),
        }

    def to_state(self) -> dict[str, Any]:
        """Plain values and the two image tensors only (:meth:`from_state` reads it back exactly; PSNR may be
        ``inf``, which ``torch.save`` keeps)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in _TENSOR_FIELDS and f.name not in _PARTS}
        fields = {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Selection) else v)
                  for k, v in fields.items()}
        parts = {name: getattr(self, name).to_dict() for name in _PARTS}
        plain = json.loads(json.dumps({"fields": fields, "parts": parts}))  # lists, dicts, str, numbers only
        return {**plain,
                **{name: getattr(self, name).contiguous() for name in _TENSOR_FIELDS}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Result:
        fields = dict(state["fields"])
        for name in _TUPLE_FIELDS:
            fields[name] = tuple(fields[name])
        fields["selection"] = Selection(fields["selection"])
        parts = {name: kind.from_dict(state["parts"][name]) for name, kind in _PARTS.items()}
        return cls(**fields, **parts, **{name: state[name] for name in _TENSOR_FIELDS})
