"""Benchmarks that print numbers (``giacheck bench``): attack cost relative to training and to a bare loop.

Measured side by side in one process, on the same model and input (resnet18_cifar, 32×32, bs1, eval mode):

(a) attack iteration ÷ client training step;
(b) giacheck's attack iteration ÷ a bare, hand-written autograd loop of the same math;
(c) throughput of R=4 restarts batched (vmap) ÷ 4 restarts run one after another.

``giacheck bench --kernels`` measures instead, per model, an attack iteration with stock PyTorch ÷ one with
giacheck's kernels: the depthwise convolution for the second-order pass (``attack/kernels.py``) and the
factored update distance (``attack/lowrank.py``).

Each figure is the median over ``repeats`` interleaved rounds, so drifts in machine load hit both sides.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from giacheck.attack import invert
from giacheck.attack.kernels import stock_kernels
from giacheck.client import simulate_update
from giacheck.data import BundledImages, select_batch
from giacheck.models import build
from giacheck.specs import AttackSpec, BNMode, ClientSpec

__all__ = ["KERNEL_MODELS", "BenchResult", "KernelBench", "run_bench", "run_kernel_bench"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchResult:
    """Seconds per iteration of each contender and the three ratios."""

    model: str
    device: str
    train_step_s: float
    attack_iter_s: float
    bare_iter_s: float
    sequential4_iter_s: float
    batched4_iter_s: float
    attack_over_train: float
    giacheck_over_bare: float
    batched_speedup: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def _train_step_seconds(model, images, labels, steps: int) -> float:
    net = build("resnet18_cifar", images.shape[-1]).to(images.device)
    net.load_state_dict(model.state_dict())
    net.eval()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), labels).backward()
        opt.step()
    _sync(images.device)
    return (time.perf_counter() - start) / steps


def _bare_loop_seconds(model, update, labels, steps: int) -> float:
    """The same attack written by hand: autograd double backward, cosine, TV, signed Adam, clamp."""
    net = model.eval()
    params = list(net.parameters())
    target = list(update.tensors.values())
    target_norm = torch.sqrt(sum(t.pow(2).sum() for t in target))
    x = torch.rand(update.input_shape, device=target[0].device, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.1)
    start = time.perf_counter()
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(net(x), labels), params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        tv = (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
        loss = 1 - dot / (norm * target_norm) + 1e-2 * tv
        x.grad = torch.autograd.grad(loss, x)[0].sign()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    _sync(x.device)
    return (time.perf_counter() - start) / steps


def _attack_seconds(model, update, labels, steps: int, restarts: int, batched: bool) -> float:
    spec = AttackSpec(iterations=steps, restarts=restarts, batched_restarts=batched)
    return invert(model, update, labels=labels, spec=spec).seconds / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(*, device: str = "cpu", steps: int = 10, repeats: int = 3, resolution: int = 32) -> BenchResult:
    """Measure (a), (b), (c) on resnet18_cifar, eval-mode client, bs1; see the module docstring."""
    dev = torch.device(device)
    batch = select_batch(BundledImages(10), batch_size=1, size=resolution)
    images, labels = batch.images.to(dev), batch.labels.to(dev)
    model = build("resnet18_cifar", resolution).to(dev)
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=BNMode.EVAL))
    contenders = {
        "train": lambda: _train_step_seconds(model, images, labels, steps),
        "attack": lambda: _attack_seconds(model, update, labels, steps, 1, False),
        "bare": lambda: _bare_loop_seconds(model, update, labels, steps),
        "seq4": lambda: _attack_seconds(model, update, labels, steps, 4, False),
        "batch4": lambda: _attack_seconds(model, update, labels, steps, 4, True),
    }
    med = _interleaved_medians(contenders, repeats)
    return BenchResult(
        model="resnet18_cifar", device=str(dev),
        train_step_s=med["train"], attack_iter_s=med["attack"], bare_iter_s=med["bare"],
        sequential4_iter_s=med["seq4"], batched4_iter_s=med["batch4"],
        attack_over_train=med["attack"] / med["train"],
        giacheck_over_bare=med["attack"] / med["bare"],
        batched_speedup=med["seq4"] / med["batch4"],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelBench:
    """Seconds per attack iteration with stock PyTorch and with giacheck's kernels, on one model."""

    model: str
    device: str
    stock_iter_s: float
    kernels_iter_s: float
    speedup: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


# the smoke profile's costliest families: a legacy CNN, a window transformer, the depthwise-heavy ConvNeXt
KERNEL_MODELS = ("resnet18_cifar", "swin_t_cifar", "convnext_t_cifar")


def run_kernel_bench(models: tuple[str, ...] = KERNEL_MODELS, *,
                     device: str = "cpu", steps: int = 10, repeats: int = 3,
                     resolution: int = 32) -> list[KernelBench]:
    """Stock vs giacheck kernels, interleaved ``repeats`` times per model (eval-mode client, bs1)."""
    dev = torch.device(device)
    batch = select_batch(BundledImages(10), batch_size=1, size=resolution)
    images, labels = batch.images.to(dev), batch.labels.to(dev)
    return [_kernel_bench(name, dev, images, labels, steps, repeats, resolution) for name in models]


def _kernel_bench(name: str, dev: torch.device, images, labels, steps: int, repeats: int,
                  resolution: int) -> KernelBench:
    model = build(name, resolution).to(dev)
    update = simulate_update(model, images, labels, ClientSpec(bn_mode=BNMode.EVAL))

    def stock() -> float:
        with stock_kernels():
            return _attack_seconds(model, update, labels, steps, 1, False)

    med = _interleaved_medians({"stock": stock, "kernels": lambda: _attack_seconds(model, update, labels, steps, 1,
                                                                                    False)}, repeats)
    return KernelBench(model=name, device=str(dev), stock_iter_s=med["stock"], kernels_iter_s=med["kernels"],
                       speedup=med["stock"] / med["kernels"])


def _interleaved_medians(contenders: dict, repeats: int) -> dict[str, float]:
    """One warm-up call each (allocator, kernels, lazy imports), then ``repeats`` interleaved rounds."""
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(fn())
    return {k: statistics.median(v) for k, v in samples.items()}
