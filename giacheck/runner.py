"""Run one case end to end: validate, build, simulate the client, attack, score (DESIGN §2).

``run_case`` is the one entry point the CLI, the pytest plugin and the tests use. The attack sees the model,
the update, the labels it knows and (for ``proxy``) auxiliary images disjoint from the client's; only this
module holds the ground truth, to score the result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import torch

from giacheck import metrics
from giacheck.attack import (
    Reconstruction,
    infer_batch_stats,
    infer_labels,
    make_attack,
    naive_stats,
    select_proxy_stats,
)
from giacheck.attack.bnstats import elements_per_channel
from giacheck.attack.objective import Replica
from giacheck.client import bn_modules, simulate_update
from giacheck.data import disjoint_pool, open_source
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.models import build, get_entry
from giacheck.specs import AttackSpec, BNMode, Case, LabelKnowledge, RunOptions, Selection, StatsAccess, get_profile
from giacheck.tasks import get_task
from giacheck.validation import check_case

__all__ = ["Result", "controlled_init", "cpu_model", "manifest", "resolve_device", "run_case"]

log = logging.getLogger("giacheck.runner")


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """Scores, curves, timings and provenance of one attack; images kept as tensors (not in ``to_dict``)."""

    case_id: str
    profile: str
    seed: int
    ssim: tuple[float, ...]
    psnr: tuple[float, ...]
    patch_ssim: tuple[float, ...]  # secondary, permutation-tolerant score (metrics.patch_matched_ssim)
    objective: float
    grad_distance: float
    curve: tuple[float, ...]  # objective of the selected restart, per iteration
    iterations: int
    restarts: int
    selection: Selection
    oracle: dict[str, Any]  # best-SSIM restart: an auditor's upper bound, labelled, never the result
    attack: dict[str, Any]
    threat: dict[str, Any]
    timings: dict[str, float]
    manifest: dict[str, Any]
    original: torch.Tensor = field(repr=False)
    reconstruction: torch.Tensor = field(repr=False)

    @property
    def ssim_mean(self) -> float:
        return sum(self.ssim) / len(self.ssim)

    @property
    def ssim_max(self) -> float:
        return max(self.ssim)

    @property
    def patch_ssim_mean(self) -> float:
        return sum(self.patch_ssim) / len(self.patch_ssim)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no tensors); ``ssim`` holds per-image, mean and max."""
        psnr_mean = sum(self.psnr) / len(self.psnr)
        return {
            "case_id": self.case_id,
            "profile": self.profile,
            "seed": self.seed,
            "ssim": {"per_image": list(self.ssim), "mean": self.ssim_mean, "max": self.ssim_max},
            "psnr": {"per_image": [_finite(v) for v in self.psnr], "mean": _finite(psnr_mean)},
            "secondary": {"patch_matched_ssim": {"per_image": list(self.patch_ssim), "mean": self.patch_ssim_mean,
                                                 "note": "secondary, permutation-tolerant; claims use ssim"}},
            "objective": self.objective,
            "grad_distance": self.grad_distance,
            "curve": list(self.curve),
            "iterations": self.iterations,
            "restarts": self.restarts,
            "selection": str(self.selection),
            "oracle": self.oracle,
            "attack": self.attack,
            "threat": self.threat,
            "timings": self.timings,
            "manifest": self.manifest,
        }


    def to_state(self) -> dict[str, Any]:
        """Plain values and the two image tensors only, so ``torch.load(weights_only=True)`` reads it back
        (:meth:`from_state`): enums become strings, tuples lists, and PSNR may be ``inf``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        tensors = {name: fields.pop(name).contiguous() for name in _TENSOR_FIELDS}
        return {"fields": json.loads(json.dumps(fields, default=str)), **tensors}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Result:
        fields = dict(state["fields"])
        for name in _TUPLE_FIELDS:
            fields[name] = tuple(fields[name])
        fields["selection"] = Selection(fields["selection"])
        return cls(**fields, **{name: state[name] for name in _TENSOR_FIELDS})


_TENSOR_FIELDS = ("original", "reconstruction")
_TUPLE_FIELDS = ("ssim", "psnr", "patch_ssim", "curve")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf: identical images -> null


def run_case(
    case: Case | str,
    *,
    profile: str = "smoke",
    device: str = "cpu",
    options: RunOptions | None = None,
) -> Result:
    """Simulate the client update of ``case`` and attack it.

    Args:
        case: a :class:`Case` or a case id.
        profile: budget name (``smoke``, ``paper``); ``options.budget`` overrides its attack spec.
        device: torch device for model, client and attack.
        options: seed, image source and budget (:class:`RunOptions`).

    Raises:
        GiacheckError: an invalid case, model, dataset or update, before the attack runs.
    """
    t0 = time.perf_counter()
    case = Case.parse(case) if isinstance(case, str) else case
    options = options or RunOptions()
    seed, data = options.seed, options.data
    spec = options.budget or get_profile(profile).attack
    entry = get_entry(case.model.name)
    task = get_task(entry.task)
    source = open_source(data, num_classes=entry.num_classes)
    check_case(case, entry=entry, source=source)
    attack = make_attack(case.attack, spec if task.batchable_trials else replace(spec, batched_restarts=False))
    torch_device = resolve_device(device)
    client_batch = task.client_batch(source, batch_size=case.client.batch_size, size=case.model.resolution)
    model = build(case.model.name, case.model.resolution, seed=seed).to(torch_device)
    if case.client.bn_mode is BNMode.TRAIN:
        _check_train_mode_bn(model, tuple(client_batch.images.shape), case)
    images = client_batch.images.to(torch_device)
    labels = task.targets(client_batch, torch_device)
    t_build = time.perf_counter()

    update = simulate_update(model, images, labels, case.client, seed=seed)
    t_client = time.perf_counter()

    threat: dict[str, Any] = {"stats": str(case.threat.stats), "labels": str(case.threat.labels)}
    if case.threat.labels is LabelKnowledge.INFERRED:
        attack_labels = infer_labels(update, entry.num_classes)
        threat["label_accuracy"] = _multiset_accuracy(attack_labels, labels)
        threat["inferred_labels"] = attack_labels.tolist()
    else:
        attack_labels = labels
    stats = _stats_target(model, update, attack_labels, source, client_batch.names, case, spec, threat)
    init = None
    if case.init_p is not None:
        init = controlled_init(client_batch.images, case.init_p, restarts=spec.restarts, seed=seed)
        threat["init_ssim"] = metrics.match_and_score(init[0], client_batch.images).ssim_mean
    t_prep = time.perf_counter()

    rec = attack(model, update, labels=attack_labels, stats=stats, init=init, seed=seed)
    _check_reconstruction(rec, case, spec, tuple(client_batch.images.shape))
    t_attack = time.perf_counter()

    original = client_batch.images
    per_restart = [metrics.match_and_score(rec.images[r], original) for r in range(spec.restarts)]
    scores = per_restart[rec.selected]
    oracle_index = max(range(spec.restarts), key=lambda r: per_restart[r].ssim_mean)
    patch = max(4, case.model.resolution // 8)
    patch_ssim = metrics.patch_matched_ssim_batch(rec.best, original, patch=patch, perm=scores.perm)
    t_end = time.perf_counter()
    reconstruction = rec.best[list(scores.perm)]  # reordered so that reconstruction[j] matches original[j]
    return Result(
        case_id=case.id,
        profile=profile,
        seed=seed,
        ssim=scores.ssim,
        psnr=scores.psnr,
        patch_ssim=patch_ssim,
        objective=rec.objective[rec.selected],
        grad_distance=rec.grad_distance[rec.selected],
        curve=tuple(rec.curve[:, rec.selected].tolist()),
        iterations=rec.iterations,
        restarts=spec.restarts,
        selection=Selection.OBJECTIVE,
        oracle={"selection": str(Selection.ORACLE), "restart": oracle_index,
                "ssim_mean": per_restart[oracle_index].ssim_mean, "selected_restart": rec.selected,
                "note": "best SSIM against the private images over restarts: an upper bound, not the attack result"},
        attack={"name": case.attack, **dataclasses.asdict(spec), "batched": rec.batched, "patch_size": patch},
        threat=threat,
        timings={"build_s": t_build - t0, "client_s": t_client - t_build, "prepare_s": t_prep - t_client,
                 "attack_s": t_attack - t_prep, "per_iteration_s": (t_attack - t_prep) / spec.iterations,
                 "metrics_s": t_end - t_attack, "total_s": t_end - t0},
        manifest=manifest(torch_device, seed, data=source.name, images=client_batch.names, model=entry.upstream),
        original=original.cpu(),
        reconstruction=reconstruction.cpu(),
    )


def controlled_init(images: torch.Tensor, p: float, *, restarts: int, seed: int) -> torch.Tensor:
    """The paper's controlled initialization (§5.3): each restart starts from the true images with a
    fraction ``p`` of pixels (all channels of a pixel together) replaced by uniform noise. A diagnostic."""
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    out = images.detach().cpu().unsqueeze(0).repeat(restarts, 1, 1, 1, 1)
    r, b, _c, h, w = out.shape
    mask = (torch.rand(r, b, 1, h, w, generator=gen) < p).expand_as(out)
    noise = torch.rand(out.shape, generator=gen)
    return torch.where(mask, noise, out)


def _check_train_mode_bn(model: torch.nn.Module, input_shape: tuple[int, ...], case: Case) -> None:
    """A train-mode BatchNorm that sees one value per channel (B·H·W = 1) cannot normalize: refuse up front."""
    names = list(bn_modules(model))
    single = [n for n, count in elements_per_channel(model, input_shape, names).items() if count < 2]
    if single:
        raise InvalidCaseError(
            f"invalid case {case.id}: in train mode BatchNorm {single[0]!r} (and {len(single) - 1} more) sees one "
            f"value per channel (B·H·W = 1 at batch size {case.client.batch_size}); valid: bn_eval, or a batch "
            "size or resolution that leaves more than one value per channel")


def _stats_target(model, update, labels, source, client_names, case, spec, threat):
    """The normalization-statistics target the threat model gives the attacker (None for ``stats_none``)."""
    access = case.threat.stats
    if access is StatsAccess.EXACT:
        names = list(update.bn_after)
        return infer_batch_stats(update.bn_before, update.bn_after,
                                 elements_per_channel(model, update.input_shape, names))
    if access is StatsAccess.NAIVE:
        return naive_stats(update.bn_after)
    if access is StatsAccess.PROXY:
        return _proxy_stats(model, update, labels, source, client_names, case, spec, threat)
    return None


def _check_reconstruction(rec: Any, case: Case, spec: AttackSpec, shape: tuple[int, ...]) -> None:
    """A plug-in attack's result must hold one image batch per restart, and one objective per restart."""
    if not isinstance(rec, Reconstruction):
        raise GiacheckError(f"attack {case.attack!r} returned {type(rec).__name__}; an attack returns a "
                            "giacheck.attack.Reconstruction")
    problems = []
    if tuple(rec.images.shape) != (spec.restarts, *shape):
        problems.append(f"images of shape {tuple(rec.images.shape)}, expected (restarts, B, C, H, W) = "
                        f"{(spec.restarts, *shape)}")
    if len(rec.objective) != spec.restarts or len(rec.grad_distance) != spec.restarts:
        problems.append(f"{len(rec.objective)} objectives and {len(rec.grad_distance)} distances for "
                        f"{spec.restarts} restarts")
    if not 0 <= rec.selected < spec.restarts:
        problems.append(f"selected restart {rec.selected} of {spec.restarts}")
    if problems:
        raise GiacheckError(f"attack {case.attack!r} returned a malformed reconstruction: " + "; ".join(problems))


