"""Typed error hierarchy: every message says what failed, what was given, what is valid and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BaselineError",
    "DatasetError",
    "GiacheckError",
    "InvalidCaseError",
    "InvalidUpdateError",
    "UnknownModelError",
    "WeightsError",
    "close_matches",
]


class GiacheckError(Exception):
    """Base class of every error giacheck raises on purpose."""


class UnknownModelError(GiacheckError, KeyError):
    """A model name that is not in the registry and not an importable ``module:function``."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0]) if self.args else ""


class InvalidCaseError(GiacheckError, ValueError):
    """A case (or case id) that makes no sense, rejected before any compute."""


class InvalidUpdateError(GiacheckError, ValueError):
    """A client update the attack cannot use (NaN/Inf, missing tensors, wrong shapes)."""


class DatasetError(GiacheckError, ValueError):
    """A missing, malformed or too small dataset."""


class WeightsError(GiacheckError, ValueError):
    """A weights file that does not fit the model or is not safe to load."""


class BaselineError(GiacheckError):
    """A baseline file that is missing, corrupt or inconsistent."""


def close_matches(name: str, valid: Iterable[str], n: int = 5) -> str:
    """Return a human sentence listing the closest valid names to ``name`` (or an empty string)."""
    matches = difflib.get_close_matches(name, list(valid), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
