"""Paper Table 1 and §5.1, legacy CNN rows, on 32×32 CIFAR-stem ResNet-18 (smoke: CPU; same ids in paper).

Claim (Table 1): "ResNet-18 (post-act): inference-mode update — Yes; training-mode update — No;
ResNet-18 (pre-act): training-mode update — Yes."

The negative claim is conclusive only when its paired positive control (inference-mode update, same model,
same budget) reconstructs (DESIGN §6).
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, FEASIBLE, INFEASIBLE


def test_post_act_inference_mode_update_is_feasible(gia) -> None:
    gia.feasible(CONTROL_32, min_ssim=FEASIBLE)


def test_post_act_training_mode_update_is_infeasible(gia) -> None:
    gia.infeasible("resnet18_cifar-32-bn_train-bs1-stats_none", max_ssim=INFEASIBLE, control=CONTROL_32,
                   control_min_ssim=FEASIBLE)


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced (smoke, CPU): SSIM 0.011 (0.022 on an AMD EPYC; 1-cos 0.089) with the exact-statistics prior "
    "(relative, λ 1e-2); "
    "200-iteration probes: relative λ 1 lr 0.1 0.036, raw λ 1e-2 0.037, relative λ 0.1 lr 0.01 0.015, "
    "relative λ 1 lr 0.01 0.030; 12 Optuna TPE trials over Appendix A's space (raw prior, 400 it, selected by "
    "oracle SSIM, an upper bound): best 0.031; the paper's own SSIM for this cell is 0.054 (§5.1: its 'Yes' is "
    "visual), so no SSIM-thresholded reading of the claim is expected to hold (see the suites issue's note)"))
def test_pre_act_training_mode_update_is_feasible(gia) -> None:
    gia.feasible("resnet18_preact_cifar-32-bn_train-bs1-stats_exact", min_ssim=FEASIBLE)
