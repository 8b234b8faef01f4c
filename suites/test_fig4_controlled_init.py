"""Paper §5.3 and Figure 4: controlled initialization — the true image with a fraction p of its pixels
replaced by noise (a diagnostic of how much the gradient itself can guide, not an attack).

Claims: Swin-T reconstructs from any start (SSIM stays high up to p = 1.0); robust models (ViT-B/16,
MaxViT-T, ConvNeXt-T) gain little or even lose relative to their starting point. Each case records the SSIM
of its initialization (``threat.init_ssim``) beside the reconstruction's.

``smoke`` runs the noisy start p = 0.8 on the adapted 32×32 Swin-T (positive) with 200 iterations. The negative
side does not reproduce at that budget (see the xfail below) and costs about 3 minutes of CPU, so it runs in
``paper``, as does the full ladder p = 0, 0.1, …, 1.0 per architecture. "Gains little" is read as: the
reconstruction's SSIM at most ``GAIN_LIMIT`` above its start, from noisy starts (p ≥ 0.6: fewer than the 40 %
correct pixels from which the paper sees robust models recover, §5.3).
"""

from __future__ import annotations

import pytest
from _claims import FEASIBLE

from giacheck.specs import AttackSpec, RunOptions, case_id

LADDER = [round(0.1 * i, 1) for i in range(11)]
NOISY = 0.6  # starts with p >= NOISY hold fewer than 40 % of the true pixels
# The robust models with the client BN mode of the paper's realistic pipeline: MaxViT-T is the one with BatchNorm,
# and with an inference-mode update it is not robust at all (see test_table1_lowres).
ROBUST = {"vit_b16_cifar": "eval", "maxvit_t_cifar": "train", "convnext_t_cifar": "eval"}  # model: client BN mode
GAIN_LIMIT = 0.1  # "gains little": reconstruction SSIM at most this much above the initialization's


def _budget(profile: str) -> RunOptions:
    """The ladder's budget: 200 iterations in smoke (labelled in the docstring), the profile's own in paper."""
    return RunOptions(budget=AttackSpec(iterations=200, restarts=1, tv_weight=3e-2) if profile == "smoke" else None)


def _gain(gia, case_id: str):
    result = gia.regression(case_id, options=_budget(gia.profile))
    gain = result.ssim_mean - result.threat.init_ssim
    assert gain <= GAIN_LIMIT, (f"{result.case_id}: reconstruction SSIM {result.ssim_mean:.3f} gained {gain:+.3f} "
                                f"over its initialization ({result.threat.init_ssim:.3f}), limit {GAIN_LIMIT}")


def test_swin_recovers_from_a_noisy_start(gia) -> None:
    result = gia.feasible(case_id("swin_t_cifar", 32, bn="eval", bs=1, stats="none", init=0.8), min_ssim=FEASIBLE,
                          options=_budget(gia.profile))
    assert result.threat.init_ssim < result.ssim_mean, "the reconstruction should improve on its start"


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(  # a baseline failure (pytest.fail) still fails
    "not reproduced as 'gains at most 0.1' (smoke, 200 iterations): convnext_t_cifar gains more than 0.1 over its "
    "start at p = 0.8 — still far below Swin-T from the same start, and the paper itself credits such gains to TV "
    "smoothing (§5.3, Figure 4; numbers: README, smoke table)"))
@pytest.mark.slow
def test_convnext_gains_little_from_a_noisy_start(gia) -> None:
    gia.require_profile("paper", "convnext_t_cifar costs 0.8 s per attack iteration on a CPU")
    _gain(gia, "convnext_t_cifar-32-bn_eval-bs1-stats_none-init_p0.8")


@pytest.mark.slow
@pytest.mark.parametrize("p", LADDER)
def test_swin_ladder(gia, p: float) -> None:
    gia.require_profile("paper", "the full ladder is 11 attacks per architecture")
    gia.feasible(case_id("swin_t_cifar", 32, bn="eval", bs=1, stats="none", init=p), min_ssim=FEASIBLE)


@pytest.mark.slow
@pytest.mark.parametrize("p", LADDER)
@pytest.mark.parametrize("model", [pytest.param(m, id=f"{m}-32-bn_{bn}") for m, bn in ROBUST.items()])
def test_robust_models_ladder(gia, model: str, p: float) -> None:
    """Every rung is recorded (initialization and reconstruction SSIM); from noisy starts the gain is a claim."""
    gia.require_profile("paper", f"{model} costs 0.75-1.3 s per attack iteration on a CPU")
    case = case_id(model, 32, bn=ROBUST[model], bs=1, stats="none", init=p)
    if p >= NOISY:
        _gain(gia, case)
    else:
        gia.regression(case)
