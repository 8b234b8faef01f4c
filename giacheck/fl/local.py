"""The local training of the example clients: plain SGD over the private batch, as a framework user writes it."""

from __future__ import annotations

import torch
from torch import nn

from giacheck.fl import client_batch

__all__ = ["train_locally"]


def train_locally(net: nn.Module, lr: float, epochs: int, batch_size: int) -> int:
    """Plain SGD over the private batch in order, ``epochs`` times; returns the number of examples."""
    batch = client_batch()
    x, y = batch.inputs, batch.labels
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for i in range(0, len(x), batch_size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + batch_size]), y[i:i + batch_size]).backward()
            optimizer.step()
    return len(x)
