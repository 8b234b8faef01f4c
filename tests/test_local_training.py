"""The client's local training (epochs of shuffled mini-batches, optimizers, augmentation, DP-SGD) and the
attacker's replica agree exactly at the true images, and match torch.optim and Opacus step for step."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from giacheck.attack.objective import Replica
from giacheck.client import LocalStep, Optimizer, plan_steps, simulate_update
from giacheck.errors import InvalidCaseError
from giacheck.models import build
from giacheck.specs import Augment, ClientSpec, parse_optimizer

BATCH = 4


def _setup(seed: int = 0):
    model = build("lenet_sigmoid", 16, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, 16, 16, generator=gen)
    labels = torch.randint(0, 10, (BATCH,), generator=gen)
    return model, images, labels


def _one_minus_cos(a: dict[str, torch.Tensor], b: list[torch.Tensor], names: list[str]) -> float:
    x = torch.cat([a[n].flatten().double() for n in names])
    y = torch.cat([t.detach().flatten().double() for t in b])
    return float(1 - torch.nn.functional.cosine_similarity(x, y, dim=0))


SETTINGS = {
    "momentum": dict(optimizer="momentum0.9"),
    "nesterov": dict(optimizer="nesterov0.9"),
    "weight_decay": dict(optimizer="momentum0.9", weight_decay=5e-4),
    "adam": dict(optimizer="adam", local_lr=1e-3),
    "epochs": dict(local_steps=3),
    "minibatch": dict(local_steps=2, minibatch=3),
    "augment": dict(local_steps=2, minibatch=2, augment="cropflip"),
    "dpsgd_no_noise": dict(local_steps=2, minibatch=2, defences=("dpclip0.5", "dpsgd0")),
    "fp16": dict(local_steps=2, defences=("fp16",)),
    "prune_quant": dict(defences=("prune0.5", "quant8")),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_client_and_replica_agree_at_the_true_images(setting: str) -> None:
    """The server told everything (configuration and draws): the replica's update at the true images is the
    client's, 1 − cos = 0 to float precision, for every client setting."""
    model, images, labels = _setup()
    spec = ClientSpec(bn_mode="eval", batch_size=BATCH, update="fedavg",
                      **{"local_steps": 1, **SETTINGS[setting]})
    update = simulate_update(model, images, labels, spec, seed=3)
    replica = Replica(model, update, labels)
    for functional in (True, False):
        dummy = replica.dummy_update(images, functional=functional)
        assert _one_minus_cos(update.tensors, dummy, replica.names) < 1e-6, (setting, functional)


def test_replica_without_the_draws_differs_from_the_client() -> None:
    """Known configuration, unknown draws (hp_known): the replica's own data order and no augmentation give a
    different update at the true images; the agreement above is not a tautology."""
    model, images, labels = _setup()
    spec = ClientSpec(bn_mode="eval", batch_size=BATCH, update="fedavg", local_steps=2, minibatch=2,
                      augment="cropflip", local_lr=0.5)
    update = simulate_update(model, images, labels, spec, seed=3)
    blind = Replica(model, dataclasses.replace(update, draws_seed=None), labels)
    assert _one_minus_cos(update.tensors, blind.dummy_update(images), blind.names) > 1e-4


@pytest.mark.parametrize("optimizer,weight_decay", [("sgd", 0.0), ("momentum0.9", 0.0), ("nesterov0.8", 1e-3),
                                                    ("adam", 0.0), ("adam", 1e-2)])
def test_optimizer_matches_torch_optim(optimizer: str, weight_decay: float) -> None:
    gen = torch.Generator().manual_seed(0)
    start = {"w": torch.randn(5, 3, generator=gen), "b": torch.zeros(3)}
    grads = [{n: torch.randn(t.shape, generator=gen) * (t.ndim > 1) for n, t in start.items()} for _ in range(4)]
    spec = ClientSpec(bn_mode="eval", batch_size=2, update="fedavg", optimizer=optimizer, weight_decay=weight_decay,
                      local_lr=0.1)
    ours, current = Optimizer(spec), start
    for g in grads:
        current = ours.step(current, g)
    params = [torch.nn.Parameter(t.clone()) for t in start.values()]
    if optimizer == "adam":
        reference = torch.optim.Adam(params, lr=0.1, weight_decay=weight_decay)
    else:
        momentum = parse_optimizer(optimizer)[1]
        reference = torch.optim.SGD(params, lr=0.1, momentum=momentum, nesterov=optimizer.startswith("nesterov"),
                                    weight_decay=weight_decay)
    for g in grads:
        for p, t in zip(params, g.values(), strict=True):
            p.grad = t.clone()
        reference.step()
    for p, t in zip(params, current.values(), strict=True):
        torch.testing.assert_close(t, p.detach(), rtol=1e-6, atol=1e-7)


def test_adam_is_differentiable_where_a_gradient_entry_is_zero() -> None:
    """Adam's sqrt at v = 0 has an infinite derivative: the replica's double backward must stay finite."""
    x = torch.tensor([0.0, 2.0], requires_grad=True)
    spec = ClientSpec(bn_mode="eval", batch_size=1, update="fedavg", optimizer="adam")
    out = Optimizer(spec).step({"w": torch.ones(2)}, {"w": x * x})
    (g,) = torch.autograd.grad(out["w"].sum(), x)
    assert torch.isfinite(g).all()


