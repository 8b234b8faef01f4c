"""How much memory a case needs, against what the machine has: checked before any compute (:mod:`giacheck.validation`).

The activations are measured, not guessed: the network is built on the CPU at the case's resolution (or its
default size, when the case asks for more, and then scaled with the pixel count), a copy moved to PyTorch's
``meta`` device (shapes only, no storage, no arithmetic), and one forward there records the storage of every
tensor autograd saves for the backward. Where the device runs the attack (model, client, attacker)::

    device = restarts * (PER_RESTART_PARAMETERS * parameters + PER_IMAGE_ACTIVATIONS * batch * (activations + input))
             + GLOBAL_PARAMETERS * parameters

(each batched restart holds its own dummy update, the graph of the gradient it differentiates and that graph's
gradients; an image's activations are saved by the forward, kept for the double backward and differentiated
again). The host scores the result against the re-identification pool (``POOL_LIMIT`` views, float64 SSIM)::

    host = POOL_LIMIT * input * SCORING_COPIES

The constants were fitted on CPU runs (peak RSS of ``run_case`` for ResNet-18 at 32 and 224 px and Swin-T at 32 px,
1 to 8 images and restarts), where they over-estimate by 0-60 % (most with one image and one restart).

Available memory is the device's total, not what is free at the moment (xdist workers run cases side by side,
and may share a GPU): ``torch.cuda.mem_get_info``'s total on a CUDA device, and the host's total memory (psutil
when installed, else ``MemTotal`` of ``/proc/meminfo``, else ``os.sysconf``) for the scoring and a CPU device.
``GIACHECK_SKIP_MEMORY_CHECK=1`` skips the check.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from giacheck.models.entry import ModelEntry

__all__ = [
    "FALLBACK_ACTIVATION_FACTOR",
    "GLOBAL_PARAMETERS",
    "PER_IMAGE_ACTIVATIONS",
    "PER_RESTART_PARAMETERS",
    "SCORING_COPIES",
    "SKIP_ENV",
    "AvailableMemory",
    "MemoryEstimate",
    "available_memory",
    "estimate_memory",
    "format_bytes",
    "memory_problem",
]

log = logging.getLogger("giacheck.memory")

SKIP_ENV = "GIACHECK_SKIP_MEMORY_CHECK"
PER_IMAGE_ACTIVATIONS = 6  # an image's saved activations through forward, backward and the double backward
PER_RESTART_PARAMETERS = 4  # parameter-sized tensors each batched restart holds (dummy update, its graph, grads)
GLOBAL_PARAMETERS = 4  # parameter-sized tensors held once: global model, client copy, update, its norms
SCORING_COPIES = 10  # float32 bytes of one pool view, times: float64 copy, recoloured copy, SSIM filter planes
#: Activation bytes per input byte when a network can be measured neither on the meta device nor at a probe size
#: (above every registered model's measured factor: ViT-B/16 saves about 250x its input at 224 px).
FALLBACK_ACTIVATION_FACTOR = 1000
_BYTES_PER_PIXEL = 3 * 4  # RGB float32


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


@dataclass(frozen=True, slots=True, kw_only=True)
class AvailableMemory:
    """Bytes that can still be allocated on a device, and where the number comes from."""

    bytes: int
    device: str  # "cpu" | "cuda:0" ...
    source: str  # "psutil, total", "/proc/meminfo MemTotal", "os.sysconf", "torch.cuda.mem_get_info"

    def __str__(self) -> str:
        where = "host memory" if self.device == "cpu" else f"free memory on {self.device}"
        return f"{format_bytes(self.bytes)} of {where} available ({self.source})"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """What one case needs: activations measured per image at its resolution, parameters, and the totals."""

    model: str
    resolution: int
    batch_size: int
    restarts: int
    activation_bytes: int  # saved for the backward by one image's forward, parameters excluded
    parameter_bytes: int
    how: str  # how the activations were found ("measured on the meta device", ...)
    pool: int  # views in the re-identification pool the host scores against

    @property
    def input_bytes(self) -> int:
        """One image as float32 RGB."""
        return self.resolution * self.resolution * _BYTES_PER_PIXEL

    @property
    def per_restart_bytes(self) -> int:
        image = PER_IMAGE_ACTIVATIONS * (self.activation_bytes + self.input_bytes)
        return PER_RESTART_PARAMETERS * self.parameter_bytes + self.batch_size * image

    @property
    def device_bytes(self) -> int:
        """Where the attack runs."""
        return self.restarts * self.per_restart_bytes + GLOBAL_PARAMETERS * self.parameter_bytes

    @property
    def host_bytes(self) -> int:
        """Scoring against the re-identification pool, on the host whatever the device."""
        return self.pool * self.input_bytes * SCORING_COPIES

    def need(self, device: str) -> int:
        """Bytes needed on ``device``'s memory: everything on the CPU, the attack's share on a CUDA device."""
        return self.device_bytes + self.host_bytes if device == "cpu" else self.device_bytes

    def describe(self, device: str) -> str:
        restarts = f" x {self.restarts} stacked attacks" if self.restarts > 1 else ""
        scoring = (f" + {format_bytes(self.host_bytes)} to score against {self.pool} pool views"
                   if device == "cpu" else "")
        return (f"an estimated {format_bytes(self.need(device))} for {self.model} at {self.resolution}x"
                f"{self.resolution}, batch size {self.batch_size}{restarts} ({format_bytes(self.activation_bytes)} of "
                f"activations per image, {self.how}; {format_bytes(self.parameter_bytes)} of parameters{scoring})")


def available_memory(device: str | torch.device = "cpu") -> AvailableMemory | None:
    """Bytes a case may use on ``device``; None when this platform does not say. On the host this is the machine's
    total memory, not what is free now: xdist workers run cases side by side, so what is free at one worker's
    check depends on the other's case, and a case that fits the machine must not be refused for it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        _, total = torch.cuda.mem_get_info(index)  # total, as on the host: workers may share a GPU
        return AvailableMemory(bytes=int(total), device=f"cuda:{index}", source="torch.cuda.mem_get_info, total")
    if dev.type != "cpu":
        return None
    try:
        import psutil
    except ImportError:
        pass
    else:
        return AvailableMemory(bytes=int(psutil.virtual_memory().total), device="cpu", source="psutil, total")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return AvailableMemory(bytes=int(line.split()[1]) * 1024, device="cpu",
                                       source="/proc/meminfo MemTotal")
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    if pages <= 0 or size <= 0:
        return None
    return AvailableMemory(bytes=int(pages * size), device="cpu", source="os.sysconf")


