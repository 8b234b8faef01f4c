"""Tests of giacheck.attack as a whole: it never sees ground truth, batched and looped restarts agree, the step
schedule, selection by objective, a positive control, and exact statistics inside a real train-mode client."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import giacheck.attack
import giacheck.runner
from giacheck import metrics
from giacheck.attack import Replica, invert
from giacheck.attack.bnstats import NormStatsRecorder, NormTarget, norm_modules
from giacheck.attack.invert import lr_milestones
from giacheck.client import simulate_update
from giacheck.data import BundledImages, select_batch
from giacheck.models import build
from giacheck.specs import AttackSpec, BNMode, ClientSpec, StatsAccess

ATTACK_DIR = Path(giacheck.attack.__file__).parent
FORBIDDEN = ("giacheck.data", "giacheck.metrics", "giacheck.reid", "giacheck.diagnostics", "giacheck.ladder",
             "giacheck.verdicts", "giacheck.challenge")
GROUND_TRUTH_NAMES = re.compile(r"image|original|ground|truth|private|secret|true", re.IGNORECASE)


@pytest.fixture(scope="module")
def client_batch():
    return select_batch(BundledImages(10), batch_size=1, size=32)


def _client(name: str, mode: BNMode, batch, seed: int = 0):
    model = build(name, 32, seed=seed)
    update = simulate_update(model, batch.images, batch.labels, ClientSpec(bn_mode=mode, batch_size=batch.batch_size))
    return model, update


# --------------------------------------------------------------------------------------- no ground truth, ever
def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from giacheck import data`` counts as giacheck.data)."""
    package = "giacheck.attack"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_attack_files_never_import_data_or_metrics() -> None:
    files = sorted(ATTACK_DIR.glob("**/*.py"))
    assert len(files) >= 5
    for path in files:
        for module in _imported_modules(path):
            for forbidden in FORBIDDEN:
                assert module != forbidden and not module.startswith(forbidden + "."), \
                    f"{path.name} imports {module}"


