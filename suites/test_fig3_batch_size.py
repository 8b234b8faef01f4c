"""Paper §4.5.4 and Figure 3: client batch size. Swin-T, inference mode: bs1 leaks more than bs2.

Canonical (224×224) cases are pipeline regressions in ``smoke`` and verdicts in ``paper`` (see Figure 1's
module). The 32×32 adapted Swin-T, warm-started (``_claims.STATE``), gives an *analogue* of the claim, labelled
as such; it is judged in ``paper`` only, since its smoke verdict flips with float rounding
(``_claims.SWIN_32_SMOKE``).
"""

from __future__ import annotations

import pytest
from _claims import CONTROL_32, SWIN_32_SMOKE, S, pipeline_budget

from giacheck.specs import case_id

BS1_32, BS2_32 = f"swin_t_cifar-32-bn_eval-bs1-stats_none{S}", f"swin_t_cifar-32-bn_eval-bs2-stats_none{S}"


@pytest.mark.parametrize("bs", [1, 2])
def test_canonical_batch_size_pipeline_regression(gia, bs: int) -> None:
    gia.regression(case_id("swin_t", 224, bn="eval", bs=bs, stats="none"), options=pipeline_budget(gia.profile))


@pytest.mark.gpu
def test_canonical_bs1_leaks_more_than_bs2(gia) -> None:
    gia.require_profile("paper", "224x224 reconstructions need GPU budgets (DESIGN §9)")
    gia.ordering("swin_t-224-bn_eval-bs1-stats_none", "swin_t-224-bn_eval-bs2-stats_none", margin=0.0)


@pytest.mark.gpu
def test_canonical_bs2_collapses(gia) -> None:
    """"Doubling the batch size is sufficient to cause reconstruction quality to degrade almost entirely to
    noise" (§4.5.4): bs2 is not re-identified, with bs1 on the same first image as the enabler control."""
    gia.require_profile("paper", "224x224 reconstructions need GPU budgets (DESIGN §9)")
    gia.infeasible("swin_t-224-bn_eval-bs2-stats_none", control="swin_t-224-bn_eval-bs1-stats_none",
                   needs="attack-limited")


def test_analogue_32px_bs1_leaks_more_than_bs2(gia) -> None:
    """Analogue at 32×32 (adapted Swin-T), not the paper's setting: on the same private images (a bs2 batch
    starts with its bs1 trial's image), bs1 leaks more than bs2 (median paired SSIM difference > 0)."""
    gia.require_profile("paper", SWIN_32_SMOKE)
    gia.ordering(BS1_32, BS2_32, margin=0.0)


def test_analogue_32px_bs2_collapses(gia) -> None:
    """Analogue of "degrade almost entirely to noise": bs2 is not re-identified; bs1 of the same model on the same
    first images is the enabler control, the 32×32 ResNet-18 control the budget's."""
    gia.require_profile("paper", SWIN_32_SMOKE)
    gia.infeasible(BS2_32, control=CONTROL_32, enabler=BS1_32, needs="attack-limited")
