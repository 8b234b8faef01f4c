"""Label inference from the update (iDLG, Zhao et al. 2020) for when labels are not known to the attacker.

With cross-entropy and non-negative penultimate features, the gradient of the classifier's bias (or the
row sums of its weight) is ``softmax - onehot``-shaped: negative only at the true class. For a batch we
take the B most negative entries (a count heuristic, exact only when the labels are distinct). A FedAvg
delta is ``-lr·Σ grad``, so its sign is flipped first.
"""

from __future__ import annotations

import torch

from giacheck.client import ClientUpdate
from giacheck.errors import InvalidUpdateError
from giacheck.specs import UpdateKind

__all__ = ["classifier_tensor", "infer_labels"]


def classifier_tensor(update: ClientUpdate, num_classes: int) -> torch.Tensor:
    """Per-class gradient signal: the last bias of size ``num_classes``, else the last weight's row sums."""
    bias = weight = None
    for name, t in update.tensors.items():
        if t.dim() == 1 and t.shape[0] == num_classes and name.endswith("bias"):
            bias = t
        elif t.dim() == 2 and t.shape[0] == num_classes:
            weight = t
    signal = bias if bias is not None else (weight.sum(dim=1) if weight is not None else None)
    if signal is None:
        raise InvalidUpdateError(f"label inference needs a classifier layer with {num_classes} outputs in the "
                                 "update; none found (use known labels: drop '-lab_inferred')")
    return -signal if update.kind is UpdateKind.FEDAVG else signal


def infer_labels(update: ClientUpdate, num_classes: int) -> torch.Tensor:
    """Infer the batch's labels from the update; returns a (B,) int64 tensor, in ascending class order."""
    signal = classifier_tensor(update, num_classes)
    return torch.sort(torch.topk(-signal, k=update.batch_size).indices).values.to(torch.int64)
