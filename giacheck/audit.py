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

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from giacheck.claims import ClaimResult, Verdict
from giacheck.errors import GiacheckError
from giacheck.jsonio import write_json_atomic
from giacheck.pack import Pack
from giacheck.specs import get_profile

__all__ = ["AUDIT_MANIFEST", "AuditOutcome", "EXIT_INCONCLUSIVE", "EXIT_LEAKS", "EXIT_OK", "run_audit"]

log = logging.getLogger("giacheck.audit")

AUDIT_MANIFEST = ".giacheck-audit.json"
EXIT_OK, EXIT_LEAKS, EXIT_INCONCLUSIVE = 0, 1, 3


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditOutcome:
    """What an audit found and wrote."""

    exit_code: int
    cases: tuple[dict[str, Any], ...]  # suite-format payloads (control first)
    not_applicable: tuple[tuple[str, str], ...]
    files: dict[str, Path]

    @property
    def leaking(self) -> list[str]:
        return [c["case_id"] for c in self.cases if c["claim"] == "infeasible" and c["verdict"] == "fail"]

    @property
    def verdict(self) -> str:
        return {EXIT_OK: "no configuration leaks above its threshold",
                EXIT_LEAKS: f"LEAKS: {', '.join(self.leaking)}",
                EXIT_INCONCLUSIVE: "INCONCLUSIVE: the positive control did not reconstruct under this budget"
                }[self.exit_code]

    def summary(self, pack: Pack) -> list[str]:
        """The lines an auditor reads first: verdict and exit status, rules, control, what was left out."""
        lines = [f"Audit of {pack.model} ({pack.name}): {self.verdict} (exit {self.exit_code})."]
        lines += [f"Rule: {rule.text} (SSIM ≤ {rule.max_ssim:g}{f' where {rule.where}' if rule.where else ''})."
                  for rule in pack.rules]
        lines.append(f"Positive control: {pack.control_id} must reach SSIM ≥ {pack.control_min_ssim:g} under the "
                     "same budget, or the rules prove nothing.")
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
    from giacheck.artifacts import save_result
    from giacheck.runner import resolve_device, run_case

    out = Path(out)
    _check_out(out)
    torch_device = resolve_device(device)  # an unknown device, or CUDA where there is none: before any write
    if get_profile(profile).needs_gpu and torch_device.type == "cpu":
        raise GiacheckError(f"profile {profile!r} needs a GPU (--device cuda); on a CPU use --profile smoke")
    plan = pack.plan()  # also validates the control
    stream = stream or sys.stderr
    bar = _Progress(len(plan.cases) + 1, stream, enabled=stream.isatty() if progress is None else progress)
    options = pack.run_options()
    artifacts = out / profile / pack.name
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, profile)
    journal = out / "results.jsonl"
    journal.write_text("")
    payloads: list[dict[str, Any]] = []

    def record(result: Any, claim: ClaimResult, wall: float) -> None:
        save_result(result, artifacts)
        payload = {"suite": pack.name, "case_id": result.case_id, "profile": profile, "claim": claim.kind,
                   "verdict": str(claim.verdict), "message": claim.message, "wall_s": wall,
                   "outcome": "passed" if claim.passed else "failed", "result": result.to_dict(),
                   "baseline": {"status": "not checked (audit)"}}
        payloads.append(payload)
        with journal.open("a") as fh:
            fh.write(json.dumps(payload, allow_nan=False) + "\n")
        bar.step(f"{result.case_id}: SSIM {result.ssim_mean:.3f} {claim.verdict}")

    start = time.perf_counter()
    control_result = run_case(pack.control_id, profile=profile, device=device, options=options)
    control = pack.control_claim(control_result.ssim_mean)
    record(control_result, control, time.perf_counter() - start)
    for case in plan.cases:
        start = time.perf_counter()
        result = run_case(case, profile=profile, device=device, options=options)
        record(result, pack.judge(case.id, result.ssim_mean, control), time.perf_counter() - start)
    bar.close()
    files = {"results": write_json_atomic({"profile": profile, "cases": payloads}, out / "results.json"),
             "journal": journal}
    outcome = AuditOutcome(exit_code=_exit_code(payloads), cases=tuple(payloads),
                           not_applicable=plan.not_applicable, files=files)
    files.update(_report(out, profile, outcome.summary(pack)))
    return outcome


def _exit_code(payloads: list[dict[str, Any]]) -> int:
    verdicts = {(p["claim"], p["verdict"]) for p in payloads}
    if ("infeasible", str(Verdict.FAIL)) in verdicts:
        return EXIT_LEAKS
    if ("infeasible", str(Verdict.INCONCLUSIVE)) in verdicts or ("feasible", str(Verdict.FAIL)) in verdicts:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def _owned(out: Path) -> set[str]:
    """Top-level names a previous audit wrote into ``out`` (its results, artifacts and report)."""
    try:
        data = json.loads((out / AUDIT_MANIFEST).read_text())
        return {AUDIT_MANIFEST, *map(str, data["owned"])}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _check_out(out: Path) -> None:
    """``out`` must be new, empty, or hold nothing but a previous audit; otherwise refuse, touching nothing."""
    if out.exists() and not out.is_dir():
        raise GiacheckError(f"--out {out}: is a file, not a folder; nothing was run")
    if not out.exists():
        return
    owned = _owned(out)
    foreign = sorted(e.name for e in out.iterdir() if e.name not in owned)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise GiacheckError(f"--out {out}: the folder already holds files giacheck audit did not write ({shown}); "
                            "nothing was run or written. Choose a new or empty folder.")


def _write_manifest(out: Path, profile: str) -> None:
    from giacheck.report import MANIFEST

    owned = sorted(_owned(out) - {AUDIT_MANIFEST} | {"results.json", "results.jsonl", profile, MANIFEST,
                                                     "report.html", "report.md"})
    write_json_atomic({"owned": owned}, out / AUDIT_MANIFEST)


def _report(out: Path, profile: str, summary: list[str]) -> dict[str, Path]:
    from giacheck.report import load_results, write_report

    keep = {AUDIT_MANIFEST, "results.json", "results.jsonl", profile}
    written = write_report(load_results([out / "results.json"]), out, keep=keep, summary=summary)
    names = {p.name for p in written.values()}
    data = json.loads((out / AUDIT_MANIFEST).read_text())
    write_json_atomic({"owned": sorted(set(data["owned"]) | names)}, out / AUDIT_MANIFEST)
    return written


class _Progress:
    """A one-line progress bar on a terminal; one log line per case otherwise (CI logs)."""

    def __init__(self, total: int, stream: TextIO, *, enabled: bool) -> None:
        self.total, self.done, self.stream, self.enabled = total, 0, stream, enabled
        self.started = time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        if not self.enabled:
            log.info("[%d/%d] %s", self.done, self.total, message)
            return
        width = 24
        filled = round(width * self.done / self.total)
        elapsed = time.perf_counter() - self.started
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{elapsed:6.0f}s  {message[:70]:70}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
