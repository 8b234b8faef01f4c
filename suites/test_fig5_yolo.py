"""Paper §5.4 and Figure 5: YOLOv8-nano on detection, bs1, boxes known to the attacker.

Claims: the unmodified YOLOv8n is not feasible; a pre-activation variant with a training-mode update is
not feasible; the BasicBlock variant (C2f → ResNet BasicBlocks: shallower, with skip connections) with an
inference-mode update is feasible.

The three networks run BN-calibrated (``_claims.CALIBRATED``: a warm start would need boxes for the auxiliary
images). At random initialization an eval-mode YOLOv8n gives almost no signal: 1 − cos between the updates of
the bus image and of a gray image is 1.2e-11 (BasicBlock 1.9e-4), because running statistics are still 0/1 and
activations vanish by P5. Calibrated it is 1.05 (BasicBlock 0.998; the pre-activation training-mode update 0.987
in both states), measured with ``giacheck signal``. The positive claim still needs GPU budgets: in ``smoke``
the three cases run as pipeline regressions, the verdicts need ``paper``.
"""

from __future__ import annotations

import pytest
from _claims import CALIBRATED, pipeline_budget

UNMODIFIED = f"yolov8n-256-bn_eval-bs1-stats_none-state_{CALIBRATED}"
PREACT_TRAIN = f"yolov8n_preact-256-bn_train-bs1-stats_none-state_{CALIBRATED}"
BASICBLOCK = f"yolov8n_basicblock-256-bn_eval-bs1-stats_none-state_{CALIBRATED}"


@pytest.mark.parametrize("case", [UNMODIFIED, PREACT_TRAIN, BASICBLOCK])
def test_yolo_pipeline_regression(gia, case: str) -> None:
    gia.regression(case, options=pipeline_budget(gia.profile))


@pytest.mark.gpu
def test_basicblock_inference_mode_feasible(gia) -> None:
    gia.require_profile("paper", "YOLO at 256x256 needs GPU budgets")
    gia.feasible(BASICBLOCK)


@pytest.mark.gpu
@pytest.mark.parametrize("case", [UNMODIFIED, PREACT_TRAIN])
def test_unmodified_and_preact_infeasible(gia, case: str) -> None:
    gia.require_profile("paper", "YOLO at 256x256 needs GPU budgets")
    gia.infeasible(case, control=BASICBLOCK, needs="attack-limited")
