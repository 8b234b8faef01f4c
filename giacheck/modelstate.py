"""The global model's state before the client trains: the case axis ``state`` (:data:`giacheck.specs.MODEL_STATES`).

- ``random``: the factory's seeded random initialization. Inference-mode BatchNorm is then the identity (running
  statistics 0 and 1), so an eval-mode update is an update of a network without normalization.
- ``bncal``: BatchNorm running statistics estimated on auxiliary images (:func:`auxiliary_images`: disjoint from
  the client's batch and from every re-identification pool), each module's momentum restored afterwards. Weights
  stay at initialization; a model without BatchNorm (LayerNorm only) is unchanged, and the record says so.
- ``warmN``: N plain SGD steps (momentum 0.9) on the auxiliary images from random initialization, in training
  mode (so running statistics follow): *warm-started, not trained*. A model with BatchNorm trains in float64
  (:func:`warm_recipe`). Cached per model, seed and recipe, in memory and on disk (:func:`cache_dir`), so suites
  do not pay for it twice.
- ``ckpt``: a local weights file (:func:`giacheck.models.weights.load_weights`); its sha256 is recorded.

The auxiliary images are the server's: the attacker may know them, and scoring never uses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from giacheck.data import ImageBatch, ImageSource, heldout_pool
from giacheck.errors import GiacheckError, InvalidCaseError
from giacheck.result import StateRecord
from giacheck.specs import CALIBRATION_IMAGES, parse_state

__all__ = ["AUXILIARY_COUNT", "WARM_RECIPE", "StateRecord", "auxiliary_images", "cache_dir", "calibrate_bn",
           "file_sha256", "prepare_state", "warm_recipe", "warm_start"]

log = logging.getLogger(__name__)

AUXILIARY_COUNT = 3  # auxiliary images of a source other than the bundled one (its last images outside the batch)
AUXILIARY_VIEWS = 126  # views of the auxiliary images (flips and crops, as in the re-identification pool)
CALIBRATION_CHUNK = 32  # views per calibration forward
# The warm start's recipe (warm_recipe adds the dtype a model trains in): part of its cache key, recorded with every
# result.
WARM_RECIPE = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 16,
               "bn_mode": "train"}
# A BatchNorm network's float32 training amplifies rounding: weights perturbed by 1.2e-7 (relative) differ by 5 %
# of their displacement after 10 steps of this recipe (resnet18_cifar, CPU), so two CPUs that round differently
# warm-start two different networks. In float64 a 2.2e-16 perturbation stays at 1.4e-15 after 30 steps, and the
# result rounded back to float32 is the same network on every machine. LayerNorm networks are stable in float32
# (swin_t_cifar: 6e-5 after one step, 7e-6 after 10) and keep it: float64 costs 2.5-5x on a CPU.
WARM_DTYPE_BN = "float64"


def warm_recipe(model: nn.Module) -> dict[str, Any]:
    """The recipe :func:`warm_start` follows for ``model``: :data:`WARM_RECIPE`, and ``dtype`` float64 for a model
    with BatchNorm (tracking running statistics or not); without one the model trains in its own dtypes and the
    recipe names none."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return {**WARM_RECIPE, "dtype": WARM_DTYPE_BN} if has_bn else dict(WARM_RECIPE)


_MEMORY: dict[str, dict[str, torch.Tensor]] = {}  # calibrated and warm state dicts made in this process, by key


