"""Client defences as plug-ins: what the client applies to its training before it shares the update.

A defence is named in a case id as a token, its registered name followed by its parameter (``clip1.5``: clip
the shared update to norm 1.5); several are chained with ``+`` in the order the client applies them
(``-def_clip1+noise0.5``). It acts at one stage of the client's local training (``client.local_training``):

- ``sample``: on each sample's gradient (DP-SGD: ``dpsgd``, its clipping norm from ``dpclip``);
- ``step``: on each local step's gradient, before the optimizer (FedSGD: on its one gradient);
- ``update``: on the shared update, after local training (``clip``, ``noise``, ``prune``, ``quant``);
- ``aggregate``: on what the server receives from several clients (``secagg``: it sees only their mean).

The names and parameters follow the ecosystems that ship them: Opacus' ``max_grad_norm`` and
``noise_multiplier`` (``dpclip``, ``dpsgd``), Flower's fixed clipping with ``clipping_norm`` and
``noise_multiplier`` (``clip``, ``noise``), ``prune_ratio`` (``prune``), bits (``quant``), half precision
(``fp16``, ``bf16``) and secure aggregation over ``clients`` (``secagg``).

The same chain runs in the client simulation and in the attacker's replica: the server is assumed to know the
client's defence configuration, never its random draws (the replica runs it with ``generator=None``: no noise).
A defence may declare, with a ``rescales(samples)`` method, that the replica's run of it only multiplies the
update by a positive number when each local step has ``samples`` samples (clipping, noise the replica does not
draw, DP-SGD on one sample); :func:`rescales_only` asks a whole chain. The cosine distance cannot tell such a
chain from none, so the ``gradmatch_rescaled`` attack attacks it as undefended
(:func:`giacheck.attack.objective.attack_view`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import torch

from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.plugins import Registry
from giacheck.specs import DEFENCE_TOKEN, format_number

__all__ = ["DEFENCES", "DELTA", "DPSGD", "ClipUpdateNorm", "Defence", "DefenceStage", "GaussianNoise",
           "HalfPrecision", "Identity", "PerSampleClip", "Prune", "Quantize", "SecureAggregation", "aggregation_size",
           "make_defences", "parse_token", "privacy", "register_defence", "rescales_only"]

DELTA = 1e-5  # the δ of every (ε, δ) giacheck reports


class DefenceStage(StrEnum):
    """Where in the client's local training a defence acts."""

    SAMPLE = "sample"
    STEP = "step"
    UPDATE = "update"
    AGGREGATE = "aggregate"


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
    _link(defences, tokens)
    return defences


def _link(defences: list[Defence], tokens: Sequence[str]) -> None:
    """Give each ``noise`` the norm of the ``clip`` before it and each ``dpsgd`` its ``dpclip``; refuse chains that
    make no sense (noise without a clip, per-sample clipping without DP-SGD after it, aggregation not last)."""
    clip: float | None = None
    sample_clip: float | None = None
    for i, defence in enumerate(defences):
        if isinstance(defence, ClipUpdateNorm):
            clip = defence.max_norm
        elif isinstance(defence, GaussianNoise):
            if clip is None:
                raise InvalidCaseError(f"defence {defence.token!r} in {'+'.join(tokens)!r}: update noise is scaled by "
                                       "the clipping norm of a 'clip' before it (Flower's fixed clipping); write "
                                       f"e.g. 'clip1+{defence.token}'")
            defence.clipping_norm = clip
        elif isinstance(defence, PerSampleClip):
            sample_clip = defence.max_grad_norm
            if not (i + 1 < len(defences) and isinstance(defences[i + 1], DPSGD)):
                raise InvalidCaseError(f"defence {defence.token!r} in {'+'.join(tokens)!r}: per-sample clipping "
                                       "sets DP-SGD's max_grad_norm and goes right before 'dpsgdZ' (e.g. "
                                       "'dpclip1+dpsgd0.5'; 'dpsgd0' clips without noise)")
        elif isinstance(defence, DPSGD) and sample_clip is not None:
            defence.max_grad_norm, sample_clip = sample_clip, None
        if isinstance(defence, SecureAggregation) and i != len(defences) - 1:
            raise InvalidCaseError(f"defence {defence.token!r} in {'+'.join(tokens)!r}: secure aggregation is what "
                                   "the server receives, after every client-side defence; put it last")
    if sum(isinstance(d, DPSGD) for d in defences) > 1:
        raise InvalidCaseError(f"defences {'+'.join(tokens)!r}: one DP-SGD per chain")


