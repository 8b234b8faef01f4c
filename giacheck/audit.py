"""``giacheck audit``: run a pack's grid without pytest and write a report — usable as a CI gate.

Everything is checked before any compute: the output folder (new, empty, or a previous audit's; writable),
the profile and device, the model (it imports, its factory builds it, one forward pass runs) and every
configuration of the grid. The audit holds a lock on ``--out`` while it runs: a second audit there is refused with
the first's pid. Each finished case is appended to ``results.jsonl`` at once; at the end come ``results.json``
(the suites' format, so ``giacheck report`` merges it with anything else), the PNGs, ``report.html`` and
``report.md``, all built from the journal. An audit that did not reach its end is resumed by rerunning the same
command: finished cases are kept, not recomputed (``audit-state.json`` records what they depend on).

Exit codes (:mod:`giacheck.cli` documents them for every command): 0 every configuration is at or below its
threshold and the positive control reconstructs; 1 some configuration is feasible above its threshold (it
leaks); 3 inconclusive (the control did not reconstruct under the same budget, so "below threshold" proves
nothing, or a score is not finite); 2 bad input, found before anything runs (or, rarely, by a running case:
named, the finished cases kept); 4 an error in the middle of a run, which is named (the finished cases stay in
``results.jsonl``; an error is never read as "the attack failed"); 130 interrupted.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from giacheck import claims
from giacheck.claims import ClaimKind, ClaimResult, Verdict
from giacheck.errors import GiacheckError
from giacheck.jsonio import Journal, read_json, write_json_atomic
from giacheck.outputs import OutputLock, check_output_folder, claim_outputs, remove_outputs
from giacheck.pack import Pack, Plan
from giacheck.records import (
    RESULTS_JSON,
    RESULTS_JSONL,
    BaselineCheck,
    BaselineStatus,
    CaseRecord,
    read_records,
    write_results,
)
from giacheck.specs import Case, get_profile

__all__ = ["AuditOutcome", "EXIT_INCONCLUSIVE", "EXIT_LEAKS", "EXIT_OK", "STATE_JSON", "WRITER", "exit_code",
           "identity", "run_audit"]

log = logging.getLogger("giacheck.audit")

EXIT_OK, EXIT_LEAKS, EXIT_INCONCLUSIVE = 0, 1, 3
WRITER = "audit"  # how the output manifest names what this module wrote
STATE_JSON = "audit-state.json"  # {"identity": identity(), "finished": bool}: what a rerun may resume
NOT_CHECKED = BaselineCheck(status=BaselineStatus.NOT_CHECKED, passed=True,
                            message="baselines are not checked by an audit (the pack's tests check them)")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditOutcome:
    """What an audit found and wrote."""

    exit_code: int
    cases: tuple[CaseRecord, ...]  # control first
    not_applicable: tuple[tuple[str, str], ...]
    files: dict[str, Path]
    challenge: str = ""  # the private images and seeds every configuration ran over
    resumed: tuple[str, ...] = ()  # cases kept from an unfinished audit's journal, not recomputed

    @property
    def leaking(self) -> list[str]:
        return [c.case_id for c in self.cases if c.claim is ClaimKind.INFEASIBLE and c.verdict is Verdict.FAIL]

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "no configuration leaks an identifiable image",
                EXIT_LEAKS: f"LEAKS: {', '.join(self.leaking)}",
                EXIT_INCONCLUSIVE: "INCONCLUSIVE: the positive control did not reconstruct under this budget"
                }[self.exit_code]

    def summary(self, pack: Pack) -> list[str]:
        """The lines an auditor reads first: verdict and exit status, rules, control, what was left out."""
        lines = [f"Audit of {pack.model} ({pack.name}): {self.verdict} (exit {self.exit_code})."]
        lines += [f"Rule: {rule.text} (no image re-identified"
                  f"{f'; every image SSIM ≤ {rule.max_ssim:g}' if rule.max_ssim is not None else ''}"
                  f"{f' where {rule.where}' if rule.where else ''})." for rule in pack.rules]
        lines.append(f"Positive control: {pack.control_id} must re-identify an image under the same budget and "
                     "challenge set, or the rules prove nothing.")
        lines.append(f"Challenge set: {self.challenge}.")
        lines += [f"Not applicable: {case_id} ({why})." for case_id, why in self.not_applicable]
        return lines


def run_audit(pack: Pack, *, profile: str, device: str, out: Path | str, progress: bool | None = None,
              stream: TextIO | None = None, fresh: bool = False) -> AuditOutcome:
    """Run every configuration of ``pack`` and write results and a report into ``out``.

    An audit that stopped before its end (interrupted, killed, or failed on an error) is resumed by the same
    call: the cases its journal holds are kept, not recomputed, when the audit's identity (:func:`identity`:
    pack, grid, attack, budget, device, model hash) is the one recorded; another identity is refused, saying
    what differs. ``fresh`` discards the unfinished audit's cases instead. A finished audit is replaced.

    Args:
        progress: draw a progress bar (default: when ``stream`` is a terminal); otherwise log one line a case.
        stream: where the progress bar goes (default: standard error).

    Raises:
        GiacheckError: bad input, before any compute (see the module docstring); ``out`` held by another audit.
    """
    from giacheck.challenge import CaseTrials, trial_options
    from giacheck.models import get_entry
    from giacheck.runner import resolve_device, run_trials

    out = Path(out)
    check_output_folder(out, command="giacheck audit", consequence="nothing was run or written")
    if pack.client is not None:  # a client that does not import, or a missing framework: before any compute
        pack.client.check()
    torch_device = resolve_device(device)  # an unknown device, or CUDA where there is none: before any write
    if get_profile(profile).needs_gpu and torch_device.type == "cpu":
        raise GiacheckError(f"profile {profile!r} needs a GPU (--device cuda); on a CPU use --profile smoke")
    budget = pack.attack or get_profile(profile).attack
    restarts = budget.restarts if budget.batched_restarts else 1
    plan = pack.plan(device=torch_device, restarts=restarts)  # also the control; builds the model once
    stream = stream or sys.stderr
    options = pack.run_options()
    challenge = get_profile(profile).challenge
    artifacts = out / profile / pack.name
    ident = identity(pack, plan, profile=profile, device=_device_name(torch_device))
    with OutputLock(out, command="giacheck audit"):
        check_output_folder(out, command="giacheck audit", consequence="nothing was run or written")
        done = _resume(out, ident, fresh=fresh)
        claim_outputs(out, WRITER, [RESULTS_JSON, RESULTS_JSONL, STATE_JSON, profile])
        write_json_atomic({"identity": ident, "finished": False}, out / STATE_JSON)
        journal = Journal(out / RESULTS_JSONL, fresh=not done)  # _resume removed an older audit's journal
        bar = _Progress(len(plan.cases) + 1, stream, enabled=stream.isatty() if progress is None else progress)

        def record(trials: CaseTrials, claim: ClaimResult, wall: float) -> None:
            trials.save(artifacts)
            case = CaseRecord.from_result(trials.to_dict(), suite=pack.name, profile=profile, claim=claim,
                                          baseline=NOT_CHECKED, wall_s=wall, origin="computed",
                                          outcome="passed" if claim.passed else "failed")
            journal.append(case.to_json())
            worst = trials.evidence.worst
            bar.step(f"{case.case_id}: worst image SSIM {worst.ssim:.3f} p {worst.p_value:.3g} {claim.verdict}")

        def run(case: Any, options: Any) -> tuple[CaseTrials, float]:
            start = time.perf_counter()
            entry = get_entry(Case.parse(case).model.name if isinstance(case, str) else case.model.name)
            results = run_trials(case, profile=profile, device=device,
                                 options=trial_options(options, challenge, num_classes=entry.num_classes,
                                                       task=entry.task))
            return CaseTrials.of(results, selection=challenge.selection), time.perf_counter() - start

        if done:
            log.info("resuming the audit in %s: %d finished case(s) kept from %s, not recomputed", out, len(done),
                     RESULTS_JSONL)
        try:
            if pack.control_id in done:
                control, control_set = _claim_of(done[pack.control_id]), _trial_set(done[pack.control_id])
                bar.step(f"{pack.control_id}: kept from the journal")
            else:
                control_trials, wall = run(pack.control_id, options)
                control, control_set = claims.feasible(control_trials.evidence), control_trials.evidence.trial_set
                record(control_trials, control, wall)
            for case in plan.cases:
                if case.id in done:
                    bar.step(f"{case.id}: kept from the journal")
                    continue
                trials, wall = run(case, pack.case_options())
                record(trials, pack.judge(trials.evidence, control, control_set=control_set), wall)
        finally:
            bar.close()
        records = _journal_records(out, [pack.control_id, *(c.id for c in plan.cases)])
        files = {"results": write_results(records, out / RESULTS_JSON, profile=profile), "journal": journal.path}
        outcome = AuditOutcome(exit_code=exit_code(records), cases=tuple(records),
                               not_applicable=plan.not_applicable, files=files,
                               challenge=_shown_challenge(options, challenge), resumed=tuple(done))
        files.update(_report(out, outcome.summary(pack)))
        write_json_atomic({"identity": ident, "finished": True}, out / STATE_JSON)
    return outcome


def identity(pack: Pack, plan: Plan, *, profile: str, device: str) -> dict[str, Any]:
    """What an audit's results depend on: a journal is resumed only under the same identity."""
    import torch

    from giacheck import __version__

    return {
        "pack": pack.name, "model": pack.model, "model_sha256": plan.model_sha256,
        "cases": [case.id for case in plan.cases], "control": pack.control_id,
        "rules": [[rule.text, rule.max_ssim, rule.where] for rule in pack.rules],
        "attack": pack.attacker, "budget": None if pack.attack is None else repr(pack.attack),
        "data": pack.data, "seed": pack.seed, "profile": profile, "device": device,
        "giacheck": __version__, "torch": torch.__version__,
        "client": None if pack.client is None else {**pack.client.describe(), "version": pack.client.version()},
    }


