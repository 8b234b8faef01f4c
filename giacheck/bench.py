"""Benchmarks that print numbers (``giacheck bench``): what attacks cost, and what stacking them saves.

Per model (resnet18_cifar, swin_t_cifar, convnext_t_cifar at 32×32; with ``--device cuda`` also Swin-T and
ResNet-18 at 224×224), on the same weights, images and budget (eval-mode clients, bs1), side by side in one
process:

- one attack's iteration ÷ the client's training step, and ÷ a bare, hand-written autograd loop of the same math;
- K = 8 trials (8 private images, one attack each) stacked (``attack/trials.py``) against the same 8 run one
  after another: seconds per iteration of all 8, and the speed-up. Where the math or the device does not allow
  stacking, the row names the reason and the 8 run one after another (speed-up ≈ 1);
- with ``memory=True``, the peak resident memory (CPU; peak allocated memory on CUDA) of each of the two, each
  measured in a fresh process.

Times cover the attack loop (``Reconstruction.seconds``), not the replica's one-off setup. Each figure is the
median over ``repeats`` interleaved rounds, so drifts in machine load hit every contender alike.

``giacheck bench --defences`` measures instead, per defence chain that only rescales the update, two DP-SGD-ready
(GroupNorm) ResNet-18 trials at 32×32 attacked by ``gradmatch`` (the defended replica, one after another) and by
``gradmatch_rescaled`` (undefended view: factored and stacked).

``giacheck bench --kernels`` measures instead, per model, an attack iteration with stock PyTorch ÷ one with
giacheck's kernels: the depthwise convolution for the second-order pass (``attack/kernels.py``) and the
factored update distance (``attack/lowrank.py``).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from giacheck.attack import Trial, invert, invert_trials
from giacheck.attack.invert import MAX_STACKED, GradMatch, GradMatchRescaled
from giacheck.attack.kernels import stock_kernels
from giacheck.attack.trials import StackedReplica
from giacheck.client import simulate_update
from giacheck.data import BundledImages, select_batch
from giacheck.defences import make_defences, rescales_only
from giacheck.errors import GiacheckError
from giacheck.models import build
from giacheck.specs import AttackSpec, BNMode, ClientSpec

__all__ = ["DEFENCE_CHAINS", "GPU_MODELS", "KERNEL_MODELS", "TRIAL_MODELS", "DefenceBench", "KernelBench",
           "TrialBench", "run_bench", "run_defence_bench", "run_kernel_bench"]

TRIALS = 8
TRIAL_MODELS = (("resnet18_cifar", 32), ("swin_t_cifar", 32), ("convnext_t_cifar", 32))
GPU_MODELS = (("swin_t", 224), ("resnet18", 224))  # added on a GPU, where stacking matters most


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialBench:
    """One model's row: seconds per iteration of each contender and the ratios."""

    model: str
    resolution: int
    device: str
    trials: int
    train_step_s: float
    attack_iter_s: float
    bare_iter_s: float
    sequential_iter_s: float  # all ``trials`` attacks, one after another
    batched_iter_s: float  # all ``trials`` attacks, stacked
    speedup: float
    attack_over_train: float
    giacheck_over_bare: float
    stacked: bool
    fallback: str | None  # why the trials ran one after another, where they did
    peak_sequential_mb: float | None = None  # peak memory of the process (CPU) or allocated (CUDA)
    peak_batched_mb: float | None = None
    attack_sequential_mb: float | None = None  # what the attacks added above the setting (models, updates)
    attack_batched_mb: float | None = None

    def to_dict(self) -> dict[str, float | str | bool | None]:
        return asdict(self)


