"""Claim verdicts and their messages (pure Python): inconclusive never passes, baselines are one-sided for
leakage and two-sided for positive controls, and what summaries show for each pytest outcome."""

from __future__ import annotations

import pytest
from _evidence import _evidence, _image, _trial

from giacheck import claims
from giacheck.claims import Verdict


def test_infeasible_is_inconclusive_without_a_reidentifying_control() -> None:
    weak = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.4, 0.3)])]))  # not re-identified
    negative = _evidence("case", [_trial("case", "a", [_image(0.01, 0.8)])])
    claim = claims.infeasible(negative, control=weak)
    assert claim.verdict is Verdict.INCONCLUSIVE and not claim.passed
    assert "INCONCLUSIVE" in claim.message and "ctl (worst SSIM 0.400)" in claim.message


def test_ordering_of_two_failures_is_inconclusive() -> None:
    a = _evidence("a", [_trial("a", "x", [_image(0.2, 0.3)])])
    b = _evidence("b", [_trial("b", "x", [_image(0.1, 0.5)])])
    assert claims.ordering(a, b, margin=0.0).verdict is Verdict.INCONCLUSIVE


@pytest.mark.parametrize(("ssim", "positive", "passed"), [
    (0.56, False, False), (0.54, False, True), (0.40, False, True),  # leakage: one-sided
    (0.56, True, False), (0.44, True, False), (0.46, True, True),  # positive control: two-sided
])
def test_baseline_check(ssim: float, positive: bool, passed: bool) -> None:
    check = claims.baseline_check("case", ssim, recorded=0.5, tolerance=0.05, positive=positive)
    assert check.passed is passed
    assert "recorded 0.500, tolerance 0.050" in check.message


@pytest.mark.parametrize(("claim", "verdict", "outcome", "shown"), [
    ("feasible", "pass", "passed", "pass"),
    ("feasible", "pass", "failed", "fail(base)"),  # the claim held, the baseline check failed
    ("feasible", "fail", "skipped", "xfail: fail"),  # a strict xfail: the suite says it does not reproduce
    ("infeasible", "inconclusive", "failed", "inconclusive"),
    ("regression", "pass", "passed", "regression"),
    ("regression", "pass", "failed", "fail(base)"),
    ("regression", "pass", "skipped", "xfail"),  # e.g. Figure 4's gain assertion after a regression
    (None, None, None, "no claim"),
])
def test_shown_verdict(claim: str | None, verdict: str | None, outcome: str | None, shown: str) -> None:
    assert claims.shown_verdict(claim, verdict, outcome) == shown


def test_claim_kinds_are_an_enum() -> None:
    ev = _evidence("c", [_trial("c", "a", [_image(0.7, 0.001)])])
    assert claims.feasible(ev).kind is claims.ClaimKind.FEASIBLE
    assert claims.regression(ev).kind == "regression"  # a StrEnum: compares with its value
    plugin_made = claims.ClaimResult(kind="infeasible", case_id="c", verdict="pass", measured=0.1, threshold=0.3,
                                     message="m")
    assert plugin_made.kind is claims.ClaimKind.INFEASIBLE and plugin_made.verdict is Verdict.PASS
    with pytest.raises(ValueError, match="'guess' is not a valid ClaimKind"):
        claims.ClaimResult(kind="guess", case_id="c", verdict="pass", measured=0.1, threshold=None, message="m")


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -0.05, "nan", None, True])
def test_baseline_check_refuses_a_tolerance_that_disables_it(tolerance: object) -> None:
    with pytest.raises(claims.InvalidToleranceError, match="give a finite number >= 0"):
        claims.baseline_check("case", 0.9, recorded=0.1, tolerance=tolerance, positive=False)  # type: ignore[arg-type]
    assert claims.check_tolerance("0.05") == 0.05 and claims.check_tolerance(0) == 0.0


def test_baseline_check_fails_a_nan_ssim() -> None:
    check = claims.baseline_check("case", float("nan"), recorded=0.5, tolerance=0.05, positive=False)
    assert check.verdict is Verdict.FAIL and "not a number" in check.message