def rescales_only(defences: Sequence[Defence], samples: int) -> bool:
    """Whether the whole chain, run as the replica runs it (``generator=None``), multiplies the update by a
    positive number and does nothing else, when each local step has ``samples`` samples. A defence says so with a
    ``rescales(samples) -> bool`` method defined beside its ``apply`` (a subclass that overrides ``apply`` alone
    does not inherit the claim); one without it, a plug-in's say, does not."""
    return all(_declares_rescaling(d) and d.rescales(samples) is True for d in defences)


def _declares_rescaling(defence: Defence) -> bool:
    owner = next((cls for cls in type(defence).__mro__ if "apply" in vars(cls)), None)
    return owner is not None and callable(vars(owner).get("rescales"))


def aggregation_size(defences: Sequence[Defence]) -> int:
    """How many clients' updates the server sees only the mean of (1: the client's own update)."""
    return next((d.clients for d in defences if isinstance(d, SecureAggregation)), 1)


def privacy(defences: Sequence[Defence], *, dataset_size: int, minibatch: int | None, epochs: int,
            delta: float = DELTA) -> list[dict[str, Any]]:
    """The (ε, δ) of each noise-adding defence of the chain, from Opacus' RDP accountant.

    DP-SGD (example-level, within this round): sampling rate ``minibatch / dataset_size`` over
    ``epochs · ceil(dataset_size / minibatch)`` steps (the accountant assumes Poisson sampling; the client draws
    shuffled fixed-size mini-batches, the usual approximation). Update noise (user-level, one round): one
    Gaussian mechanism of sensitivity ``clipping_norm``, sampling rate 1. Zero noise bounds nothing: JSON has no
    infinity, so the entry says ``"epsilon": None, "bounded": False``.
    """
    from opacus.accountants import RDPAccountant  # lazy: Opacus imports slowly and most cases have no DP

    out = []
    for d in defences:
        if isinstance(d, DPSGD):
            mb = minibatch or dataset_size
            q, steps, level = mb / dataset_size, epochs * math.ceil(dataset_size / mb), "example"
        elif isinstance(d, GaussianNoise):
            q, steps, level = 1.0, 1, "user"
        else:
            continue
        z = d.noise_multiplier
        if z == 0:
            epsilon = None
        else:
            accountant = RDPAccountant()
            accountant.history = [(z, q, steps)]
            with warnings.catch_warnings():  # tiny noise: the bound sits at the smallest order, a huge ε
                warnings.filterwarnings("ignore", message="Optimal order is the")
                epsilon = float(accountant.get_epsilon(delta))
        out.append({"defence": d.token, "epsilon": epsilon, "bounded": epsilon is not None, "delta": delta,
                    "sample_rate": q, "steps": steps, "level": level,
                    "accountant": "opacus.accountants.RDPAccountant"})
    return out


def _check_param(name: str, value: float | None, *, example: str, low: float = 0.0, high: float = math.inf,
                 low_open: bool = False) -> float:
    """``value`` as a finite float within [low, high] (``(low, high]`` when ``low_open``), else a named error."""
    bound = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
    if value is None or not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
        raise InvalidCaseError(f"defence {name} needs a parameter {bound}, e.g. {example!r}; got {value!r}")
    return float(value)


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

    def rescales(self, samples: int) -> bool:
        return True

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return tensors


