"""A real Flower client, called in-process for one round: a ``ClientApp`` with a train message, or a
``NumPyClient``'s ``fit``. No SuperLink, SuperNode, gRPC or simulation engine: the app object is called as
``app(message, context)``, so its mods (``fixedclipping_mod`` …) run as they would in a deployment.

The train message carries what a Flower server sends: the global model's ``state_dict`` as an ``ArrayRecord``
(``"arrays"``) and a ``ConfigRecord`` (``"config"``) with ``lr``, ``local-epochs``, ``batch-size`` and the
server's own entries (``clipping_norm`` for Flower's DP strategies). The client's data is the private batch
(:func:`giacheck.fl.client_batch`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from giacheck.fl.capture import SERVER_KEYS, CaptureError, Sent
from giacheck.fl.load import load_object, require

__all__ = ["FlowerClient"]

_EXTRA = "flower"
_MODULE = "flwr"


@dataclass(frozen=True, slots=True)
class FlowerClient:
    """A Flower client to capture: ``target`` names a ``ClientApp``, a ``NumPyClient`` subclass or instance, or a
    ``client_fn(context)`` returning a client (``pkg.mod:attr``). ``config``: what the server puts in the train
    message's config besides the local training (a DP strategy's ``clipping_norm``). ``legacy``: send a ``ClientApp``
    the pre-1.21 ``fitins`` message even though it registers a train function (an app built from a ``client_fn``
    gets it anyway). ``delta``: the client sends ``new - global`` rather than its new weights."""

    target: str
    config: tuple[tuple[str, Any], ...] = field(default=())
    legacy: bool = False
    delta: bool = False  # the client sends new - global weights rather than new weights

    def __post_init__(self) -> None:
        if isinstance(self.config, dict):
            object.__setattr__(self, "config", tuple(sorted(self.config.items())))
        for key, value in self.config:
            if not isinstance(key, str) or isinstance(value, bool | type(None)) or not isinstance(
                    value, int | float | str):
                raise CaptureError(f"Flower config entry {key!r}: {value!r} (valid: string keys with int, float "
                                   f"or str values)")
            if key in SERVER_KEYS:
                raise CaptureError(f"Flower config entry {key!r}: the local training ({', '.join(SERVER_KEYS)}) comes "
                                   f"from the case, so that the replica reruns it; set it in the grid (--lrs, "
                                   f"--updates fedavgK, --minibatches, --optimizers, --weight-decays)")

    framework = "flower"

    def describe(self) -> dict[str, Any]:
        """The client as the threat record names it (the version only once the framework is imported)."""
        return {"framework": self.framework, "target": self.target, "legacy": self.legacy, "delta": self.delta,
                "server_config": dict(self.config)}

    def version(self) -> str:
        return require(_MODULE, _EXTRA).__version__

    def check(self) -> None:
        """Import flwr and the target and check it is a Flower client, before any compute."""
        _client_kind(self._load(), self.target)

    def run_round(self, state: dict[str, Any], settings: dict[str, Any]) -> Sent:
        """One round: the app or client receives ``state`` (numpy arrays by ``state_dict`` name) and the server's
        config (``settings`` plus :attr:`config`), and what it sends back is returned unchecked. Flower's own
        INFO logging is quieted for the round."""
        obj = self._load()
        kind = _client_kind(obj, self.target)
        config = {**settings, **dict(self.config)}
        flwr_log = logging.getLogger("flwr")
        level = flwr_log.level
        flwr_log.setLevel(max(level, logging.WARNING))
        try:
            if kind == "app":
                return self._via_app(obj, state, config)
            if kind == "class":
                obj = _call(obj, "constructing", self.target)
            if kind in ("class", "numpy"):
                return self._fit(obj, state, config)
            client = _call(lambda: obj(_context()), "calling client_fn", self.target)
            from flwr.client import NumPyClient
            from flwr.clientapp import ClientApp

            if isinstance(client, NumPyClient):
                return self._fit(client, state, config)
            return self._via_app(ClientApp(client_fn=lambda context: client), state, config, legacy=True)
        finally:
            flwr_log.setLevel(level)

    def _load(self) -> Any:
        require(_MODULE, _EXTRA)
        return load_object(self.target, what="Flower client")

    def _fit(self, client: Any, state: dict[str, Any], config: dict[str, Any]) -> Sent:
        out = _call(lambda: client.fit(list(state.values()), dict(config)), "fit", self.target)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise CaptureError(f"{self.target}.fit returned {type(out).__name__}; valid: (parameters, "
                               f"num_examples, metrics) as NumPyClient.fit returns")
        arrays, num_examples, metrics = out
        return Sent(arrays=list(arrays), delta=self.delta, called="NumPyClient.fit",
                    metadata={"num_examples": num_examples, **dict(metrics or {})})

    def _via_app(self, app: Any, state: dict[str, Any], config: dict[str, Any], *, legacy: bool | None = None
                 ) -> Sent:
        from flwr.app import ArrayRecord, ConfigRecord, RecordDict

        if legacy is None:  # an app built from a client_fn registers no train function: it serves fitins messages
            if not (hasattr(app, "_registered_funcs") and hasattr(app, "_call")):
                raise CaptureError(f"{self.target}: this flwr ({self.version()}) ClientApp does not show whether it "
                                   f"was built from a client_fn; pass FlowerClient(..., legacy=True) if it was")
            legacy = self.legacy or (not app._registered_funcs and app._call is not None)
        if legacy:
            from flwr.common import FitIns, ndarrays_to_parameters
            from flwr.compat.common.recorddict_compat import fitins_to_recorddict

            content = fitins_to_recorddict(FitIns(ndarrays_to_parameters(list(state.values())), config),
                                           keep_input=True)
        else:
            import torch

            weights = {name: torch.from_numpy(array) for name, array in state.items()}  # as a state_dict
            content = RecordDict({"arrays": ArrayRecord(weights), "config": ConfigRecord(config)})
        reply = _call(lambda: app(_message(content), _context()), "running the ClientApp", self.target)
        if reply.has_error():
            raise CaptureError(f"{self.target} replied with an error (code {reply.error.code}): {reply.error.reason}")
        if legacy:
            from flwr.common import parameters_to_ndarrays
            from flwr.compat.common.recorddict_compat import recorddict_to_fitres

            res = recorddict_to_fitres(reply.content, keep_input=True)
            return Sent(arrays=parameters_to_ndarrays(res.parameters), delta=self.delta, called="ClientApp, fitins",
                        metadata={"num_examples": res.num_examples, **dict(res.metrics or {})})
        records = dict(reply.content.array_records)
        if len(records) != 1:
            raise CaptureError(f"{self.target} replied with {len(records)} ArrayRecords ({sorted(records)}); valid: "
                               f"exactly one, the model's weights")
        (arrays,) = records.values()
        metrics = {k: v for record in reply.content.metric_records.values() for k, v in record.items()}
        named = {name: array.numpy() for name, array in arrays.items()}
        if list(named) == [str(i) for i in range(len(named))]:  # ArrayRecord(list of arrays): state_dict order
            return Sent(arrays=list(named.values()), delta=self.delta, called="ClientApp, Message API",
                        metadata=metrics)
        return Sent(arrays=named, delta=self.delta, called="ClientApp, Message API", metadata=metrics)


def _client_kind(obj: Any, target: str) -> str:
    """``app`` (a ClientApp), ``class`` (a NumPyClient subclass), ``numpy`` (an instance) or ``client_fn``."""
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp

    if isinstance(obj, ClientApp):
        return "app"
    if isinstance(obj, type) and issubclass(obj, NumPyClient):
        return "class"
    if isinstance(obj, NumPyClient):
        return "numpy"
    if callable(obj) and not isinstance(obj, type):
        return "client_fn"
    raise CaptureError(f"{target} is a {type(obj).__name__}; valid: a flwr ClientApp, a NumPyClient subclass or "
                       f"instance, or a client_fn(context)")


def _message(content: Any) -> Any:
    """A train message as a server would address it (explicit metadata: the instruction constructor reads a
    running ServerApp's identity)."""
    from flwr.app import DEFAULT_TTL, Message, MessageType, Metadata

    metadata = Metadata(run_id=1, message_id="giacheck-1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
                        group_id="1", created_at=time.time(), ttl=DEFAULT_TTL, message_type=MessageType.TRAIN)
    return Message(content=content, metadata=metadata)


def _context() -> Any:
    from flwr.app import Context, RecordDict

    return Context(run_id=1, node_id=1, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(),
                   run_config={})


def _call(fn: Any, doing: str, target: str) -> Any:
    try:
        return fn()
    except CaptureError:
        raise
    except Exception as exc:
        raise CaptureError(f"{target} raised {type(exc).__name__} while {doing}: {exc}") from exc
