"""The ``gradmatch_rescaled`` attack: a defence chain that only rescales the update (clipping, noise the replica
never draws, DP-SGD on one sample) is attacked as undefended under the cosine distance
(``attack.objective.attack_view``). The objective and its gradient in the images are the same function (float64,
1e-10), the factored distance and stacking then apply, and every chain that does more than rescale, a
scale-sensitive distance, a multi-step or aggregated update, or a clipping norm near the cosine's guard keeps the
defended replica."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from giacheck.attack import Trial, invert_trials, make_attack
from giacheck.attack.invert import GradMatch, GradMatchRescaled, lr_milestones
from giacheck.attack.objective import Replica, attack_view
from giacheck.client import simulate_update
from giacheck.defences import ClipUpdateNorm, DefenceStage, make_defences, rescales_only
from giacheck.models import build
from giacheck.records import attack_identity
from giacheck.specs import AttackSpec, BNMode, ClientSpec, UpdateKind

RESCALING = [(("dpsgd1",), 1), (("dpclip0.05", "dpsgd0.5"), 1), (("dpsgd0",), 1), (("clip0.01", "noise1"), 1),
             (("clip1000",), 1), (("identity",), 1), (("clip1",), 2), (("clip0.5", "noise1"), 3)]
KEPT = {
    "dpsgd on two samples": dict(batch=2, defences=("dpsgd1",)),
    "prune": dict(defences=("prune0.9",)),
    "quant": dict(defences=("quant4",)),
    "fp16": dict(defences=("fp16",)),
    "clip then prune": dict(defences=("clip1", "prune0.5")),
    "fedavg of two epochs": dict(defences=("clip0.01",), update=UpdateKind.FEDAVG, local_steps=2),
    "fedavg of one adam step": dict(defences=("dpsgd0",), update=UpdateKind.FEDAVG, optimizer="adam"),
    "a clipping norm at the cosine's guard": dict(defences=("clip0.0000001",)),
}


def _setting(defences, batch: int = 1, dtype=torch.float64, seed: int = 3, **client):
    torch.manual_seed(0)
    model = build("lenet_sigmoid", 32).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, 32, 32, generator=gen, dtype=dtype)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    spec = ClientSpec(bn_mode=BNMode.EVAL, batch_size=batch, defences=defences, **client)
    return model, simulate_update(model, images, labels, spec, seed=0), labels


def _objective_and_grad(model, update, labels, x):
    objective = Replica(model, update, labels).objective(AttackSpec(), None, functional=False)
    x = x.detach().clone().requires_grad_(True)
    total, _ = objective(x)
    return total.detach(), torch.autograd.grad(total, x)[0]


@pytest.mark.parametrize(("defences", "batch"), RESCALING, ids=lambda v: "+".join(v) if isinstance(v, tuple) else
                         f"bs{v}")
def test_a_rescaling_chain_gives_the_same_objective_undefended(defences, batch: int) -> None:
    model, update, labels = _setting(defences, batch)
    if defences == ("clip1",):  # the clip acts (the unclipped update's norm is 8.6)
        assert sum(float(t.pow(2).sum()) for t in update.tensors.values()) == pytest.approx(1.0)
    view = attack_view(update, "cosine")
    assert view.defences == () and view.client.defences == ()
    assert view.tensors is update.tensors  # the client's (noised) update is still what is matched
    x = torch.rand(update.input_shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    defended, undefended = (_objective_and_grad(model, u, labels, x) for u in (update, view))
    torch.testing.assert_close(undefended[0], defended[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(undefended[1], defended[1], atol=1e-10, rtol=1e-8)
    assert Replica(model, view, labels).low_rank  # the factored distance now applies


@pytest.mark.parametrize("case", list(KEPT), ids=list(KEPT))
def test_a_chain_that_does_more_than_rescale_keeps_its_replica(case: str) -> None:
    settings = dict(KEPT[case])
    _, update, _ = _setting(settings.pop("defences"), settings.pop("batch", 1), **settings)
    assert attack_view(update, "cosine") is update


def test_an_aggregate_or_a_scale_sensitive_distance_keeps_the_defence() -> None:
    _, update, _ = _setting(("clip0.01",))
    assert attack_view(update, "cosine") is not update
    assert attack_view(update, "l2") is update
    assert attack_view(dataclasses.replace(update, clients=2), "cosine").defences == update.defences


class _Halve:
    """A plug-in defence (the protocol without ``rescales``): it does halve the update, but does not say so."""

    name, stage, token = "halve", DefenceStage.UPDATE, "halve"

    def params(self):
        return {}

    def apply(self, tensors, *, generator):
        return {n: t / 2 for n, t in tensors.items()}


class _SaysHalve(_Halve):
    def apply(self, tensors, *, generator):
        return super().apply(tensors, generator=generator)

    def rescales(self, samples: int) -> bool:
        return True


class _LayerClip(ClipUpdateNorm):
    """Clips each tensor on its own (not one scale): it inherits ``rescales`` but overrides ``apply``."""

    def apply(self, tensors, *, generator):
        return {n: t * torch.clamp(self.max_norm / (t.norm() + 1e-12), max=1.0) for n, t in tensors.items()}


class _Truthy(_SaysHalve):
    def apply(self, tensors, *, generator):
        return tensors

    def rescales(self, samples: int):
        return "yes"


def test_a_defence_rescales_only_when_its_own_class_says_so() -> None:
    assert not rescales_only([_Halve()], 1)
    assert rescales_only([_SaysHalve()], 1)
    assert not rescales_only([_SaysHalve(), *make_defences(("prune0.5",))], 1)
    assert not rescales_only([_LayerClip(0.01)], 1)  # inherited claim, overridden apply
    assert not rescales_only([_Truthy()], 1)  # only True counts
    assert rescales_only(make_defences(("dpsgd1",)), 1) and not rescales_only(make_defences(("dpsgd1",)), 2)


def test_dpsgd_trials_on_one_sample_run_stacked_and_as_the_defended_loop() -> None:
    """Whole attacks: stacked on the undefended view, they equal the defended replica run one after another."""
    model, update, labels = _setting(("dpsgd1",))
    others = [_setting(("dpsgd1",), seed=s)[1] for s in (4, 5)]
    gen = torch.Generator().manual_seed(6)
    trials = [Trial(update=u, labels=labels, init=torch.rand(1, *update.input_shape, generator=gen,
                                                            dtype=torch.float64))
              for u in [update, *others]]
    spec = AttackSpec(iterations=3)
    recs = GradMatchRescaled(spec).trials(model, trials)
    assert all(r.batched for r in recs)
    assert not any(r.batched for r in invert_trials(model, trials, spec=spec))  # gradmatch: defended, in a row
    for trial, rec in zip(trials, recs, strict=True):
        x = trial.init[0].clone()
        opt = torch.optim.Adam([x.requires_grad_(True)], lr=spec.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=lr_milestones(spec.iterations), gamma=0.1)
        for _ in range(spec.iterations):
            _, g = _objective_and_grad(model, trial.update, labels, x)
            x.grad = g.sign()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        torch.testing.assert_close(rec.images[0], x.detach(), atol=1e-10, rtol=0)


def test_the_objective_at_the_truth_uses_the_same_view() -> None:
    """The auditor's diagnostic evaluates the attack's own objective: equal for both attacks (the same function),
    computed on the undefended replica by ``gradmatch_rescaled``."""
    model, update, labels = _setting(("clip0.01", "noise1"))
    x = torch.rand(update.input_shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    rescaled, plain = make_attack("gradmatch_rescaled", AttackSpec()), make_attack("gradmatch", AttackSpec())
    assert isinstance(rescaled, GradMatchRescaled) and type(plain) is GradMatch
    assert rescaled.view(update).defences == () and plain.view(update) is update
    a, b = (attack.objective(model, update, x, labels=labels, stats=None) for attack in (rescaled, plain))
    assert a == pytest.approx(b, abs=1e-10)


def test_the_attack_is_its_own_baseline_identity() -> None:
    record = {"attack": {"name": "gradmatch_rescaled"}, "profile": "smoke"}
    assert attack_identity(record)["attack"] == "gradmatch_rescaled"


def test_the_view_keeps_the_rest_of_the_client() -> None:
    _, update, _ = _setting(("dpclip0.05", "dpsgd0.5"))
    view = attack_view(update, "cosine")
    assert view.client == dataclasses.replace(update.client, defences=())
    assert (view.kind, view.bn_mode, view.input_shape, view.bn_before) == (update.kind, update.bn_mode,
                                                                          update.input_shape, update.bn_before)
