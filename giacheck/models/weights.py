"""Load a local weights file into a model: safetensors, or a ``torch.load(weights_only=True)`` state dict.

Never a download. A file that needs the pickle of arbitrary objects (an ultralytics ``.pt`` checkpoint, a whole
pickled module) can run code when loaded, so it is refused unless the caller passes ``trust_pickle=True``. The
weights are for the upstream network (``NormalizedModel.net``): timm / ultralytics state-dict keys. Keys saved
from a wrapper (``net.`` from a ``NormalizedModel``, ``module.`` from ``DataParallel``) are accepted too.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from giacheck.errors import WeightsError

__all__ = [
    "WeightsReport",
    "check_weights_file",
    "describe_nonfinite",
    "load_weights",
    "nonfinite_tensors",
    "read_state_dict",
]

log = logging.getLogger("giacheck.models.weights")

_SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "ema")  # checkpoint dicts: where the weights sit
_WRAPPER_PREFIXES = ("net.", "module.")
_LISTED = 10  # keys named in a message before "... and N more"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsReport:
    """What :func:`load_weights` did: tensors loaded, and keys missing from / unexpected in the file."""

    path: str
    format: str  # "safetensors" | "torch" | "pickle"
    loaded: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def load_weights(module: nn.Module, path: str | os.PathLike[str], *, trust_pickle: bool = False,
                 strict: bool = True) -> WeightsReport:
    """Load the weights file at ``path`` into ``module`` (in place) and report what was loaded.

    Args:
        module: the network whose ``state_dict`` keys the file holds.
        path: a ``.safetensors`` file, or a file ``torch.save`` wrote (a state dict or a checkpoint dict holding
            one under ``state_dict`` / ``model_state_dict`` / ``model`` / ``ema``).
        trust_pickle: allow a file that needs arbitrary pickled objects (it can execute code when loaded).
        strict: raise when the file lacks keys of the module or holds keys the module does not have; when False
            those are logged and reported, and the module keeps its own values for missing keys.

    Raises:
        WeightsError: the file is missing or unreadable, needs pickles without ``trust_pickle`` (or calls a blocked
            global), holds no state dict, a tensor's shape differs from the module's or holds NaN/Inf (the keys are
            named), or (``strict``) keys differ.
    """
    state, fmt = read_state_dict(path, trust_pickle=trust_pickle)
    own = module.state_dict()
    state = _strip_wrapper_prefix(state, own)
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        listed = "; ".join(f"{k}: file {f} vs model {m}" for k, f, m in mismatched[:_LISTED])
        raise WeightsError(
            f"weights file {str(path)!r} does not fit {type(module).__name__}: {len(mismatched)} tensor(s) have other "
            f"shapes — {listed}{_more(mismatched)}. Was it saved from another architecture, resolution or number of "
            "classes? Build the model with the matching name/num_classes, or drop those keys from the file."
        )
    _check_finite({k: v for k, v in state.items() if k in own}, path)
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    if missing or unexpected:
        detail = (f"{len(missing)} key(s) of the model missing from the file ({_names(missing)}), "
                  f"{len(unexpected)} unexpected key(s) in the file ({_names(unexpected)})")
        if strict:
            raise WeightsError(f"weights file {str(path)!r} does not match {type(module).__name__}: {detail}. "
                               "Use the file saved for this model, or pass strict=False to load the common keys.")
        log.warning("weights file %s: %s; loading the %d common keys", path, detail, len(state) - len(unexpected))
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    report = WeightsReport(path=str(path), format=fmt, loaded=len(state) - len(unexpected), missing=missing,
                           unexpected=unexpected)
    log.info("loaded %d tensors from %s (%s)", report.loaded, path, fmt)
    return report


def check_weights_file(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> None:
    """Refuse a weights file that cannot be read safely or holds NaN/Inf, without any model: a check before compute.

    Raises:
        WeightsError: as :func:`read_state_dict`, or some tensor of the file is not finite (named).
    """
    state, _ = read_state_dict(path, trust_pickle=trust_pickle)
    _check_finite(state, path)


def _check_finite(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    found = nonfinite_tensors(state.items())
    if found:
        raise WeightsError(
            f"weights file {str(path)!r} holds non-finite values in {len(found)} tensor(s) — "
            f"{describe_nonfinite(found)}: a diverged or corrupted checkpoint, which no client can train from. "
            "Valid: a weights file whose every tensor is finite (check the training run that saved it)."
        )


def read_state_dict(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a local file; returns ``(state dict on CPU, format)``. See :func:`load_weights`."""
    file = Path(path)
    _check_file(file, path)
    if file.suffix.lower() in _SAFETENSORS_SUFFIXES:
        return _read_safetensors(file), "safetensors"
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
        fmt = "torch"
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused is None:  # not an object the allow-list refused: a corrupt or foreign file
            raise WeightsError(f"cannot read weights file {str(path)!r}: torch.load(weights_only=True) cannot parse "
                               f"it ({_weights_only_reason(exc)}). {_VALID}") from None
        name, blocked = refused
        if blocked or not trust_pickle:
            raise WeightsError(_refusal(path, name, blocked)) from None
        obj = _load_pickle(file)
        fmt = "pickle"
    except Exception as exc:  # torch's safe loader runs no code of the file; a corrupt file raises anything
        raise WeightsError(f"cannot read weights file {str(path)!r} with torch.load(weights_only=True): "
                           f"{type(exc).__name__}: {exc} (empty, truncated or not a weights file?). {_VALID}"
                           ) from None
    return _as_state_dict(obj, path), fmt


