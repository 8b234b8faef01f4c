"""Paper §5.1, Figure 2: pre- vs post-activation ResNet-18, training-mode update, bs1, 32×32.

Claims: BatchNorm statistics that are shared and inverted exactly (``exact``, §4.3.2) help the attacker at
least as much as the naive use of post-update running statistics (``naive``, Huang et al.), and the
pre-activation network leaks at least as much as the post-activation one. ``proxy`` (§4.3.3: statistics of
auxiliary images chosen by gradient alignment) is recorded beside them as a pipeline regression.
An ordering whose higher side is not re-identified is inconclusive.

The paper's own SSIM for its best Figure 2 cell (pre-activation, shared running statistics, its method) is
0.054, against 0.030 for Huang et al. (§5.1): the "feasible" reading of Figure 2 is visual, and every number
in it is below any feasibility level. The conclusive part at CPU scale is the negative one: post-activation
ResNet-18 with a training-mode update stays infeasible whatever the statistics access, with the inference-mode
update of the same network as the positive control under the same budget. Both networks run warm-started
(``_claims.STATE``): ``naive`` then regularizes toward running statistics of a network in training, not toward
0.9 × (0, 1) + 0.1 × the batch's, as it does at random initialization.
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, STATE

from giacheck.specs import case_id

POST, PRE = "resnet18_cifar", "resnet18_preact_cifar"


def _case(model: str, stats: str) -> str:
    return case_id(model, 32, bn="train", bs=1, stats=stats, state=STATE)


@pytest.mark.parametrize("stats", ["exact", "naive", "proxy"])
def test_post_act_training_mode_infeasible_whatever_the_statistics(gia, stats: str) -> None:
    # the control is the same network's inference-mode update; the claim is practical (the attack fails)
    gia.infeasible(_case(POST, stats), control=CONTROL_32, needs="attack-limited")


@pytest.mark.xfail(strict=True, reason=(
    "inconclusive in smoke: neither the exact- nor the naive-statistics case is re-identified (warm-started: all "
    "four at SSIM ≤ 0.012, rank ≥ 45 of 257), so the ordering compares two failures (README, model-state table); "
    "the paper's own pair is 0.054 vs 0.030 (§5.1)"))
@pytest.mark.parametrize("model", [POST, PRE])
def test_exact_statistics_at_least_naive(gia, model: str) -> None:
    gia.ordering(_case(model, "exact"), _case(model, "naive"), margin=0.0)


@pytest.mark.xfail(strict=True, reason=(
    "inconclusive in smoke: neither the pre-act nor the post-act exact-statistics case is re-identified (0.011 and "
    "-0.005, warm-started; README, model-state table)"))
def test_pre_act_at_least_post_act_with_exact_statistics(gia) -> None:
    gia.ordering(_case(PRE, "exact"), _case(POST, "exact"), margin=0.0)


def test_pre_act_proxy_statistics_regression(gia) -> None:
    gia.regression(_case(PRE, "proxy"))
