"""A user's model factory (``package.module:function`` or a callable): how it is called, and the entry of one that
returns a plain ``torch.nn.Module`` — what nearly every vendor already has.

Calling convention: the factory gets keyword arguments for the parameters its signature names among
``input_size`` / ``resolution`` (the input size) and ``num_classes``, from the command's flags or the pack's
fields (``--input-size``, ``Pack(input_size=...)``, an entry override ``default_size``; ``--num-classes``,
``num_classes``); a factory naming none of them is called with no arguments, and ``**kwargs`` receives nothing.
Such a parameter without a default needs its flag; any other parameter must have a default.

It returns a :class:`~giacheck.models.entry.ModelEntry` (all metadata in it; the flags override its fields) or a
plain ``nn.Module``. For a plain module giacheck writes the entry: input size and classes from the flags (both
required, a missing one is named), mean/std from ``--mean``/``--std`` (default: ImageNet's, as the entry's
description says), normalization kinds and ``has_batchnorm`` read from the module, a classification task with mean
cross-entropy. :func:`giacheck.models.build` calls the factory again, seeded, at the case's resolution and classes.

Reading a module costs one construction per factory and arguments in a process, with the global RNG untouched
(the facts are cached). The claims of every entry a user factory gives are checked against its module
(:func:`~giacheck.models.entry.check_claims`): a wrong ``has_batchnorm`` is refused before any compute.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from giacheck.errors import GiacheckError, InvalidCaseError, UnknownModelError
from giacheck.models.entry import ModelEntry, ModuleFacts, check_claims
from giacheck.plugins import user_code_failure

__all__ = ["FactoryCall", "ModuleFactory", "call_factory", "entry_from_factory", "with_overrides"]

_SIZE_PARAMETERS = ("input_size", "resolution")
_CLASSES_PARAMETER = "num_classes"
_FLAGS = {"default_size": "--input-size (Pack input_size)", "num_classes": "--num-classes (Pack num_classes)"}
_CONVENTION = ("a model factory takes no required parameters other than input_size (or resolution) and num_classes, "
               "and returns a giacheck.models.ModelEntry or a torch.nn.Module")

# user factory -> {(what, input size, classes): facts of the module it builds}
_FACTS: weakref.WeakKeyDictionary[Any, dict[tuple[str, int | None, int | None], ModuleFacts]] = (
    weakref.WeakKeyDictionary())


def call_factory(label: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a model factory; whatever it raises becomes an :class:`UnknownModelError` naming the factory."""
    try:
        return fn(*args, **kwargs)
    except GiacheckError:
        raise
    except TypeError as exc:
        given = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise UnknownModelError(f"calling model factory {label!r}({given}) raised TypeError: {exc}; "
                                f"{_CONVENTION}") from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit included: a factory's exit is bad input, never an exit status
        raise UnknownModelError(f"model factory {label!r} {user_code_failure(exc)}") from exc


def with_overrides(entry: ModelEntry, label: str, overrides: Mapping[str, Any]) -> ModelEntry:
    """``entry`` with fields replaced; an unknown field is an :class:`InvalidCaseError` listing the valid ones."""
    try:
        return dataclasses.replace(entry, **overrides)
    except TypeError as exc:
        valid = ", ".join(f.name for f in dataclasses.fields(ModelEntry))
        raise InvalidCaseError(f"bad override for model {label!r}: {exc}; valid fields: {valid}") from None


