"""Recorded baselines: ``baselines/<profile>/<suite>/<case-id>.json`` (DESIGN §6). No torch import.

Only the xdist controller writes, atomically (temp file + rename), from numbers carried in test reports.
A corrupt file is reported with its path and left untouched — never overwritten, not even by an update. A
baseline recorded under another attack identity (attack, budget, profile: :data:`giacheck.records.IDENTITY_FIELDS`)
is *stale*: it fails naming each changed field, and is rewritten only under an update flag.

The attack is chaotic: the same code gives different SSIMs on two CPU models (float rounding differs), so a
baseline also keeps, under ``platforms``, the statistics recorded on each machine (``manifest.device_name``) under
the same attack identity; a run is compared with its own machine's record where there is one, else with the main
record. An update rewrites the main record and this machine's entry, and keeps the other machines' entries
unless the attack identity changed.
"""

from __future__ import annotations

import json
import math
import os
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

__all__ = ["BASELINE_KEYS", "BaselineStore", "check_baseline", "read_baseline", "round_floats"]

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
        """The recorded baseline, or None when there is none. A file that is not a valid baseline raises
        :class:`BaselineError` (see :func:`read_baseline`)."""
        path = self.path(suite, case_id)
        if not path.exists():
            return None
        return read_baseline(path, case_id=case_id)

    def check_writable(self, suite: str, case_id: str) -> Path:
        """The baseline path of ``case_id``, once it is clear that an update can write it: an existing file must be
        a valid baseline (a corrupt one is never overwritten) and not read-only, and the nearest existing folder
        above it a writable folder. Checked before the case runs, so that an update that cannot be saved costs
        no compute.

        Raises:
            BaselineError: naming the path and why it cannot be written.
        """
        path = self.path(suite, case_id)
        if path.exists():
            read_baseline(path, case_id=case_id)
            if not os.access(path, os.W_OK):
                raise BaselineError(f"baseline {path} cannot be rewritten: the file is read-only; make it writable "
                                    "(or run without --giacheck-update); nothing was run or written")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise BaselineError(f"baseline {path} cannot be written: {folder} is a file, not a folder; move it away "
                                "or choose another --giacheck-baselines; nothing was run or written")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BaselineError(f"baseline {path} cannot be written: folder {folder} is not writable; nothing was "
                                "run or written")
        return path

    def suite_files(self, suite: str) -> list[Path]:
        """Every ``*.json`` entry of ``suite``'s folder (files, and anything else named so)."""
        folder = self.root / self.profile / suite
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def identity(self, recorded: Mapping[str, Any]) -> dict[str, Any]:
        """The attack identity a baseline was recorded under; its profile is the store's when the file has none
        (the folder ``<profile>/`` names it)."""
        identity = attack_identity(recorded)
        if identity.get("profile") is None:
            identity["profile"] = self.profile
        return identity

    def write(self, suite: str, case_id: str, result: dict[str, Any]) -> Path:
        """Write the baseline for ``case_id`` atomically, keeping the other machines' records of the same attack
        identity (``platforms``); refuses to replace a corrupt file."""
        path = self.path(suite, case_id)
        previous = self.load(suite, case_id)  # raises on a corrupt file: it is reported, never overwritten
        payload = round_floats({k: result[k] for k in BASELINE_KEYS if k in result})
        platforms = {}
        if previous is not None and not identity_changes(self.identity(previous), attack_identity(result)):
            platforms = dict(previous.get("platforms") or {})
            platforms.setdefault(platform_of(previous), _platform_record(previous))
        platforms[platform_of(result)] = _platform_record(payload)
        payload["platforms"] = dict(sorted(platforms.items()))
        write_json_atomic(payload, path)
        return path

    def orphans(self, suite: str, known_case_ids: Iterable[str]) -> list[Path]:
        """Baseline files of ``suite`` whose case is no longer collected."""
        folder = self.root / self.profile / suite
        if not folder.is_dir():
            return []
        known = set(known_case_ids)
        return sorted(p for p in folder.glob("*.json") if p.stem not in known)