def _device_name(device: Any) -> str:
    """``cuda`` as the index it means (``cuda:0``), so the same GPU named two ways is one identity."""
    import torch

    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _resume(out: Path, ident: dict[str, Any], *, fresh: bool) -> dict[str, CaseRecord]:
    """The finished cases of an unfinished audit in ``out`` to keep, by case id; none for a finished audit, a
    new folder, or with ``fresh`` (the older files are then removed, so no report of another run stays beside a
    new journal).

    Raises:
        GiacheckError: ``out`` holds an unfinished audit of another identity (what differs is named).
    """
    state_path, journal = out / STATE_JSON, out / RESULTS_JSONL
    state: dict[str, Any] = {}
    if state_path.is_file() and not fresh:
        try:
            state = read_json(state_path)
            if not isinstance(state, dict):
                raise GiacheckError(f"{state_path}: expected a JSON object, got {type(state).__name__}")
        except GiacheckError as exc:
            raise GiacheckError(f"{exc}; the audit state of --out {out} is unreadable, so its journal cannot be "
                                "resumed. Use --fresh to start over (its finished cases are then discarded), or "
                                "another --out.") from None
    unfinished = state.get("finished") is False and journal.is_file()
    if unfinished and not fresh:
        recorded = state.get("identity") or {}
        differs = sorted(k for k in set(recorded) | set(ident) if recorded.get(k) != ident.get(k))
        try:
            kept = read_records(journal)
        except GiacheckError as exc:
            raise GiacheckError(f"{exc}; the unfinished audit in --out {out} cannot be resumed from it. Use --fresh "
                                "to start over (its finished cases are then discarded), or another --out.") from None
        if differs and kept:  # an unfinished audit with no finished case holds nothing to lose
            shown = "; ".join(f"{k}: recorded {recorded.get(k)!r}, now {ident.get(k)!r}" for k in differs[:4])
            raise GiacheckError(
                f"--out {out} holds an unfinished audit ({len(kept)} finished case(s) in {RESULTS_JSONL}) of another "
                f"configuration ({shown}); nothing was run or written. Rerun with the same arguments (and the same "
                "model code and weights) to resume it, add --fresh to discard it, or choose another --out.")
        if kept:
            _cut_torn_line(journal)
            wanted = {ident["control"], *ident["cases"]}
            return {r.case_id: r for r in kept if r.case_id in wanted}
    for name in (RESULTS_JSON, RESULTS_JSONL):
        path = out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    from giacheck.report import WRITER as REPORT_WRITER

    remove_outputs(out, REPORT_WRITER)  # a report of the older run never stands beside the new journal
    return {}


