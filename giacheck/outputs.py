"""Output folders giacheck writes into (``giacheck audit --out``, ``giacheck report --out``). No torch.

A folder may be written only when it is new, empty, or holds nothing but what giacheck wrote there before:
each top-level name giacheck writes is listed, with the part that wrote it (``audit``, ``report``), in the
folder's :data:`MANIFEST`. Anything else in the folder — a file, a folder, a symbolic link — makes the
command refuse before it writes or computes anything, and the folder is left untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.jsonio import write_json_atomic

__all__ = ["MANIFEST", "check_output_folder", "claim_outputs"]

MANIFEST = ".giacheck-outputs.json"  # {"written": {top-level name: writer}}


def _written(out: Path) -> dict[str, str]:
    """``{name: writer}`` from the manifest of ``out``; empty when there is none or it is unreadable."""
    try:
        data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        return {str(name): str(writer) for name, writer in data["written"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def check_output_folder(out: Path, *, command: str, consequence: str = "nothing was written",
                        keep: Iterable[str] = ()) -> dict[str, str]:
    """Refuse ``out`` unless it is new, empty, or holds only entries giacheck listed (or ``keep`` names).

    Returns:
        ``{name: writer}`` of the entries giacheck wrote there before.

    Raises:
        GiacheckError: ``out`` is a file, or holds entries giacheck did not write (named); nothing is touched.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GiacheckError(f"--out {out}: is a file, not a folder; {consequence}")
    if not out.exists():
        return {}
    written, kept = _written(out), set(keep)
    foreign = sorted(e.name + ("/" if e.is_dir() else "") for e in out.iterdir()
                     if e.name not in kept and e.name != MANIFEST and (e.name not in written or e.is_symlink()))
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise GiacheckError(f"--out {out}: the folder already holds files {command} did not write ({shown}); "
                            f"{consequence}. Choose a new or empty folder.")
    return written


def claim_outputs(out: Path, writer: str, names: Iterable[str], *, replace: bool = False) -> dict[str, str]:
    """List ``names`` (top-level entries of ``out``) in its manifest as written by ``writer``; with ``replace``
    the names ``writer`` listed before are dropped first. Returns the new listing."""
    out = Path(out)
    written = _written(out)
    if replace:
        written = {name: who for name, who in written.items() if who != writer}
    written.update(dict.fromkeys(names, writer))
    write_json_atomic({"written": dict(sorted(written.items()))}, out / MANIFEST)
    return written
