"""Thresholds shared by the suites (one place, so no module quietly loosens a claim)."""

FEASIBLE = 0.6  # SSIM a reconstruction must reach to count as leakage
INFEASIBLE = 0.3  # SSIM at or below which nothing recognizable is left
CONTROL_32 = "resnet18_cifar-32-bn_eval-bs1-stats_none"  # the positive control at 32×32 (eval-mode BN, bs1)
PARTIAL = 0.3  # "partially feasible" (Figure 1, Swin-T): structure recovered, not the whole image


def pipeline_budget(profile: str):
    """Run options of a *pipeline regression* (numbers checked against baselines, no verdict): a small budget in
    smoke, where canonical resolutions cannot be concluded on a CPU (DESIGN §9), the profile's own in paper."""
    from giacheck.specs import AttackSpec, RunOptions

    return RunOptions(budget=AttackSpec(iterations=8, restarts=1, tv_weight=3e-2) if profile == "smoke" else None)