@pytest.mark.filterwarnings("ignore:Secure RNG turned off", "ignore:Full backward hook is firing")
def test_dpsgd_matches_opacus_dpoptimizer() -> None:
    """Per-sample clipping and averaging as Opacus' DPOptimizer does them (noise 0, so the two are comparable),
    over two epochs of fixed mini-batches of 2, SGD with momentum."""
    from opacus import PrivacyEngine

    model, images, labels = _setup()
    spec = ClientSpec(bn_mode="eval", batch_size=BATCH, update="fedavg", local_steps=2, minibatch=2,
                      optimizer="momentum0.9", local_lr=0.1, defences=("dpclip0.05", "dpsgd0"))
    ours = simulate_update(model, images, labels, spec, seed=0)
    steps = plan_steps(spec, BATCH, 16, torch.Generator().manual_seed(ours.draws_seed))

    net = copy.deepcopy(model).train()  # Opacus trains in training mode; LeNet has no BatchNorm or dropout
    start = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    order = [step.index for step in steps]
    batches = [(images[i], labels[i]) for i in order]
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    engine = PrivacyEngine(accountant="rdp")
    private, optimizer, loader = engine.make_private(module=net, optimizer=optimizer, data_loader=loader,
                                                     noise_multiplier=0.0, max_grad_norm=0.05,
                                                     poisson_sampling=False)
    optimizer.expected_batch_size = 2
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(private(x), y).backward()
        optimizer.step()
    for name, p in private._module.named_parameters():
        torch.testing.assert_close(ours.tensors[name], p.detach() - start[name], rtol=1e-4, atol=1e-7)


def test_plan_steps_covers_each_image_once_per_epoch() -> None:
    spec = ClientSpec(bn_mode="eval", batch_size=5, update="fedavg", local_steps=3, minibatch=2, augment="flip")
    steps = plan_steps(spec, 5, 32, torch.Generator().manual_seed(0))
    assert [len(s.index) for s in steps] == [2, 2, 1] * 3
    for epoch in range(3):
        seen = torch.cat([s.index for s in steps[3 * epoch:3 * epoch + 3]])
        assert sorted(seen.tolist()) == list(range(5))
    assert all(s.flips is not None and s.shifts is None for s in steps)


def test_crop_and_flip_are_the_step_draws() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    step = LocalStep(flips=torch.tensor([True, False]), shifts=torch.tensor([[0, 0], [1, 1]]), pad=1)
    out = step.images(x)
    # image 0: cropped at the padded corner (row 0 and the last column after the flip are padding), flipped
    assert out[0, 0, 0].tolist() == [0, 0, 0, 0] and out[0, 0, :, 3].tolist() == [0, 0, 0, 0]
    assert out[0, 0, 1].tolist() == [2, 1, 0, 0]
    torch.testing.assert_close(out[1], x[1])  # shift (pad, pad) is the image itself
    assert Augment("cropflip") is Augment.CROPFLIP


@pytest.mark.parametrize("kwargs,message", [
    (dict(update="fedsgd", optimizer="adam"), "FedSGD"),
    (dict(update="fedavg", minibatch=9), "minibatch=9"),
    (dict(update="fedavg", optimizer="momentum1.5"), "0 < M < 1"),
    (dict(update="fedavg", weight_decay=-1.0), "weight_decay=-1.0"),
])
def test_bad_client_settings_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidCaseError, match=message):
        ClientSpec(bn_mode="eval", batch_size=4, **kwargs)


def test_dpsgd_on_a_fixed_resnet_agrees_with_the_replica() -> None:
    """ResNet-18 after Opacus' fix (GroupNorm; residual adds in place): Opacus' per-sample gradients in the
    client and the replica's torch.func ones agree."""
    from opacus.validators import ModuleValidator

    model = build("resnet18_cifar", 16, seed=0)
    model.net = ModuleValidator.fix(model.net)
    gen = torch.Generator().manual_seed(1)
    images, labels = torch.rand(2, 3, 16, 16, generator=gen), torch.tensor([1, 7])
    spec = ClientSpec(bn_mode="eval", batch_size=2, defences=("dpclip0.1", "dpsgd0"))
    update = simulate_update(model, images, labels, spec, seed=0)
    replica = Replica(model, update, labels)
    assert _one_minus_cos(update.tensors, replica.dummy_update(images), replica.names) < 1e-6


def test_privacy_accounting_is_strict_json() -> None:
    """Zero noise bounds nothing: the entry says so in JSON (which has no infinity); noise gives a finite ε."""
    import json

    from giacheck.defences import make_defences, privacy

    entries = privacy(make_defences(("dpsgd0", "clip1", "noise1")), dataset_size=4, minibatch=None, epochs=1)
    assert [(e["defence"], e["bounded"]) for e in entries] == [("dpsgd0", False), ("noise1", True)]
    assert entries[0]["epsilon"] is None and 0 < entries[1]["epsilon"] < math.inf
    json.dumps(entries, allow_nan=False)
