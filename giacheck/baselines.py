"""Recorded baselines: ``baselines/<profile>/<suite>/<case-id>.json`` (DESIGN §6). No torch import.

Only the xdist controller writes, atomically (temp file + rename), from numbers carried in test reports.
A corrupt file is reported with its path and left untouched — never overwritten, not even by an update.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from giacheck.errors import BaselineError
from giacheck.jsonio import write_json_atomic

__all__ = ["BaselineStore", "round_floats", "BASELINE_KEYS"]

BASELINE_KEYS = ("case_id", "ssim", "psnr", "secondary", "objective", "grad_distance", "iterations", "restarts",
                 "seed", "selection", "oracle", "attack", "threat", "manifest", "timings")


def round_floats(value: Any, digits: int = 6) -> Any:
    """Round every float (recursively) so that files diff cleanly; non-finite floats become None."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: round_floats(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [round_floats(v, digits) for v in value]
    return value


class BaselineStore:
    """Baselines of one profile under ``root`` (usually the repository's ``baselines/``)."""

    def __init__(self, root: Path | str, profile: str) -> None:
        self.root = Path(root)
        self.profile = profile

    def path(self, suite: str, case_id: str) -> Path:
        return self.root / self.profile / suite / f"{case_id}.json"

    def load(self, suite: str, case_id: str) -> dict[str, Any] | None:
        """The recorded baseline, or None when there is none. A corrupt file raises :class:`BaselineError`."""
        path = self.path(suite, case_id)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            recorded = data["ssim"]["mean"]
            if not isinstance(recorded, int | float):
                raise TypeError(f"ssim.mean is {type(recorded).__name__}")
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise BaselineError(
                f"corrupt baseline {path}: {exc.__class__.__name__}: {exc}. The file was left untouched; fix or "
                "delete it, then record it again with --giacheck-update"
            ) from None
        return data

    def write(self, suite: str, case_id: str, result: dict[str, Any]) -> Path:
        """Write the baseline for ``case_id`` atomically; refuses to replace a corrupt file."""
        path = self.path(suite, case_id)
        if path.exists():
            self.load(suite, case_id)  # raises on a corrupt file: it is reported, never overwritten
        payload = round_floats({k: result[k] for k in BASELINE_KEYS if k in result})
        write_json_atomic(payload, path)
        return path

    def orphans(self, suite: str, known_case_ids: Iterable[str]) -> list[Path]:
        """Baseline files of ``suite`` whose case is no longer collected."""
        folder = self.root / self.profile / suite
        if not folder.is_dir():
            return []
        known = set(known_case_ids)
        return sorted(p for p in folder.glob("*.json") if p.stem not in known)
