"""Atomic JSON files (temp file in the same folder + rename): a reader never sees half a file. No torch."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Journal", "write_json_atomic"]


def write_json_atomic(payload: Any, path: Path) -> Path:
    """Write ``payload`` as indented, sorted-key JSON to ``path``; on any error the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and baselines are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class Journal:
    """An append-only JSON-lines file, one record a line, flushed and fsynced as each record is appended, so
    that a crash or an interrupt loses no finished record. ``fresh=True`` empties it on the first append."""

    def __init__(self, path: Path, *, fresh: bool = True) -> None:
        self.path = Path(path)
        self._truncate = fresh

    def append(self, record: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode, self._truncate = ("w" if self._truncate else "a"), False
        with self.path.open(mode, encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=False, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[Any]:
        """Every complete record (a torn last line, from a crash mid-write, is skipped)."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records
