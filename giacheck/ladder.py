"""Figure 4's controlled initialization (paper §5.3), rung by rung: starts indexed by their SSIM, and the
gradient-free denoiser a reconstruction must beat. A diagnostic: it starts from the private images.

Rung ``p`` starts from the true images with a fraction of their pixels (all channels of a pixel together)
replaced by uniform noise; the fraction is chosen so that the start's SSIM is the paper's start SSIM at ``p``
(:data:`PAPER_START_SSIM`, the ConvNeXt-T row of Figure 4, linearly interpolated between its rungs). Replacing a
fraction ``p`` itself gives a ladder (1, .78, .60, .48, .38, .33, .25, .20, .15, .07, .01 at 32 px) that does not
follow the paper's row, so ``p`` would not transfer. A reconstruction's gain is measured against the best
gradient-free denoiser of its start (3×3 median or Gaussian σ=1, and the start itself), not against the start:
smoothing a noisy start already raises SSIM.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from giacheck import metrics

__all__ = ["PAPER_START_SSIM", "controlled_init", "denoised_ssim", "ladder_init", "start_ssim_target"]

# Start SSIM of Figure 4's rungs p = 0, 0.1, …, 1.0 (the paper's ConvNeXt-T row)
PAPER_START_SSIM = (1.00, 0.66, 0.46, 0.36, 0.22, 0.16, 0.10, 0.05, 0.02, 0.01, 0.00)
_BISECTION_STEPS = 20


def start_ssim_target(p: float) -> float:
    """The paper's start SSIM at rung ``p`` in [0, 1] (linear between its rungs)."""
    grid = np.linspace(0.0, 1.0, len(PAPER_START_SSIM))
    return float(np.interp(p, grid, PAPER_START_SSIM))


def controlled_init(images: torch.Tensor, fraction: float, *, restarts: int, seed: int,
                    _draws: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Each restart starts from the true images with ``fraction`` of the pixels (all channels of a pixel
    together) replaced by uniform noise; the draws depend on ``seed`` only, so the masks of two fractions nest."""
    out = images.detach().cpu().unsqueeze(0).repeat(restarts, 1, 1, 1, 1)
    uniform, noise = _draws or _draw(out.shape, seed)
    return torch.where((uniform < fraction).expand_as(out), noise, out)


def _draw(shape: torch.Size, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    r, b, _c, h, w = shape
    return torch.rand(r, b, 1, h, w, generator=gen), torch.rand(shape, generator=gen)


def ladder_init(images: torch.Tensor, p: float, *, restarts: int, seed: int) -> tuple[torch.Tensor, float]:
    """Rung ``p``'s starts and the fraction of replaced pixels that gives restart 0 the paper's start SSIM at
    ``p`` (bisection; the start SSIM falls as the fraction grows, the masks being nested)."""
    shape = torch.Size((restarts, *images.shape))
    draws = _draw(shape, seed)
    if p <= 0 or p >= 1:
        fraction = float(p >= 1)
        return controlled_init(images, fraction, restarts=restarts, seed=seed, _draws=draws), fraction
    target = start_ssim_target(p)
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2
        start = controlled_init(images, mid, restarts=restarts, seed=seed, _draws=draws)[0]
        if metrics.match_and_score(start, images).ssim_mean > target:
            low = mid
        else:
            high = mid
    fraction = (low + high) / 2
    return controlled_init(images, fraction, restarts=restarts, seed=seed, _draws=draws), fraction


def denoised_ssim(start: torch.Tensor, original: torch.Tensor) -> float:
    """The best mean SSIM against ``original`` of ``start`` itself, its 3×3 median filter and its Gaussian
    filter (σ = 1 px), each channel of each image filtered separately: what a gradient-free denoiser reaches."""
    batch = start.detach().cpu().numpy()
    candidates = [batch,
                  ndimage.median_filter(batch, size=(1, 1, 3, 3), mode="reflect"),
                  ndimage.gaussian_filter(batch, sigma=(0, 0, 1, 1), mode="reflect")]
    return max(metrics.match_and_score(torch.from_numpy(np.clip(c, 0, 1)).float(), original).ssim_mean
               for c in candidates)
