"""Model registry: ``@register_model`` functions return a :class:`ModelEntry`; ``build`` makes the module.

The function name is the registry key and its one-line docstring says what it is (timm style). Any
``package.module:function`` string also names a model, so a vendor's test pack can use its own architecture.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from giacheck.errors import GiacheckError, InvalidCaseError, UnknownModelError, close_matches

__all__ = ["ModelEntry", "NormalizedModel", "build", "get_entry", "list_models", "register_alias", "register_model"]

log = logging.getLogger("giacheck.models")

def mean_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classification training loss: cross-entropy averaged over the batch."""
    return torch.nn.functional.cross_entropy(logits, labels, reduction="mean")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


_REGISTRY: dict[str, Callable[..., ModelEntry]] = {}
_ALIASES: dict[str, tuple[tuple[str, str], Callable[[], ModelEntry]]] = {}  # name -> (identity, factory)
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_.]+$")


def register_model(fn: Callable[..., ModelEntry]) -> Callable[..., ModelEntry]:
    """Register ``fn`` under its own name; a duplicate name raises (timm only warns)."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].__module__}")
    _REGISTRY[name] = fn
    return fn


def register_alias(name: str, target: str | Callable[[], ModelEntry], **overrides: Any) -> str:
    """Name a model defined elsewhere, with entry overrides (a test pack's input size, classes, normalization).

    ``target`` is a registered name, a ``package.module:function`` string or a factory returning a
    :class:`ModelEntry`. Registering the same target and overrides again (every xdist worker imports the pack)
    is a no-op; a built-in name, or a taken name for something else, raises :class:`InvalidCaseError`.
    """
    _load_builtin()
    if not isinstance(name, str) or not _ALIAS_RE.match(name):
        raise InvalidCaseError(f"model alias {name!r}: use letters, digits, '_' and '.' (it becomes part of case ids, "
                               "which use '-' between axes)")
    if name in _REGISTRY:
        raise InvalidCaseError(f"model alias {name!r} is a built-in model name; choose another name")
    label = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
    identity = (label, repr(sorted(overrides.items())))
    if name in _ALIASES:
        if _ALIASES[name][0] != identity:
            raise InvalidCaseError(f"model alias {name!r} is already registered for {_ALIASES[name][0][0]} "
                                   f"with {_ALIASES[name][0][1]}; not re-registered for {label} with {identity[1]}")
        return name

    def factory() -> ModelEntry:
        base = get_entry(target) if isinstance(target, str) else _checked(label, _call(label, target))
        return _replace(base, name, name=name, **overrides)

    _ALIASES[name] = (identity, factory)
    return name


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_entry(name: str, **overrides: object) -> ModelEntry:
    """Look up a registered name or import a ``package.module:function``; unknown names list close matches."""
    _load_builtin()
    if ":" in name:
        fn = _import_factory(name)
    elif name in _REGISTRY:
        fn = _REGISTRY[name]
    elif name in _ALIASES:
        fn = _ALIASES[name][1]
    else:
        raise UnknownModelError(
            f"unknown model {name!r}.{close_matches(name, _REGISTRY)} Valid names: {', '.join(sorted(_REGISTRY))}; "
            "or give 'package.module:function' returning a ModelEntry."
        )
    return _replace(_checked(name, _call(name, fn)), name, **overrides)


def _call(name: str, fn: Callable[..., Any]) -> Any:
    """Call a model factory; whatever it raises becomes an :class:`UnknownModelError` naming the factory."""
    try:
        return fn()
    except GiacheckError:
        raise
    except TypeError as exc:
        raise UnknownModelError(f"{name!r} cannot be called without arguments ({exc}); a model factory takes "
                                "no required arguments and returns a giacheck.models.ModelEntry") from None
    except Exception as exc:
        raise UnknownModelError(f"model factory {name!r} raised {type(exc).__name__}: {exc}") from exc


def _checked(name: str, entry: Any) -> ModelEntry:
    if not isinstance(entry, ModelEntry):
        raise UnknownModelError(f"{name!r} returned {type(entry).__name__}, expected giacheck.models.ModelEntry")
    return entry


def _replace(entry: ModelEntry, label: str, /, **overrides: Any) -> ModelEntry:
    try:
        return dataclasses.replace(entry, **overrides)
    except TypeError as exc:
        valid = ", ".join(f.name for f in dataclasses.fields(ModelEntry))
        raise InvalidCaseError(f"bad override for model {label!r}: {exc}; valid fields: {valid}") from None


def build(name: str, resolution: int, *, num_classes: int | None = None, seed: int = 0,
          weights: str | os.PathLike[str] | None = None, trust_pickle: bool = False) -> NormalizedModel:
    """Build a model that takes [0,1] pixels at ``resolution``: randomly initialized (seeded), or from a local file.

    ``weights`` is a safetensors file or a ``torch.load(weights_only=True)`` state dict for the upstream network
    (see :func:`giacheck.models.weights.load_weights`); ``trust_pickle`` allows a file that needs arbitrary pickles.
    """
    entry = get_entry(name)
    problem = entry.check_resolution(resolution)
    if problem:
        raise InvalidCaseError(problem)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.factory(resolution, num_classes or entry.num_classes)
    if weights is not None:
        from giacheck.models.weights import load_weights

        load_weights(net, weights, trust_pickle=trust_pickle)
    _disable_stochastic_layers(net)
    return NormalizedModel(net, entry)


def _disable_stochastic_layers(net: nn.Module) -> None:
    """Dropout and drop-path off (paper §4.3.1): the attacker assumes a deterministic client forward."""
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if type(module).__name__ == "DropPath":
            module.drop_prob = 0.0


def _import_factory(spec: str) -> Callable[..., ModelEntry]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownModelError(f"model {spec!r}: cannot import module {module_name!r} ({exc}); give "
                                "'package.module:function' for a module on sys.path") from exc
    except Exception as exc:  # a module that fails while importing: name it, keep the cause
        raise UnknownModelError(f"model {spec!r}: importing module {module_name!r} raised "
                                f"{type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UnknownModelError(f"model {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def _load_builtin() -> None:
    from giacheck.models import lenet, resnets, timm_zoo, yolo  # noqa: F401  (registers on import)
