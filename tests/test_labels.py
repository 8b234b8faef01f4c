"""Tests of giacheck.attack.labels: iDLG label inference for bs1 (exact), its count heuristic for larger
batches (measured accuracy), FedAvg sign handling, and the error for an update without a classifier."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from giacheck.attack.labels import classifier_tensor, infer_labels
from giacheck.client import simulate_update
from giacheck.errors import InvalidUpdateError
from giacheck.models import build
from giacheck.specs import BNMode, ClientSpec, UpdateKind

# (model, client BN mode); lenet_sigmoid has no BatchNorm, so its mode does not matter.
SETTINGS = [("resnet18_cifar", BNMode.EVAL), ("resnet18_cifar", BNMode.TRAIN), ("lenet_sigmoid", BNMode.EVAL)]
UPDATES = [(UpdateKind.FEDSGD, 1), (UpdateKind.FEDAVG, 1), (UpdateKind.FEDAVG, 3)]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: build(name, 32) for name in ("resnet18_cifar", "lenet_sigmoid")}


def _images(batch_size: int, seed: int) -> torch.Tensor:
    return torch.rand(batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("kind", "steps"), UPDATES, ids=["fedsgd", "fedavg1", "fedavg3"])
@pytest.mark.parametrize(("name", "mode"), SETTINGS, ids=[f"{n}-{m}" for n, m in SETTINGS])
def test_idlg_bs1_recovers_every_label(models, name: str, mode: BNMode, kind: UpdateKind, steps: int) -> None:
    spec = ClientSpec(bn_mode=mode, update=kind, local_steps=steps, local_lr=0.05)
    images = _images(1, seed=0)
    for label in range(10):
        update = simulate_update(models[name], images, torch.tensor([label]), spec)
        inferred = infer_labels(update, 10)
        assert inferred.dtype == torch.int64
        assert inferred.tolist() == [label], f"{name} {mode} {kind}{steps}: true {label}, inferred {inferred}"


def test_fedavg_signal_is_sign_flipped(models) -> None:
    images, labels = _images(1, seed=1), torch.tensor([4])
    grad = simulate_update(models["lenet_sigmoid"], images, labels, ClientSpec())
    delta = simulate_update(models["lenet_sigmoid"], images, labels,
                            ClientSpec(update=UpdateKind.FEDAVG, local_steps=1, local_lr=0.1))
    torch.testing.assert_close(classifier_tensor(delta, 10), 0.1 * classifier_tensor(grad, 10), rtol=1e-4, atol=1e-6)
    assert int(torch.argmin(classifier_tensor(grad, 10))) == 4


def test_classifier_falls_back_to_weight_row_sums(models) -> None:
    images, labels = _images(1, seed=2), torch.tensor([6])
    update = simulate_update(models["lenet_sigmoid"], images, labels, ClientSpec())
    without_bias = dataclasses.replace(update, tensors={k: v for k, v in update.tensors.items() if k != "net.fc.bias"})
    torch.testing.assert_close(classifier_tensor(without_bias, 10), update.tensors["net.fc.weight"].sum(dim=1))
    assert infer_labels(without_bias, 10).tolist() == [6]  # sigmoid features are positive: the sign survives


# --- larger batches: the count heuristic (B most negative entries) ------------------------------------------

# Measured on these seeds (distinct labels): exact for lenet_sigmoid and for resnet18_cifar in train mode at
# bs 2/4/8; resnet18_cifar in eval mode (random init, running stats 0/1) puts most of the softmax mass on one
# class for every image, so that class's entry turns positive once it is someone's label among >= 3 images:
# 8/8 seeds exact at bs2, at bs4 5/8 exact and 3/4 of labels right otherwise, at bs8 7/8 labels right.
# lenet_sigmoid with DLG's init (weights uniform ±0.5: saturated sigmoids) is exact at bs1 only: at bs4 3 of 4
# labels right, at bs8 6 of 8 on these seeds — the count heuristic is a heuristic.
EXACT_BATCH = [("resnet18_cifar", BNMode.TRAIN)]


def _distinct_batch(batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, 32, 32, generator=gen)
    return images, torch.randperm(10, generator=gen)[:batch_size]


def _check_valid(inferred: torch.Tensor, batch_size: int) -> None:
    assert inferred.shape == (batch_size,)
    assert inferred.dtype == torch.int64
    assert int(inferred.min()) >= 0 and int(inferred.max()) < 10
    assert inferred.tolist() == sorted(inferred.tolist())  # documented: ascending class order


@pytest.mark.parametrize("batch_size", [2, 4, 8])
@pytest.mark.parametrize(("name", "mode"), EXACT_BATCH, ids=[f"{n}-{m}" for n, m in EXACT_BATCH])
def test_distinct_labels_exact(models, name: str, mode: BNMode, batch_size: int) -> None:
    for seed in range(2):
        images, labels = _distinct_batch(batch_size, seed)
        inferred = infer_labels(simulate_update(models[name], images, labels, ClientSpec(bn_mode=mode)), 10)
        _check_valid(inferred, batch_size)
        assert inferred.tolist() == sorted(labels.tolist())


@pytest.mark.parametrize("batch_size", [2, 4, 8])
def test_distinct_labels_eval_resnet_accuracy(models, batch_size: int) -> None:
    correct = total = 0
    for seed in range(4):
        images, labels = _distinct_batch(batch_size, seed)
        update = simulate_update(models["resnet18_cifar"], images, labels, ClientSpec(bn_mode=BNMode.EVAL))
        inferred = infer_labels(update, 10)
        _check_valid(inferred, batch_size)
        assert len(set(inferred.tolist())) == batch_size
        correct += len(set(inferred.tolist()) & set(labels.tolist()))
        total += batch_size
    accuracy = correct / total
    assert accuracy >= (1.0 if batch_size == 2 else 0.75), f"label accuracy {accuracy:.3f} at bs{batch_size}"


def test_repeated_labels_cannot_be_exact(models) -> None:
    """Known limitation: B distinct classes are returned, so a batch with a repeated label is never exact."""
    images = _images(2, seed=3)
    update = simulate_update(models["lenet_sigmoid"], images, torch.tensor([3, 3]), ClientSpec())
    inferred = infer_labels(update, 10)
    _check_valid(inferred, 2)
    assert 3 in inferred.tolist() and len(set(inferred.tolist())) == 2


# --- errors -----------------------------------------------------------------------------------------------


def test_update_without_matching_classifier_raises(models) -> None:
    update = simulate_update(models["lenet_sigmoid"], _images(1, seed=0), torch.tensor([1]), ClientSpec())
    with pytest.raises(InvalidUpdateError, match="classifier layer with 7 outputs") as info:
        infer_labels(update, 7)
    assert "lab_inferred" in str(info.value)


def test_five_class_model_has_no_ten_class_classifier() -> None:
    model = build("lenet_sigmoid", 32, num_classes=5)
    update = simulate_update(model, _images(1, seed=0), torch.tensor([2]), ClientSpec())
    with pytest.raises(InvalidUpdateError, match="10 outputs"):
        infer_labels(update, 10)
    assert infer_labels(update, 5).tolist() == [2]
