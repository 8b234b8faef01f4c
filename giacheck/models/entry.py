"""A model's metadata (:class:`ModelEntry`), the [0,1]-pixel wrapper it builds, and the check of one against the other.

What an entry claims about normalization decides which cases are valid (``bn_train`` and ``stats_exact`` need
BatchNorm, ``stats_proxy`` needs BatchNorm or LayerNorm layers): the check compares the claim with the
module the entry builds, so a wrong claim is refused with a message instead of crashing deep in the attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from giacheck.errors import InvalidCaseError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORM_TYPES",
    "ModelEntry",
    "ModuleFacts",
    "NormalizedModel",
    "check_claims",
    "check_module",
    "mean_cross_entropy",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The normalization layers giacheck's statistics priors read (as ``giacheck.attack.bnstats.norm_modules``).
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)


def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classification training loss: cross-entropy averaged over the batch."""
    return torch.nn.functional.cross_entropy(logits, labels, reduction="mean")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelEntry:
    """Metadata of a registered model plus the factory that builds it (timm's ``PretrainedCfg`` analogue)."""

    name: str
    upstream: str
    factory: Callable[[int, int], nn.Module] = field(repr=False)  # (resolution, num_classes) -> module
    default_size: int
    num_classes: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    task: str = "classification"
    norm_kinds: tuple[str, ...] = ()
    has_batchnorm: bool = False
    sizes: tuple[int, ...] = ()  # resolutions the model accepts; empty = any multiple of ``size_multiple``
    size_multiple: int = 1
    min_size: int = 8
    description: str = ""
    loss: Callable[[Any, Any], torch.Tensor] = field(default=mean_cross_entropy, repr=False)  # (outputs, targets)

    def check_resolution(self, resolution: int) -> str | None:
        """Return why ``resolution`` cannot be used with this model, or ``None`` when it can."""
        if self.sizes and resolution not in self.sizes:
            return f"{self.name} takes input sizes {list(self.sizes)}, not {resolution}"
        if resolution < self.min_size or resolution % self.size_multiple:
            return (f"{self.name} needs an input size >= {self.min_size} and a multiple of {self.size_multiple}, "
                    f"got {resolution}")
        return None


class NormalizedModel(nn.Module):
    """Wraps a network so that it takes pixels in [0,1]: normalization is part of the model (DESIGN §4)."""

    def __init__(self, net: nn.Module, entry: ModelEntry) -> None:
        super().__init__()
        self.net = net
        self.entry = entry
        self.register_buffer("mean", torch.tensor(entry.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(entry.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """The task's training loss (the entry's; client and attacker share it)."""
        return self.entry.loss(outputs, targets)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModuleFacts:
    """What a built module holds that its entry makes claims about: normalization layers and BatchNorm."""

    net_class: str
    kinds: tuple[str, ...]  # class names of its BatchNorm and LayerNorm layers, sorted
    has_batchnorm: bool

    @classmethod
    def of(cls, net: nn.Module) -> ModuleFacts:
        layers = [m for m in net.modules() if isinstance(m, NORM_TYPES)]
        return cls(net_class=type(net).__name__, kinds=tuple(sorted({type(m).__name__ for m in layers})),
                   has_batchnorm=any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers))


def check_claims(entry: ModelEntry, facts: ModuleFacts, *, label: str | None = None) -> None:
    """Refuse an entry whose normalization claims contradict the module it builds.

    Raises:
        InvalidCaseError: ``has_batchnorm`` differs from whether the module holds a BatchNorm layer, or
            ``norm_kinds`` names layers while it has no BatchNorm or LayerNorm (the layers ``stats_proxy`` reads).
    """
    named = f"model {label or entry.name!r}" + (f" (entry {entry.name!r})" if label and label != entry.name else "")
    built = f"the module it builds ({facts.net_class}) has " + (
        f"normalization layers {list(facts.kinds)}" if facts.kinds else "no BatchNorm or LayerNorm layer")
    if entry.has_batchnorm != facts.has_batchnorm:
        raise InvalidCaseError(f"{named} claims has_batchnorm={entry.has_batchnorm}, but {built}; set "
                               f"has_batchnorm={facts.has_batchnorm} in its ModelEntry (it decides whether bn_train "
                               "and stats_exact/naive cases are valid)")
    if entry.norm_kinds and not facts.kinds:
        raise InvalidCaseError(f"{named} claims norm_kinds={list(entry.norm_kinds)}, but {built}; set "
                               "norm_kinds=() in its ModelEntry (stats_proxy reads BatchNorm and LayerNorm layers)")


def check_module(entry: ModelEntry, net: nn.Module) -> None:
    """:func:`check_claims` against a built module."""
    check_claims(entry, ModuleFacts.of(net))