class _Setting:
    """A model with ``trials`` clients (one bundled image each) and their updates, on one device."""

    def __init__(self, name: str, resolution: int, device: torch.device, trials: int) -> None:
        pool = select_batch(BundledImages(10), batch_size=trials, size=resolution)
        self.model = build(name, resolution).to(device)
        self.images = pool.images.to(device).unsqueeze(1)  # (trials, 1, C, H, W)
        self.labels = [y.reshape(1) for y in pool.labels.to(device)]
        self.updates = [simulate_update(self.model, x, y, ClientSpec(bn_mode=BNMode.EVAL))
                        for x, y in zip(self.images, self.labels, strict=True)]
        self.trials = [Trial(update=u, labels=y, seed=i)
                       for i, (u, y) in enumerate(zip(self.updates, self.labels, strict=True))]
        self.device = device

    def attack(self, steps: int, trials: list[Trial]) -> float:
        """Seconds per iteration of the attacks of ``trials`` (stacked where the engine allows it)."""
        recs = invert_trials(self.model, trials, spec=AttackSpec(iterations=steps))
        return sum(r.seconds for r in recs) / steps

    def sequential(self, steps: int) -> float:
        return sum(self.attack(steps, [t]) for t in self.trials)

    def train_step(self, steps: int) -> float:
        net = self.model
        mode = net.training
        net.eval()
        opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the weights stay those the updates were made on
        try:
            start = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(net(self.images[0]), self.labels[0]).backward()
                opt.step()
            _sync(self.device)
            return (time.perf_counter() - start) / steps
        finally:
            opt.zero_grad(set_to_none=True)
            net.train(mode)

    def bare(self, steps: int) -> float:
        """The same attack written by hand: autograd double backward, cosine, TV, signed Adam, clamp."""
        net = self.model.eval()
        params = list(net.parameters())
        target = list(self.updates[0].tensors.values())
        target_norm = torch.sqrt(sum(t.pow(2).sum() for t in target))
        labels = self.labels[0]
        x = torch.rand(self.updates[0].input_shape, device=self.device, requires_grad=True)
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
        _sync(self.device)
        return (time.perf_counter() - start) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(models: tuple[tuple[str, int], ...] | None = None, *, device: str = "cpu", steps: int = 10,
              repeats: int = 3, trials: int = TRIALS, memory: bool = False) -> list[TrialBench]:
    """One :class:`TrialBench` per model (default :data:`TRIAL_MODELS`, plus :data:`GPU_MODELS` on CUDA).

    Raises:
        GiacheckError: ``trials`` outside [2, the bundled images], before any compute.
    """
    available = len(BundledImages(10))
    if not 2 <= trials <= available:
        raise GiacheckError(f"trials={trials}: each trial attacks its own bundled image (valid: 2 to {available})")
    dev = torch.device(device)
    if models is None:
        models = TRIAL_MODELS + (GPU_MODELS if dev.type == "cuda" else ())
    return [_bench_model(name, resolution, dev, steps, repeats, trials, memory) for name, resolution in models]


def _bench_model(name: str, resolution: int, dev: torch.device, steps: int, repeats: int, trials: int,
                 memory: bool) -> TrialBench:
    setting = _Setting(name, resolution, dev, trials)
    chunk = min(trials, MAX_STACKED)  # invert_trials stacks at most this many at once
    stacked, fallback = StackedReplica.build(setting.model, setting.updates[:chunk], setting.labels[:chunk],
                                             [None] * chunk)
    med = _interleaved_medians({
        "train": lambda: setting.train_step(steps),
        "attack": lambda: setting.attack(steps, setting.trials[:1]),
        "bare": lambda: setting.bare(steps),
        "sequential": lambda: setting.sequential(steps),
        "batched": lambda: setting.attack(steps, setting.trials),
    }, repeats)
    peaks = {path: _peak_memory(name, resolution, str(dev), trials, path) for path in ("sequential", "batched")} \
        if memory else {}
    peak = {path: peaks[path][0] for path in peaks}
    added = {path: peaks[path][1] for path in peaks}
    return TrialBench(
        model=name, resolution=resolution, device=str(dev), trials=trials,
        train_step_s=med["train"], attack_iter_s=med["attack"], bare_iter_s=med["bare"],
        sequential_iter_s=med["sequential"], batched_iter_s=med["batched"],
        speedup=med["sequential"] / med["batched"], attack_over_train=med["attack"] / med["train"],
        giacheck_over_bare=med["attack"] / med["bare"], stacked=stacked is not None, fallback=fallback,
        peak_sequential_mb=peak.get("sequential"), peak_batched_mb=peak.get("batched"),
        attack_sequential_mb=added.get("sequential"), attack_batched_mb=added.get("batched"))


