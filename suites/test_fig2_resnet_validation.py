"""Paper §5.1, Figure 2: pre- vs post-activation ResNet-18, training-mode update, bs1, 32×32.

Claims: BatchNorm statistics that are shared and inverted exactly (``exact``, §4.3.2) help the attacker at
least as much as the naive use of post-update running statistics (``naive``, Huang et al.), and the
pre-activation network leaks at least as much as the post-activation one. ``proxy`` (§4.3.3: statistics of
auxiliary images chosen by gradient alignment) is recorded beside them as a pipeline regression.
An ordering whose higher side reconstructs nothing (SSIM below the infeasible level) is inconclusive.
"""

from __future__ import annotations

import pytest
from _claims import INFEASIBLE

POST, PRE = "resnet18_cifar", "resnet18_preact_cifar"


def _case(model: str, stats: str) -> str:
    return f"{model}-32-bn_train-bs1-stats_{stats}"


@pytest.mark.xfail(strict=True, reason=(
    "inconclusive in smoke: every training-mode bs1 case stays below SSIM 0.3 (exact/naive: post-act 0.040/0.035, "
    "pre-act 0.011/0.041), so the ordering compares two failures"))
@pytest.mark.parametrize("model", [POST, PRE])
def test_exact_statistics_at_least_naive(gia, model: str) -> None:
    gia.ordering(_case(model, "exact"), _case(model, "naive"), margin=0.0, min_high=INFEASIBLE)


@pytest.mark.xfail(strict=True, reason=(
    "inconclusive in smoke: pre-act exact SSIM 0.011 vs post-act exact 0.040, both below 0.3"))
def test_pre_act_at_least_post_act_with_exact_statistics(gia) -> None:
    gia.ordering(_case(PRE, "exact"), _case(POST, "exact"), margin=0.0, min_high=INFEASIBLE)


@pytest.mark.parametrize("model", [POST, PRE])
def test_proxy_statistics_regression(gia, model: str) -> None:
    gia.regression(_case(model, "proxy"))
