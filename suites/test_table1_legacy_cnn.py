"""Paper Table 1 / §5.1, legacy CNN rows, on 32×32 CIFAR-stem ResNet-18 (CPU smoke profile).

Claim (Table 1): "ResNet-18 (post-act) — inference-mode update: Yes; training-mode update: No."
The negative claim is only conclusive when its paired positive control (the inference-mode update, same
model, same budget) reconstructs: an attack that reconstructs nothing proves nothing (DESIGN §6).
"""

from __future__ import annotations

import pytest

from giacheck.runner import Result, run_case

CONTROL = "resnet18_cifar-32-bn_eval-bs1-stats_none"
FEASIBLE_SSIM = 0.6
INFEASIBLE_SSIM = 0.3


@pytest.fixture(scope="module")
def control() -> Result:
    return run_case(CONTROL, profile="smoke")


def test_inference_mode_update_is_feasible(control: Result) -> None:
    assert control.ssim_mean >= FEASIBLE_SSIM, (
        f"{CONTROL}: SSIM {control.ssim_mean:.3f} < {FEASIBLE_SSIM} — the positive control failed")


def test_training_mode_update_is_infeasible(control: Result) -> None:
    case = "resnet18_cifar-32-bn_train-bs1-stats_none"
    if control.ssim_mean < FEASIBLE_SSIM:
        pytest.fail(f"{case}: inconclusive — its control {CONTROL} reached only SSIM {control.ssim_mean:.3f} "
                    f"under the same budget", pytrace=False)
    result = run_case(case, profile="smoke")
    assert result.ssim_mean <= INFEASIBLE_SSIM, f"{case}: SSIM {result.ssim_mean:.3f} > {INFEASIBLE_SSIM}"
