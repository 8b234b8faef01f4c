"""What the suites share (one place, so no module quietly changes a claim's control or budget).

Verdicts are re-identification against a held-out pool over the profile's challenge set (giacheck.verdicts);
there are no SSIM cutoffs here: SSIM values are reported columns.
"""

# The global model's state in every suite (giacheck.modelstate). BatchNorm models run BN-calibrated (``bncal``):
# running statistics estimated on the bundled calibration images (never a client's or a pool's), weights at
# random initialization. At random initialization an inference-mode BatchNorm is the identity (running statistics
# 0 and 1), which turns "inference-mode vs training-mode update" into "no normalization vs BatchNorm"; a deployed
# model has calibrated statistics. LayerNorm-only models (Swin, ConvNeXt, ViT) have no state to calibrate and keep
# ids without a state. The README's model-state table re-judges every claim under random, bncal and warm100.
STATE = "bncal"

# The positive control of every 32×32 negative: ConvNeXt-T with its canonical (unadapted) stem, inference mode,
# bs1. LayerNorm only, so it is the same network in every state; it re-identifies both smoke images (SSIM 0.88
# and 0.96). The BN-calibrated ResNet-18 does not reconstruct at the smoke budget (Table 1 suite), so no ResNet-18
# can be the control of a negative there.
CONTROL_32 = "convnext_t_lowres_unadapted-32-bn_eval-bs1-stats_none"
# A labelled smoke analogue, not a realistic state: ResNet-18 at random initialization in inference mode, where
# BatchNorm is the identity, i.e. an update without normalization.
IDENTITY_BN_32 = "resnet18_cifar-32-bn_eval-bs1-stats_none"


def pipeline_budget(profile: str):
    """Run options of a *pipeline regression* (numbers checked against baselines, no verdict): a small budget in
    smoke, where canonical resolutions cannot be concluded on a CPU (DESIGN §9), the profile's own in paper."""
    from giacheck.specs import AttackSpec, RunOptions

    return RunOptions(budget=AttackSpec(iterations=8, restarts=1, tv_weight=3e-2) if profile == "smoke" else None)