@dataclass(frozen=True, slots=True)
class FactoryCall:
    """How a user factory is called: which of its parameters take the input size and the number of classes."""

    label: str
    fn: Callable[..., Any]
    size_parameters: tuple[str, ...]
    takes_classes: bool
    required: tuple[str, ...]  # entry fields (default_size, num_classes) it cannot be called without

    @classmethod
    def of(cls, label: str, fn: Callable[..., Any]) -> FactoryCall:
        """Read ``fn``'s signature; a required parameter outside the convention is an :class:`UnknownModelError`."""
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):  # no signature to read (a builtin): called with no arguments
            parameters = []
        known = (*_SIZE_PARAMETERS, _CLASSES_PARAMETER)
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        named = {p.name: p for p in parameters if p.kind in keyword and p.name in known}
        other = [p.name for p in parameters if p.name not in named and p.default is inspect.Parameter.empty
                 and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if other:
            raise UnknownModelError(f"model factory {label!r} has required parameter(s) {', '.join(other)}; "
                                    f"{_CONVENTION}")
        sizes = tuple(n for n in _SIZE_PARAMETERS if n in named)
        required = [field for field, names in (("default_size", sizes), ("num_classes", (_CLASSES_PARAMETER,)))
                    if any(n in named and named[n].default is inspect.Parameter.empty for n in names)]
        return cls(label, fn, sizes, _CLASSES_PARAMETER in named, tuple(required))

    def __call__(self, size: int | None, classes: int | None) -> Any:
        """Call the factory with the values its parameters take (``None``: not given)."""
        given = {"default_size": size, "num_classes": classes}
        missing = [_FLAGS[f] for f in self.required if given[f] is None]
        if missing:
            raise InvalidCaseError(f"model factory {self.label!r} needs {' and '.join(missing)}: its parameters "
                                   f"{', '.join(self.size_parameters + ('num_classes',) * self.takes_classes)} "
                                   "have no default")
        kwargs: dict[str, int] = {n: size for n in self.size_parameters if size is not None}
        if self.takes_classes and classes is not None:
            kwargs[_CLASSES_PARAMETER] = classes
        return call_factory(self.label, self.fn, **kwargs)


@dataclass(frozen=True, slots=True)
class ModuleFactory:
    """The entry factory ``(resolution, num_classes) -> nn.Module`` over a user factory returning a plain module."""

    call: FactoryCall

    def __call__(self, resolution: int, num_classes: int) -> nn.Module:
        net = self.call(resolution, num_classes)
        if not isinstance(net, nn.Module):
            raise UnknownModelError(f"model factory {self.call.label!r} returned {type(net).__name__} at input size "
                                    f"{resolution} with {num_classes} classes, expected a torch.nn.Module")
        return net


def entry_from_factory(label: str, fn: Callable[..., Any], overrides: Mapping[str, Any]) -> ModelEntry:
    """The entry of a user factory (see the module docstring), ``overrides`` applied, its claims checked.

    Raises:
        UnknownModelError: the factory cannot be called, raises, or returns neither an entry nor a module.
        InvalidCaseError: a plain module without input size or classes, a bad override, or an entry whose
            normalization claims contradict its module.
    """
    call = FactoryCall.of(label, fn)
    size, classes = overrides.get("default_size"), overrides.get("num_classes")
    facts = _cached(fn, ("module", size, classes))
    if facts is not None:
        return _module_entry(call, facts, overrides)
    made = _isolated(lambda: call(size, classes))
    if isinstance(made, nn.Module):
        facts = ModuleFacts.of(_module_of(label, made))
        return _module_entry(call, _remember(fn, ("module", size, classes), facts), overrides)
    if not isinstance(made, ModelEntry):
        raise UnknownModelError(f"{label!r} returned {type(made).__name__}, expected a giacheck.models.ModelEntry "
                                "or a torch.nn.Module")
    entry = with_overrides(made, label, overrides)
    key = ("entry", entry.default_size, entry.num_classes)
    facts = _cached(fn, key) or _remember(fn, key, ModuleFacts.of(_module_of(label, _isolated(
        lambda: call_factory(label, entry.factory, entry.default_size, entry.num_classes)), entry)))
    check_claims(entry, facts, label=label)
    return entry


def _module_of(label: str, net: Any, entry: ModelEntry | None = None) -> nn.Module:
    """``net`` when it is a module with parameters (what an attack needs), else an :class:`UnknownModelError`."""
    where = (f"model factory {label!r}" if entry is None else
             f"the factory of entry {entry.name!r} from {label!r} at input size {entry.default_size}")
    if not isinstance(net, nn.Module):
        raise UnknownModelError(f"{where} returned {type(net).__name__}, expected a torch.nn.Module")
    if not any(True for _ in net.parameters()):
        raise UnknownModelError(f"{where} returned {type(net).__name__} with no parameters: a client update of a "
                                "model without parameters is empty, so there is nothing to attack")
    return net


def _module_entry(call: FactoryCall, facts: ModuleFacts, overrides: Mapping[str, Any]) -> ModelEntry:
    """The entry giacheck writes for a factory returning a plain module (input size and classes required)."""
    missing = [flag for field, flag in _FLAGS.items() if overrides.get(field) is None]
    if missing:
        raise InvalidCaseError(f"model {call.label!r} returned a plain torch.nn.Module ({facts.net_class}), so its "
                               f"input size and number of classes must be given: missing {' and '.join(missing)} "
                               "(or return a giacheck.models.ModelEntry that holds them)")
    normalization = ", ".join(f"{key} as given" if key in overrides else f"{key} ImageNet's (the default; set --{key})"
                              for key in ("mean", "std"))
    base = ModelEntry(name=call.label, upstream=call.label, factory=ModuleFactory(call),
                      default_size=overrides["default_size"], num_classes=overrides["num_classes"],
                      norm_kinds=facts.kinds, has_batchnorm=facts.has_batchnorm,
                      description=f"plain torch.nn.Module {facts.net_class} from {call.label}; input normalization: "
                                  f"{normalization}")
    entry = with_overrides(base, call.label, overrides)
    check_claims(entry, facts, label=call.label)
    return entry


def _isolated(make: Callable[[], Any]) -> Any:
    """Run ``make`` without touching the global (CPU) RNG: reading an entry must not shift any seeded stream."""
    with torch.random.fork_rng(devices=[]):
        return make()


def _cached(fn: Callable[..., Any], key: tuple[str, int | None, int | None]) -> ModuleFacts | None:
    try:
        return _FACTS.get(fn, {}).get(key)
    except TypeError:  # not weakly referenceable or not hashable: no cache
        return None


def _remember(fn: Callable[..., Any], key: tuple[str, int | None, int | None], facts: ModuleFacts) -> ModuleFacts:
    with contextlib.suppress(TypeError):  # not weakly referenceable or not hashable: no cache
        _FACTS.setdefault(fn, {})[key] = facts
    return facts