def estimate_memory(entry: ModelEntry, resolution: int, *, batch_size: int = 1, restarts: int = 1) -> MemoryEstimate:
    """What a case of ``entry`` at ``resolution`` needs (see the module docstring); no activation is allocated."""
    from giacheck.data import POOL_LIMIT

    activations, parameters, how = _measure(entry, resolution)
    return MemoryEstimate(model=entry.name, resolution=resolution, batch_size=batch_size, restarts=restarts,
                          activation_bytes=activations, parameter_bytes=parameters, how=how, pool=POOL_LIMIT)


def memory_problem(entry: ModelEntry, resolution: int, *, batch_size: int, restarts: int = 1,
                   device: str | torch.device | None = None) -> str | None:
    """Why a case does not fit in memory (naming the estimate, what is available and what would fit), or None.

    ``device`` None: the case must fit somewhere here (all of it in host memory, or the attack's share in free
    CUDA memory). Skipped when ``GIACHECK_SKIP_MEMORY_CHECK=1`` or the platform reports no number.
    """
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        return None
    try:
        device = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError):  # an unknown device name is refused where the device is resolved
        return None
    host = available_memory("cpu")
    problems = []
    for target in _targets(device, host):  # with no device named, CUDA is asked only when the host is too small
        problem = _problem_on(target, host, entry, resolution, batch_size, restarts)
        if problem is None:
            return None
        problems.append(problem)
    if not problems:
        log.debug("no available-memory figure for device %s: memory check skipped", device)
        return None
    message, budget = max(problems, key=lambda p: p[1].bytes)  # the most memory here, and still too little
    return f"memory: {message}, but only {budget} " + _valid(entry, resolution, batch_size, restarts, budget)


