"""Example Flower clients of the DLG LeNet (``lenet_sigmoid``), written as a Flower user writes them: the
command lines of the README's "Audit your federated client" capture these. Imports ``flwr``
(``pip install 'giacheck[flower]'``).

- ``app``: a ``ClientApp`` (Message API) training with SGD on what the server's config says;
- ``clip_app``: the same with Flower's client-side ``fixedclipping_mod`` (the server sends ``clipping_norm``;
  its DP strategy adds the noise after aggregation, so this client's update itself is only clipped);
- ``ldp_app``: the same with Flower's ``LocalDpMod`` (local DP: clipping to 0.1 and Gaussian noise of
  ε = 50, δ = 1e-5 on the client, std 0.0097 per weight);
- ``LeNetClient``: the older ``NumPyClient`` with ``fit(parameters, config)``.

Each reads its data with :func:`giacheck.fl.client_batch` where a deployment would load its partition.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod, fixedclipping_mod
from torch import nn

from giacheck.fl import client_batch
from giacheck.fl.local import train_locally
from giacheck.models.lenet import SigmoidLeNet

__all__ = ["LDP", "LeNetClient", "app", "clip_app", "ldp_app"]


def _net() -> nn.Module:
    return SigmoidLeNet(client_batch().images.shape[-1], 10)


def _train(msg: Message, context: Context) -> Message:
    net = _net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = msg.content["config"]
    n = train_locally(net, float(config["lr"]), int(config["local-epochs"]), int(config["batch-size"]))
    return Message(RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": MetricRecord({"num-examples": n})}),
                   reply_to=msg)


app = ClientApp()
app.train()(_train)

clip_app = ClientApp()
clip_app.train(mods=[fixedclipping_mod])(_train)

LDP = {"clipping_norm": 0.1, "sensitivity": 0.1, "epsilon": 50.0, "delta": 1e-5}
ldp_app = ClientApp()
ldp_app.train(mods=[LocalDpMod(**LDP)])(_train)


class LeNetClient(NumPyClient):
    """The same client through Flower's ``NumPyClient``: weights as an ordered list of arrays."""

    def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
        net = _net()
        keys = list(net.state_dict())
        net.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in zip(keys, parameters,
                                                                                             strict=True)))
        n = train_locally(net, float(config["lr"]), int(config["local-epochs"]), int(config["batch-size"]))
        return [v.detach().cpu().numpy() for v in net.state_dict().values()], n, {}
