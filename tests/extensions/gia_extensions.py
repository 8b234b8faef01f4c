"""A user's extensions of giacheck, written against its public seams only (no giacheck file edited).

- ``DLG``: Zhu et al.'s Deep Leakage from Gradients — the squared L2 update distance minimized with L-BFGS
  from uniform noise (no TV, no box during the search; clamped to [0,1] at the end), registered as ``dlg``;
- ``TopK``: keep the largest-magnitude fraction of every update tensor (gradient sparsification), ``topk``;
- ``SoftLabels``: classification with one-hot targets given as probabilities, and ``soft_lenet``, a model
  entry of that task.

Loaded as a pytest plugin (``-p gia_extensions``) or imported; the folder must be on ``sys.path``.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from giacheck import Reconstruction, register_attack, register_defence, register_model, register_task
from giacheck.attack import Replica
from giacheck.defences import DefenceStage
from giacheck.models import ModelEntry
from giacheck.models.lenet import SigmoidLeNet
from giacheck.tasks import Classification


@register_attack("dlg")
class DLG:
    """L-BFGS on the L2 update distance; ``spec.iterations`` bounds the objective evaluations per restart."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def __call__(self, model, update, *, labels, stats, init, seed) -> Reconstruction:
        start = time.perf_counter()
        replica = Replica(model, update, labels)
        gen = torch.Generator().manual_seed(seed)
        images, finals, curves = [], [], []
        for r in range(self.spec.restarts):
            x0 = init[r] if init is not None else torch.rand(update.input_shape, generator=gen)
            x = x0.clone().requires_grad_(True)
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=self.spec.iterations, history_size=50,
                                    line_search_fn="strong_wolfe")
            curve = []

            def closure(x=x, curve=curve):
                x.grad = None
                loss = replica.distance(x, "l2")
                loss.backward()
                curve.append(float(loss.detach()))
                return loss

            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
                finals.append(float(replica.distance(x, "l2")))
            images.append(x.detach())
            curves.append(curve)
        length = max(len(c) for c in curves)
        curve = torch.tensor([[c[min(i, len(c) - 1)] for c in curves] for i in range(length)])
        return Reconstruction(images=torch.stack(images).cpu(), objective=tuple(finals), grad_distance=tuple(finals),
                              selected=min(range(len(finals)), key=finals.__getitem__), curve=curve,
                              labels=labels, batched=False, iterations=length, seconds=time.perf_counter() - start)


@register_defence("topk")
class TopK:
    """Share only the largest ``fraction`` of each update tensor's entries by magnitude (the rest zeroed)."""

    name = "topk"
    stage = DefenceStage.UPDATE

    def __init__(self, value: float | None) -> None:
        if value is None or not 0 < value <= 1:
            raise ValueError(f"topk takes a fraction in (0, 1], got {value!r}")
        self.fraction = value

    @property
    def token(self) -> str:
        return f"topk{self.fraction:g}"

    def params(self) -> dict[str, float]:
        return {"fraction": self.fraction}

    def apply(self, tensors, *, generator):
        out = {}
        for name, t in tensors.items():
            k = max(1, int(self.fraction * t.numel()))
            threshold = t.detach().abs().flatten().kthvalue(t.numel() - k + 1).values
            out[name] = t * (t.detach().abs() >= threshold)
        return out


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


class SoftLabels(Classification):
    """Classification trained on one-hot probability targets; labels are not inferable from them here."""

    name = "soft_labels"
    labels_inferable = False

    def targets(self, batch, device):
        return nn.functional.one_hot(batch.labels, 10).float().to(device)


register_task("soft_labels")(SoftLabels())


@register_model
def soft_lenet() -> ModelEntry:
    """DLG's sigmoid LeNet trained with soft targets (the soft_labels task)."""
    return ModelEntry(name="soft_lenet", upstream="DLG LeNet, soft targets", factory=SigmoidLeNet, default_size=16,
                      num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size_multiple=4,
                      task="soft_labels", loss=soft_cross_entropy, description="a user's task plug-in")