def _cut_torn_line(journal: Path) -> None:
    """Drop a last line left incomplete by a crash mid-append (``read_records`` skips it), so that the next
    record starts on a line of its own."""
    data = journal.read_bytes()
    if data and not data.endswith(b"\n"):
        with journal.open("r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def _journal_records(out: Path, case_ids: list[str]) -> list[CaseRecord]:
    """The audit's records, read back from its journal (control first, then the grid's order)."""
    by_id = {r.case_id: r for r in read_records(out / RESULTS_JSONL)}
    missing = [c for c in case_ids if c not in by_id]
    if missing:
        raise GiacheckError(f"{out / RESULTS_JSONL}: no record of {', '.join(missing)} after the audit ran them; "
                            "the journal was changed while the audit ran")
    return [by_id[c] for c in case_ids]


def _claim_of(record: CaseRecord) -> ClaimResult:
    """The control's claim as its journal record keeps it."""
    worst = record.evidence
    return ClaimResult(kind=record.claim, case_id=record.case_id, verdict=record.verdict,
                       measured=worst.worst_ssim if worst else record.scores.ssim_max, threshold=None,
                       message=record.message)


def _trial_set(record: CaseRecord) -> tuple[str, ...]:
    return tuple(record.result.get("challenge", {}).get("set", ()))


def _shown_challenge(options: Any, challenge: Any) -> str:
    from giacheck.challenge import trial_options

    images = dict.fromkeys(o.image for o in trial_options(options, challenge))
    return f"images {', '.join(map(str, images))} × seeds {', '.join(map(str, challenge.seeds))}"


def exit_code(records: Iterable[CaseRecord]) -> int:
    """1 when a configuration leaks above its rule; 3 when the control failed, a verdict is inconclusive or a
    score is not finite."""
    records = list(records)
    verdicts = {(r.claim, r.verdict) for r in records}
    if (ClaimKind.INFEASIBLE, Verdict.FAIL) in verdicts:
        return EXIT_LEAKS
    if any(not math.isfinite(v) for r in records for v in (r.scores.ssim_mean, r.scores.ssim_max, *r.scores.ssim)):
        return EXIT_INCONCLUSIVE  # a score that is not a number proves nothing, whatever verdict it was given
    if (ClaimKind.INFEASIBLE, Verdict.INCONCLUSIVE) in verdicts or (ClaimKind.FEASIBLE, Verdict.FAIL) in verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def _report(out: Path, summary: list[str]) -> dict[str, Path]:
    from giacheck.report import load_results, write_report

    return write_report(load_results([out / RESULTS_JSON]), out, summary=summary)


class _Progress:
    """A tqdm progress bar when ``enabled`` (a terminal); one log line per case otherwise (CI logs)."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.bar = tqdm(total=total, file=stream, unit="case", disable=not enabled, ncols=120, mininterval=0,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}")

    def step(self, message: str) -> None:
        self.done += 1
        if self.enabled:
            self.bar.set_postfix_str(message[:60], refresh=False)
            self.bar.update(1)
        else:
            log.info("[%d/%d] %s", self.done, self.total, message)

    def close(self) -> None:
        self.bar.close()
