"""Typed records of finished cases: what crosses process and file boundaries (DESIGN §2). No torch import.

One :class:`CaseRecord` per case a test or an audit concluded. The pytest plugin and ``giacheck audit`` write
it (``results.jsonl``, one record a line, and ``results.json``, ``{"profile", "cases": [record, …]}``); the
summary table, ``giacheck report`` and the audit's exit code read it back with :meth:`CaseRecord.from_json`
or :func:`read_records`. A record states its ``schema``; another schema is refused with a clear error. A
payload without one (written before records existed) is read as schema 0 and upgraded.

The attack identity of a result (attack name, budget, profile: :data:`IDENTITY_FIELDS`) is what a baseline
must share with the run it is compared with (:mod:`giacheck.baselines`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from giacheck.claims import ClaimKind, ClaimResult, Verdict, shown_verdict
from giacheck.errors import GiacheckError
from giacheck.jsonio import parse_json, read_json, round_floats, write_json_atomic
from giacheck.specs import BUDGET_FIELDS, DEFAULT_ATTACK

__all__ = ["IDENTITY_FIELDS", "RESULTS_JSON", "RESULTS_JSONL", "SCHEMA", "BaselineCheck", "BaselineStatus",
           "CaseRecord", "EvidenceSummary", "IdentityChange", "RecordError", "Scores", "attack_identity",
           "identity_changes", "lookup",
           "is_records_document", "read_records", "records_from", "write_results"]

log = logging.getLogger("giacheck.records")

SCHEMA = 1
RESULTS_JSON, RESULTS_JSONL = "results.json", "results.jsonl"

# (label, dotted path into Result.to_dict()): a baseline recorded under other values is stale. One line a field.
IDENTITY_FIELDS: tuple[tuple[str, str], ...] = (
    ("attack", "attack.name"),
    *((name, f"attack.{name}") for name in BUDGET_FIELDS),
    ("profile", "profile"),
    ("challenge", "challenge.set"),
    ("weights", "model_state.sha256"),  # a checkpoint's sha256 (None: no weights file)
    ("model_seed", "model_state.pinned_seed"),  # a model seed pinned apart from the trial seeds (None: not pinned)
    ("warm_recipe", "model_state.recipe"),  # a warm start's optimizer, lr, batch (None: no warm start)
)
# What a file written before a field was recorded was run with (every baseline then came from the built-in attack
# with the cosine distance), so that upgrading giacheck does not turn unchanged baselines stale.
IDENTITY_DEFAULTS: dict[str, Any] = {"attack": DEFAULT_ATTACK, "distance": "cosine"}


class RecordError(GiacheckError, ValueError):
    """A record that is malformed or of another schema version (the message names where it was read)."""


class BaselineStatus(StrEnum):
    """The outcome of comparing a case with its recorded baseline."""

    PASS = "pass"
    FAIL = "fail"  # regressed: leakage rose, or a positive control got weaker
    MISSING = "missing"
    CORRUPT = "corrupt"
    STALE = "stale"  # recorded under another attack identity (budget, attack, profile)
    UPDATED = "updated"
    NOT_CHECKED = "not checked"


def lookup(data: Any, dotted: str) -> Any:
    """The value at a dotted path of nested mappings (``challenge.worst_ssim``), None where absent."""
    for part in dotted.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


def attack_identity(result: Mapping[str, Any]) -> dict[str, Any]:
    """``{label: value}`` of :data:`IDENTITY_FIELDS` in a result dict (None where absent), floats rounded as in
    baseline files, so that a recorded identity compares equal to the run that recorded it."""
    values = {label: round_floats(lookup(result, path)) for label, path in IDENTITY_FIELDS}
    return {label: IDENTITY_DEFAULTS.get(label) if value is None else value for label, value in values.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityChange:
    """One identity field whose recorded value differs from this run's."""

    field: str
    recorded: Any
    current: Any


