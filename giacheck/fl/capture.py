"""What a real FL client sent back, as a :class:`~giacheck.client.ClientUpdate` against the global model.

Frameworks send the whole ``state_dict`` (Flower's templates, FEDn): parameters and BatchNorm buffers, either as
named tensors or as an ordered list of arrays in ``state_dict`` order, either full weights or a delta. Every name
and shape is checked against the global model before anything is attacked; the parameters become the weight
delta (FedAvg), the BatchNorm buffers the running statistics after the round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from giacheck.client import BNStats, ClientUpdate, bn_modules, check_finite_model
from giacheck.errors import GiacheckError
from giacheck.models.weights import describe_nonfinite, nonfinite_tensors
from giacheck.specs import BNMode, ClientSpec, UpdateKind

__all__ = ["SERVER_KEYS", "CaptureError", "Sent", "server_settings", "to_update", "trained_batchnorm", "upstream"]


class CaptureError(GiacheckError, ValueError):
    """A framework client that could not be loaded or run, or sent back something that is not an update of the
    global model; raised before any attack."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """What the client sent back for one round, before it is checked against the model.

    ``arrays``: named tensors/arrays, or a sequence in the global model's ``state_dict`` order. ``delta``: the
    arrays are ``new - global`` rather than new weights. ``metadata``: what the framework reports beside them
    (FEDn's training metadata, Flower's metrics), kept in the threat record as the server saw it.
    """

    arrays: Mapping[str, Any] | Sequence[Any]
    delta: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    called: str = ""  # how the client was called (e.g. "ClientApp, Message API"), for the threat record


SERVER_KEYS = ("lr", "local-epochs", "batch-size", "optimizer", "weight-decay")


def server_settings(spec: ClientSpec, batch_size: int) -> dict[str, Any]:
    """The local training a server sends in its round config (:data:`SERVER_KEYS`, as Flower's templates read
    them)."""
    values = (spec.local_lr, spec.local_steps, spec.minibatch or batch_size, spec.optimizer, spec.weight_decay)
    return dict(zip(SERVER_KEYS, values, strict=True))


def to_update(global_model: nn.Module, sent: Sent, *, spec: ClientSpec, input_shape: tuple[int, ...],
              source: str) -> ClientUpdate:
    """The update ``sent`` makes of ``global_model``'s round: parameters as the weight delta, BatchNorm buffers as
    the running statistics after it, the client's training as ``spec`` (what the server knows or assumes).

    Raises:
        CaptureError: names missing or unexpected, an array whose shape differs from the model's, a list of the
            wrong length, a value that is not numeric or not finite — each named, with ``source`` (the client).
    """
    check_finite_model(global_model)
    net, prefix = upstream(global_model)
    state = net.state_dict()
    named = _named(sent.arrays, state, source)
    for name, value in named.items():
        if state[name].dim() == 0 and value.numel() == 1:  # a 0-d buffer Flower's records carry as shape (1,)
            named[name] = value = value.reshape(())
        if tuple(value.shape) != tuple(state[name].shape):
            raise CaptureError(f"{source} sent {name!r} of shape {tuple(value.shape)}; the global model's is "
                               f"{tuple(state[name].shape)} (is the client's model the one under test?)")
    bad = nonfinite_tensors((n, v) for n, v in named.items() if v.is_floating_point())
    if bad:
        raise CaptureError(f"{source} sent non-finite values: {describe_nonfinite(bad)} (valid: finite arrays)")
    tensors = {}
    for name, p in global_model.named_parameters():
        value = named[name.removeprefix(prefix)].to(p.device, p.dtype)
        tensors[name] = value if sent.delta else value - p.detach()
    before, after = {}, {}
    for name, m in bn_modules(global_model).items():
        before[name] = _stats(m, m.running_mean, m.running_var, m.num_batches_tracked)
        got = [named[f"{name.removeprefix(prefix)}.{key}"].to(m.running_mean.device)
               for key in ("running_mean", "running_var", "num_batches_tracked")]
        if sent.delta:
            got = [g + b for g, b in zip(got, (m.running_mean, m.running_var, m.num_batches_tracked), strict=True)]
        after[name] = _stats(m, *got)
    return ClientUpdate(kind=UpdateKind.FEDAVG, tensors=tensors, bn_before=before, bn_after=after,
                        bn_mode=spec.bn_mode, batch_size=input_shape[0], local_steps=spec.local_steps,
                        local_lr=spec.local_lr, input_shape=input_shape, defences=spec.defences, spec=spec,
                        draws_seed=None)


def upstream(model: nn.Module) -> tuple[nn.Module, str]:
    """The network a client trains (the model without giacheck's normalization wrapper) and the prefix its
    names carry inside the wrapper."""
    from giacheck.models.entry import NormalizedModel

    return (model.net, "net.") if isinstance(model, NormalizedModel) else (model, "")


def trained_batchnorm(global_model: nn.Module, update: ClientUpdate) -> BNMode | None:
    """The BatchNorm mode the client's buffers show: ``train`` when any running statistic moved, ``eval`` when
    none did, None for a model without BatchNorm."""
    if not update.bn_before:
        return None
    moved = any(update.bn_after[n].num_batches_tracked != s.num_batches_tracked
                or not torch.equal(update.bn_after[n].mean, s.mean) for n, s in update.bn_before.items())
    return BNMode.TRAIN if moved else BNMode.EVAL


def _named(arrays: Mapping[str, Any] | Sequence[Any], state: Mapping[str, torch.Tensor],
           source: str) -> dict[str, torch.Tensor]:
    """``arrays`` as tensors keyed by the global model's ``state_dict`` names, every name present once."""
    if isinstance(arrays, Mapping):
        missing = [n for n in state if n not in arrays]
        extra = [n for n in arrays if n not in state]
        if missing or extra:
            raise CaptureError(f"{source} sent names that do not match the global model: "
                               + "; ".join(part for part in (_listed("missing", missing), _listed("unexpected", extra))
                                           if part)
                               + f" (valid: the {len(state)} names of the model's state_dict, e.g. "
                                 f"{next(iter(state))!r})")
        items = [(n, arrays[n]) for n in state]
    elif isinstance(arrays, Sequence) and not isinstance(arrays, str | bytes):
        if len(arrays) != len(state):
            raise CaptureError(f"{source} sent {len(arrays)} arrays; the global model's state_dict has {len(state)} "
                               f"(parameters and buffers, in state_dict order)")
        items = list(zip(state, arrays, strict=True))
    else:
        raise CaptureError(f"{source} sent a {type(arrays).__name__}; valid: a mapping of names to arrays or a "
                           f"list of arrays in the model's state_dict order")
    return {name: _tensor(value, name, source) for name, value in items}


def _tensor(value: Any, name: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except Exception as exc:  # an object numpy cannot read: named, not a numpy traceback
        raise CaptureError(f"{source} sent {name!r} as a {type(value).__name__}, not an array ({exc})") from exc
    if array.dtype.kind not in "fiub":
        raise CaptureError(f"{source} sent {name!r} as a {array.dtype} array; valid: numeric arrays")
    return torch.from_numpy(np.ascontiguousarray(array))


def _listed(what: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(repr(n) for n in names[:4])
    return f"{what} {len(names)} ({shown}{', …' if len(names) > 4 else ''})"


def _stats(m: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, var: torch.Tensor, tracked: Any) -> BNStats:
    return BNStats(mean=mean.detach().clone().to(m.running_mean.dtype),
                   var=var.detach().clone().to(m.running_var.dtype), num_batches_tracked=int(tracked),
                   momentum=m.momentum)
