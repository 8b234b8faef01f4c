"""An example Scaleout Edge (FEDn) train callback for the DLG LeNet (``lenet_sigmoid``), as a FEDn user writes
it: the command line of the README's "Audit your federated client" captures it. Needs
``pip install 'giacheck[fedn]'``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from scaleoututil.helpers.helpers import get_helper
from scaleoututil.utils.model import ScaleoutModel

from giacheck.fl import client_batch
from giacheck.fl.local import train_locally
from giacheck.models.lenet import SigmoidLeNet

__all__ = ["train"]

HELPER = get_helper("numpyhelper")


def train(in_model: ScaleoutModel, client_settings: dict) -> tuple[ScaleoutModel, dict]:
    """FEDn's train callback: plain SGD over the private batch with the settings the server sent."""
    batch = client_batch()
    net = SigmoidLeNet(batch.images.shape[-1], 10)
    arrays = in_model.get_training_model(HELPER)
    net.load_state_dict(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in zip(net.state_dict(), arrays,
                                                                                         strict=True)))
    lr, epochs, batch_size = (float(client_settings["lr"]), int(client_settings["epochs"]),
                              int(client_settings["batch_size"]))
    n = train_locally(net, lr, epochs, batch_size)
    out = ScaleoutModel.from_training_model([v.detach().numpy() for v in net.state_dict().values()], HELPER)
    return out, {"training_metadata": {"num_examples": n, "batch_size": batch_size, "epochs": epochs, "lr": lr}}