def identity_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[IdentityChange, ...]:
    """The fields of :data:`IDENTITY_FIELDS` on which two identities differ, in that order."""
    return tuple(IdentityChange(field=label, recorded=recorded.get(label), current=current.get(label))
                 for label, _ in IDENTITY_FIELDS if recorded.get(label) != current.get(label))


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineCheck:
    """A case against its recorded baseline: ``passed`` is False when the test must fail for it."""

    status: BaselineStatus
    passed: bool
    message: str = ""
    path: str | None = None
    recorded: float | None = None  # the recorded SSIM mean
    changed: tuple[IdentityChange, ...] = ()  # identity fields that differ (a stale baseline)

    def to_json(self) -> dict[str, Any]:
        return {"status": str(self.status), "passed": self.passed, "message": self.message, "path": self.path,
                "recorded": self.recorded, "changed": [dataclasses.asdict(c) for c in self.changed]}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "baseline") -> BaselineCheck:
        read = _Fields(data, where)
        changes = read.get("changed", list, default=[])
        for i, change in enumerate(changes):
            if not isinstance(change, dict) or "field" not in change:
                raise RecordError(f"{where}.changed[{i}]: expected {{'field', 'recorded', 'current'}}, got {change!r}")
        return cls(status=read.enum("status", BaselineStatus), passed=read.get("passed", bool),
                   message=read.get("message", str, default=""), path=read.get("path", str, default=None),
                   recorded=read.number("recorded", default=None),
                   changed=tuple(IdentityChange(field=str(c["field"]), recorded=c.get("recorded"),
                                                current=c.get("current")) for c in changes))

    @property
    def shown(self) -> str:
        """``0.700 (pass)``, or the status alone when nothing was recorded."""
        return f"{self.recorded:.3f} ({self.status})" if self.recorded is not None else str(self.status)


# Scores fields that a result may lack, and where Result.to_dict() holds them
_OPTIONAL_SCORES = {"psnr_mean": "psnr.mean", "patch_ssim_mean": "secondary.patch_matched_ssim.mean",
                    "objective": "objective", "grad_distance": "grad_distance", "init_ssim": "threat.init_ssim"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Scores:
    """The numbers of one attack: SSIM after matching (claims use it), secondary scores, diagnostics."""

    ssim: tuple[float, ...]  # per image
    ssim_mean: float
    ssim_max: float
    psnr_mean: float | None = None  # None: identical images (infinite PSNR) or not recorded
    patch_ssim_mean: float | None = None  # secondary, permutation-tolerant
    objective: float | None = None
    grad_distance: float | None = None
    init_ssim: float | None = None  # controlled initialization: SSIM of the attack's starting point

    @classmethod
    def from_result(cls, result: Any, *, where: str = "result") -> Scores:
        """The scores of a ``Result.to_dict()``; SSIM mean and max are required."""
        _Fields(result, where)  # an object
        if not isinstance(result.get("ssim"), Mapping):
            raise RecordError(f"{where}: missing 'ssim.mean': not a giacheck result, or written by another version")
        ssim = _Fields(result["ssim"], where)
        per_image = ssim.get("per_image", list, default=[])
        if not all(_is_number(v) for v in per_image):
            raise RecordError(f"{where}: 'ssim.per_image' is {per_image!r}, expected numbers")
        optional = {name: _number_or_none(lookup(result, path)) for name, path in _OPTIONAL_SCORES.items()}
        return cls(ssim=tuple(float(v) for v in per_image), ssim_mean=float(ssim.number("mean", label="ssim.mean")),
                   ssim_max=float(ssim.number("max", label="ssim.max")), **optional)

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "ssim": list(self.ssim)}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "scores") -> Scores:
        read = _Fields(data, where)
        per_image = read.get("ssim", list)
        if not all(_is_number(v) for v in per_image):
            raise RecordError(f"{where}: 'ssim' is {per_image!r}, expected numbers")
        optional = {name: read.number(name, default=None) for name in _OPTIONAL_SCORES}
        return cls(ssim=tuple(float(v) for v in per_image), ssim_mean=float(read.number("ssim_mean")),
                   ssim_max=float(read.number("ssim_max")), **optional)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceSummary:
    """What a verdict rests on (``result["challenge"]``, :class:`giacheck.verdicts.Evidence`), as tables show it."""

    trials: int  # k images × s seeds
    tested: int  # images scored (trials × batch size)
    reidentified: int
    worst_image: str
    worst_ssim: float  # the most leaking image's SSIM
    rank: int
    pool_size: int
    z: float
    p_value: float
    chance_q95: float
    content: str  # semantic, displaced, none
    limitation: str  # attack-limited, information-limited, unknown
    objective: float
    truth_objective: float | None
    reached: bool | None = None  # the worst image's trial reached the truth's objective

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> EvidenceSummary | None:
        """The summary of a result dict with a challenge set; None for one without (or a malformed one)."""
        challenge = result.get("challenge")
        if not isinstance(challenge, Mapping) or not isinstance(challenge.get("worst"), Mapping):
            return None
        w = challenge["worst"]
        try:
            return cls(trials=int(challenge["trials"]), tested=int(challenge["tested"]),
                       reidentified=int(challenge["reidentified"]), worst_image=str(w["image"]),
                       worst_ssim=float(w["ssim"]), rank=int(w["rank"]), pool_size=int(w["pool_size"]),
                       z=math.inf if w["z"] is None else float(w["z"]),  # None: infinite (no spread in the pool)
                       p_value=float(w["p_value"]), chance_q95=float(w["chance_q95"]),
                       content=str(challenge["content"]), limitation=str(challenge["limitation"]),
                       objective=float(w["objective"]), truth_objective=_number_or_none(w.get("truth_objective")),
                       reached=w.get("reached"))
        except (KeyError, TypeError, ValueError):
            return None

    @property
    def shown_rank(self) -> str:
        return f"{self.rank}/{self.pool_size + 1}"

    @property
    def shown_objective(self) -> str:
        """``0.0040 ≤ 0.0058`` (reached the truth's objective) or ``0.3900 > 0.0058``."""
        if self.truth_objective is None:
            return f"{self.objective:.4f} (truth n/a)"
        sign = "≤" if self.reached else ">"
        return f"{self.objective:.4f} {sign} {self.truth_objective:.4f}"