_VALID = ("Valid: a .safetensors file (safetensors.torch.save_file), or a state dict of tensors saved with "
          "torch.save(model.state_dict(), PATH)")
# torch's two wordings of a refused global: "Unsupported global: GLOBAL os.getcwd was not an allowed global by
# default" and "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
_GLOBAL_RE = re.compile(r"\bGLOBAL\s+([\w.]+)", re.IGNORECASE)
_BLOCKED_RE = re.compile(r"whose module\s+(\S+)\s+is blocked", re.IGNORECASE)


def _check_file(file: Path, path: str | os.PathLike[str]) -> None:
    """A local regular file, or a :class:`WeightsError` saying what it is instead."""
    given = f"weights file {str(path)!r}"
    if file.is_symlink() and not file.exists():
        raise WeightsError(f"{given} is a symbolic link that loops or points to nothing; give the path of the "
                           "weights file itself (a local .safetensors or torch.save file)")
    if file.is_dir():
        raise WeightsError(f"{given} is a folder, not a file; give the path of one .safetensors or torch.save file "
                           "in it")
    if not file.exists():
        raise WeightsError(f"{given} does not exist; give a local path (giacheck never downloads weights)")
    if not file.is_file():
        raise WeightsError(f"{given} is not a regular file (a device, pipe or socket?); give a local "
                           ".safetensors or torch.save file")
    if file.stat().st_size == 0:
        raise WeightsError(f"{given} is empty (0 bytes): was it written completely? {_VALID}")


def _refused_global(exc: pickle.UnpicklingError) -> tuple[str, bool] | None:
    """The global torch's safe loader refused to call, and whether its module is blocked outright; None when the
    loader failed for another reason (an opcode it does not support, a corrupt file)."""
    text = str(exc)
    found = _GLOBAL_RE.search(text)
    if found is None:
        return None
    return found.group(1).rstrip("."), _BLOCKED_RE.search(text) is not None


def _refusal(path: str | os.PathLike[str], name: str, blocked: bool) -> str:
    """Why a file calling the global ``name`` is refused, and what to give instead."""
    if blocked:
        return (f"weights file {str(path)!r} is refused: it calls the global {name}, which is not allowed (its "
                "module is blocked: no checkpoint needs it, and calling it can run commands on this machine). It "
                f"is not safe to load, with or without trust_pickle. {_VALID}.")
    return (f"weights file {str(path)!r} is refused: it calls the global {name}, which is not allowed in a weights "
            "file: it needs arbitrary pickled objects, and loading them can run code, so it is not safe to load. "
            f"{_VALID}; or pass trust_pickle=True if you trust the file (e.g. a whole pickled checkpoint).")


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[tuple[str, int, int]]:
    """``(name, NaN count, Inf count)`` of each floating-point tensor holding a NaN or an infinity."""
    found = []
    for name, tensor in named:
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            nans = int(torch.isnan(tensor).sum())
            found.append((name, nans, tensor.numel() - nans - int(torch.isfinite(tensor).sum())))
    return found


def describe_nonfinite(found: list[tuple[str, int, int]]) -> str:
    """``"fc.weight (3 NaN, 0 Inf), ..."`` for :func:`nonfinite_tensors`' result, the first ten named."""
    listed = ", ".join(f"{name} ({nans} NaN, {infs} Inf)" for name, nans, infs in found[:_LISTED])
    return listed + _more(found)


def _weights_only_reason(exc: pickle.UnpicklingError) -> str:
    """The line of torch's long weights-only message that says what it could not parse (an unsupported operand)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "unsupported" in line.lower()), lines[0] if lines else "")
    return reason.split(" Please ")[0] or type(exc).__name__  # drop torch's advice to allow-list or file an issue


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read safetensors file {str(file)!r}: {exc} (truncated, or not a safetensors "
                           "file?). Valid: a complete file as safetensors.torch.save_file writes it, or a torch.save "
                           "state dict under another suffix than .safetensors") from None


def _load_pickle(file: Path) -> Any:
    log.warning("loading %s with full pickle (trust_pickle=True): it can execute code", file)
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # an arbitrary pickle can raise anything; name the file and re-raise typed
        raise WeightsError(f"cannot unpickle weights file {str(file)!r}: {type(exc).__name__}: {exc}") from exc


def _as_state_dict(obj: Any, path: str | os.PathLike[str], depth: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, a module, or a checkpoint dict holding one of those."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    if isinstance(obj, Mapping) and depth < 2:
        for key in _WRAPPER_KEYS:
            if obj.get(key) is not None:
                return _as_state_dict(obj[key], path, depth + 1)
    kind = f"a dict with keys {sorted(map(str, obj))[:_LISTED]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(f"weights file {str(path)!r} holds {kind}, not a state dict of tensors (expected a mapping of "
                       f"names to tensors, or a checkpoint with one under {', '.join(_WRAPPER_KEYS)})")


def _strip_wrapper_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not state or any(k in own for k in state):
        return state
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _names(keys: tuple[str, ...] | list[Any]) -> str:
    return ", ".join(keys[:_LISTED]) + _more(keys) if keys else "none"


def _more(items: tuple[Any, ...] | list[Any]) -> str:
    return f" ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
