"""Verdicts that are evidence: re-identification over a challenge set, worst case, attack- vs information-limited
negatives, and the claims and pack rules built on them (giacheck.verdicts, giacheck.claims, giacheck.pack)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from _evidence import _evidence, _image, _trial

from giacheck import claims
from giacheck.claims import Verdict
from giacheck.verdicts import ALPHA, REACHED_EPSILON, Content, Limitation


def test_worst_case_is_the_smallest_p_value_and_every_image_is_kept() -> None:
    ev = _evidence("c", [_trial("c", "rocket", [_image(0.2, 0.3)]),
                         _trial("c", "bus", [_image(0.15, 0.01)])])
    assert ev.worst.image == "bus" and ev.worst_trial == 1
    assert len(ev.to_dict()["images"]) == 2 and ev.to_dict()["set"] == ["bus@seed0", "rocket@seed0"]


def test_content_semantic_displaced_none() -> None:
    semantic = _evidence("c", [_trial("c", "a", [_image(0.4, 0.001)])])
    displaced = _evidence("c", [_trial("c", "a", [_image(0.1, 0.4, patch_p=0.001)])])
    nothing = _evidence("c", [_trial("c", "a", [_image(0.1, 0.4)])])
    assert (semantic.content, displaced.content, nothing.content) == (Content.SEMANTIC, Content.DISPLACED,
                                                                      Content.NONE)
    assert semantic.leaks and not displaced.leaks and not nothing.leaks


@pytest.mark.parametrize(("objectives", "truth", "expected"), [
    ((0.0040, 0.0050), 0.0058, Limitation.INFORMATION),  # ConvNeXt-T adapted: below the truth's objective
    ((0.0040, 0.39), 0.0058, Limitation.ATTACK),  # one trial stopped far above it: an optimizer failure
    ((0.0058 + REACHED_EPSILON * 0.0058, 0.004), 0.0058, Limitation.INFORMATION),  # within epsilon
    ((-1.0e-4, -1.0e-4), -0.95e-4, Limitation.INFORMATION),  # a negative objective: below the truth's is reached
    ((0.004, 0.004), float("nan"), Limitation.UNKNOWN),  # a broken diagnostic is no evidence of either kind
    ((0.004, 0.004), None, Limitation.UNKNOWN),  # the attack does not expose its objective
])
def test_limitation(objectives: tuple[float, float], truth: float | None, expected: Limitation) -> None:
    ev = _evidence("c", [_trial("c", name, [_image(0.1, 0.5)], objective=o, truth=truth)
                         for name, o in zip(("a", "b"), objectives, strict=True)])
    assert ev.limitation is expected


def test_infeasible_needs_every_control_and_the_kind_it_asks_for() -> None:
    control = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.7, 0.001)])]))
    weak = claims.feasible(_evidence("enabler", [_trial("enabler", "a", [_image(0.2, 0.3)])]))
    assert control.passed and not weak.passed
    negative = _evidence("neg", [_trial("neg", "a", [_image(0.05, 0.6)], objective=0.4)])  # attack-limited
    assert claims.infeasible(negative, control=control).passed
    inconclusive = claims.infeasible(negative, control=control, enabler=weak)
    assert inconclusive.verdict is Verdict.INCONCLUSIVE and "enabler" in inconclusive.message
    needs = claims.infeasible(negative, control=control, needs=Limitation.INFORMATION)
    assert needs.verdict is Verdict.INCONCLUSIVE and "attack-limited" in needs.message
    leaking = _evidence("neg", [_trial("neg", "a", [_image(0.15, 0.002)])])  # SSIM 0.15, yet identified
    assert claims.infeasible(leaking, control=control).verdict is Verdict.FAIL
    with pytest.raises(ValueError, match="must be a feasible claim"):
        claims.infeasible(negative, control=claims.regression(negative))


def test_a_pool_too_small_to_show_a_leak_proves_no_negative() -> None:
    control = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.7, 0.001)])]))
    tiny = _evidence("neg", [_trial("neg", "a", [_image(0.9, 1 / 20, pool=19)] * 8)])  # best p 1/20 > 0.05/8
    assert tiny.powerless and not tiny.leaks
    claim = claims.infeasible(tiny, control=control)
    assert claim.verdict is Verdict.INCONCLUSIVE and "too small" in claim.message


def test_an_image_whose_noise_control_is_reidentified_proves_nothing() -> None:
    """A nearly black private image (hubble_deep_field) is unlike every pool image: uniform noise is
    re-identified as it. Such an image can be no leak, and a negative resting on it is inconclusive."""
    control = claims.feasible(_evidence("ctl", [_trial("ctl", "a", [_image(0.7, 0.001)])]))
    odd = {**_image(0.02, 0.004), "null_p_values": [0.0039, 0.03, 0.45]}
    fine = {**_image(0.01, 0.6), "null_p_values": [0.8, 0.5, 0.9]}
    ev = _evidence("neg", [_trial("neg", "hubble", [odd]), _trial("neg", "rocket", [fine])])
    assert [i.image for i in ev.invalid] == ["hubble"] and not ev.leaks, "its p-value 0.004 is not a leak"
    claim = claims.infeasible(ev, control=control, needs=Limitation.ATTACK)
    assert claim.verdict is Verdict.INCONCLUSIVE and "cannot judge hubble#0" in claim.message
    assert not claims.feasible(ev).passed
    assert ev.to_dict()["invalid"] == ["hubble#0@seed0"]


def test_ordering_pairs_the_same_images_and_needs_a_leaking_high_side() -> None:
    high = _evidence("bs1", [_trial("bs1", "a", [_image(0.5, 0.001)]), _trial("bs1", "b", [_image(0.4, 0.002)])])
    low = _evidence("bs2", [_trial("bs2", "a", [_image(0.3, 0.2), _image(0.1, 0.5)]),
                            _trial("bs2", "b", [_image(0.45, 0.2), _image(0.1, 0.5)])])
    claim = claims.ordering(high, low, margin=0.0)
    assert claim.passed and claim.measured == pytest.approx(np.median([0.2, -0.05]))
    assert claims.ordering(high, low, margin=0.1).verdict is Verdict.FAIL
    assert claims.ordering(low, high, margin=0.0).verdict is Verdict.INCONCLUSIVE  # low does not re-identify
    other = _evidence("x", [_trial("x", "zzz", [_image(0.5, 0.001)])])
    with pytest.raises(ValueError, match="share no private image"):
        claims.ordering(high, other, margin=0.0)


# ------------------------------------------------------------------------------------------ packs: worst case
def test_verdict_modules_import_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, giacheck.verdicts, giacheck.claims; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


def test_the_objective_at_the_truth_is_evaluated_after_the_attack_on_a_fresh_instance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The diagnostic never reaches the attack: the instance that attacks is never handed the private images,
    and the fresh instance that evaluates the objective at them is made only after the attack returned."""
    import importlib

    from giacheck import runner

    invert_module = importlib.import_module("giacheck.attack.invert")
    from giacheck.runner import run_case
    from giacheck.specs import AttackSpec, RunOptions

    events: list[tuple[str, int]] = []
    original_init = invert_module.GradMatch.__init__
    original_call = invert_module.GradMatch.__call__
    original_objective = invert_module.GradMatch.objective

    def init(self, spec):
        original_init(self, spec)
        events.append(("made", id(self)))

    def call(self, *args, **kwargs):
        events.append(("attacked", id(self)))
        return original_call(self, *args, **kwargs)

    def objective(self, *args, **kwargs):
        events.append(("objective at truth", id(self)))
        return original_objective(self, *args, **kwargs)

    monkeypatch.setattr(invert_module.GradMatch, "__init__", init)
    monkeypatch.setattr(invert_module.GradMatch, "__call__", call)
    monkeypatch.setattr(invert_module.GradMatch, "objective", objective)
    result = run_case("lenet_sigmoid-32-bn_eval-bs1-stats_none", options=RunOptions(budget=AttackSpec(iterations=2)))
    kinds = [k for k, _ in events]
    assert kinds == ["made", "attacked", "made", "objective at truth"], events
    assert events[1][1] != events[3][1], "the attacking instance never evaluates the objective at the truth"
    assert result.truth.objective is not None and result.truth.objective >= 0
    assert "truth" not in " ".join(inspect.signature(invert_module.GradMatch.__call__).parameters)
    assert runner.truth_objective.__module__ == "giacheck.diagnostics"


def test_alpha_is_the_documented_default() -> None:
    assert ALPHA == 0.05
