"""Claim kinds and their verdicts (DESIGN §6). Pure Python: no torch, so it is cheap to import and test.

Every claim judges the :class:`giacheck.verdicts.Evidence` of a challenge set (re-identification against
chance, worst case over images and seeds); SSIM values are reported, never compared with a fixed cutoff.

- ``feasible``: a positive control, some image re-identified at family-wise level α;
- ``infeasible``: no image re-identified, conclusive **only** when its paired positive control (and the
  same-architecture enabler control, where there is one) re-identified under the same budget — otherwise
  *inconclusive*, which fails, never passes; labelled attack- or information-limited;
- ``ordering``: one case leaks more than another on the same private images, by a median margin;
- ``baseline``: measured SSIM against the recorded value — one-sided for leakage (fails when SSIM rises above
  recorded + tolerance); positive controls also fail when the attack got weaker (below recorded − tolerance).

Messages read like a report: measured, threshold, recorded, tolerance, case id.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from enum import StrEnum

from giacheck.errors import GiacheckError
from giacheck.verdicts import Evidence, Limitation

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
            f"baseline tolerance {tolerance!r}: give a finite number >= 0 in SSIM units (default 0.06); NaN or "
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


def _powerless(evidence: Evidence) -> str:
    return (f"the held-out pool ({evidence.worst.pool_size} views) is too small for any of the "
            f"{evidence.test.tested} images to reach p ≤ {evidence.test.threshold:.3g}: this challenge set can show "
            "no leak, so its result is no evidence either way; use a source with more images (--data) or fewer "
            "images per case")


def feasible(evidence: Evidence) -> ClaimResult:
    """A positive control: some image of the challenge set is re-identified at family-wise level α; inconclusive
    when the pool is too small for any image to be significant."""
    ok = evidence.leaks
    if not ok and evidence.powerless:
        return ClaimResult(kind=ClaimKind.FEASIBLE, case_id=evidence.case_id, verdict=Verdict.INCONCLUSIVE,
                           measured=evidence.worst.ssim, threshold=evidence.test.threshold,
                           message=f"{evidence.case_id}: INCONCLUSIVE — {_powerless(evidence)}")
    return ClaimResult(
        kind=ClaimKind.FEASIBLE, case_id=evidence.case_id, verdict=Verdict.PASS if ok else Verdict.FAIL,
        measured=evidence.worst.ssim, threshold=evidence.test.threshold,
        message=f"{evidence.case_id}: feasible claim {'holds' if ok else 'FAILS'} (re-identified: "
                f"{'yes' if ok else 'no'}) — {evidence.describe()}",
    )


def infeasible(evidence: Evidence, *, control: ClaimResult, enabler: ClaimResult | None = None,
               needs: Limitation | None = None, control_sets: tuple[tuple[str, ...], ...] = ()) -> ClaimResult:
    """No image of the challenge set is re-identified — conclusive only when ``control`` (a feasible claim under
    the same budget, pool and tuning) and, where the suite has one, ``enabler`` (the same architecture with the
    enabler the claim is about: an unadapted stem, an inference-mode update, batch size 1) re-identify. With
    ``needs`` the negative must also be of that kind: :attr:`Limitation.INFORMATION` refuses an optimizer failure;
    :attr:`Limitation.ATTACK` (the attack fails at this budget) accepts either kind. ``control_sets``: the trial
    sets (:attr:`Evidence.trial_set`) the controls ran on; a control run on other private images or seeds is no
    control, and the claim is inconclusive.
    """
    controls = [c for c in (control, enabler) if c is not None]
    for c in controls:
        if c.kind != ClaimKind.FEASIBLE:
            raise ValueError(f"the control of an infeasible claim must be a feasible claim, got {str(c.kind)!r}")
    failed = [c for c in controls if not c.passed]
    base = dict(kind=ClaimKind.INFEASIBLE, case_id=evidence.case_id, measured=evidence.worst.ssim,
                threshold=evidence.test.threshold)
    if failed:
        names = ", ".join(f"{c.case_id} (worst SSIM {c.measured:.3f})" for c in failed)
        return ClaimResult(**base, verdict=Verdict.INCONCLUSIVE, message=(
            f"{evidence.case_id}: INCONCLUSIVE — {evidence.describe()}; but the paired control(s) {names} did not "
            "re-identify under the same budget: an attack that reconstructs nothing proves nothing"))
    shown = ", ".join(c.case_id for c in controls)
    other = [s for s in control_sets if s != evidence.trial_set]
    if other:
        return ClaimResult(**base, verdict=Verdict.INCONCLUSIVE, message=(
            f"{evidence.case_id}: INCONCLUSIVE — a control ran on {', '.join(other[0])}, the claim on "
            f"{', '.join(evidence.trial_set)}: controls must run on the same private images and seeds"))
    if evidence.powerless:
        return ClaimResult(**base, verdict=Verdict.INCONCLUSIVE,
                           message=f"{evidence.case_id}: INCONCLUSIVE — {_powerless(evidence)}")
    if evidence.invalid and not evidence.leaks:
        names = ", ".join(f"{i.image}#{i.position}" for i in evidence.invalid)
        return ClaimResult(**base, verdict=Verdict.INCONCLUSIVE, message=(
            f"{evidence.case_id}: INCONCLUSIVE — the held-out pool cannot judge {names}: uniform noise is "
            "re-identified as it (an image unlike the pool's), so its silence is no evidence; "
            f"{evidence.describe()}"))
    if evidence.leaks:
        return ClaimResult(**base, verdict=Verdict.FAIL, message=(
            f"{evidence.case_id}: infeasible claim FAILS (re-identified) — {evidence.describe()} (controls {shown})"))
    limitation = evidence.limitation
    if needs is Limitation.INFORMATION and limitation is not needs:
        return ClaimResult(**base, verdict=Verdict.INCONCLUSIVE, message=(
            f"{evidence.case_id}: INCONCLUSIVE — not re-identified, but {limitation}, and the claim needs {needs}: "
            f"{evidence.describe()}"))
    return ClaimResult(**base, verdict=Verdict.PASS, message=(
        f"{evidence.case_id}: infeasible claim holds ({limitation}; not re-identified) — {evidence.describe()} "
        f"(controls {shown} re-identify)"))


def ordering(high: Evidence, low: Evidence, *, margin: float) -> ClaimResult:
    """``high`` leaks more than ``low``: on the private images both ran, the median over images of
    SSIM(high) − SSIM(low) is at least ``margin``. Inconclusive unless ``high`` is re-identified: comparing two
    failures compares noise."""
    shared = [image for image in high.trial_images if image in low.trial_images]
    name = f"{high.case_id} > {low.case_id}"
    if not shared:
        raise ValueError(f"ordering {name}: the two cases share no private image; run them on one challenge set")
    differences = [high.ssim_of(image) - low.ssim_of(image) for image in shared]
    difference = statistics.median(differences)
    shown = ", ".join(f"{image} {high.ssim_of(image):.3f} vs {low.ssim_of(image):.3f}" for image in shared)
    if not high.leaks:
        return ClaimResult(kind=ClaimKind.ORDERING, case_id=name, verdict=Verdict.INCONCLUSIVE, measured=difference,
                           threshold=margin, message=(
                               f"ordering {name}: INCONCLUSIVE — the higher side is not re-identified "
                               f"({high.describe()}); comparing two failures compares noise ({shown})"))
    ok = difference >= margin
    return ClaimResult(kind=ClaimKind.ORDERING, case_id=name, verdict=Verdict.PASS if ok else Verdict.FAIL,
                       measured=difference, threshold=margin, message=(
                           f"ordering {name} by ≥ {margin:.3f}: {'holds' if ok else 'FAILS'} (median paired "
                           f"difference {difference:+.3f} over {len(shared)} images: {shown})"))


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


def regression(evidence: Evidence) -> ClaimResult:
    """A pipeline regression: no feasibility verdict at this budget; only the baseline check applies."""
    return ClaimResult(kind=ClaimKind.REGRESSION, case_id=evidence.case_id, verdict=Verdict.PASS,
                       measured=evidence.worst.ssim, threshold=None,
                       message=f"{evidence.case_id}: pipeline regression only (no verdict at this budget) — "
                               f"{evidence.describe()}")


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
