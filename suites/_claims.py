"""What the suites share (one place, so no module quietly changes a claim's control or budget).

Verdicts are re-identification against a held-out pool over the profile's challenge set (giacheck.verdicts);
there are no SSIM cutoffs here: SSIM values are reported columns.
"""

CONTROL_32 = "resnet18_cifar-32-bn_eval-bs1-stats_none"  # the positive control at 32×32 (eval-mode BN, bs1)


def pipeline_budget(profile: str):
    """Run options of a *pipeline regression* (numbers checked against baselines, no verdict): a small budget in
    smoke, where canonical resolutions cannot be concluded on a CPU (DESIGN §9), the profile's own in paper."""
    from giacheck.specs import AttackSpec, RunOptions

    return RunOptions(budget=AttackSpec(iterations=8, restarts=1, tv_weight=3e-2) if profile == "smoke" else None)
