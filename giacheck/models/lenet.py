"""DLG-style LeNet with sigmoid activations (Zhu et al. 2019): the easiest target, a sanity control."""

from __future__ import annotations

from torch import nn

from giacheck.models.registry import ModelEntry, register_model


class SigmoidLeNet(nn.Module):
    """Three 5x5 convolutions with sigmoids and one linear layer, as in the DLG reference code."""

    def __init__(self, resolution: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
        )
        self.fc = nn.Linear(12 * (resolution // 4) ** 2, num_classes)
        for param in self.parameters():  # DLG's init: with PyTorch's default the update barely depends on x
            nn.init.uniform_(param, -0.5, 0.5)

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


@register_model
def lenet_sigmoid() -> ModelEntry:
    """Sigmoid LeNet from DLG; no normalization layers."""
    return ModelEntry(
        name="lenet_sigmoid", upstream="DLG LeNet (Zhu et al. 2019)", factory=SigmoidLeNet,
        default_size=32, num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size_multiple=4,
        description="sigmoid LeNet, DLG control",
    )