def platform_of(record: Mapping[str, Any]) -> str:
    """The machine a result or baseline was measured on: its manifest's device name (CPU model and threads, or
    the GPU's name)."""
    name = lookup(record, "manifest.device_name")
    return name if isinstance(name, str) else "unknown machine"


def _platform_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The compared statistics of ``record`` by dotted path (:func:`_statistics`), and the revision measured."""
    entry = {path: lookup(record, path) for path in (*(p for _, p, _ in _STATISTICS), "ssim.mean")}
    entry = {path: value for path, value in entry.items() if isinstance(value, int | float)}
    revision = lookup(record, "manifest.git_revision")
    return {**entry, "git_revision": revision} if isinstance(revision, str) else entry


def _reference(recorded: Mapping[str, Any], platform: str) -> tuple[Any, str]:
    """What a run on ``platform`` is compared with: that machine's record in ``platforms`` when there is one,
    else the main record; and the machine the reference was measured on."""
    entry = (recorded.get("platforms") or {}).get(platform)
    if isinstance(entry, dict):
        return (lambda path: entry.get(path)), platform
    return (lambda path: lookup(recorded, path)), platform_of(recorded)


_LEFT = ("The file was left untouched; fix or delete it, then record it again with --giacheck-update (a corrupt "
         "baseline is never overwritten, not even by an update)")
_SSIM_RANGE = "a finite number in [-1, 1] (SSIM)"


class _Constant:
    """A ``NaN``/``Infinity`` literal met while parsing, kept so that the key holding it can be named."""

    def __init__(self, text: str) -> None:
        self.text = text


def read_baseline(path: Path, *, case_id: str | None = None) -> dict[str, Any]:
    """Parse and validate the baseline file ``path`` (of ``case_id``, when given: the file's stem).

    Valid: a UTF-8 JSON object without NaN or Infinity whose ``ssim.mean`` is a number in [-1, 1]; where present,
    ``challenge.max_ssim`` and ``challenge.median_ssim`` are such numbers (or null), and so are the statistics of
    each machine's entry in ``platforms``, ``case_id`` names the file's
    case, ``profile`` is a string, ``attack``, ``challenge`` and ``model_state`` are objects. A boolean is never
    taken for a number.

    Raises:
        BaselineError: ``corrupt baseline <path>: <the key and what was wrong; what is valid>``.
    """
    path = Path(path)

    def corrupt(problem: str) -> BaselineError:
        return BaselineError(f"corrupt baseline {path}: {problem}. {_LEFT}")

    if path.is_dir():
        raise corrupt("is a folder, not a baseline file; valid: a JSON file written by --giacheck-update")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise corrupt(f"is not UTF-8 text ({exc.reason} at byte {exc.start}); valid: a JSON file") from None
    except OSError as exc:
        raise BaselineError(f"baseline {path} cannot be read ({type(exc).__name__}: {exc.strerror or exc}); "
                            "nothing was run or written") from None
    try:
        data = json.loads(text, parse_constant=_Constant)
    except json.JSONDecodeError as exc:
        raise corrupt(f"malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); valid: a JSON object "
                      "as --giacheck-update writes it") from None
    except RecursionError:
        raise corrupt("JSON nested too deeply; valid: a JSON object as --giacheck-update writes it") from None
    if not isinstance(data, dict):
        raise corrupt(f"holds a JSON {_json_type(data)}, not an object; valid: a JSON object with at least "
                      '{"ssim": {"mean": <number>}}')
    try:
        leaves = list(_leaves(data))
    except RecursionError:
        raise corrupt("JSON nested too deeply; valid: a JSON object as --giacheck-update writes it") from None
    for key, value in leaves:
        if isinstance(value, _Constant) or (isinstance(value, float) and not math.isfinite(value)):
            shown = value.text if isinstance(value, _Constant) else repr(value)
            raise corrupt(f"key {key!r} is {shown}; valid: finite numbers only (JSON has no NaN or Infinity)")
    for key in ("ssim", "attack", "challenge", "model_state"):
        if key in data and not isinstance(data[key], dict) and not (key == "model_state" and data[key] is None):
            raise corrupt(f"key {key!r} is {_shown_json(data[key])}; valid: a JSON object")
    if not isinstance(data.get("ssim"), dict) or "mean" not in data["ssim"]:
        raise corrupt("key 'ssim.mean' is missing; valid: the recorded SSIM mean, " + _SSIM_RANGE)
    _check_ssim(data["ssim"]["mean"], "ssim.mean", corrupt, nullable=False)
    for stat in ("max_ssim", "median_ssim"):
        if stat in data.get("challenge", {}):
            _check_ssim(data["challenge"][stat], f"challenge.{stat}", corrupt, nullable=True)
    platforms = data.get("platforms", {})
    if not isinstance(platforms, dict) or not all(isinstance(e, dict) for e in platforms.values()):
        raise corrupt(f"key 'platforms' is {_shown_json(platforms)}; valid: an object of one object per machine")
    for machine, entry in platforms.items():
        for stat, value in entry.items():
            if stat != "git_revision":
                _check_ssim(value, f"platforms.{machine}.{stat}", corrupt, nullable=True)
    if "profile" in data and not isinstance(data["profile"], str):
        raise corrupt(f"key 'profile' is {_shown_json(data['profile'])}; valid: a profile name (smoke, paper)")
    if case_id is not None and "case_id" in data and data["case_id"] != case_id:
        raise corrupt(f"key 'case_id' is {_shown_json(data['case_id'])} but the file is the baseline of "
                      f"{case_id!r}; valid: the case id the file is named after")
    return data


def _check_ssim(value: Any, key: str, corrupt: Any, *, nullable: bool) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1:
        raise corrupt(f"key {key!r} is {_shown_json(value)}; valid: {_SSIM_RANGE}" + (" or null" if nullable else ""))


def _leaves(data: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(dotted key, value)`` of every value nested in objects and arrays (array items as ``key[i]``)."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, data


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "null")


def _shown_json(value: Any) -> str:
    """A JSON value as it reads in the file, with its kind: ``true (a boolean)``, ``"high" (a string)``."""
    if isinstance(value, _Constant):
        return value.text
    if value is None:
        return "null"
    text, kind = json.dumps(value), _json_type(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({'an' if kind[0] in 'aeiou' else 'a'} {kind})"


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
    reference, measured_on = _reference(recorded, platform_of(result))
    checks = [claims.baseline_check(f"{case_id} ({label})", float(lookup(result, path)),
                                    recorded=float(reference(path)), tolerance=tolerance,
                                    positive=positive and two_sided)
              for label, path, two_sided in _statistics(recorded, result, reference)]
    passed = all(c.passed for c in checks)
    where = "this machine's record" if measured_on == platform_of(result) else f"the record of {measured_on}"
    return BaselineCheck(status=BaselineStatus.PASS if passed else BaselineStatus.FAIL, passed=passed,
                         message="; ".join(c.message for c in checks) + f" (compared with {where})",
                         path=str(path), recorded=value)


def _statistics(recorded: Mapping[str, Any], result: Mapping[str, Any], reference: Any = None
                ) -> list[tuple[str, str, bool]]:
    """What to compare: the challenge set's statistics where both sides have them, else the SSIM mean."""
    reference = reference or (lambda path: lookup(recorded, path))
    both = all(isinstance(get(p), int | float) for get in (reference, lambda path: lookup(result, path))
               for _, p, _ in _STATISTICS)
    return list(_STATISTICS) if both else [("SSIM mean", "ssim.mean", True)]


def _under(changes: Iterable[IdentityChange], side: str) -> str:
    """``iterations=400, lr=0.1`` for one side (``recorded`` or ``current``) of identity changes."""
    return ", ".join(f"{c.field}={_shown(getattr(c, side))}" for c in changes)


def _shown(value: Any) -> str:
    return "(absent)" if value is None else str(value)