def _proxy_stats(model, update, labels, source, client_names, case, spec, threat):
    """Statistics of the auxiliary batch (disjoint from the client's) whose update aligns best."""
    batch = case.client.batch_size
    available = len(source) - batch
    candidates = min(spec.proxy_candidates, available // batch)
    if candidates < 1:
        raise GiacheckError(f"stats_proxy needs at least {batch} auxiliary images besides the client's "
                            f"{batch}; {source.name} has {len(source)} images in all")
    pool = disjoint_pool(source, exclude=list(client_names), count=candidates * batch, size=case.model.resolution)
    device = next(model.parameters()).device
    choice = select_proxy_stats(Replica(model, update, labels), pool.images.to(device), distance=spec.distance)
    threat["proxy"] = {"candidates": candidates, "chosen": choice.chosen, "grad_distances": list(choice.distances),
                       "pool": list(pool.names)}
    return choice.target


def _multiset_accuracy(inferred: torch.Tensor, truth: torch.Tensor) -> float:
    remaining = truth.tolist()
    hits = 0
    for label in inferred.tolist():
        if label in remaining:
            remaining.remove(label)
            hits += 1
    return hits / truth.numel()


def resolve_device(device: str) -> torch.device:
    """The torch device named by ``device``; an unknown name, or CUDA where there is none, raises."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise GiacheckError(f"unknown device {device!r} ({exc}); valid: 'cpu', 'cuda', 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GiacheckError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return dev


def manifest(device: torch.device, seed: int, **extra: Any) -> dict[str, Any]:
    """Versions, device, seed, git revision and the metric definition, recorded with every result."""
    versions = {"python": platform.python_version()}
    for package in ("giacheck", "torch", "timm", "ultralytics", "scikit-image", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
    return {"versions": versions, "device": str(device), "device_name": device_name, "seed": seed,
            "git_revision": _git_revision(), "metric": metrics.metric_definition(), "platform": sys.platform,
            **extra}


def cpu_model() -> str:
    """The CPU's model name (float reductions, and so a chaotic attack's path, differ between CPU models: on
    the smoke budget SSIM moved by up to 0.05 between the recording machine and an AMD EPYC)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None

