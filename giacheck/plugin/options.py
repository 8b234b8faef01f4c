"""The ``giacheck`` option group: each option with an ini twin (CLI > ini > default), validated up front."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from giacheck.claims import InvalidToleranceError, check_tolerance

__all__ = ["OPTIONS", "add_options", "cpu_threads", "given", "option", "set_cpu_threads", "updating", "validate",
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
    _Opt("ladder", "defence strengths the deployment suite runs: 'claims' (those its claims need; CI) or 'full' "
                   "(every strength of each leakage-versus-strength ladder)", "claims"),
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
    """Reject bad option values (command line or ini file) before anything is collected or run.

    Raises:
        pytest.UsageError: naming the option (``--giacheck-NAME`` or the ini key and file), the value given and the
            valid ones.
    """
    for opt in OPTIONS:
        problem = _CHECKS[opt.name](option(config, opt.name))
        if problem:
            raise pytest.UsageError(f"{given(config, opt.name)}: {problem}")
    weights_by_model(config)


def given(config: pytest.Config, name: str) -> str:
    """Where option ``name``'s value came from, with the value: ``--giacheck-NAME='v'``,
    ``giacheck_NAME='v' (ini file /path/pytest.ini)``, ``(-o/--override-ini)`` or ``(the default)``."""
    cli = config.getoption(f"giacheck_{name}")
    if cli is not None:
        return f"--giacheck-{name}={cli!r}"
    key = f"giacheck_{name}"
    value = config.getini(key)
    if any(o.partition("=")[0].strip() == key for o in config.getoption("override_ini", None) or ()):
        where = "-o/--override-ini"
    elif value != next(opt.default for opt in OPTIONS if opt.name == name):
        where = f"ini file {config.inipath}"
    else:
        where = "the default"
    return f"{key}={value!r} ({where})"


MAX_THREADS = 1024
MAX_TRIALS = 10_000
_DEVICE_RE = re.compile(r"cpu|cuda(?::[0-9]+)?")
_GPU_RE = re.compile(r"[0-9]+|(?:GPU|MIG)-[0-9A-Za-z][0-9A-Za-z/-]*")  # an index, or a GPU / MIG UUID
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://.+")
_JOURNAL_SUFFIXES = (".log", ".journal")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_IMPORT_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}")


def _check_profile(value: str) -> str | None:
    from giacheck.specs import PROFILES

    return None if value in PROFILES else f"valid values are {' and '.join(map(repr, PROFILES))}"


def _check_device(value: str) -> str | None:
    if _DEVICE_RE.fullmatch(value):
        return None
    return "valid devices are 'cpu', 'cuda' and 'cuda:N' (N a GPU index, e.g. cuda:0)"


def _check_folder(value: str) -> str | None:
    if not value.strip():
        return "give a folder path (an empty one would mean the working directory)"
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        return f"{str(path)!r} is a file, not a folder; give a folder path"
    return None


def _check_tolerance(value: str) -> str | None:
    try:
        tolerance = check_tolerance(value)
    except InvalidToleranceError as exc:
        return str(exc)
    if tolerance >= 1:  # SSIM is at most 1: a recorded SSIM of 0 could never be exceeded by this much
        return (f"baseline tolerance {value!r} would let every baseline check pass (SSIM is at most 1); valid: a "
                "finite number in [0, 1) in SSIM units (default 0.06)")
    return None


def _check_gpus(value: str) -> str | None:
    if not value:
        return None
    ids = [g.strip() for g in value.split(",")]
    bad = [g for g in ids if not _GPU_RE.fullmatch(g)]
    if bad:
        return (f"not GPU ids: {', '.join(repr(g) for g in bad)}; valid: comma-separated GPU indices (0,1,2) or "
                "GPU UUIDs (GPU-..., MIG-...), as CUDA_VISIBLE_DEVICES takes them")
    twice = sorted({g for g in ids if ids.count(g) > 1})
    if twice:
        return (f"listed twice: {', '.join(repr(g) for g in twice)}; list each GPU once (for more workers than "
                "GPUs: --giacheck-oversubscribe)")
    return None


def _check_threads(value: str) -> str | None:
    if not value or value == "auto" or (value.isascii() and value.isdigit() and 1 <= int(value) <= MAX_THREADS):
        return None
    return f"give a positive number or 'auto' (valid numbers: 1 to {MAX_THREADS})"


def _check_trials(value: str) -> str | None:
    if not value or (value.isascii() and value.isdigit() and int(value) <= MAX_TRIALS):
        return None
    return f"give a number of trials (0: no tuning; valid: 0 to {MAX_TRIALS})"


def _check_storage(value: str) -> str | None:
    if not value or _URL_RE.fullmatch(value):
        return None
    if not value.endswith(_JOURNAL_SUFFIXES):
        return ("neither an RDB URL nor a journal file; valid: an Optuna RDB URL such as 'sqlite:///tuning.db', or a "
                "journal file path ending in '.log' or '.journal'")
    folder = Path(value).expanduser().parent
    if not folder.is_dir():
        return f"the journal file's folder {str(folder)!r} does not exist; create it, or give another path"
    if Path(value).expanduser().is_dir():
        return "is a folder; give a journal file path ending in '.log' or '.journal'"
    return None


def _check_attack(value: str) -> str | None:
    """A registered name (checked against the registry at collection) or the import form ``package.module:Name``."""
    if ":" not in value or _IMPORT_RE.fullmatch(value):
        return None
    return ("neither a registered attack name nor package.module:Name; valid: a registered name (letters, digits, "
            "_), or package.module:Name (a module on sys.path and a name in it)")


def _check_state(value: str) -> str | None:
    if not value:
        return None
    from giacheck.errors import InvalidCaseError
    from giacheck.specs import parse_state

    try:
        kind, _ = parse_state(value)
    except InvalidCaseError as exc:
        return str(exc)
    if kind == "ckpt":
        return "give the file instead, --giacheck-weights MODEL=PATH"
    return None


# the check of each option of OPTIONS: the problem with a value, or None when it is valid
_CHECKS: dict[str, Callable[[str], str | None]] = {
    "profile": _check_profile, "device": _check_device, "artifacts": _check_folder, "baselines": _check_folder,
    "tolerance": _check_tolerance, "gpus": _check_gpus, "threads": _check_threads, "trials": _check_trials,
    "storage": _check_storage, "attack": _check_attack, "state": _check_state,
    "ladder": lambda value: None if value in ("claims", "full") else "valid: claims, full",
}


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