@register_defence("clip")
class ClipUpdateNorm:
    """Scale the shared update down to L2 norm at most ``max_norm`` (the whole update, all tensors together)."""

    name = "clip"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        self.max_norm = _check_param("clip", value, example="clip1.5", low_open=True)

    @property
    def token(self) -> str:
        return f"clip{format_number(self.max_norm)}"

    def params(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm}

    def rescales(self, samples: int) -> bool:
        return True  # by min(1, max_norm / ‖update‖) > 0

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        scale = torch.clamp(self.max_norm / (_norm(tensors) + 1e-12), max=1.0)
        return {name: t * scale for name, t in tensors.items()}


@register_defence("noise")
class GaussianNoise:
    """Gaussian noise on the clipped update, std ``noise_multiplier × clipping_norm`` per entry (Flower's
    ``DifferentialPrivacyClientSideFixedClipping``); the norm is the preceding ``clip``'s."""

    name = "noise"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        self.noise_multiplier = _check_param("noise", value, example="clip1+noise0.5")
        self.clipping_norm = math.nan  # set from the chain's clip (make_defences)

    @property
    def token(self) -> str:
        return f"noise{format_number(self.noise_multiplier)}"

    def params(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "clipping_norm": self.clipping_norm}

    def rescales(self, samples: int) -> bool:
        return True  # the replica draws no noise: the identity

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        if generator is None or self.noise_multiplier == 0:
            return tensors
        std = self.noise_multiplier * self.clipping_norm
        return {n: t + std * torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype)
                for n, t in tensors.items()}


@register_defence("prune")
class Prune:
    """Top-k sparsification: zero the ``prune_ratio`` fraction of each tensor's entries smallest in magnitude
    (gradient pruning, Zhu et al. 2019). The replica prunes its own dummy update the same way."""

    name = "prune"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        self.prune_ratio = _check_param("prune", value, example="prune0.9", high=1.0)

    @property
    def token(self) -> str:
        return f"prune{format_number(self.prune_ratio)}"

    def params(self) -> dict[str, Any]:
        return {"prune_ratio": self.prune_ratio}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        out = {}
        for n, t in tensors.items():
            drop = math.floor(self.prune_ratio * t.numel())
            if drop == 0:
                out[n] = t
                continue
            threshold = t.detach().abs().flatten().kthvalue(drop).values
            out[n] = torch.where(t.detach().abs() > threshold, t, torch.zeros_like(t))
        return out


