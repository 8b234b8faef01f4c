"""Paper Table 1 and §5.1, legacy CNN rows, on 32×32 CIFAR-stem ResNet-18 (smoke: CPU; same ids in paper).

Claim (Table 1): "ResNet-18 (post-act): inference-mode update — Yes; training-mode update — No;
ResNet-18 (pre-act): training-mode update — Yes."

Every model runs BN-calibrated (``_claims.STATE``). Verdicts are re-identification against a held-out pool over
the profile's challenge set (worst image). The negative claim is conclusive only when its positive control
(``_claims.CONTROL_32``, same budget and pool) re-identifies; it is labelled attack- or information-limited.

The inference-mode claim does not reproduce at the smoke budget once BatchNorm is calibrated: the attack stops
far above the truth's objective (strict xfail below). It is a ``paper`` claim; smoke keeps a labelled analogue at
random initialization, where inference-mode BatchNorm is the identity (an update without normalization).
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, IDENTITY_BN_32, STATE

from giacheck.specs import case_id

EVAL = case_id("resnet18_cifar", 32, bn="eval", bs=1, stats="none", state=STATE)


@pytest.mark.gpu
def test_post_act_inference_mode_update_is_feasible(gia) -> None:
    gia.require_profile("paper", "the BN-calibrated ResNet-18 does not reconstruct at a CPU budget (see the smoke "
                                 "xfail below)")
    gia.feasible(EVAL)


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced in smoke: BN-calibrated, no image re-identified — most leaking image rocket SSIM 0.041, rank 47 "
    "of 257; attack-limited (objective 0.605 against the truth's 0.0039; README, model-state table)"))
def test_post_act_inference_mode_update_is_feasible_at_the_smoke_budget(gia) -> None:
    gia.feasible(EVAL)


def test_post_act_inference_mode_analogue_without_normalization(gia) -> None:
    """Smoke analogue, labelled: random initialization, where inference-mode BatchNorm is the identity."""
    gia.feasible(IDENTITY_BN_32)


def test_post_act_training_mode_update_is_infeasible(gia) -> None:
    # the same network's inference-mode update, the enabler control, is itself a paper claim (above)
    enabler = EVAL if gia.profile == "paper" else None
    gia.infeasible(case_id("resnet18_cifar", 32, bn="train", bs=1, stats="none", state=STATE), control=CONTROL_32,
                   enabler=enabler, needs="attack-limited")


@pytest.mark.xfail(strict=True, reason=(
    "not reproduced in smoke: not re-identified — most leaking image rocket SSIM 0.025, rank 8 of 257 (p 0.031 > "
    "0.025), attack-limited (objective 0.125 against the truth's 0.0013; README, smoke table); the paper's own SSIM "
    "for this cell is 0.054 (§5.1: its 'Yes' is visual)"))
def test_pre_act_training_mode_update_is_feasible(gia) -> None:
    gia.feasible(case_id("resnet18_preact_cifar", 32, bn="train", bs=1, stats="exact", state=STATE))
