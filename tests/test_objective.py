"""Tests of giacheck.attack.objective: update validation, frozen running statistics, the cosine distance, and
the replica's dummy update (functional == autograd path, equal to the client's update at the true images)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from giacheck.attack.bnstats import NormStatsRecorder, elements_per_channel, infer_batch_stats
from giacheck.attack.distance import update_distance
from giacheck.attack.objective import Replica, total_variation
from giacheck.client import ClientUpdate, bn_modules, simulate_update
from giacheck.errors import InvalidUpdateError
from giacheck.models import build
from giacheck.specs import AttackSpec, BNMode, ClientSpec, UpdateKind

SETTINGS = [("lenet_sigmoid", BNMode.EVAL), ("resnet18_cifar", BNMode.EVAL), ("resnet18_cifar", BNMode.TRAIN)]
SETTING_IDS = [f"{n}-{m}" for n, m in SETTINGS]
UPDATES = [(UpdateKind.FEDSGD, 1), (UpdateKind.FEDAVG, 2)]
UPDATE_IDS = ["fedsgd", "fedavg2"]


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {name: build(name, 32) for name in ("resnet18_cifar", "lenet_sigmoid")}


def _batch(batch_size: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch_size, 3, 32, 32, generator=gen), torch.randperm(10, generator=gen)[:batch_size]


def _update(model: nn.Module, mode: BNMode = BNMode.EVAL, kind: UpdateKind = UpdateKind.FEDSGD,
            steps: int = 1) -> tuple[ClientUpdate, torch.Tensor, torch.Tensor]:
    images, labels = _batch()
    spec = ClientSpec(bn_mode=mode, update=kind, local_steps=steps, local_lr=0.05)
    return simulate_update(model, images, labels, spec), images, labels


def _with_tensors(update: ClientUpdate, tensors: dict[str, torch.Tensor]) -> ClientUpdate:
    return dataclasses.replace(update, tensors=tensors)


def _relative_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    err = sum(float((a.detach().double() - e.detach().double()).pow(2).sum())
              for a, e in zip(actual, expected, strict=True))
    ref = sum(float(e.detach().double().pow(2).sum()) for e in expected)
    return (err / ref) ** 0.5


# --- update validation ------------------------------------------------------------------------------------


def test_rejects_nan_tensor_naming_it(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    tensors = dict(update.tensors)
    tensors["net.body.2.weight"] = tensors["net.body.2.weight"].clone()
    tensors["net.body.2.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidUpdateError, match=r"'net\.body\.2\.weight' contains NaN or Inf"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, tensors), labels)


def test_rejects_inf_tensor(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    tensors = {**update.tensors, "net.fc.bias": torch.full_like(update.tensors["net.fc.bias"], float("inf"))}
    with pytest.raises(InvalidUpdateError, match=r"'net\.fc\.bias' contains NaN or Inf"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, tensors), labels)


def test_rejects_wrong_shape(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    tensors = {**update.tensors, "net.fc.weight": update.tensors["net.fc.weight"].t()}
    with pytest.raises(InvalidUpdateError, match=r"'net\.fc\.weight' has shape \(768, 10\).*\(10, 768\)"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, tensors), labels)


def test_rejects_unknown_parameter(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    tensors = {**update.tensors, "net.head.weight": torch.ones(3)}
    with pytest.raises(InvalidUpdateError, match=r"'net\.head\.weight' is not a parameter of the model"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, tensors), labels)


def test_rejects_all_zero_update(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    zeros = {k: torch.zeros_like(v) for k, v in update.tensors.items()}
    with pytest.raises(InvalidUpdateError, match="all zeros"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, zeros), labels)


def test_rejects_empty_update(models) -> None:
    update, _, labels = _update(models["lenet_sigmoid"])
    with pytest.raises(InvalidUpdateError, match="no tensors"):
        Replica(models["lenet_sigmoid"], _with_tensors(update, {}), labels)


def test_partial_update_uses_only_its_tensors(models) -> None:
    update, images, labels = _update(models["lenet_sigmoid"])
    partial = _with_tensors(update, {k: v for k, v in update.tensors.items() if k.startswith("net.fc.")})
    replica = Replica(models["lenet_sigmoid"], partial, labels)
    assert replica.names == ["net.fc.weight", "net.fc.bias"]
    dummy = replica.dummy_update(images)
    assert [d.shape for d in dummy] == [t.shape for t in partial.tensors.values()]
    assert _relative_error(dummy, list(partial.tensors.values())) < 1e-5


# --- running statistics stay frozen -----------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "steps", "functional"), [(UpdateKind.FEDSGD, 1, True), (UpdateKind.FEDAVG, 2, False)],
                         ids=["fedsgd-functional", "fedavg2-autograd"])
def test_replica_forwards_do_not_change_running_stats(models, kind: UpdateKind, steps: int, functional: bool) -> None:
    model = models["resnet18_cifar"]
    update, _, labels = _update(model, BNMode.TRAIN, kind, steps)
    global_state = {k: v.clone() for k, v in model.state_dict().items()}
    replica = Replica(model, update, labels)
    replica_buffers = {k: v.clone() for k, v in replica.net.named_buffers()}
    dummy = torch.rand(2, 3, 32, 32, requires_grad=True)
    objective = replica.objective(AttackSpec(), None, functional=functional)
    total, _ = objective(dummy)
    total.backward()
    for key, value in model.state_dict().items():
        assert torch.equal(value, global_state[key]), f"global model's {key} changed"
    for key, value in replica.net.named_buffers():
        assert torch.equal(value, replica_buffers[key]), f"replica's {key} changed"
    assert replica.net.training  # the replica runs in the client's mode
    assert all(p.grad is None for p in model.parameters())


def test_replica_runs_in_client_mode(models) -> None:
    for mode in BNMode:
        update, _, labels = _update(models["lenet_sigmoid"], mode)
        assert Replica(models["lenet_sigmoid"], update, labels).net.training == (mode is BNMode.TRAIN)


# --- cosine distance and TV -------------------------------------------------------------------------------


def _norm(tensors: list[torch.Tensor]) -> float:
    return sum(float(t.double().pow(2).sum()) for t in tensors) ** 0.5


def test_cosine_distance_identity_negation_orthogonal() -> None:
    gen = torch.Generator().manual_seed(0)
    update = [torch.randn(4, 3, generator=gen), torch.randn(7, generator=gen), torch.randn(2, 2, 2, generator=gen)]
    norm = _norm(update)
    assert abs(float(update_distance("cosine", update, update, norm))) < 1e-6
    assert abs(float(update_distance("cosine", [-u for u in update], update, norm)) - 2.0) < 1e-6
    assert abs(float(update_distance("cosine", [3.5 * u for u in update], update, norm))) < 1e-6  # scale invariant
    a, b = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])], [torch.tensor([0.0, 1.0]), torch.tensor([0.0])]
    assert abs(float(update_distance("cosine", a, b, _norm(b))) - 1.0) < 1e-6


def test_cosine_distance_of_a_real_update(models) -> None:
    update, _, _ = _update(models["resnet18_cifar"])
    tensors = list(update.tensors.values())
    assert abs(float(update_distance("cosine", tensors, tensors, _norm(tensors)))) < 1e-5
    assert abs(float(update_distance("cosine", [-t for t in tensors], tensors, _norm(tensors))) - 2.0) < 1e-5


def test_cosine_distance_needs_matching_lists() -> None:
    with pytest.raises(ValueError):
        update_distance("cosine", [torch.ones(2)], [torch.ones(2), torch.ones(1)], 1.0)


def test_total_variation() -> None:
    assert float(total_variation(torch.full((1, 3, 4, 4), 0.3))) == 0.0
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., 1::2] = 1.0  # vertical stripes: every horizontal neighbour differs, no vertical one does
    assert float(total_variation(stripes)) == pytest.approx(1.0)


# --- dummy update -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "steps"), UPDATES, ids=UPDATE_IDS)
@pytest.mark.parametrize(("name", "mode"), SETTINGS, ids=SETTING_IDS)
def test_dummy_update_paths_agree_and_match_client(models, name: str, mode: BNMode, kind: UpdateKind,
                                                   steps: int) -> None:
    update, images, labels = _update(models[name], mode, kind, steps)
    replica = Replica(models[name], update, labels)
    # functional (torch.func.grad) == autograd (create_graph) at an arbitrary batch
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    functional = replica.dummy_update(x, functional=True)
    autograd = replica.dummy_update(x, functional=False)
    assert len(functional) == len(autograd) == len(update.tensors)
    assert _relative_error(functional, autograd) < 1e-5
    for a, b in zip(functional, autograd, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5 * float(b.detach().abs().max()) + 1e-8)
    # at the client's own images both paths reproduce the client's update: the attack's global optimum is 0
    for path in (True, False):
        dummy = replica.dummy_update(images, functional=path)
        assert _relative_error(dummy, replica.target) < 1e-4
        assert abs(float(update_distance("cosine", dummy, replica.target, replica.target_norm).detach())) < 1e-5


def test_objective_at_true_images(models) -> None:
    update, images, labels = _update(models["resnet18_cifar"], BNMode.EVAL)
    replica = Replica(models["resnet18_cifar"], update, labels)
    total, distance = (t.detach() for t in replica.objective(AttackSpec(tv_weight=0.0), None)(images))
    assert abs(float(distance)) < 1e-5 and float(total) == float(distance)
    total, distance = replica.objective(AttackSpec(tv_weight=0.5), None)(images)
    torch.testing.assert_close(total, distance + 0.5 * total_variation(images))
    _, noise_distance = replica.objective(AttackSpec(), None)(torch.rand(2, 3, 32, 32))
    assert float(noise_distance.detach()) > 1e-2


def test_objective_exact_prior_vanishes_at_true_images(models) -> None:
    """Train-mode bs2 client: the replica's recorded statistics at the true images equal the inverted target."""
    model = models["resnet18_cifar"]
    update, images, labels = _update(model, BNMode.TRAIN)
    names = list(update.bn_after)
    target = infer_batch_stats(update.bn_before, update.bn_after,
                               elements_per_channel(model.eval(), update.input_shape, names))
    model.train()
    replica = Replica(model, update, labels)
    recorder = NormStatsRecorder({n: replica.norms[n] for n in names})
    replica.dummy_update(images, recorder)
    assert set(recorder.mean) == set(names) == set(bn_modules(model))
    spec = AttackSpec(tv_weight=0.0, bn_weight=1.0, bn_prior="relative")
    total, distance = replica.objective(spec, target)(images)
    assert float((total - distance).detach()) < 1e-3  # the relative prior is ~0 at the client's own batch
    far, _ = replica.objective(spec, target)(torch.rand(2, 3, 32, 32))
    assert float(far.detach()) > float(total.detach()) + 1e-2
