"""Results shared between the xdist workers of one run: each case is computed once per run, not once per worker.

Suites share cases — the 32×32 positive control is paired with every negative claim at that resolution, and an
ordering reuses the cases of two feasibility claims — and xdist sends tests that share a case to different
workers. Each worker keeps its own in-memory cache (``plugin.GiaFixture``); this adds one folder per run,
created by the controller and handed to the workers, where a finished case is saved (atomically) under a
digest of its key. A per-case lock file (``fcntl.flock``) makes a worker that needs a case another worker is
computing wait for it instead of computing it again: waiting never takes longer than recomputing would, and a
case finished earlier costs nothing. Results are stored as plain values and tensors (``Result.to_state``) and
read with ``torch.load(weights_only=True)``. Locks are released by the kernel when a worker dies, so a crash leaves at
worst a case to be recomputed; a file that does not load is recomputed and replaced (it is a cache, not a
baseline). The controller removes the folder at the end of the run. Without ``fcntl`` (Windows) nothing is
shared and every worker computes what it needs, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from giacheck.jsonio import write_bytes_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SharedResults"]

log = logging.getLogger("giacheck.sharedcache")


@dataclass(frozen=True, slots=True)
class SharedResults:
    """A run's shared folder of finished cases; ``compute`` returns ``(result, wall seconds)``, the result made of
    what ``torch.load(weights_only=True)`` reads (plain values, lists, dicts, tensors)."""

    folder: Path

    def get_or_compute(self, key: str, compute: Callable[[], tuple[Any, float]]) -> tuple[Any, float, bool]:
        """Return ``(result, wall seconds of its computation, whether another worker computed it)``."""
        if fcntl is None:
            return (*compute(), False)
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        path = self.folder / f"{digest}.pt"
        with self._locked(self.folder / f"{digest}.lock"):
            found = self._load(path, key)
            if found is not None:
                return found["result"], found["wall_s"], True
            result, wall = compute()
            self._save(path, {"key": key, "result": result, "wall_s": wall})
            return result, wall, False

    def put(self, key: str, result: Any, wall: float) -> None:
        """Store a result computed alongside another (a case's trials run together) under its own key."""
        if fcntl is None:
            return
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        with self._locked(self.folder / f"{digest}.lock"):
            if self._load(self.folder / f"{digest}.pt", key) is None:
                self._save(self.folder / f"{digest}.pt", {"key": key, "result": result, "wall_s": wall})

    @contextlib.contextmanager
    def _locked(self, lock: Path) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as fh:
            start = time.perf_counter()
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            waited = time.perf_counter() - start
            if waited > 1.0:
                log.info("waited %.1f s for another worker to finish %s", waited, lock.stem)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _load(path: Path, key: str) -> dict[str, Any] | None:
        if not path.exists():
            return None
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is recomputed
            log.warning("shared result %s does not load (%s); recomputing it", path, exc)
            return None
        return payload if isinstance(payload, dict) and payload.get("key") == key else None

    @staticmethod
    def _save(path: Path, payload: dict[str, Any]) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_bytes_atomic(buffer.getvalue(), path)
