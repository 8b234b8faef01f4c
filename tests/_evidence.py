"""Evidence built by hand for the claim, pack and record tests (what ``Result.to_dict()`` carries per trial)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from giacheck.data import heldout_pool, open_source, select_batch
from giacheck.reid import reidentify_batch
from giacheck.verdicts import Evidence


def _image(ssim: float, p: float, *, patch_p: float | None = 0.5, pool: int = 99) -> dict[str, Any]:
    return {"ssim": ssim, "rank": max(1, round(p * (pool + 1))), "pool_size": pool, "p_value": p, "z": 0.0,
            "chance_mean": 0.04, "chance_q95": 0.12, "chance_max": 0.3, "patch_ssim": 0.3, "patch_p_value": patch_p,
            "patch_chance_q95": 0.4}


def _trial(case: str, image: str, per_image: list[dict[str, Any]], *, seed: int = 0, objective: float = 0.5,
           truth: float | None = 0.01) -> dict[str, Any]:
    return {"case_id": case, "seed": seed, "objective": objective,
            "reid": {"image": image, "per_image": per_image, "pool_size": 99, "pool": "test"},
            "truth": {"objective": truth}}


def _evidence(case: str, trials: list[dict[str, Any]]) -> Evidence:
    return Evidence.from_results(case, trials)


def _batch_of_8_with_one_leak() -> tuple[Evidence, float]:
    """Real images and the real re-identification test: of 8 private images, one is reconstructed recognizably
    (the original with noise of amplitude 0.35 added) and seven are independent noise; returns the evidence and
    the batch-mean SSIM an old mean-based rule would have looked at."""
    source = open_source("bundled", num_classes=1000)
    batch = select_batch(source, batch_size=8, size=32)
    gen = torch.Generator().manual_seed(0)
    recon = torch.rand(batch.images.shape, generator=gen)
    recon[3] = (batch.images[3] + 0.35 * (torch.rand(batch.images[3].shape, generator=gen) - 0.5)).clamp(0, 1)
    pool = heldout_pool(source, exclude=list(batch.names), size=32)
    reids = reidentify_batch(recon, batch.images, pool.images, patch=4)
    trial = {"case_id": "vendor-32-bn_eval-bs8-stats_none", "seed": 0, "objective": 0.1,
             "reid": {"image": batch.names[0], "per_image": [r.to_dict() for r in reids], "pool_size": len(pool.names),
                      "pool": "bundled"}, "truth": {"objective": 0.01}}
    return Evidence.from_results(trial["case_id"], [trial]), float(np.mean([r.ssim for r in reids]))