def _peak_rss_mb() -> float:
    """This process's peak resident memory: ``VmHWM`` (Linux; per address space, so a spawned child's own, not
    its parent's at the fork as ``ru_maxrss`` would report), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _peak_memory(name: str, resolution: int, device: str, trials: int, path: str) -> tuple[float, float]:
    """Peak memory (MB) of two iterations of one path in a fresh process (a process's peak only grows), and what
    the attacks added above the setting's own peak."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure_peak, (name, resolution, device, trials, path, torch.get_num_threads()))


def _measure_peak(name: str, resolution: int, device: str, trials: int, path: str,
                  threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    setting = _Setting(name, resolution, dev, trials)

    def peak() -> float:
        if dev.type == "cuda":
            return torch.cuda.max_memory_allocated(dev) / 2**20
        return _peak_rss_mb()

    before = peak()
    if path == "batched":
        setting.attack(2, setting.trials)
    else:
        setting.sequential(2)
    after = peak()
    return after, after - before


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
            return _attack_seconds(model, update, labels, steps)

    med = _interleaved_medians({"stock": stock, "kernels": lambda: _attack_seconds(model, update, labels, steps)},
                               repeats)
    return KernelBench(model=name, device=str(dev), stock_iter_s=med["stock"], kernels_iter_s=med["kernels"],
                       speedup=med["stock"] / med["kernels"])


def _attack_seconds(model, update, labels, steps: int) -> float:
    return invert(model, update, labels=labels, spec=AttackSpec(iterations=steps)).seconds / steps


DEFENCE_CHAINS = (("dpsgd1",), ("clip1", "noise1"))  # the deployment suite's DP-SGD and clip+noise claims


@dataclass(frozen=True, slots=True, kw_only=True)
class DefenceBench:
    """Seconds per iteration of ``trials`` attacks on updates under one defence chain, by both attacks."""

    chain: str
    model: str
    device: str
    trials: int
    defended_iter_s: float  # gradmatch: the defended replica
    rescaled_iter_s: float  # gradmatch_rescaled
    speedup: float
    stacked: bool  # whether gradmatch_rescaled stacked the trials

    def to_dict(self) -> dict[str, float | str | bool | int]:
        return asdict(self)


def run_defence_bench(chains: tuple[tuple[str, ...], ...] = DEFENCE_CHAINS, *, device: str = "cpu",
                      steps: int = 10, repeats: int = 3, trials: int = 2) -> list[DefenceBench]:
    """``gradmatch`` against ``gradmatch_rescaled`` per chain, interleaved ``repeats`` times, on the GroupNorm
    ResNet-18 Opacus makes of resnet18_cifar (bs1, eval mode).

    Raises:
        GiacheckError: a chain that does more than rescale (the two attacks would be the same), before any compute.
    """
    for chain in chains:
        if not rescales_only(make_defences(chain), 1):
            raise GiacheckError(f"defences {'+'.join(chain)!r}: not a chain that only rescales the update (valid: "
                                "clip, noise, dpclip, dpsgd on one sample, identity); both attacks would run the "
                                "defended replica")
    from opacus.validators import ModuleValidator

    dev = torch.device(device)
    model = build("resnet18_cifar", 32)
    opacus_log = logging.getLogger("opacus")
    level = opacus_log.level
    opacus_log.setLevel(logging.WARNING)  # not a line per replaced BatchNorm
    try:
        model.net = ModuleValidator.fix(model.net)  # as the runner prepares a DP-SGD case
    finally:
        opacus_log.setLevel(level)
    model = model.to(dev).eval()
    pool = select_batch(BundledImages(10), batch_size=trials, size=32)
    images, labels = pool.images.to(dev), [y.reshape(1) for y in pool.labels.to(dev)]
    spec = AttackSpec(iterations=steps)
    rows = []
    for chain in chains:
        client = ClientSpec(bn_mode=BNMode.EVAL, defences=chain)
        runs = [Trial(update=simulate_update(model, x[None], y, client, seed=i), labels=y, seed=i)
                for i, (x, y) in enumerate(zip(images, labels, strict=True))]
        stacked = []

        def timed(attack, runs=runs, stacked=stacked):
            recs = attack.trials(model, runs)
            stacked.append(recs[0].batched)
            return sum(r.seconds for r in recs) / steps

        med = _interleaved_medians({"defended": lambda: timed(GradMatch(spec)),
                                    "rescaled": lambda: timed(GradMatchRescaled(spec))}, repeats)
        rows.append(DefenceBench(chain="+".join(chain), model="resnet18_cifar (GroupNorm)", device=str(dev),
                                 trials=trials, defended_iter_s=med["defended"], rescaled_iter_s=med["rescaled"],
                                 speedup=med["defended"] / med["rescaled"], stacked=stacked[-1]))
    return rows


def _interleaved_medians(contenders: dict, repeats: int) -> dict[str, float]:
    """One warm-up call each (allocator, kernels, lazy imports), then ``repeats`` interleaved rounds."""
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(fn())
    return {k: statistics.median(v) for k, v in samples.items()}