def auxiliary_images(source: ImageSource, *, exclude: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The images a ``bncal`` or ``warmN`` state is made from: for the bundled source its calibration images
    (astronaut, chelsea, coffee: outside every challenge set and every re-identification pool), else the last
    :data:`AUXILIARY_COUNT` images of the source; never an image in ``exclude`` (the client's batch)."""
    names = [source.image_name(i) for i in range(len(source))]
    banned = set(exclude)
    if source.name == "bundled":
        chosen = tuple(n for n in CALIBRATION_IMAGES if n in names and n not in banned)
    else:
        chosen = tuple(reversed([n for n in reversed(names) if n not in banned][:AUXILIARY_COUNT]))
    if not chosen:
        raise GiacheckError(f"{source.name} has no image outside the client's {len(banned)} to estimate the model "
                            "state from; give a source with more images (--data), or use state random or ckpt")
    return chosen


def auxiliary_views(source: ImageSource, images: tuple[str, ...], size: int) -> ImageBatch:
    """Flips and crops of ``images`` at ``size`` (the re-identification pool's views)."""
    others = [source.image_name(i) for i in range(len(source)) if source.image_name(i) not in images]
    return heldout_pool(source, exclude=others, size=size, limit=AUXILIARY_VIEWS)


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def calibrate_bn(model: nn.Module, images: torch.Tensor, *, chunk: int = CALIBRATION_CHUNK) -> int:
    """Set every BatchNorm's running statistics to the average over ``images`` (forwards in chunks under
    ``no_grad``, cumulative average), then restore each module's momentum and the model's mode; weights are not
    touched. Returns the number of BatchNorm modules calibrated (0: nothing changed)."""
    modules = batchnorms(model)
    if not modules:
        return 0
    momenta = [m.momentum for m in modules]
    training = model.training
    for m in modules:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the chunks
    model.train()
    try:
        with torch.no_grad():
            for part in images.split(chunk):
                model(part)
    finally:
        for m, momentum in zip(modules, momenta, strict=True):
            m.momentum = momentum
        model.train(training)
    return len(modules)


def warm_start(model: nn.Module, batch: ImageBatch, *, steps: int, seed: int, targets: Any) -> None:
    """``steps`` SGD steps (:func:`warm_recipe`) on shuffled mini-batches of ``batch`` in training mode, in place;
    the order is seeded by ``seed``. A model with BatchNorm trains in float64, each tensor rounded back to its own
    dtype afterwards (also when training fails); any other model trains in its own dtypes."""
    recipe = warm_recipe(model)
    device = next(model.parameters()).device
    targets = targets.to(device) if isinstance(targets, torch.Tensor) else targets
    if "dtype" not in recipe:
        _sgd_steps(model, batch.images.to(device, next(model.parameters()).dtype), targets, steps=steps, seed=seed,
                   recipe=recipe)
        return
    dtype = getattr(torch, recipe["dtype"])
    own = {name: t.dtype for name, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    try:
        model.to(dtype)
        _sgd_steps(model, batch.images.to(device, dtype), targets, steps=steps, seed=seed, recipe=recipe)
    finally:
        with torch.no_grad():
            for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
                if t.dtype != own[name]:
                    t.data = t.data.to(own[name])


def _sgd_steps(model: nn.Module, images: torch.Tensor, targets: Any, *, steps: int, seed: int,
               recipe: dict[str, Any]) -> None:
    from giacheck.client import loss_of

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"])
    loss_fn = loss_of(model)
    gen = torch.Generator().manual_seed(seed)
    training = model.training
    model.train()
    order = torch.empty(0, dtype=torch.int64)
    try:
        for _ in range(steps):
            if len(order) < recipe["batch_size"]:
                order = torch.cat([order, torch.randperm(len(images), generator=gen)])
            take, order = order[: recipe["batch_size"]], order[recipe["batch_size"]:]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(images[take]), targets[take]).backward()
            opt.step()
    finally:
        model.train(training)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where warm starts are kept: ``$GIACHECK_CACHE``, else ``$XDG_CACHE_HOME/giacheck``, else
    ``~/.cache/giacheck``."""
    root = os.environ.get("GIACHECK_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "giacheck"


def prepare_state(model: nn.Module, state: str, *, source: ImageSource, images: tuple[str, ...],
                  resolution: int, model_seed: int, pinned_seed: int | None, task: Any, model_name: str,
                  weights: str | None, device: torch.device) -> StateRecord:
    """Bring ``model`` (just built at random initialization, on ``device``) into ``state``, in place; ``images``
    are the auxiliary images of a ``bncal`` or ``warmN`` state (:func:`auxiliary_images`).

    Raises:
        InvalidCaseError: ``ckpt`` without a weights file, a weights file with another state, or ``warmN`` on a
            task whose targets cannot be drawn for auxiliary images (only classification).
    """
    kind, steps = parse_state(state)
    start = time.perf_counter()
    common = {"state": state, "model_seed": model_seed, "pinned_seed": pinned_seed}
    if kind == "ckpt":
        if weights is None:
            raise InvalidCaseError(f"state_ckpt needs a weights file: run_case(options=RunOptions(weights=PATH)), "
                                   f"giacheck run/audit --weights PATH, pytest --giacheck-weights {model_name}=PATH "
                                   "or Pack(weights=PATH)")
        from giacheck.models.weights import load_weights

        report = load_weights(_unwrapped(model), weights)
        return StateRecord(**common, label=f"checkpoint {Path(weights).name} ({report.format}, {report.loaded} "
                           "tensors)", weights=str(weights), sha256=file_sha256(weights), changed=True,
                           bn_modules=len(batchnorms(model)), seconds=time.perf_counter() - start)
    if weights is not None:
        raise InvalidCaseError(f"a weights file was given for a state_{state} case; a weights file is the model's "
                               "state: use state_ckpt (the default state random becomes ckpt when weights are given)")
    if kind == "random":
        return StateRecord(**common, label="random initialization (seeded)")
    views = auxiliary_views(source, images, resolution)
    if kind == "bncal":
        key = _state_key(model, model_name, resolution, model_seed, state, views)
        if key in _MEMORY:  # the calibration of an earlier trial in this process (deterministic)
            model.load_state_dict(_MEMORY[key])
            count = len(batchnorms(model))
        else:
            count = calibrate_bn(model, views.images.to(device))
            _MEMORY[key] = _copied_state(model)
        label = (f"BatchNorm running statistics of {count} modules estimated on {len(views.names)} views of "
                 f"{', '.join(images)}; weights at random initialization" if count else
                 "no BatchNorm: unchanged from random initialization")
        return StateRecord(**common, label=label, images=images, views=len(views.names), bn_modules=count,
                           changed=count > 0, seconds=time.perf_counter() - start)
    if getattr(task, "name", None) != "classification":
        raise InvalidCaseError(f"state_{state} trains on auxiliary images with class labels; {model_name}'s task "
                               f"{getattr(task, 'name', task)!r} has none for them (valid: state_random, "
                               "state_bncal, state_ckpt)")
    key = _state_key(model, model_name, resolution, model_seed, state, views)
    with _warm_lock(key):  # another process computing the same warm start: wait for its file
        cache = _load_warm(model, key)
        if cache is None:
            warm_start(model, views, steps=steps, seed=model_seed, targets=views.labels.to(device))
            _store_warm(model, key)
            cache = "computed"
    return StateRecord(**common, label=f"warm-started, not trained: {steps} SGD steps on {len(views.names)} views "
                       f"of {', '.join(images)}", images=images, views=len(views.names), steps=steps,
                       recipe=warm_recipe(model), cache=cache, changed=True, bn_modules=len(batchnorms(model)),
                       seconds=time.perf_counter() - start)


def _copied_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous copies (kept while the model itself goes on training)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _unwrapped(model: nn.Module) -> nn.Module:
    """The upstream network a weights file holds (``NormalizedModel.net``), else the module itself."""
    return getattr(model, "net", model)


def _state_key(model: nn.Module, name: str, resolution: int, seed: int, state: str, views: ImageBatch) -> str:
    """The cache key of a calibration or warm start: the random initialization it starts from (its bytes), the
    data, the recipe and what could round differently (versions, threads, device)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(views.images.numpy().tobytes())
    meta = {"model": name, "resolution": resolution, "seed": seed, "state": state, "views": list(views.names),
            "labels": views.labels.tolist(), "recipe": warm_recipe(model), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(next(model.parameters()).device)}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _warm_lock(key: str) -> Iterator[None]:
    """An exclusive ``fcntl`` lock per warm start in the cache folder (released by the kernel if a process dies);
    no lock where ``fcntl`` or the folder is unavailable: then two processes may both compute it."""
    try:
        import fcntl

        folder = cache_dir() / "warm"
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"{key}.lock", "a+b")  # noqa: SIM115 (held for the block below)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def _load_warm(model: nn.Module, key: str) -> str | None:
    """Load a cached warm start into ``model``: ``"memory"``, ``"disk"``, or None when there is none (a cache
    file that does not load is ignored and recomputed)."""
    if key in _MEMORY:
        model.load_state_dict(_MEMORY[key])
        return "memory"
    path = cache_dir() / "warm" / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        from safetensors.torch import load_file

        state = load_file(str(path), device=str(next(model.parameters()).device))
        model.load_state_dict(state)
    except Exception as exc:  # a truncated or foreign cache file is ours to recompute, not the user's error
        log.warning("warm-start cache %s does not load (%s: %s); recomputing", path, type(exc).__name__, exc)
        return None
    _MEMORY[key] = _copied_state(model)
    return "disk"


def _store_warm(model: nn.Module, key: str) -> None:
    state = _MEMORY[key] = _copied_state(model)
    folder = cache_dir() / "warm"
    try:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        save_file({k: v.cpu() for k, v in state.items()}, tmp)
        os.replace(tmp, folder / f"{key}.safetensors")
    except OSError as exc:  # a read-only cache costs time, never a result
        log.warning("cannot write the warm-start cache in %s (%s); it stays in memory", folder, exc)
