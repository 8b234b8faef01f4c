"""Proxy normalization statistics (paper §4.3.3): pick the auxiliary batch whose update best aligns.

The auxiliary images come from a pool disjoint from the client's; candidates are ranked by the
attack's update distance of their simulated update to the client's update — never by similarity to the private images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from giacheck.attack.bnstats import NormStatsRecorder, NormTarget
from giacheck.attack.distance import Distance
from giacheck.attack.objective import Replica
from giacheck.errors import InvalidCaseError
from giacheck.specs import StatsAccess

__all__ = ["ProxyChoice", "select_proxy_stats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyChoice:
    """The chosen candidate's statistics, its index and every candidate's gradient distance."""

    target: NormTarget
    chosen: int
    distances: tuple[float, ...]


def select_proxy_stats(replica: Replica, aux_images: torch.Tensor, *,
                       distance: Distance | str = Distance.COSINE) -> ProxyChoice:
    """Split ``aux_images`` (K·B images) into K candidate batches and keep the statistics of the one whose update
    is nearest the client's by ``distance`` (the attack's own)."""
    batch = replica.update.batch_size
    if aux_images.shape[0] < batch or aux_images.shape[0] % batch:
        raise InvalidCaseError(f"proxy statistics need K·B auxiliary images (B={batch}), got {aux_images.shape[0]}")
    recorder = NormStatsRecorder(replica.norms)
    device = next(replica.net.parameters()).device
    best: tuple[float, int, NormTarget] | None = None
    distances = []
    for k, candidate in enumerate(aux_images.split(batch)):
        with torch.no_grad():
            dist = float(replica.distance(candidate.to(device), distance, recorder))
        distances.append(dist)
        if best is None or dist < best[0]:
            target = NormTarget(mean=dict(recorder.mean), var=dict(recorder.var), source=StatsAccess.PROXY)
            best = (dist, k, target)
    return ProxyChoice(target=best[2], chosen=best[1], distances=tuple(distances))
