"""Named extension points (attacks, defences, tasks): one registry class, so every seam behaves the same way.

A name is registered once (a duplicate raises, unlike timm's warning); an unknown name lists the valid ones and
the closest matches; ``package.module:Name`` names an object of a user's package, imported on first use.

User code is imported with the working directory at the *end* of ``sys.path`` (so a ``torch.py`` or ``numpy.py``
there never shadows an installed package), and whatever it raises while importing — ``SystemExit`` included — is
bad input naming the module, never an exit status of its own.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from giacheck.errors import GiacheckError, close_matches

__all__ = ["Registry", "UnknownPluginError", "import_object", "user_code_failure"]

T = TypeVar("T")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class UnknownPluginError(GiacheckError, KeyError):
    """A name that is neither registered nor an importable ``package.module:Name``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def import_object(spec: str, kind: str, *, error: type[Exception] = UnknownPluginError,
                  form: str = "package.module:Name") -> Any:
    """The object ``package.module:Name`` names; a module that does not import (or fails while importing) or
    lacks the name raises ``error`` naming ``kind``, the module and the cause."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # after installed packages: a module here never shadows one of theirs
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{kind} {spec!r}: cannot import module {module_name!r} ({exc}); give '{form}' for a module "
                    "on sys.path or in the working directory") from exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a module that fails (or exits) while importing: name it, keep the cause
        raise error(f"{kind} {spec!r}: importing module {module_name!r} {user_code_failure(exc)}") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        where = getattr(module, "__file__", None) or "?"
        raise error(f"{kind} {spec!r}: module {module_name!r} (imported from {where}) has no {attr!r}")
    return obj


def user_code_failure(exc: BaseException) -> str:
    """How user code failed, in words: ``raised ValueError: …``, or ``called sys.exit(0)`` for a ``SystemExit``
    (which is never taken for giacheck's own exit status)."""
    if isinstance(exc, SystemExit):
        return (f"called sys.exit({exc.code!r}) (SystemExit); nothing was run. Code giacheck imports or calls must "
                "return or raise an exception, not exit")
    return f"raised {type(exc).__name__}: {exc}"


class Registry(Generic[T]):
    """Objects of one kind by name. ``builtins`` is imported before the first lookup (it registers on import)."""

    def __init__(self, kind: str, *, builtins: str | None = None) -> None:
        self.kind = kind
        self._builtins = builtins
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under ``name`` (lower case letters, digits, '_')."""
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{self.kind} name {name!r}: use lower-case letters, digits and '_', starting with a "
                             "letter (it becomes part of case ids)")

        def decorate(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                owner = getattr(self._items[name], "__module__", "?")
                raise ValueError(f"{self.kind} {name!r} is already registered by {owner}")
            self._items[name] = obj
            return obj

        return decorate

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The object registered as ``name``, or ``package.module:Name`` imported."""
        self._load()
        if isinstance(name, str) and ":" in name:
            return self._import(name)
        if name in self._items:
            return self._items[name]
        raise UnknownPluginError(
            f"unknown {self.kind} {name!r}.{close_matches(str(name), self._items)} Valid: "
            f"{', '.join(self.names())}; or 'package.module:Name' for one of your own.")

    def _import(self, spec: str) -> T:
        return import_object(spec, self.kind)

    def _load(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)
