"""Model registry: ``@register_model`` functions return a :class:`ModelEntry`; ``build`` makes the module.

The function name is the registry key and its one-line docstring says what it is (timm style). Any
``package.module:function`` string also names a model, so a vendor's test pack can use its own architecture: a
function returning a :class:`ModelEntry` or a plain ``torch.nn.Module`` (:mod:`giacheck.models.factories`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from giacheck.errors import InvalidCaseError, UnknownModelError, close_matches
from giacheck.models.entry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelEntry,
    NormalizedModel,
    check_module,
    mean_cross_entropy,
)
from giacheck.models.factories import call_factory, entry_from_factory, with_overrides
from giacheck.plugins import import_object

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelEntry",
    "NormalizedModel",
    "build",
    "get_entry",
    "list_models",
    "mean_cross_entropy",
    "register_alias",
    "register_model",
]


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


def register_alias(name: str, target: str | Callable[..., Any], **overrides: Any) -> str:
    """Name a model defined elsewhere, with entry overrides (a test pack's input size, classes, normalization).

    ``target`` is a registered name, a ``package.module:function`` string or a factory returning a
    :class:`ModelEntry` or a plain ``torch.nn.Module`` (then ``default_size`` and ``num_classes`` are required
    overrides; see :mod:`giacheck.models.factories`). Registering the same target and overrides again (every
    xdist worker imports the pack) is a no-op; a built-in name, or a taken name for something else, raises
    :class:`InvalidCaseError`.
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
        if isinstance(target, str):
            entry = get_entry(target, **overrides)
        else:
            entry = entry_from_factory(label, target, overrides)
        return with_overrides(entry, name, {"name": name})

    _ALIASES[name] = (identity, factory)
    return name


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_entry(name: str, **overrides: Any) -> ModelEntry:
    """Look up a registered name or alias, or import a ``package.module:function``; unknown names list close matches.

    ``overrides`` replace entry fields. A ``package.module:function`` may return a plain ``torch.nn.Module``: then
    ``default_size`` and ``num_classes`` are required overrides and ``mean``/``std`` default to ImageNet's (see
    :mod:`giacheck.models.factories`, which also checks its claims against the module it builds).
    """
    _load_builtin()
    if ":" in name:
        return entry_from_factory(name, _import_factory(name), overrides)
    if name in _REGISTRY:
        fn = _REGISTRY[name]
    elif name in _ALIASES:
        fn = _ALIASES[name][1]
    else:
        raise UnknownModelError(
            f"unknown model {name!r}.{close_matches(name, _REGISTRY)} Valid names: {', '.join(sorted(_REGISTRY))}; "
            "or give 'package.module:function' returning a ModelEntry or a torch.nn.Module."
        )
    entry = call_factory(name, fn)
    if not isinstance(entry, ModelEntry):
        raise UnknownModelError(f"{name!r} returned {type(entry).__name__}, expected giacheck.models.ModelEntry")
    return with_overrides(entry, name, overrides)


def build(name: str, resolution: int, *, num_classes: int | None = None, seed: int = 0,
          weights: str | os.PathLike[str] | None = None, trust_pickle: bool = False) -> NormalizedModel:
    """Build a model that takes [0,1] pixels at ``resolution``: randomly initialized (seeded), or from a local file.

    ``weights`` is a safetensors file or a ``torch.load(weights_only=True)`` state dict for the upstream network
    (see :func:`giacheck.models.weights.load_weights`); ``trust_pickle`` allows a file that needs arbitrary pickles.

    Raises:
        InvalidCaseError: ``resolution`` does not fit the model, or the entry's normalization claims contradict
            the module it builds (:func:`giacheck.models.entry.check_claims`).
    """
    entry = get_entry(name)
    problem = entry.check_resolution(resolution)
    if problem:
        raise InvalidCaseError(problem)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.factory(resolution, num_classes or entry.num_classes)
    check_module(entry, net)
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


def _import_factory(spec: str) -> Callable[..., Any]:
    fn = import_object(spec, "model", error=UnknownModelError, form="package.module:function")
    if not callable(fn):
        module_name, _, attr = spec.partition(":")
        raise UnknownModelError(f"model {spec!r}: module {module_name!r} has no callable {attr!r}")
    return fn


def _load_builtin() -> None:
    from giacheck.models import lenet, resnets, timm_zoo, yolo  # noqa: F401  (registers on import)
