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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from giacheck.errors import WeightsError

__all__ = ["WeightsReport", "load_weights", "read_state_dict"]

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
        WeightsError: the file is missing or unreadable, needs pickles without ``trust_pickle``, holds no state
            dict, a tensor's shape differs from the module's (the keys are named), or (``strict``) keys differ.
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


def read_state_dict(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state dict from a local file; returns ``(state dict on CPU, format)``. See :func:`load_weights`."""
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist or is not a file; give a local path "
                           "(giacheck never downloads weights)")
    if file.suffix.lower() in _SAFETENSORS_SUFFIXES:
        return _read_safetensors(file), "safetensors"
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
        fmt = "torch"
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(exc)
        if "global" not in reason.lower():  # not an object the allow-list refused: a corrupt or foreign file
            raise WeightsError(f"cannot read weights file {str(path)!r}: torch.load(weights_only=True) failed "
                               f"({reason}); is it a torch.save file, or a .safetensors file with another suffix?"
                               ) from None
        if not trust_pickle:
            raise WeightsError(
                f"weights file {str(path)!r} needs arbitrary pickled objects, which can run code when loaded "
                f"(torch.load(weights_only=True) refused it: {reason}). Save a state dict instead "
                "(torch.save(model.state_dict(), ...) or safetensors), or pass trust_pickle=True if you trust the file."
            ) from None
        obj = _load_pickle(file)
        fmt = "pickle"
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read weights file {str(path)!r} with torch.load: {type(exc).__name__}: {exc}; "
                           "is it a torch.save file or a .safetensors file with another suffix?") from exc
    return _as_state_dict(obj, path), fmt


def _weights_only_reason(exc: pickle.UnpicklingError) -> str:
    """The line of torch's long weights-only message that says what it refused (an unsupported global/operand)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if "Unsupported" in line), lines[0] if lines else type(exc).__name__)
    return reason.split(" Please use")[0]  # drop torch's advice to allow-list the class


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read safetensors file {str(file)!r}: {exc}") from exc


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