def _targets(device: str | torch.device | None, host: AvailableMemory | None) -> Iterator[AvailableMemory]:
    """The memory the attack may run in: the named device's; with none named, the host's, then free CUDA memory."""
    if device is not None and torch.device(device).type != "cpu":
        found = available_memory(device)
        if found is not None:
            yield found
        return
    if host is not None:
        yield host
    if device is None and torch.cuda.is_available() and (cuda := available_memory("cuda")) is not None:
        yield cuda


def _problem_on(target: AvailableMemory, host: AvailableMemory | None, entry: ModelEntry, resolution: int,
                batch_size: int, restarts: int) -> tuple[str, AvailableMemory] | None:
    """Why the case does not fit when the attack runs in ``target`` (the host scores), or None when it fits."""
    inputs = PER_IMAGE_ACTIVATIONS * resolution * resolution * _BYTES_PER_PIXEL * batch_size * restarts
    if inputs > target.bytes:  # the input images alone: an absurd resolution is refused without building anything
        return (f"at least {format_bytes(inputs)} for {entry.name} at {resolution}x{resolution}, batch size "
                f"{batch_size}" + (f" x {restarts} stacked attacks" if restarts > 1 else "")
                + " (its input images alone, float32 through the double backward)"), target
    estimate = estimate_memory(entry, resolution, batch_size=batch_size, restarts=restarts)
    kind = _kind(target)
    if estimate.need(kind) > target.bytes:
        return estimate.describe(kind), target
    if kind != "cpu" and host is not None and estimate.host_bytes > host.bytes:
        return (f"an estimated {format_bytes(estimate.host_bytes)} of host memory to score {estimate.model} at "
                f"{estimate.resolution}x{estimate.resolution} against {estimate.pool} pool views"), host
    return None


def _kind(budget: AvailableMemory) -> str:
    return "cpu" if budget.device == "cpu" else "cuda"


def _valid(entry: ModelEntry, resolution: int, batch_size: int, restarts: int, budget: AvailableMemory) -> str:
    """``(valid: ...)``: the largest batch size at this resolution and the largest resolution that fit."""
    kind, options = _kind(budget), []
    if batch_size * restarts > 1 and PER_IMAGE_ACTIVATIONS * resolution ** 2 * _BYTES_PER_PIXEL <= budget.bytes:
        one = estimate_memory(entry, resolution, batch_size=1, restarts=restarts)
        per_image = one.need(kind) - estimate_memory(entry, resolution, batch_size=0, restarts=restarts).need(kind)
        room = budget.bytes - (one.need(kind) - per_image)
        fits = room // per_image if room > 0 and per_image > 0 else 0
        if fits >= 1:
            options.append(f"batch size <= {min(fits, batch_size - 1)} at {resolution}x{resolution}"
                           + (f" with {restarts} stacked attacks" if restarts > 1 else ""))
        elif restarts > 1:
            options.append("attacks run one after another (AttackSpec(batched_restarts=False))")
    largest = _largest_resolution(entry, resolution, batch_size, restarts, budget)
    if largest is not None:
        options.append(f"an input size <= {largest} at batch size {batch_size}")
    valid = " or ".join(options) or f"a smaller model, or a machine with more than {format_bytes(budget.bytes)} free"
    return f"(valid: {valid}; {SKIP_ENV}=1 skips this check)"