class _HasToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseRecord:
    """One finished case: claim and verdict, scores, attack identity, baseline check, provenance, and the full
    result dict (``Result.to_dict()``, which baselines and reports need)."""

    schema: int = SCHEMA
    suite: str  # "" for a `giacheck run` result outside any suite
    case_id: str
    profile: str
    claim: ClaimKind | None  # None: a single run, no claim asserted
    verdict: Verdict | None
    message: str = ""
    scores: Scores
    identity: dict[str, Any]  # attack_identity(result)
    baseline: BaselineCheck | None = None  # None: no baseline applies (a single run)
    wall_s: float | None = None
    origin: str | None = None  # "computed" (by this process) or "another worker"
    nodeid: str | None = None  # the pytest test that concluded it
    outcome: str | None = None  # that test's pytest outcome: passed, failed, skipped
    baselines_root: str | None = None  # where its baseline lives (a pack's own folder, or --giacheck-baselines)
    result: dict[str, Any]

    @classmethod
    def from_result(cls, result: _HasToDict | Mapping[str, Any], *, suite: str, profile: str,
                    claim: ClaimResult | None, baseline: BaselineCheck | None, wall_s: float | None,
                    origin: str | None, nodeid: str | None = None, outcome: str | None = None,
                    baselines_root: str | Path | None = None) -> CaseRecord:
        """The record of a :class:`giacheck.runner.Result` (or its ``to_dict()``) that ``claim`` judged.

        Raises:
            RecordError: the result lacks its SSIM mean or max (named).
        """
        data = json.loads(json.dumps(result.to_dict() if hasattr(result, "to_dict") else dict(result)))
        case_id = data.get("case_id")
        if not isinstance(case_id, str):
            raise RecordError(f"result: 'case_id' is {case_id!r}, expected a case id")
        return cls(suite=suite, case_id=case_id, profile=profile, claim=claim.kind if claim else None,
                   verdict=claim.verdict if claim else None, message=claim.message if claim else "",
                   scores=Scores.from_result(data), identity=attack_identity(data), baseline=baseline,
                   wall_s=wall_s, origin=origin, nodeid=nodeid, outcome=outcome,
                   baselines_root=None if baselines_root is None else str(baselines_root), result=data)

    def with_outcome(self, outcome: str) -> CaseRecord:
        """This record with the pytest outcome of the test that concluded it (set by the controller)."""
        return dataclasses.replace(self, outcome=outcome)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.profile, self.suite, self.case_id)

    @property
    def shown_verdict(self) -> str:
        """The verdict as summaries show it (a baseline failure turns a passing claim into ``fail(base)``)."""
        return shown_verdict(self.claim, self.verdict, self.outcome)

    @property
    def shown_baseline(self) -> str:
        return self.baseline.shown if self.baseline is not None else "—"

    @property
    def evidence(self) -> EvidenceSummary | None:
        """The challenge set's evidence (None for a record of a single run)."""
        return EvidenceSummary.of(self.result)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as strings); :meth:`from_json` reads it back to an equal record."""
        return {"schema": self.schema, "suite": self.suite, "case_id": self.case_id, "profile": self.profile,
                "claim": _str_or_none(self.claim), "verdict": _str_or_none(self.verdict), "message": self.message,
                "scores": self.scores.to_json(), "identity": dict(self.identity),
                "baseline": self.baseline.to_json() if self.baseline is not None else None,
                "wall_s": self.wall_s, "origin": self.origin, "nodeid": self.nodeid, "outcome": self.outcome,
                "baselines_root": self.baselines_root, "result": self.result}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes, *, where: str = "record") -> CaseRecord:
        """Read a record written by :meth:`to_json` (a dict, or its JSON text).

        Raises:
            RecordError: malformed data, or another schema version (both named with ``where``).
        """
        if isinstance(data, str | bytes):
            data = parse_json(data.decode() if isinstance(data, bytes) else data, where)
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected a case record (an object), got {type(data).__name__}")
        if "schema" not in data:
            return _from_schema0(data, where)
        schema = data["schema"]
        if schema != SCHEMA or isinstance(schema, bool):
            raise RecordError(f"{where}: case record of schema {schema!r}; this giacheck reads schema {SCHEMA}. "
                              "Read it with the giacheck that wrote it, or rerun the cases to record them again")
        read = _Fields(data, where)
        baseline = data.get("baseline")
        return cls(suite=read.get("suite", str), case_id=read.get("case_id", str), profile=read.get("profile", str),
                   claim=read.enum("claim", ClaimKind, default=None),
                   verdict=read.enum("verdict", Verdict, default=None), message=read.get("message", str, default=""),
                   scores=Scores.from_json(data.get("scores"), where=f"{where}.scores"),
                   identity=read.get("identity", dict),
                   baseline=None if baseline is None else BaselineCheck.from_json(baseline, where=f"{where}.baseline"),
                   wall_s=read.number("wall_s", default=None), origin=read.get("origin", str, default=None),
                   nodeid=read.get("nodeid", str, default=None), outcome=read.get("outcome", str, default=None),
                   baselines_root=read.get("baselines_root", str, default=None), result=read.get("result", dict))


_SCHEMA0_BASELINE = {"not checked (audit)": BaselineStatus.NOT_CHECKED}


def _from_schema0(data: Mapping[str, Any], where: str) -> CaseRecord:
    """A payload of the plugin or the audit from before records existed (no ``schema``)."""
    read = _Fields(data, where)
    result = read.get("result", dict)
    profile = data.get("profile") or _Fields(result, f"{where}.result").get("profile", str)
    baseline = data.get("baseline")
    check = None
    if isinstance(baseline, dict) and "status" in baseline:
        text = str(baseline["status"])
        try:
            status = _SCHEMA0_BASELINE.get(text) or BaselineStatus(text)
        except ValueError:
            raise RecordError(f"{where}: baseline status {text!r}; valid: {', '.join(BaselineStatus)}") from None
        check = BaselineCheck(status=status, passed=status in (BaselineStatus.PASS, BaselineStatus.NOT_CHECKED),
                              path=_str_or_none(baseline.get("path")),
                              recorded=_number_or_none(baseline.get("recorded")))
    claim = read.enum("claim", ClaimKind, default=None)
    optional = {key: _str_or_none(data.get(key)) for key in ("origin", "nodeid", "outcome", "baselines_root")}
    return CaseRecord(suite=read.get("suite", str), case_id=read.get("case_id", str), profile=str(profile),
                      claim=claim, verdict=read.enum("verdict", Verdict, default=None),
                      message=str(data.get("message") or ""),
                      scores=Scores.from_result(result, where=f"{where}.result"), identity=attack_identity(result),
                      baseline=check, wall_s=_number_or_none(data.get("wall_s")), result=dict(result), **optional)


# ------------------------------------------------------------------------------------------------ files
def is_records_document(data: Any) -> bool:
    """Whether parsed JSON is a results document (``{"profile", "cases": […]}``) or a single case record."""
    return isinstance(data, dict) and (isinstance(data.get("cases"), list) or ("suite" in data and "result" in data))


def records_from(data: Any, where: str) -> list[CaseRecord]:
    """The records of a parsed results document or single record; anything else raises :class:`RecordError`."""
    if isinstance(data, dict) and isinstance(data.get("cases"), list):
        return [CaseRecord.from_json(case, where=f"{where}, cases[{i}]") for i, case in enumerate(data["cases"])]
    if is_records_document(data):
        return [CaseRecord.from_json(data, where=where)]
    raise RecordError(f"{where}: valid JSON but not giacheck case records (expected {{'profile', 'cases': [...]}} "
                      "or one record)")


def read_records(path: str | Path) -> list[CaseRecord]:
    """The records of a ``results.json``, a ``results.jsonl`` journal (one record a line) or a one-record file.

    Raises:
        GiacheckError: unreadable or malformed JSON (file, line, column), a malformed record or another schema.
    """
    path = Path(path)
    if path.suffix != ".jsonl":
        return records_from(read_json(path), str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read ({exc})") from exc
    records = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{path}, line {number}"
            try:
                data = parse_json(line, where)
            except GiacheckError:
                if number == len(lines) and not text.endswith("\n"):  # torn by a crash mid-append: skipped
                    log.warning("%s: last line is incomplete (a crash while it was written); skipped", where)
                    continue
                raise
            records.append(CaseRecord.from_json(data, where=where))
    return records


def write_results(records: Iterable[CaseRecord], path: str | Path, *, profile: str) -> Path:
    """Write ``results.json`` (``{"profile", "cases": […]}``) atomically; the last record of a case wins."""
    unique = {(r.suite, r.case_id): r for r in records}
    return write_json_atomic({"profile": profile, "cases": [r.to_json() for r in unique.values()]}, Path(path))


# ------------------------------------------------------------------------------------------------ reading fields
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number_or_none(value: Any) -> float | None:
    return float(value) if _is_number(value) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


_MISSING = object()


class _Fields:
    """Typed reads from a JSON object, each failure a :class:`RecordError` naming where and which key."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected an object, got {type(data).__name__}: not a giacheck result, or "
                              "written by another version")
        self.data, self.where = data, where

    def get(self, key: str, kind: type | tuple[type, ...], *, default: Any = _MISSING, label: str | None = None) -> Any:
        label = label or key
        if key not in self.data or (self.data[key] is None and default is None):
            if default is _MISSING:
                raise RecordError(f"{self.where}: missing {label!r}: not a giacheck result, or written by another "
                                  "version")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise RecordError(f"{self.where}: {label!r} is {value!r}, expected {expected}")
        return value

    def number(self, key: str, *, default: Any = _MISSING, label: str | None = None) -> Any:
        label = label or key
        value = self.get(key, (int, float), default=default, label=label)
        if value is not default and not _is_number(value):
            raise RecordError(f"{self.where}: {label!r} is {value!r}, expected a number")
        return value

    def enum(self, key: str, kind: type[StrEnum], *, default: Any = _MISSING) -> Any:
        value = self.get(key, str, default=default)
        if value is default:
            return value
        try:
            return kind(value)
        except ValueError:
            raise RecordError(f"{self.where}: {key!r} is {value!r}; valid: {', '.join(kind)}") from None
