"""Distances between the dummy update and the client's, shared by the objective, proxy selection and tuning.

Both are functions of three sums accumulated tensor by tensor in the update's dtype (no flattening, no float64
copy): ``⟨g, t⟩``, ``‖g‖²`` and the target's norm, so the factored FedSGD path (``lowrank.py``) serves both.

- ``cosine``: ``1 − ⟨g,t⟩ / (‖g‖·‖t‖)`` (Geiping et al., the built-in attack; invariant to the update's scale);
- ``l2``: ``‖g − t‖² = ‖g‖² − 2⟨g,t⟩ + ‖t‖²`` (Zhu et al.'s DLG).
"""

from __future__ import annotations

import torch

from giacheck.specs import Distance

__all__ = ["Distance", "from_terms", "update_distance"]


def from_terms(kind: Distance | str, dot: torch.Tensor, norm_sq: torch.Tensor, target_norm: float) -> torch.Tensor:
    """The distance from ``⟨g,t⟩``, ``‖g‖²`` and ``‖t‖`` (a float: the target is fixed)."""
    if kind == Distance.COSINE:
        return 1.0 - dot / (norm_sq.sqrt() * target_norm + 1e-12)
    if kind == Distance.L2:
        return norm_sq - 2.0 * dot + target_norm**2
    raise ValueError(f"unknown distance {kind!r}; valid: {', '.join(Distance)}")


def update_distance(kind: Distance | str, update: list[torch.Tensor], target: list[torch.Tensor],
                    target_norm: float) -> torch.Tensor:
    """The distance between two updates given as matching lists of tensors."""
    dot = torch.stack([(u * t).sum() for u, t in zip(update, target, strict=True)]).sum()
    norm_sq = torch.stack([u.pow(2).sum() for u in update]).sum()
    return from_terms(kind, dot, norm_sq, target_norm)
