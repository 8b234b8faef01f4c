"""Recorded baselines: ``baselines/<profile>/<suite>/<case-id>.json`` (DESIGN §6). No torch import.

Only the xdist controller writes, atomically (temp file + rename), from numbers carried in test reports.
A corrupt file is reported with its path and left untouched — never overwritten, not even by an update. A
baseline recorded under another attack identity (attack, budget, profile: :data:`giacheck.records.IDENTITY_FIELDS`)
is *stale*: it fails naming each changed field, and is rewritten only under an update flag.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from giacheck import claims
from giacheck.errors import BaselineError
from giacheck.jsonio import round_floats, write_json_atomic
from giacheck.records import (
    BaselineCheck,
    BaselineStatus,
    IdentityChange,
    attack_identity,
    identity_changes,
    lookup,
)

__all__ = ["BASELINE_KEYS", "BaselineStore", "check_baseline", "round_floats"]

BASELINE_KEYS = ("case_id", "profile", "ssim", "psnr", "secondary", "objective", "grad_distance", "iterations",
                 "restarts", "seed", "selection", "oracle", "attack", "threat", "manifest", "timings", "reid", "truth",
                 "challenge", "model_state")
# The statistics of a challenge set a baseline compares: (label, dotted path, two-sided for a positive control).
# A result without a challenge set (written before them) compares its SSIM mean.
_STATISTICS = (("highest image SSIM", "challenge.max_ssim", False), ("median SSIM", "challenge.median_ssim", True))


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
            if not isinstance(recorded, int | float) or isinstance(recorded, bool):
                raise TypeError(f"ssim.mean is {type(recorded).__name__}")
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise BaselineError(
                f"corrupt baseline {path}: {exc.__class__.__name__}: {exc}. The file was left untouched; fix or "
                "delete it, then record it again with --giacheck-update"
            ) from None
        return data

    def identity(self, recorded: Mapping[str, Any]) -> dict[str, Any]:
        """The attack identity a baseline was recorded under; its profile is the store's when the file has none
        (the folder ``<profile>/`` names it)."""
        identity = attack_identity(recorded)
        if identity.get("profile") is None:
            identity["profile"] = self.profile
        return identity

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


def check_baseline(store: BaselineStore, suite: str, result: Mapping[str, Any], *, tolerance: float,
                   positive: bool, update: bool = False, accept_update: bool = False) -> BaselineCheck:
    """Compare ``result`` (``Result.to_dict()``) with its recorded baseline; nothing is written here.

    Args:
        tolerance: SSIM tolerance of the one-sided check (two-sided for a positive control, ``positive``).
        update: the baseline is being rewritten (``--giacheck-update[-all]``): no comparison; the check fails
            unless ``accept_update`` (``--giacheck-update-all``).

    Returns:
        ``corrupt`` (file left untouched, even under an update), ``updated``, ``missing``, ``stale`` (recorded
        under another attack identity; each changed field named), or ``pass``/``fail`` of
        :func:`giacheck.claims.baseline_check`.

    Raises:
        InvalidToleranceError: ``tolerance`` is NaN, infinite or negative (it would disable every check).
    """
    tolerance = claims.check_tolerance(tolerance)
    case_id = str(result["case_id"])
    path = store.path(suite, case_id)
    try:
        recorded = store.load(suite, case_id)
    except BaselineError as exc:
        return BaselineCheck(status=BaselineStatus.CORRUPT, passed=False, message=str(exc), path=str(path))
    value = None
    if recorded is not None:  # the recorded highest image SSIM (the SSIM mean of a baseline without a challenge set)
        worst = lookup(recorded, "challenge.max_ssim")
        value = float(worst if isinstance(worst, int | float) else recorded["ssim"]["mean"])
    changed = identity_changes(store.identity(recorded), attack_identity(result)) if recorded is not None else ()
    if update:
        was = f" (it was recorded under {_under(changed, 'recorded')})" if changed else ""
        flag = "--giacheck-update-all" if accept_update else "--giacheck-update"
        return BaselineCheck(status=BaselineStatus.UPDATED, passed=accept_update, path=str(path), recorded=value,
                             changed=changed, message=f"{case_id}: baseline rewritten at {path} ({flag}){was}; "
                                                  "review the diff and rerun without the flag")
    if recorded is None:
        return BaselineCheck(status=BaselineStatus.MISSING, passed=False, path=str(path),
                             message=f"{case_id}: no baseline recorded at {path}; record it with --giacheck-update "
                                     "(or --giacheck-update-all) and commit the file")
    if changed:
        return BaselineCheck(status=BaselineStatus.STALE, passed=False, path=str(path), recorded=value, changed=changed,
                             message=f"stale baseline {path}: " + "; ".join(
                                 f"recorded under {_under((c,), 'recorded')}, this run {_under((c,), 'current')}"
                                 for c in changed) + "; rerun with --giacheck-update to re-record (the file was "
                                 "left untouched; its SSIM was not compared)")
    checks = [claims.baseline_check(f"{case_id} ({label})", float(lookup(result, path)),
                                    recorded=float(lookup(recorded, path)), tolerance=tolerance,
                                    positive=positive and two_sided)
              for label, path, two_sided in _statistics(recorded, result)]
    passed = all(c.passed for c in checks)
    return BaselineCheck(status=BaselineStatus.PASS if passed else BaselineStatus.FAIL, passed=passed,
                         message="; ".join(c.message for c in checks), path=str(path), recorded=value)


def _statistics(recorded: Mapping[str, Any], result: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """What to compare: the challenge set's statistics where both sides have them, else the SSIM mean."""
    both = all(isinstance(lookup(d, p), int | float) for d in (recorded, result) for _, p, _ in _STATISTICS)
    return list(_STATISTICS) if both else [("SSIM mean", "ssim.mean", True)]


def _under(changes: Iterable[IdentityChange], side: str) -> str:
    """``iterations=400, lr=0.1`` for one side (``recorded`` or ``current``) of identity changes."""
    return ", ".join(f"{c.field}={_shown(getattr(c, side))}" for c in changes)


def _shown(value: Any) -> str:
    return "(absent)" if value is None else str(value)
