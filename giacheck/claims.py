"""Claim kinds and their verdicts (DESIGN §6). Pure Python: no torch, so it is cheap to import and test.

- ``feasible``: a positive control, SSIM at least a threshold;
- ``infeasible``: SSIM at most a threshold, conclusive **only** when its paired positive control passed under
  the same budget — otherwise *inconclusive*, which fails, never passes;
- ``ordering``: one case leaks more than another by a margin;
- ``baseline``: measured SSIM against the recorded value — one-sided for leakage (fails when SSIM rises above
  recorded + tolerance); positive controls also fail when the attack got weaker (below recorded − tolerance).

Messages read like a report: measured, threshold, recorded, tolerance, case id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from giacheck.errors import GiacheckError

__all__ = ["ClaimKind", "ClaimResult", "InvalidToleranceError", "Verdict", "baseline_check", "check_tolerance",
           "feasible", "infeasible", "ordering", "regression", "shown_verdict"]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class ClaimKind(StrEnum):
    """What a test asserts about a case (DESIGN §6)."""

    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    ORDERING = "ordering"
    BASELINE = "baseline"
    REGRESSION = "regression"  # a pipeline regression: no verdict at this budget, baseline only


class InvalidToleranceError(GiacheckError, ValueError):
    """A baseline tolerance that is not a finite number >= 0 (NaN would silently pass every check)."""


def check_tolerance(tolerance: object) -> float:
    """``tolerance`` as a float; raise :class:`InvalidToleranceError` unless it is a finite number >= 0."""
    try:
        value = float(tolerance)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(tolerance, bool) or not math.isfinite(value) or value < 0:
        raise InvalidToleranceError(
            f"baseline tolerance {tolerance!r}: give a finite number >= 0 in SSIM units (default 0.05); NaN or "
            "inf would let every baseline check pass, a negative one would fail every check")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimResult:
    """The outcome of one claim; ``passed`` only for :attr:`Verdict.PASS`."""

    kind: ClaimKind
    case_id: str
    verdict: Verdict
    measured: float
    threshold: float | None
    message: str

    def __post_init__(self) -> None:  # plain strings from a plug-in become the enums (an unknown one raises)
        object.__setattr__(self, "kind", ClaimKind(self.kind))
        object.__setattr__(self, "verdict", Verdict(self.verdict))

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS


def feasible(case_id: str, ssim: float, *, min_ssim: float) -> ClaimResult:
    """A positive control: the attack reconstructs (SSIM ≥ ``min_ssim``)."""
    ok = ssim >= min_ssim
    return ClaimResult(
        kind=ClaimKind.FEASIBLE, case_id=case_id, verdict=Verdict.PASS if ok else Verdict.FAIL, measured=ssim,
        threshold=min_ssim,
        message=f"{case_id}: feasible claim {'holds' if ok else 'FAILS'} — measured SSIM {ssim:.3f} "
                f"{'≥' if ok else '<'} threshold {min_ssim:.3f}",
    )


def infeasible(case_id: str, ssim: float, *, max_ssim: float, control: ClaimResult) -> ClaimResult:
    """The attack fails (SSIM ≤ ``max_ssim``) — conclusive only if ``control`` (a feasible claim) passed."""
    if control.kind != ClaimKind.FEASIBLE:
        raise ValueError(f"the control of an infeasible claim must be a feasible claim, got {str(control.kind)!r}")
    if not control.passed:
        return ClaimResult(
            kind=ClaimKind.INFEASIBLE, case_id=case_id, verdict=Verdict.INCONCLUSIVE, measured=ssim,
            threshold=max_ssim,
            message=f"{case_id}: INCONCLUSIVE — measured SSIM {ssim:.3f}, but the paired positive control "
                    f"{control.case_id} reached only {control.measured:.3f} < {control.threshold:.3f} under the "
                    "same budget: an attack that reconstructs nothing proves nothing",
        )
    ok = ssim <= max_ssim
    return ClaimResult(
        kind=ClaimKind.INFEASIBLE, case_id=case_id, verdict=Verdict.PASS if ok else Verdict.FAIL, measured=ssim,
        threshold=max_ssim,
        message=f"{case_id}: infeasible claim {'holds' if ok else 'FAILS'} — measured SSIM {ssim:.3f} "
                f"{'≤' if ok else '>'} threshold {max_ssim:.3f} (control {control.case_id}: {control.measured:.3f})",
    )


def ordering(high_id: str, high: float, low_id: str, low: float, *, margin: float,
             min_high: float = 0.0) -> ClaimResult:
    """``high_id`` leaks more than ``low_id``: SSIM(high) ≥ SSIM(low) + ``margin``.

    Two failed reconstructions compare noise: when SSIM(high) < ``min_high`` the ordering is *inconclusive*.
    """
    if high < min_high:
        return ClaimResult(
            kind=ClaimKind.ORDERING, case_id=f"{high_id} > {low_id}", verdict=Verdict.INCONCLUSIVE,
            measured=high - low, threshold=margin,
            message=f"ordering {high_id} ({high:.3f}) > {low_id} ({low:.3f}): INCONCLUSIVE — the higher side "
                    f"reconstructs nothing (SSIM {high:.3f} < {min_high:.3f}); comparing two failures compares noise",
        )
    ok = high >= low + margin
    return ClaimResult(
        kind=ClaimKind.ORDERING, case_id=f"{high_id} > {low_id}", verdict=Verdict.PASS if ok else Verdict.FAIL,
        measured=high - low, threshold=margin,
        message=f"ordering {high_id} ({high:.3f}) > {low_id} ({low:.3f}) by ≥ {margin:.3f}: "
                f"{'holds' if ok else 'FAILS'} (difference {high - low:+.3f})",
    )


def baseline_check(case_id: str, ssim: float, *, recorded: float, tolerance: float, positive: bool) -> ClaimResult:
    """Compare with the recorded SSIM: leakage may not rise; a positive control may not weaken either.

    A measured SSIM that is not finite fails (NaN compares false with everything, so it would pass).

    Raises:
        InvalidToleranceError: ``tolerance`` is not a finite number >= 0.
    """
    tolerance = check_tolerance(tolerance)
    if not math.isfinite(ssim):
        verdict, what = Verdict.FAIL, "the measured SSIM is not a number (the attack or the metric broke)"
    elif ssim > recorded + tolerance:
        verdict, what = Verdict.FAIL, "LEAKAGE ROSE above the recorded baseline"
    elif positive and ssim < recorded - tolerance:
        verdict, what = Verdict.FAIL, "the positive control GOT WEAKER than recorded (the attack regressed)"
    else:
        verdict, what = Verdict.PASS, "within the recorded baseline"
    return ClaimResult(
        kind=ClaimKind.BASELINE, case_id=case_id, verdict=verdict, measured=ssim, threshold=recorded,
        message=f"{case_id}: {what} — measured SSIM {ssim:.3f}, recorded {recorded:.3f}, tolerance {tolerance:.3f}"
                f"{' (two-sided: positive control)' if positive else ' (one-sided)'}",
    )


def regression(case_id: str, ssim: float) -> ClaimResult:
    """A pipeline regression: no feasibility verdict at this budget; only the baseline check applies."""
    return ClaimResult(kind=ClaimKind.REGRESSION, case_id=case_id, verdict=Verdict.PASS, measured=ssim,
                       threshold=None,
                       message=f"{case_id}: pipeline regression only (no verdict at this budget), SSIM {ssim:.3f}")


def shown_verdict(claim: str | None, verdict: str | None, outcome: str | None) -> str:
    """The verdict as summaries and reports show it, given the pytest outcome of the test that recorded it:
    ``xfail: …`` for a claim its suite marks as not reproduced, ``fail(base)`` for a claim that held while the
    baseline check failed, ``regression`` for a pipeline regression that passed."""
    if claim is None:
        return "no claim"
    failed = outcome not in (None, "passed", "skipped")
    if outcome == "skipped":  # xfail: the claim did not hold and the suite says so
        return f"xfail: {verdict}" if claim != "regression" else "xfail"
    if claim == "regression":
        return "fail(base)" if failed else "regression"
    if verdict == "pass" and failed:
        return "fail(base)"
    return verdict or "?"
