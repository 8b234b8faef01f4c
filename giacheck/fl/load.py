"""Importing a user's client (``pkg.mod:attr``) and an optional framework, each failure a named error."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from giacheck.fl.capture import CaptureError

__all__ = ["load_object", "require"]


def require(module: str, extra: str) -> ModuleType:
    """``module`` imported, or an error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise CaptureError(f"{module} is not installed ({exc}); install it with: pip install 'giacheck[{extra}]'"
                           ) from exc


def load_object(target: str, *, what: str) -> Any:
    """The object ``target`` (``pkg.mod:attr``, ``attr`` dotted) names."""
    module_name, sep, attr = target.partition(":") if isinstance(target, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise CaptureError(f"{what} {target!r}: write it as 'package.module:attribute' (e.g. 'myclient.app:app')")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module failing on import: named, with its own error
        raise CaptureError(f"{what} {target!r}: module {module_name!r} does not import: "
                           f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_"))[:12]
            raise CaptureError(f"{what} {target!r}: {module_name!r} has no attribute {attr!r} "
                               f"(it has: {', '.join(names)})")
        obj = getattr(obj, part)
    return obj