def _largest_resolution(entry: ModelEntry, resolution: int, batch_size: int, restarts: int,
                        budget: AvailableMemory) -> int | None:
    """The largest valid resolution below ``resolution`` whose estimate fits, or None."""
    kind = _kind(budget)

    def fits(res: int) -> bool:
        if PER_IMAGE_ACTIVATIONS * res * res * _BYTES_PER_PIXEL * batch_size * restarts > budget.bytes:
            return False
        return estimate_memory(entry, res, batch_size=batch_size, restarts=restarts).need(kind) <= budget.bytes

    if entry.sizes:
        return next((s for s in sorted(entry.sizes, reverse=True) if s < resolution and fits(s)), None)
    step = max(entry.size_multiple, 1)
    # the need grows about with the pixel count: guess from the cost per pixel at a moderate size, then step down
    reference = max(entry.min_size, min(resolution, 1024) // step * step)
    at_reference = estimate_memory(entry, reference, batch_size=batch_size, restarts=restarts)
    fixed = (PER_RESTART_PARAMETERS * restarts + GLOBAL_PARAMETERS) * at_reference.parameter_bytes
    per_pixel = (at_reference.need(kind) - fixed) / (reference * reference)
    room = budget.bytes - fixed
    candidate = min(int(math.sqrt(room / per_pixel)) if room > 0 else 0, resolution - 1) // step * step
    for _ in range(64):
        if candidate < entry.min_size:
            return None
        if fits(candidate):
            return candidate
        candidate = min(int(candidate * 0.95), candidate - step) // step * step
    return None


_MEASURED: dict[tuple[str, str, int, int], tuple[int, int, str]] = {}


def _measure(entry: ModelEntry, resolution: int) -> tuple[int, int, str]:
    """``(activation bytes per image, parameter bytes, how)``; cached per model and resolution."""
    key = (entry.name, entry.upstream, entry.num_classes, resolution)
    if key not in _MEASURED:
        _MEASURED[key] = _measure_now(entry, resolution)
    return _MEASURED[key]


def _measure_now(entry: ModelEntry, resolution: int) -> tuple[int, int, str]:
    """Build the model on the CPU at ``min(resolution, default size)`` and record one forward on a copy of it on
    the meta device (shapes only). The model is never built *under* a meta-device context: a module that a
    factory imports for the first time would then keep meta tensors of its own, and every later build in this
    process would fail. A copy is moved, so a factory that returns a shared module keeps it intact."""
    probe = min(resolution, entry.default_size)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            net = copy.deepcopy(entry.factory(probe, entry.num_classes)).to("meta")
        activations, parameters = _saved_bytes(net, probe)
        how = "measured on the meta device" + ("" if probe == resolution else
                                               f" at {probe}x{probe} and scaled with the pixel count")
        return activations * resolution * resolution // (probe * probe), parameters, how
    except (Exception, SystemExit) as exc:  # user code can raise or exit: the conservative factor then
        log.debug("%s cannot be measured at %d (%s: %s); using the fallback factor", entry.name, probe,
                  type(exc).__name__, exc)
    return (FALLBACK_ACTIVATION_FACTOR * resolution * resolution * _BYTES_PER_PIXEL, 0,
            f"not measurable, taken as {FALLBACK_ACTIVATION_FACTOR} x the input")


def _saved_bytes(net: nn.Module, resolution: int) -> tuple[int, int]:
    """Bytes of the storages autograd saves for one image's backward (parameters' excluded), and parameter bytes."""
    own = {t.untyped_storage()._cdata for t in (*net.parameters(), *net.buffers())}
    saved: dict[int, tuple[int, torch.Tensor]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in own:
            saved[storage._cdata] = (storage.nbytes(), t)  # t held to the end: no storage address is reused
        return t

    x = torch.zeros(1, 3, resolution, resolution, device="meta", requires_grad=True)
    net.train()  # train-mode BatchNorm saves its batch statistics too: the larger of the two modes
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    activations = sum(nbytes for nbytes, _ in saved.values())
    parameters = sum(p.numel() * p.element_size() for p in net.parameters())
    return activations, parameters
