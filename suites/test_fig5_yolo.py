"""Paper §5.4 and Figure 5: YOLOv8-nano on detection, bs1, boxes known to the attacker.

Claims: the unmodified YOLOv8n is not feasible; a pre-activation variant with a training-mode update is
not feasible; the BasicBlock variant (C2f → ResNet BasicBlocks: shallower, with skip connections) with an
inference-mode update is feasible.

At random initialization an eval-mode YOLOv8n gives almost no signal (1 − cos between the updates of the
true image and of a gray image is about 1e-7; BasicBlock about 1e-4: running statistics are still 0/1 and
activations vanish by P5), so the positive claim needs trained or calibrated weights and GPU budgets: in
``smoke`` the three cases run as pipeline regressions, the verdicts need ``paper``.
"""

from __future__ import annotations

import pytest
from _claims import pipeline_budget

UNMODIFIED = "yolov8n-256-bn_eval-bs1-stats_none"
PREACT_TRAIN = "yolov8n_preact-256-bn_train-bs1-stats_none"
BASICBLOCK = "yolov8n_basicblock-256-bn_eval-bs1-stats_none"


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
