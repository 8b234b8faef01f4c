"""Paper Table 1 and §5.1, legacy CNN rows, on 32×32 CIFAR-stem ResNet-18 (smoke: CPU; same ids in paper).

Claim (Table 1): "ResNet-18 (post-act): inference-mode update — Yes; training-mode update — No;
ResNet-18 (pre-act): training-mode update — Yes."

Every model runs warm-started (``_claims.STATE``). Verdicts are re-identification against a held-out pool over
the profile's challenge set (worst image). The negative claim is conclusive only when its paired positive
control (inference-mode update, same model, same budget and pool) re-identifies; it is labelled attack- or
information-limited.
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, S


def test_post_act_inference_mode_update_is_feasible(gia) -> None:
    gia.feasible(CONTROL_32)


def test_post_act_training_mode_update_is_infeasible(gia) -> None:
    # the control is also the same-architecture enabler control: the same network's inference-mode update
    gia.infeasible(f"resnet18_cifar-32-bn_train-bs1-stats_none{S}", control=CONTROL_32, needs="attack-limited")


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced in smoke, warm-started: not re-identified — most leaking image zidane SSIM 0.011, rank 51 of 257 "
    "(p 0.20), attack-limited (objective 0.56 against the truth's 0.0039; README, model-state table: at random "
    "initialization 0.025, rank 8); the paper's own SSIM for this cell is 0.054 (§5.1: its 'Yes' is visual)"))
def test_pre_act_training_mode_update_is_feasible(gia) -> None:
    gia.feasible(f"resnet18_preact_cifar-32-bn_train-bs1-stats_exact{S}")
