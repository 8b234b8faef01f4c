"""Real federated-learning clients, captured in-process for one round and attacked like a simulated one.

A framework client (:class:`FlowerClient`, :class:`FednClient`) receives the global model and the server's
config as its framework delivers them, trains on the private batch (which the user's code reads with
:func:`client_batch`, in place of its own data loader) and sends back what it would send: :func:`capture`
checks it against the global model and returns the :class:`~giacheck.client.ClientUpdate` the attack sees, with
a record of what the server saw.

Frameworks are optional extras (``pip install 'giacheck[flower]'``, ``'giacheck[fedn]'``; not in one environment:
their pins conflict), imported only when a client is captured.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from giacheck.client import ClientUpdate
from giacheck.fl.capture import CaptureError, Sent, server_settings, to_update, trained_batchnorm, upstream
from giacheck.fl.fedn import FednClient
from giacheck.fl.flower import FlowerClient
from giacheck.specs import ClientSpec, UpdateKind

__all__ = ["CaptureError", "ClientBatch", "FednClient", "FlowerClient", "FrameworkClient", "Sent", "capture",
           "client_batch", "server_settings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBatch:
    """The private batch a captured client trains on: ``images`` are pixels in [0, 1] (N, C, H, W), ``inputs`` the
    same normalized as the network under test takes them, ``labels`` the targets."""

    images: torch.Tensor
    inputs: torch.Tensor
    labels: torch.Tensor


_BATCH: contextvars.ContextVar[ClientBatch | None] = contextvars.ContextVar("giacheck_client_batch", default=None)
_READS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("giacheck_client_reads", default=None)


def client_batch() -> ClientBatch:
    """The private batch of the round being captured: call it where the client would load its own data.

    Raises:
        CaptureError: no round is being captured (the client runs outside giacheck).
    """
    batch, reads = _BATCH.get(), _READS.get()
    if batch is None or reads is None:
        raise CaptureError("giacheck.fl.client_batch() is only available while giacheck captures a round "
                           "(giacheck audit --flower-app …, or a pack with client=FlowerClient(…))")
    reads[0] += 1
    return batch


@contextlib.contextmanager
def _serving(batch: ClientBatch) -> Iterator[list[int]]:
    """Serve ``batch`` to :func:`client_batch` during the round; yields the count of its reads."""
    reads = [0]
    tokens = _BATCH.set(batch), _READS.set(reads)
    try:
        yield reads
    finally:
        _BATCH.reset(tokens[0])
        _READS.reset(tokens[1])


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded for the round, restored afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class FrameworkClient(Protocol):
    """What :func:`capture` needs of a framework client (:class:`FlowerClient` is one)."""

    framework: str

    def describe(self) -> dict[str, Any]: ...
    def version(self) -> str: ...
    def check(self) -> None: ...
    def run_round(self, state: dict[str, Any], settings: dict[str, Any]) -> Sent: ...


def capture(client: FrameworkClient, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            spec: ClientSpec, *, seed: int = 0) -> tuple[ClientUpdate, dict[str, Any]]:
    """Run one round of ``client`` from the global ``model`` on the private ``images``/``labels``, and return the
    update it sent (checked against the model) with the threat record of what the server saw.

    The server sends ``spec``'s local training as its config; the attacker's replica reruns that training (the
    client's own report of lr or epochs, where it sends one, wins), with the BatchNorm mode the returned buffers
    show. ``spec`` must describe a FedAvg client without simulated defences: the client's own code applies any.
    ``seed`` seeds Python's, numpy's and torch's global generators for the round (Flower's DP mods draw their
    noise from numpy's), which are restored afterwards.

    Raises:
        CaptureError: the client does not import or raises, never reads the private batch, sends back something
            that is not an update of ``model`` (names, shapes, non-finite values) or reports hyper-parameters that
            make no sense, or ``spec`` asks giacheck to simulate a defence.
    """
    if spec.update is not UpdateKind.FEDAVG:
        raise CaptureError(f"a framework client sends weights after local training: the case must be FedAvg "
                           f"(-upd_fedavgN), not {spec.update}")
    if spec.defences:
        raise CaptureError(f"defences {'+'.join(spec.defences)} are simulated by giacheck; a framework client applies "
                           f"its own (a Flower mod, its training code): drop -def_ from the case")
    net, _ = upstream(model)
    state = {name: t.detach().cpu().numpy().copy() for name, t in net.state_dict().items()}
    settings = server_settings(spec, images.shape[0])
    if not isinstance(labels, torch.Tensor):
        raise CaptureError("a framework client is captured for classification models only (class-label targets)")
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    inputs = images if mean is None or std is None else (images - mean) / std
    batch = ClientBatch(images=images.detach().cpu().clone(), inputs=inputs.detach().cpu().clone(),
                        labels=labels.detach().cpu().clone())  # on the CPU, as a client's data loader gives it
    source = f"{client.framework} client {client.describe().get('target', '')}".strip()
    with _serving(batch) as reads, _seeded(seed):
        sent = client.run_round(state, settings)
    if reads[0] == 0:
        raise CaptureError(f"{source} never called giacheck.fl.client_batch() during the round, so it did not train "
                           f"on the private batch (it loads its own data, or read the batch once at import time): "
                           f"call client_batch() inside its train function")
    reported = _reported(sent.metadata, source)
    replica = replace(spec, **{k: v for k, v in reported.items() if k in ("local_lr", "local_steps")})
    update = to_update(model, sent, spec=replica, input_shape=tuple(images.shape), source=source)
    bn = trained_batchnorm(model, update)
    if bn is not None and bn is not replica.bn_mode:
        replica = replace(replica, bn_mode=bn)
        update = replace(update, spec=replica, bn_mode=bn)
    record = {**client.describe(), "version": client.version(), "called": sent.called, "sent_by_server": settings,
              "returned": {"arrays": len(net.state_dict()), "kind": "delta" if sent.delta else "full weights",
                           "batchnorm_buffers": bool(update.bn_before), "metadata": _plain(sent.metadata)},
              "replica": {"local_lr": replica.local_lr, "local_steps": replica.local_steps,
                          "bn_mode": str(replica.bn_mode), "optimizer": replica.optimizer,
                          "assumed": _assumed(reported)}}
    return update, record


def _reported(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    """The local training a client reports beside its update (``lr``, ``epochs``/``local-epochs``: FEDn's training
    metadata keys, as Flower metrics), checked."""
    out: dict[str, Any] = {}
    for key, field_ in (("lr", "local_lr"), ("epochs", "local_steps"), ("local-epochs", "local_steps")):
        if key not in metadata:
            continue
        value = metadata[key]
        number = float(value) if isinstance(value, int | float | np.number) and not isinstance(value, bool) else None
        if field_ == "local_lr" and (number is None or not math.isfinite(number) or number <= 0):
            raise CaptureError(f"{source} reports lr {value!r} (valid: a finite number > 0)")
        if field_ == "local_steps" and (number is None or number < 1 or number != int(number)):
            raise CaptureError(f"{source} reports {key} {value!r} (valid: an integer >= 1)")
        out[field_] = number if field_ == "local_lr" else int(number)
    return out


def _assumed(reported: dict[str, Any]) -> str:
    if reported:
        return f"the client's own report ({', '.join(sorted(reported))}); the rest from the server's config"
    return "the client reports no hyper-parameters: the replica assumes it trained as the server's config says"


def _plain(metadata: dict[str, Any]) -> dict[str, Any]:
    return {str(k): (v if isinstance(v, int | float | str | bool) or v is None else repr(v))
            for k, v in metadata.items()}