@register_defence("quant")
class Quantize:
    """Uniform quantization of each tensor to ``bits`` bits (levels symmetric around 0, scaled by its largest
    magnitude). The replica's copy passes gradients straight through the rounding."""

    name = "quant"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        self.bits = int(_check_param("quant", value, example="quant4", low=2, high=16))
        if value != self.bits:
            raise InvalidCaseError(f"defence quant needs a whole number of bits in 2..16, e.g. 'quant4'; got {value!r}")

    @property
    def token(self) -> str:
        return f"quant{self.bits}"

    def params(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        levels = 2 ** (self.bits - 1) - 1
        out = {}
        for n, t in tensors.items():
            scale = t.detach().abs().max().clamp_min(1e-30) / levels
            q = torch.round(t.detach() / scale) * scale
            out[n] = t + (q - t.detach())  # the quantized values, with the identity's gradient
        return out


class HalfPrecision:
    """Each local step's gradient rounded to half precision, ``fp16`` (float16) or ``bf16`` (bfloat16): what a
    mixed-precision client's gradients carry; the forward's own rounding under autocast is not simulated."""

    stage = DefenceStage.STEP

    def __init__(self, value: float | None, name: str, dtype: torch.dtype) -> None:
        if value != 16:
            raise InvalidCaseError(f"defence {name} names 16-bit precision: write '{name}16'; got {value!r}")
        self.name, self.dtype = name, dtype

    @property
    def token(self) -> str:
        return f"{self.name}16"

    def params(self) -> dict[str, Any]:
        return {"dtype": str(self.dtype).removeprefix("torch.")}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return {n: t + (t.detach().to(self.dtype).to(t.dtype) - t.detach()) for n, t in tensors.items()}


register_defence("fp")(lambda value: HalfPrecision(value, "fp", torch.float16))
register_defence("bf")(lambda value: HalfPrecision(value, "bf", torch.bfloat16))


@register_defence("dpclip")
class PerSampleClip:
    """DP-SGD's ``max_grad_norm``: sets the per-sample clipping norm of the ``dpsgd`` right after it."""

    name = "dpclip"
    stage = DefenceStage.SAMPLE

    def __init__(self, value: float | None) -> None:
        self.max_grad_norm = _check_param("dpclip", value, example="dpclip1+dpsgd0.5", low_open=True)

    @property
    def token(self) -> str:
        return f"dpclip{format_number(self.max_grad_norm)}"

    def params(self) -> dict[str, Any]:
        return {"max_grad_norm": self.max_grad_norm}

    def rescales(self, samples: int) -> bool:
        return True  # the identity: DP-SGD after it clips

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return tensors  # folded into the DP-SGD after it


@register_defence("dpsgd")
class DPSGD:
    """DP-SGD as Opacus' ``DPOptimizer`` runs it: each sample's gradient clipped to ``max_grad_norm`` (default
    1, or the ``dpclip`` before it), summed, Gaussian noise of std ``noise_multiplier × max_grad_norm`` added,
    divided by the configured mini-batch size. The model must be one Opacus supports (BatchNorm is replaced by
    GroupNorm with ``ModuleValidator.fix``, which the runner does and records)."""

    name = "dpsgd"
    stage = DefenceStage.SAMPLE

    def __init__(self, value: float | None) -> None:
        self.noise_multiplier = _check_param("dpsgd", value, example="dpsgd0.5")
        self.max_grad_norm = 1.0

    @property
    def token(self) -> str:
        return f"dpsgd{format_number(self.noise_multiplier)}"

    def params(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm}

    def rescales(self, samples: int) -> bool:
        """One sample per step: its gradient times ``min(1, C / ‖g‖) / batch_size`` > 0 (no noise drawn). Two or
        more: each sample gets its own factor, which no single scale reproduces."""
        return samples == 1

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None,
              batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """``tensors``: per-sample gradients (leading axis: samples); the noised mean over ``batch_size``."""
        n = next(iter(tensors.values())).shape[0]
        norms = torch.stack([t.reshape(n, -1).pow(2).sum(1) for t in tensors.values()]).sum(0).sqrt()
        factor = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # as Opacus' per-sample clipping
        out = {}
        for name, t in tensors.items():
            summed = torch.einsum("i,i...->...", factor, t)
            if generator is not None and self.noise_multiplier > 0:
                std = self.noise_multiplier * self.max_grad_norm
                summed = summed + std * torch.randn(summed.shape, generator=generator, device=t.device, dtype=t.dtype)
            out[name] = summed / (batch_size or n)
        return out


@register_defence("secagg")
class SecureAggregation:
    """Secure aggregation over ``clients`` clients: the server sees only the mean of their updates (the other
    ``clients − 1`` are simulated on images disjoint from the target's). The attacker inverts the mean with a
    dummy batch for every client, each run through the client's training (Zhu et al.'s aggregate attack)."""

    name = "secagg"
    stage = DefenceStage.AGGREGATE

    def __init__(self, value: float | None) -> None:
        if value is None or value != int(value) or value < 1:
            raise InvalidCaseError(f"defence secagg needs a whole number of clients >= 1, e.g. 'secagg4'; "
                                   f"got {value!r}")
        self.clients = int(value)

    @property
    def token(self) -> str:
        return f"secagg{self.clients}"

    def params(self) -> dict[str, Any]:
        return {"clients": self.clients}

    def apply(self, tensors: dict[str, torch.Tensor], *, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        return tensors  # the runner averages the clients' updates
