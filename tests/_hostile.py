"""Shared by the hostile-input tables (``tests/test_hostile_*.py``): a guard that fails the test if any compute
starts (a client update simulated, a model state prepared, a benchmark timed), and byte snapshots of folders so a
row can assert that nothing the user had was touched.

Each row of a table states the input, the exit code (or exception) it must give, and words its message must
hold: what was wrong and what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Where compute starts. Every caller imports these from their module at call time, so patching the module
# attribute covers the CLI, audits, the pytest plugin and the runner alike.
COMPUTE_ENTRY_POINTS = (
    ("giacheck.runner", "simulate_update"),
    ("giacheck.runner", "prepare_state"),
    ("giacheck.bench", "run_bench"),
    ("giacheck.bench", "run_kernel_bench"),
)


class ComputeStarted(AssertionError):
    """Raised by the guard: the input should have been refused before this point."""


@dataclass
class ComputeGuard:
    calls: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return bool(self.calls)


def forbid_compute(monkeypatch: pytest.MonkeyPatch) -> ComputeGuard:
    """Patch every compute entry point to record the call and raise :class:`ComputeStarted`."""
    import importlib

    guard = ComputeGuard()
    for module_name, attr in COMPUTE_ENTRY_POINTS:
        module = importlib.import_module(module_name)

        def refuse(*args, _name=f"{module_name}.{attr}", **kwargs):
            guard.calls.append(_name)
            raise ComputeStarted(f"compute started ({_name}) before the input was refused")

        monkeypatch.setattr(module, attr, refuse)
    return guard


def snapshot(*roots: Path) -> dict[Path, bytes | None]:
    """Every file (bytes) and folder (``None``) under ``roots``, following no symbolic links."""
    seen: dict[Path, bytes | None] = {}
    for root in roots:
        root = Path(root)
        if root.is_symlink() or root.is_file():
            seen[root] = root.read_bytes() if root.is_file() and not root.is_symlink() else None
            continue
        if not root.exists():
            continue
        seen[root] = None
        for path in sorted(root.rglob("*")):
            seen[path] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return seen


def assert_unchanged(before: dict[Path, bytes | None], *roots: Path) -> None:
    """Nothing under ``roots`` was added, removed or changed since ``before``."""
    after = snapshot(*roots)
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not (added or removed or changed), f"added {added}, removed {removed}, changed {changed}"
