"""A vendor's model, as the README's pack and audit walk-throughs use it (not registered: named by string).

``giacheck.examples:classifier`` is a small BatchNorm CNN with global pooling; ``classifier_frozen_bn`` is the
same network after a "harmless" change that freezes BatchNorm (running statistics in the forward, as in many
fine-tuning recipes). With a training-mode client at batch size 4 and 16×16 inputs, the smoke attack reaches
SSIM 0.089 on the first and 0.320 on the second: a pack recorded on the first fails on the second.

``plain_classifier`` is the same CNN as most vendors have it, a factory returning a plain ``nn.Module``: giacheck
writes its entry from the module and the flags (``--model giacheck.examples:plain_classifier --input-size 16
--num-classes 10``; see :mod:`giacheck.models.factories`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from giacheck.models import ModelEntry

__all__ = ["FrozenBatchNorm2d", "classifier", "classifier_frozen_bn", "plain_classifier"]


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalizes with its running statistics (and never updates them)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def _network(norm: type[nn.BatchNorm2d], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), norm(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), norm(32), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, stride=2, padding=1), norm(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def classifier() -> ModelEntry:
    """The vendor's 3-layer BatchNorm CNN (any input size, 10 classes)."""
    return ModelEntry(name="acme_classifier", upstream="giacheck.examples", default_size=16, num_classes=10,
                      factory=lambda resolution, num_classes: _network(nn.BatchNorm2d, num_classes),
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True, description="example vendor CNN")


def classifier_frozen_bn() -> ModelEntry:
    """The same CNN with frozen BatchNorm: the model change that makes the pack fail."""
    return ModelEntry(name="acme_classifier_frozen_bn", upstream="giacheck.examples", default_size=16,
                      num_classes=10, factory=lambda resolution, num_classes: _network(FrozenBatchNorm2d, num_classes),
                      norm_kinds=("BatchNorm2d",), has_batchnorm=True, description="example vendor CNN, frozen BN")


def plain_classifier(num_classes: int = 10) -> nn.Module:
    """The vendor's CNN as a plain module (any input size): no ModelEntry, the flags supply the metadata."""
    return _network(nn.BatchNorm2d, num_classes)
