"""Atomic files (temp file in the same folder + rename): a reader never sees half a file; JSON in and out with
errors that name the file. No torch."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from giacheck.errors import GiacheckError

__all__ = ["Journal", "finite", "parse_json", "read_json", "round_floats", "write_bytes_atomic", "write_json_atomic"]


def finite(value: float | None) -> float | None:
    """``value``, or None when it is None or not finite (JSON has no inf or NaN: identical images -> null)."""
    return value if value is not None and math.isfinite(value) else None


def round_floats(value: Any, digits: int = 6) -> Any:
    """Round every float (recursively) so that files diff cleanly; non-finite floats become None."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value


def write_bytes_atomic(data: bytes, path: Path) -> Path:
    """Write ``data`` to ``path`` atomically, mode 0644 (results and reports are meant to be shared); on any
    error, the interrupt included, the old file stays as it was and no temp file is left."""
    return _write_atomic(path, lambda fh: fh.write(data))


def write_json_atomic(payload: Any, path: Path) -> Path:
    """Write ``payload`` as indented, sorted-key JSON to ``path``; on any error the old file stays as it was."""

    def dump(fh: Any) -> None:
        text = _TextSink(fh)
        json.dump(payload, text, indent=2, sort_keys=True)
        text.write("\n")

    return _write_atomic(path, dump)


class _TextSink:
    """A text view of a binary file for :func:`json.dump` (UTF-8)."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def write(self, text: str) -> int:
        return self._fh.write(text.encode("utf-8"))


def _write_atomic(path: Path, write: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path, *, where: str | None = None) -> Any:
    """Parse the JSON file ``path``; unreadable or malformed raises :class:`GiacheckError` naming ``where``."""
    where = where or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GiacheckError(f"{where}: cannot read ({exc})") from exc
    return parse_json(text, where)


def parse_json(text: str, where: str) -> Any:
    """Parse ``text``; malformed JSON raises :class:`GiacheckError` naming ``where``, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GiacheckError(f"{where}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


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
