"""``giacheck audit``: run a pack's grid without pytest and write a report — usable as a CI gate.

Everything is checked before any compute: the output folder (new, empty, or a previous audit's), the
profile and device, the model (it imports, its factory builds an entry) and every configuration of the grid.
Each finished case is appended to ``results.jsonl`` at once; at the end come ``results.json`` (the suites'
format, so ``giacheck report`` merges it with anything else), the PNGs, ``report.html`` and ``report.md``.

Exit codes: 0 every configuration is at or below its threshold and the positive control reconstructs;
1 some configuration is feasible above its threshold (it leaks); 3 inconclusive (the control did not
reconstruct under the same budget, so "below threshold" proves nothing); 2 bad input, found before anything
runs — or an error in the middle of a run, which is named (the finished cases stay in ``results.jsonl``;
an error is never read as "the attack failed").
"""

from __future__ import annotations

import logging
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
from giacheck.jsonio import Journal
from giacheck.outputs import check_output_folder, claim_outputs
from giacheck.pack import Pack
from giacheck.records import RESULTS_JSON, RESULTS_JSONL, BaselineCheck, BaselineStatus, CaseRecord, write_results
from giacheck.specs import Case, get_profile

__all__ = ["AuditOutcome", "EXIT_INCONCLUSIVE", "EXIT_LEAKS", "EXIT_OK", "WRITER", "exit_code", "run_audit"]

log = logging.getLogger("giacheck.audit")

EXIT_OK, EXIT_LEAKS, EXIT_INCONCLUSIVE = 0, 1, 3
WRITER = "audit"  # how the output manifest names what this module wrote
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


def run_audit(pack: Pack, *, profile: str, device: str, out: Path | str,
              progress: bool | None = None, stream: TextIO | None = None) -> AuditOutcome:
    """Run every configuration of ``pack`` and write results and a report into ``out``.

    Args:
        progress: draw a progress bar (default: when ``stream`` is a terminal); otherwise log one line a case.
        stream: where the progress bar goes (default: standard error).

    Raises:
        GiacheckError: bad input, before any compute (see the module docstring).
    """
    from giacheck.challenge import CaseTrials, trial_options
    from giacheck.models import get_entry
    from giacheck.runner import resolve_device, run_case

    out = Path(out)
    check_output_folder(out, command="giacheck audit", consequence="nothing was run or written")
    torch_device = resolve_device(device)  # an unknown device, or CUDA where there is none: before any write
    if get_profile(profile).needs_gpu and torch_device.type == "cpu":
        raise GiacheckError(f"profile {profile!r} needs a GPU (--device cuda); on a CPU use --profile smoke")
    plan = pack.plan()  # also validates the control
    stream = stream or sys.stderr
    bar = _Progress(len(plan.cases) + 1, stream, enabled=stream.isatty() if progress is None else progress)
    options = pack.run_options()
    challenge = get_profile(profile).challenge
    artifacts = out / profile / pack.name
    out.mkdir(parents=True, exist_ok=True)
    claim_outputs(out, WRITER, [RESULTS_JSON, RESULTS_JSONL, profile])  # before any compute: a rerun may replace
    (out / RESULTS_JSONL).write_text("")  # a run that fails before its first case leaves no old cases behind
    journal = Journal(out / RESULTS_JSONL, fresh=False)
    records: list[CaseRecord] = []

    def record(trials: CaseTrials, claim: ClaimResult, wall: float) -> None:
        trials.save(artifacts)
        case = CaseRecord.from_result(trials.to_dict(), suite=pack.name, profile=profile, claim=claim,
                                      baseline=NOT_CHECKED, wall_s=wall, origin="computed",
                                      outcome="passed" if claim.passed else "failed")
        records.append(case)
        journal.append(case.to_json())
        worst = trials.evidence.worst
        bar.step(f"{case.case_id}: worst image SSIM {worst.ssim:.3f} p {worst.p_value:.3g} {claim.verdict}")

    def run(case: Any, options: Any) -> tuple[CaseTrials, float]:
        start = time.perf_counter()
        entry = get_entry(Case.parse(case).model.name if isinstance(case, str) else case.model.name)
        results = [run_case(case, profile=profile, device=device, options=o)
                   for o in trial_options(options, challenge, num_classes=entry.num_classes, task=entry.task)]
        return CaseTrials.of(results, selection=challenge.selection), time.perf_counter() - start

    try:
        control_trials, wall = run(pack.control_id, options)
        control = claims.feasible(control_trials.evidence)
        record(control_trials, control, wall)
        for case in plan.cases:
            trials, wall = run(case, pack.case_options())
            record(trials, pack.judge(trials.evidence, control, control_set=control_trials.evidence.trial_set),
                   wall)
    finally:
        bar.close()
    files = {"results": write_results(records, out / RESULTS_JSON, profile=profile), "journal": journal.path}
    outcome = AuditOutcome(exit_code=exit_code(records), cases=tuple(records),
                           not_applicable=plan.not_applicable, files=files,
                           challenge=_shown_challenge(options, challenge))
    files.update(_report(out, outcome.summary(pack)))
    return outcome


def _shown_challenge(options: Any, challenge: Any) -> str:
    from giacheck.challenge import trial_options

    images = dict.fromkeys(o.image for o in trial_options(options, challenge))
    return f"images {', '.join(map(str, images))} × seeds {', '.join(map(str, challenge.seeds))}"


def exit_code(records: Iterable[CaseRecord]) -> int:
    """1 when a configuration leaks above its rule; 3 when the control failed or a verdict is inconclusive."""
    verdicts = {(r.claim, r.verdict) for r in records}
    if (ClaimKind.INFEASIBLE, Verdict.FAIL) in verdicts:
        return EXIT_LEAKS
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
