"""Output folders giacheck writes into (``giacheck audit --out``, ``giacheck report --out``). No torch.

A folder may be written only when it is new, empty, or holds nothing but what giacheck wrote there before:
each top-level name giacheck writes is listed, with the part that wrote it (``audit``, ``report``), in the
folder's :data:`MANIFEST`. Anything else in the folder — a file, a folder, a symbolic link — makes the
command refuse before it writes or computes anything, and the folder is left untouched. So does a folder that
cannot be written: under a file, on a read-only mount, or somewhere no file can be made (``/proc``).

A command that writes for long (an audit) holds :class:`OutputLock` on the folder, so a second one is refused
with the holder's pid instead of interleaving its files with the first's.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from giacheck.errors import GiacheckError
from giacheck.jsonio import write_json_atomic

__all__ = ["LOCK", "MANIFEST", "OutputLock", "check_output_folder", "check_writable", "claim_outputs",
           "remove_outputs"]

MANIFEST = ".giacheck-outputs.json"  # {"written": {top-level name: writer}}
LOCK = ".giacheck-lock"  # held (flock) by the command writing into the folder; holds its pid
_OWN = (MANIFEST, LOCK)


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
        check_writable(out, consequence=consequence)
        return {}
    written, kept = _written(out), set(keep)
    foreign = sorted(e.name + ("/" if e.is_dir() else "") for e in out.iterdir()
                     if e.name not in kept and e.name not in _OWN and (e.name not in written or e.is_symlink()))
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise GiacheckError(f"--out {out}: the folder already holds files {command} did not write ({shown}); "
                            f"{consequence}. Choose a new or empty folder.")
    check_writable(out, consequence=consequence)  # after the refusal above: a folder refused is never touched
    return written


def check_writable(out: Path, *, flag: str = "--out", consequence: str = "nothing was written") -> None:
    """Refuse ``out`` unless files can be made in it, or (when it does not exist yet) in its nearest existing
    parent: a probe file is created there and removed at once, so a read-only mount, a folder without write
    permission, a path under a file or under ``/proc`` is named before anything is computed.

    Raises:
        GiacheckError: naming the path, what blocks it and what is valid.
    """
    out = Path(out).absolute()
    probe_in = out
    while not probe_in.exists():
        if probe_in.is_symlink():
            raise GiacheckError(f"{flag} {out}: {probe_in} is a broken symbolic link; {consequence}")
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise GiacheckError(f"{flag} {out}: {probe_in} is a file, so no folder can be made under it; {consequence}. "
                            "Give a folder path whose parents are folders.")
    try:
        fd, name = tempfile.mkstemp(prefix=".giacheck-probe-", dir=probe_in)
    except OSError as exc:
        why = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable by this user",
               errno.EPERM: "does not allow new files"}.get(exc.errno, f"cannot hold new files ({exc.strerror})")
        raise GiacheckError(f"{flag} {out}: {probe_in} {why}; {consequence}. Give a folder you can write to."
                            ) from None
    os.close(fd)
    os.unlink(name)


class OutputLock:
    """An exclusive ``flock`` on ``out/.giacheck-lock`` for as long as a command writes into ``out``; the file
    holds the holder's pid. The lock dies with its process, so a killed run never leaves the folder locked.

    Raises:
        GiacheckError: (on enter) another process holds the lock (its pid named).
    """

    def __init__(self, out: Path, *, command: str) -> None:
        self.path, self.command, self._fd = Path(out) / LOCK, command, -1

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise GiacheckError(f"--out {self.path.parent}: another {self.command} is writing into this folder "
                                f"(pid {holder}); nothing was run or written. Wait for it to finish, or choose "
                                "another folder.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing releases the flock
        self._fd = -1


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


def remove_outputs(out: Path, writer: str) -> list[str]:
    """Delete the files ``writer`` listed in ``out``'s manifest (never a folder or a symbolic link) and unlist
    them; returns the names deleted."""
    out = Path(out)
    written = _written(out)
    gone = []
    for name, who in written.items():
        path = out / name
        if who == writer and path.is_file() and not path.is_symlink():
            path.unlink()
            gone.append(name)
    if gone:
        write_json_atomic({"written": {n: w for n, w in sorted(written.items()) if n not in gone}}, out / MANIFEST)
    return gone