def test_importing_the_attack_does_not_load_data_or_metrics() -> None:
    code = ("import sys, giacheck.attack; "
            f"bad = [m for m in {(*FORBIDDEN, 'skimage')!r} if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          cwd=ATTACK_DIR.parents[1])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("function", [invert, Replica.__init__, Replica.dummy_update])
def test_no_ground_truth_in_the_call_signature(function) -> None:
    names = list(inspect.signature(function).parameters)
    assert not [n for n in names if GROUND_TRUTH_NAMES.search(n)], names


# ------------------------------------------------------------------------------------- batched == looped
@pytest.mark.parametrize(("name", "mode", "iterations"), [
    ("lenet_sigmoid", BNMode.EVAL, 5),
    ("resnet18_cifar", BNMode.TRAIN, 3),
])
def test_batched_and_looped_restarts_agree(client_batch, name: str, mode: BNMode, iterations: int) -> None:
    """Same seed, same result. The step uses sign(gradient): the two paths' gradients agree to ~1e-6 relative
    (next test), but where a pixel's gradient is ~0 its sign can differ, moving that pixel by the step's lr. On this
    CPU seed 0 has no such flip (seeds 4-6 flip a few pixels by 1e-3..1e-2 on resnet18_cifar)."""
    model, update = _client(name, mode, client_batch)
    state = copy.deepcopy(model.state_dict())
    recs = {}
    for batched in (True, False):
        spec = AttackSpec(iterations=iterations, restarts=3, batched_restarts=batched)
        recs[batched] = invert(model, update, labels=client_batch.labels, spec=spec, seed=0)
        assert recs[batched].batched is batched
        assert recs[batched].images.shape == (3, 1, 3, 32, 32)
    torch.testing.assert_close(recs[True].images, recs[False].images, atol=1e-4, rtol=0)
    torch.testing.assert_close(recs[True].curve, recs[False].curve, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(recs[True].objective, recs[False].objective, atol=1e-4)
    assert recs[True].selected == recs[False].selected
    for key, value in model.state_dict().items():  # the attack leaves the server's model alone
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize(("name", "mode"), [("lenet_sigmoid", BNMode.EVAL), ("resnet18_cifar", BNMode.TRAIN),
                                            ("resnet18_cifar", BNMode.EVAL)])
def test_batched_and_looped_gradients_agree(client_batch, name: str, mode: BNMode) -> None:
    """In float64 the stacked restarts and the loop are the same math (to ~1e-14); in float32 each stays within
    float32's accuracy of this double backward (the two float32 paths differ from each other by ~6e-4 on an AMD
    EPYC, so comparing them with each other at 1e-4 would test the CPU, not the code)."""
    from giacheck.attack.trials import StackedReplica

    def step(model, update, x, batched):
        if batched:
            objective = StackedReplica(model, [update] * 3, [client_batch.labels] * 3, [None] * 3).objective(
                AttackSpec())
            x = x.clone().requires_grad_(True)
            total, _ = objective(x)
            return torch.autograd.grad(total.sum(), x)[0], total.detach()
        objective = Replica(model, update, client_batch.labels).objective(AttackSpec(), None, functional=False)
        out = []
        for xr in x:
            xr = xr.clone().requires_grad_(True)
            total, _ = objective(xr)
            out.append((torch.autograd.grad(total, xr)[0], total.detach()))
        return torch.stack([g for g, _ in out]), torch.stack([v for _, v in out])

    model, update = _client(name, mode, client_batch)
    x = torch.rand(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model64 = copy.deepcopy(model).double()
    update64 = dataclasses.replace(update, tensors={k: v.double() for k, v in update.tensors.items()})
    g64_batched, v64_batched = step(model64, update64, x.double(), True)
    g64, v64 = step(model64, update64, x.double(), False)
    torch.testing.assert_close(v64_batched, v64, atol=1e-12, rtol=1e-12)
    assert _relative(g64_batched, g64) < 1e-10
    for batched in (True, False):
        g, v = step(model, update, x, batched)
        torch.testing.assert_close(v.double(), v64, atol=1e-6, rtol=1e-5)
        assert _relative(g.double(), g64) < 2e-3, (batched, _relative(g.double(), g64))


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


# ------------------------------------------------------------------------------------------------ schedule
def test_lr_milestones() -> None:
    assert lr_milestones(300) == [112, 187, 262]
    assert lr_milestones(8) == [3, 5, 7]
    assert lr_milestones(1) == [1]
    assert lr_milestones(2) == [1]


def test_lr_schedule_in_the_loop(client_batch, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer's lr at each step: 0.1 before 3/8 of the budget, ×0.1 at each milestone."""
    model, update = _client("lenet_sigmoid", BNMode.EVAL, client_batch)
    seen = []
    original_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    invert(model, update, labels=client_batch.labels, spec=AttackSpec(iterations=8, lr=0.1))
    np.testing.assert_allclose(seen, [0.1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4], rtol=1e-6)


# ----------------------------------------------------------------------------------------------- selection
def test_selected_restart_is_the_argmin_of_the_final_objective(client_batch) -> None:
    model, update = _client("lenet_sigmoid", BNMode.EVAL, client_batch)
    spec = AttackSpec(iterations=5, restarts=4)
    rec = invert(model, update, labels=client_batch.labels, spec=spec, seed=1)
    assert len(set(rec.objective)) == 4
    assert rec.selected == int(np.argmin(rec.objective))
    assert torch.equal(rec.best, rec.images[rec.selected])
    objective = Replica(model, update, client_batch.labels).objective(spec, None)
    with torch.no_grad():  # the recorded objective is that of the returned images
        recomputed = [float(objective(rec.images[r])[0]) for r in range(4)]
    np.testing.assert_allclose(recomputed, rec.objective, rtol=1e-5, atol=1e-7)
    assert rec.curve.shape == (5, 4)


def test_init_shape_is_checked(client_batch) -> None:
    model, update = _client("lenet_sigmoid", BNMode.EVAL, client_batch)
    with pytest.raises(ValueError, match=r"init has shape \(1, 3, 32, 32\)"):
        invert(model, update, labels=client_batch.labels, spec=AttackSpec(iterations=1),
               init=torch.rand(1, 3, 32, 32))


def test_reconstruction_stays_in_the_box(client_batch) -> None:
    model, update = _client("lenet_sigmoid", BNMode.EVAL, client_batch)
    rec = invert(model, update, labels=client_batch.labels, spec=AttackSpec(iterations=5, lr=0.5, restarts=2))
    assert rec.images.min() >= 0.0 and rec.images.max() <= 1.0


# ------------------------------------------------------------------------------------------ positive control
# The DLG control with DLG's weight init (uniform ±0.5; with PyTorch's default init the update barely depends on
# the input) and the smoke profile's TV weight. Signed Adam, not DLG's L-BFGS: 200 iterations gave SSIM 0.53.
def test_positive_control_lenet_eval_bs1(client_batch) -> None:
    model, update = _client("lenet_sigmoid", BNMode.EVAL, client_batch)
    rec = invert(model, update, labels=client_batch.labels, spec=AttackSpec(iterations=300, tv_weight=3e-2))
    ssim = metrics.match_and_score(rec.best, client_batch.images).ssim_mean
    assert ssim > 0.5, f"SSIM {ssim:.3f}"


# ------------------------------------------------------------------------- exact stats in a real train client
class _Captured(Exception):
    pass


def test_exact_stats_from_the_runner_path_equal_the_batch_stats(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = {}

    def capture(model, update, **kwargs):
        captured.update(kwargs, model=model, update=update)
        raise _Captured

    monkeypatch.setattr(giacheck.runner, "make_attack", lambda name, spec: capture)
    with pytest.raises(_Captured):
        giacheck.runner.run_case("resnet18_cifar-32-bn_train-bs2-stats_exact")
    stats = captured["stats"]
    assert isinstance(stats, NormTarget) and stats.source is StatsAccess.EXACT

    batch = select_batch(BundledImages(10), batch_size=2, size=32)
    assert torch.equal(captured["labels"], batch.labels)
    reference = build("resnet18_cifar", 32, seed=0).train()
    for (name, p), q in zip(reference.named_parameters(), captured["model"].parameters(), strict=True):
        assert torch.equal(p, q), name  # the same global model the runner built
    recorder = NormStatsRecorder(norm_modules(reference))
    with torch.no_grad(), recorder.recording():
        reference(batch.images)
    assert set(stats.mean) == set(recorder.mean) and len(stats.mean) == 20
    for name in stats.mean:
        torch.testing.assert_close(stats.mean[name], recorder.mean[name], atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(stats.var[name], recorder.var[name], atol=1e-4, rtol=1e-4, msg=name)
