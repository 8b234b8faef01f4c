"""The ``giacheck`` option group: each option with an ini twin (CLI > ini > default), validated up front."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pytest

from giacheck.claims import InvalidToleranceError, check_tolerance

__all__ = ["OPTIONS", "add_options", "cpu_threads", "option", "set_cpu_threads", "updating", "validate",
           "weights_by_model"]


@dataclass(frozen=True, slots=True)
class _Opt:
    name: str
    help: str
    default: str


OPTIONS = (
    _Opt("profile", "attack budget: smoke (CPU, CI) or paper (GPU)", "smoke"),
    _Opt("device", "torch device for attacks: cpu, cuda, cuda:N (default: cpu)", "cpu"),
    _Opt("artifacts", "folder for per-case PNG/JSON and results.json (created when a result is written)",
         "giacheck-artifacts"),
    _Opt("baselines", "root folder of recorded baselines", "baselines"),
    _Opt("tolerance", "baseline tolerance on the challenge set's highest and median image SSIM (the largest "
         "cross-machine difference of single runs measured: 0.057)", "0.06"),
    _Opt("gpus", "comma-separated GPU ids for xdist workers (default: CUDA_VISIBLE_DEVICES or all found)", ""),
    _Opt("threads", "torch CPU threads per process: a number, or 'auto' (cores / workers). Default: 1, set only "
                    "in processes that run giacheck cases (baselines are recorded with 1: float reductions, and "
                    "so chaotic attacks, depend on the thread count); given explicitly, set in every process", ""),
    _Opt("trials", "Optuna trials per tuned case (paper profile)", "0"),
    _Opt("storage", "Optuna storage URL or journal file shared by machines", ""),
    _Opt("attack", "attack for every case that names none itself: a registered name or package.module:Name "
                   "(default: the built-in gradmatch)", ""),
    _Opt("state", "run every case in this model state, whatever state its id names (re-judge a suite under "
                  "another state): random, bncal (applied to models with BatchNorm; the others it would not change), "
                  "warmN (classification models; N SGD steps from random initialization: warm-started, not "
                  "trained). Default: each case's own", ""),
)
DEFAULT_THREADS = "1"  # what baselines are recorded with


def add_options(parser: pytest.Parser) -> None:
    """Register the ``giacheck`` group and the ini twins."""
    group = parser.getgroup("giacheck", "gradient-inversion privacy tests")
    for opt in OPTIONS:
        group.addoption(f"--giacheck-{opt.name}", dest=f"giacheck_{opt.name}", default=None,
                        help=f"{opt.help} (ini: giacheck_{opt.name})")
        parser.addini(f"giacheck_{opt.name}", opt.help, default=opt.default)
    group.addoption("--giacheck-update", action="store_true", dest="giacheck_update",
                    help="rewrite the baselines of the cases run, and fail them (review the diff, then rerun)")
    group.addoption("--giacheck-update-all", action="store_true", dest="giacheck_update_all",
                    help="rewrite the baselines of the cases run, and pass")
    group.addoption("--giacheck-weights", action="append", default=[], dest="giacheck_weights", metavar="MODEL=PATH",
                    help="start MODEL from the local weights file PATH (safetensors or a torch.save state dict; "
                         "repeatable): its cases run at state ckpt, and the file's sha256 is part of their baselines' "
                         "identity. giacheck never downloads weights")
    group.addoption("--giacheck-oversubscribe", action="store_true", dest="giacheck_oversubscribe",
                    help="allow more xdist workers than GPUs (workers share GPUs round-robin)")


def option(config: pytest.Config, name: str) -> str:
    """Option value with precedence CLI > ini > default."""
    value = config.getoption(f"giacheck_{name}")
    return value if value is not None else config.getini(f"giacheck_{name}")


def updating(config: pytest.Config) -> bool:
    """Whether this run rewrites baselines (``--giacheck-update`` or ``--giacheck-update-all``)."""
    return bool(config.getoption("giacheck_update") or config.getoption("giacheck_update_all"))


def validate(config: pytest.Config) -> None:
    """Reject bad option values before anything runs.

    Raises:
        pytest.UsageError: naming the option, the value given and the valid ones.
    """
    profile = option(config, "profile")
    if profile not in ("smoke", "paper"):
        raise pytest.UsageError(f"--giacheck-profile={profile!r}: valid values are 'smoke' and 'paper'")
    tolerance = option(config, "tolerance")
    try:
        check_tolerance(tolerance)
    except InvalidToleranceError as exc:
        raise pytest.UsageError(f"--giacheck-tolerance={tolerance!r}: {exc}") from None
    threads = option(config, "threads")
    if threads and threads != "auto" and not (threads.isdigit() and int(threads) > 0):
        raise pytest.UsageError(f"--giacheck-threads={threads!r}: give a positive number or 'auto'")
    state = option(config, "state")
    if state:
        from giacheck.errors import InvalidCaseError
        from giacheck.specs import parse_state

        try:
            kind, _ = parse_state(state)
        except InvalidCaseError as exc:
            raise pytest.UsageError(f"--giacheck-state={state!r}: {exc}") from None
        if kind == "ckpt":
            raise pytest.UsageError("--giacheck-state=ckpt: give the file instead, --giacheck-weights MODEL=PATH")
    weights_by_model(config)
    trials = option(config, "trials") or "0"
    if not trials.isdigit():
        raise pytest.UsageError(f"--giacheck-trials={trials!r}: give a number of trials (0: no tuning)")


def weights_by_model(config: pytest.Config) -> dict[str, str]:
    """``--giacheck-weights MODEL=PATH`` as ``{MODEL: PATH}``; a malformed entry, a model given twice or a path
    that is not a file is a usage error."""
    mapping: dict[str, str] = {}
    for text in config.getoption("giacheck_weights") or ():
        model, sep, path = text.partition("=")
        if not sep or not model or not path:
            raise pytest.UsageError(f"--giacheck-weights {text!r}: write MODEL=PATH, e.g. "
                                    "resnet18_cifar=weights/resnet18.safetensors")
        if model in mapping:
            raise pytest.UsageError(f"--giacheck-weights: {model!r} is given twice ({mapping[model]!r}, {path!r})")
        if not os.path.isfile(path):
            raise pytest.UsageError(f"--giacheck-weights {text!r}: {path!r} is not a file (a local weights file; "
                                    "giacheck never downloads)")
        mapping[model] = path
    return mapping


def validate_attack(config: pytest.Config) -> None:
    """An unknown ``--giacheck-attack`` name is a usage error with the registry's own message (valid names and
    close matches). ``package.module:Name`` is imported when first used; the registry imports torch, so this
    runs only when the option is given."""
    name = option(config, "attack")
    if not name or ":" in name:
        return
    from giacheck.attack.registry import ATTACKS
    from giacheck.errors import GiacheckError

    try:
        ATTACKS.get(name)
    except GiacheckError as exc:
        raise pytest.UsageError(f"--giacheck-attack={name!r}: {exc}") from None


def cpu_threads(config: pytest.Config) -> tuple[int, bool]:
    """The thread count this process should use, and whether it was asked for explicitly."""
    threads = option(config, "threads")
    explicit = bool(threads)
    threads = threads or DEFAULT_THREADS
    if threads != "auto":
        return int(threads), explicit
    worker = getattr(config, "workerinput", None)  # set by xdist on workers only
    workers = int(worker.get("workercount", 1)) if worker is not None else 1
    return max(1, (os.cpu_count() or 1) // max(1, workers)), explicit


_THREADS_SET = pytest.StashKey[int]()


def set_cpu_threads(config: pytest.Config, *, explicit_only: bool = False) -> None:
    """Give torch a fixed number of CPU threads in this process (once).

    ``OMP_NUM_THREADS`` is set for OpenMP when torch is not imported yet, and ``torch.set_num_threads`` when it
    is. Without an explicit ``--giacheck-threads``, an ``OMP_NUM_THREADS`` already in the environment wins.
    ``explicit_only``: do nothing unless the option was given (at configure time, before any case is seen).
    """
    if _THREADS_SET in config.stash:
        return
    count, explicit = cpu_threads(config)
    if explicit_only and not explicit:
        return
    config.stash[_THREADS_SET] = count
    if not explicit and "OMP_NUM_THREADS" in os.environ:
        return
    os.environ["OMP_NUM_THREADS"] = str(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
