"""Flower clients written in the tests: a BatchNorm CNN client (all three Flower APIs) and broken ones."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from giacheck.examples import plain_classifier
from giacheck.fl import client_batch
from giacheck.fl.local import train_locally


def _trained(arrays: ArrayRecord, config) -> tuple[torch.nn.Module, int]:
    net = plain_classifier()
    net.load_state_dict(arrays.to_torch_state_dict())
    n = train_locally(net, float(config["lr"]), int(config["local-epochs"]), int(config["batch-size"]))
    return net, n


bn_app = ClientApp()


@bn_app.train()
def _bn_train(msg: Message, context: Context) -> Message:
    net, n = _trained(msg.content["arrays"], msg.content["config"])
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord({"num-examples": n})}),
                   reply_to=msg)


class BNClient(NumPyClient):
    def fit(self, parameters, config):
        net = plain_classifier()
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in zip(net.state_dict(), parameters,
                                                                                strict=True)})
        n = train_locally(net, float(config["lr"]), int(config["local-epochs"]), int(config["batch-size"]))
        return [v.numpy() for v in net.state_dict().values()], n, {"lr": float(config["lr"])}


def bn_client_fn(context: Context):
    """The pre-1.21 way: a client_fn returning a Client, which a ClientApp serves with ``fitins`` messages."""
    return BNClient().to_client()


legacy_app = ClientApp(client_fn=bn_client_fn)

renamed_app = ClientApp()


@renamed_app.train()
def _renamed(msg: Message, context: Context) -> Message:
    net, _ = _trained(msg.content["arrays"], msg.content["config"])
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    return Message(RecordDict({"arrays": ArrayRecord(state)}), reply_to=msg)


class WrongShapeClient(NumPyClient):
    def fit(self, parameters, config):
        client_batch()
        return [np.zeros((2, 2), dtype=np.float32), *parameters[1:]], 1, {}


class OwnDataClient(NumPyClient):
    """Trains on data of its own, not on the private batch."""

    def fit(self, parameters, config):
        return [p + 0.01 for p in parameters], 4, {}


class BadLrClient(BNClient):
    def fit(self, parameters, config):
        arrays, n, _ = super().fit(parameters, config)
        return arrays, n, {"lr": float("nan")}


list_app = ClientApp()


@list_app.train()
def _as_list(msg: Message, context: Context) -> Message:
    net, _ = _trained(msg.content["arrays"], msg.content["config"])
    return Message(RecordDict({"arrays": ArrayRecord([v.numpy() for v in net.state_dict().values()])}),
                   reply_to=msg)


raising_app = ClientApp()


@raising_app.train()
def _raising(msg: Message, context: Context) -> Message:
    raise RuntimeError("CUDA out of memory on the client")
