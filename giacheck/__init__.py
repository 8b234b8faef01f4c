"""giacheck: executable, regression-checked tests of gradient-inversion leakage in federated learning.

The public API is importable from here; each name is imported on first use, so that ``import giacheck`` (and
the pytest plugin) stays light and imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "run_case": "giacheck.runner",
    "Result": "giacheck.runner",
    "RunOptions": "giacheck.specs",
    "Case": "giacheck.specs",
    "AttackSpec": "giacheck.specs",
    "Pack": "giacheck.pack",
    "Grid": "giacheck.pack",
    "Rule": "giacheck.pack",
    "ModelEntry": "giacheck.models.registry",
    "register_model": "giacheck.models.registry",
    "register_attack": "giacheck.attack.registry",
    "Attack": "giacheck.attack.registry",
    "Reconstruction": "giacheck.attack.invert",
    "register_defence": "giacheck.defences",
    "Defence": "giacheck.defences",
    "register_task": "giacheck.tasks",
    "Task": "giacheck.tasks",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'giacheck' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
