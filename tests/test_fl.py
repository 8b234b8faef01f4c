"""Real Flower clients captured in-process: agreement with giacheck's simulation, attacks end to end, bad input."""

from __future__ import annotations

import sys

import pytest
import torch

from giacheck import claims
from giacheck.challenge import CaseTrials, trial_options
from giacheck.client import simulate_update
from giacheck.fl import CaptureError, FlowerClient, capture, client_batch
from giacheck.models import build, get_entry
from giacheck.runner import run_case, run_trials
from giacheck.specs import Case, RunOptions, get_profile

pytest.importorskip("flwr", reason="the flower extra: pip install -e '.[test,flower]'")

APPS = "giacheck.fl.example_apps"
LENET = "lenet_sigmoid-16-bn_eval-bs1-stats_none-upd_fedavg1"  # the DLG control, one local SGD step
ACME = "giacheck.examples:classifier"  # the vendor CNN with BatchNorm
BN_CASE = Case.parse("acme_classifier-16-bn_train-bs4-stats_none-upd_fedavg3")


def _relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in b)
    return (num / sum(float(b[n].double().pow(2).sum()) for n in b)) ** 0.5


@pytest.mark.parametrize("target", ["flower_apps:bn_app", "flower_apps:BNClient", "flower_apps:legacy_app",
                                    "flower_apps:bn_client_fn", "flower_apps:list_app"])
def test_captured_update_equals_the_simulated_one(target: str) -> None:
    """Plain SGD with the hyper-parameters the server sent: the client's update is giacheck's to float tolerance,
    BatchNorm running statistics included."""
    model = build(ACME, 16, num_classes=10)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 3, 7])
    simulated = simulate_update(model, images, labels, BN_CASE.client)
    captured, record = capture(FlowerClient(target), model, images, labels, BN_CASE.client)
    assert _relative_error(captured.tensors, simulated.tensors) < 1e-5
    for name, stats in simulated.bn_after.items():
        assert torch.allclose(captured.bn_after[name].mean, stats.mean, atol=1e-6)
        assert captured.bn_after[name].num_batches_tracked == stats.num_batches_tracked
    assert record["framework"] == "flower" and record["version"]
    assert record["sent_by_server"]["local-epochs"] == 3 and record["returned"]["batchnorm_buffers"]
    assert record["replica"]["bn_mode"] == "train"


def _evidence(options: RunOptions):
    challenge = get_profile("smoke").challenge
    per_trial = trial_options(options, challenge, num_classes=10, task=get_entry("lenet_sigmoid").task)
    return CaseTrials.of(run_trials(LENET, options=per_trial), selection=challenge.selection).evidence


@pytest.fixture(scope="module")
def simulated():
    return _evidence(RunOptions())


@pytest.mark.parametrize("target", [f"{APPS}:app", f"{APPS}:LeNetClient"])
def test_the_control_reconstructs_through_flower_as_simulated(simulated, target: str) -> None:
    evidence = _evidence(RunOptions(client=FlowerClient(target)))
    assert claims.feasible(simulated).passed and claims.feasible(evidence).passed
    assert abs(evidence.worst.ssim - simulated.worst.ssim) < 0.02  # same update to 1e-6: the same attack


def test_local_dp_mod_lowers_leakage(simulated) -> None:
    """Flower's LocalDpMod (clip 0.1, ε 50 per round) lowers the most leaking image's SSIM from about 0.86 to
    about 0.04. Lower, not none: measured, one of the two images still ranks 1 of 257 against chance."""
    evidence = _evidence(RunOptions(client=FlowerClient(f"{APPS}:ldp_app")))
    assert evidence.worst.ssim < simulated.worst.ssim - 0.5


def test_fixed_clipping_mod_clips_but_does_not_hide_the_image(simulated) -> None:
    """Client-side fixed clipping only scales this update (the server's strategy adds the noise after
    aggregation): the cosine attack is scale-invariant, so it still reconstructs."""
    model = build("lenet_sigmoid", 16)
    images, labels = torch.rand(1, 3, 16, 16), torch.tensor([2])
    update, _ = capture(FlowerClient(f"{APPS}:clip_app", config={"clipping_norm": 1e-3}), model, images, labels,
                        Case.parse(LENET).client)
    assert sum(float(t.pow(2).sum()) for t in update.tensors.values()) ** 0.5 == pytest.approx(1e-3, rel=1e-4)
    evidence = _evidence(RunOptions(client=FlowerClient(f"{APPS}:clip_app", config={"clipping_norm": 1e-3})))
    assert evidence.leaks


def test_the_result_names_the_framework_and_what_the_server_saw() -> None:
    threat = run_case(LENET, options=RunOptions(client=FlowerClient(f"{APPS}:app"))).to_dict()["threat"]
    framework = threat["framework"]
    assert framework["target"] == f"{APPS}:app" and framework["returned"]["kind"] == "full weights"
    assert "assumes it trained as the server's config says" in framework["replica"]["assumed"]


@pytest.mark.parametrize(("target", "message"), [
    ("no_such_module_anywhere:app", "module 'no_such_module_anywhere' does not import"),
    ("flower_apps:no_app", "has no attribute 'no_app'"),
    ("flower_apps", "write it as 'package.module:attribute'"),
    ("flower_apps:renamed_app", "missing 23 ('0.weight'"),
    ("flower_apps:WrongShapeClient", "sent '0.weight' of shape (2, 2); the global model's is (16, 3, 3, 3)"),
    ("flower_apps:raising_app", "CUDA out of memory on the client"),
    ("flower_apps:OwnDataClient", "never called giacheck.fl.client_batch() during the round"),
    ("flower_apps:BadLrClient", "reports lr nan (valid: a finite number > 0)"),
])
def test_bad_clients_are_named(target: str, message: str) -> None:
    model = build(ACME, 16, num_classes=10)
    with pytest.raises(CaptureError) as err:
        capture(FlowerClient(target), model, torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), BN_CASE.client)
    assert message in str(err.value)


def test_a_module_that_fails_on_import_is_named(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_client.py").write_text("import flwr\nraise ValueError('missing data path')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CaptureError, match="'broken_client' does not import: ValueError: missing data path"):
        FlowerClient("broken_client:app").run_round({}, {})


def test_missing_flower_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "flwr", None)
    with pytest.raises(CaptureError, match=r"pip install 'giacheck\[flower\]'"):
        FlowerClient(f"{APPS}:app").run_round({}, {})


def test_the_local_training_comes_from_the_case_not_the_flower_config() -> None:
    with pytest.raises(CaptureError, match=r"'lr': the local training .* comes from the case"):
        FlowerClient(f"{APPS}:app", config={"lr": 0.5})


def test_a_noisy_round_is_reproducible_and_leaves_global_generators_alone() -> None:
    import random

    import numpy as np

    model, case = build("lenet_sigmoid", 16), Case.parse(LENET)
    images, labels = torch.rand(1, 3, 16, 16), torch.tensor([2])
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    first, _ = capture(FlowerClient(f"{APPS}:ldp_app"), model, images, labels, case.client, seed=3)
    assert random.getstate() == states[0] and (np.random.get_state()[1] == states[1]).all()
    assert torch.equal(torch.get_rng_state(), states[2])
    again, _ = capture(FlowerClient(f"{APPS}:ldp_app"), model, images, labels, case.client, seed=3)
    other, _ = capture(FlowerClient(f"{APPS}:ldp_app"), model, images, labels, case.client, seed=4)
    assert all(torch.equal(first.tensors[n], again.tensors[n]) for n in first.tensors)
    assert not all(torch.equal(first.tensors[n], other.tensors[n]) for n in first.tensors)


def test_audit_refuses_a_client_that_does_not_import_before_any_compute(tmp_path, capsys, monkeypatch) -> None:
    import giacheck.runner
    from giacheck.cli import main

    monkeypatch.setattr(giacheck.runner, "run_trials", lambda *a, **k: pytest.fail("a case ran"))
    code = main(["audit", "--name", "fl_lenet", "--model", "giacheck.models.lenet:lenet_sigmoid", "--input-size", "16",
                 "--updates", "fedavg1", "--flower-app", "no_such_pkg_typo:app", "--out", str(tmp_path / "a")])
    assert code == 2 and "module 'no_such_pkg_typo' does not import" in capsys.readouterr().err
    assert not (tmp_path / "a" / "results.json").exists()


def test_missing_scaleoututil_names_the_fedn_extra(monkeypatch) -> None:
    from giacheck.fl import FednClient

    monkeypatch.setitem(sys.modules, "scaleoututil", None)
    with pytest.raises(CaptureError, match=r"pip install 'giacheck\[fedn\]'"):
        FednClient("giacheck.fl.example_fedn:train").check()


def test_a_simulated_defence_with_a_framework_client_is_refused() -> None:
    case = Case.parse(f"{LENET}-def_clip1")
    with pytest.raises(CaptureError, match="drop -def_"):
        capture(FlowerClient(f"{APPS}:app"), build("lenet_sigmoid", 16), torch.rand(1, 3, 16, 16),
                torch.tensor([0]), case.client)


def test_client_batch_outside_a_capture_is_an_error() -> None:
    with pytest.raises(CaptureError, match="only available while giacheck captures a round"):
        client_batch()


def test_audit_captures_a_flower_app_end_to_end(tmp_path, capsys) -> None:
    from giacheck.cli import main

    code = main(["audit", "--name", "fl_lenet", "--model", "giacheck.models.lenet:lenet_sigmoid", "--input-size", "16",
                 "--bn", "eval",
                 "--updates", "fedavg1", "--flower-app", f"{APPS}:app", "--out", str(tmp_path / "audit")])
    out = capsys.readouterr().out
    assert code == 1 and "audit: LEAKS" in out  # the control setting leaks through the real client
    report = (tmp_path / "audit" / "report.md").read_text()
    assert f"captured from flower {__import__('flwr').__version__} client {APPS}:app" in report


def test_a_pack_with_a_framework_client_needs_fedavg_without_simulated_defences() -> None:
    from giacheck.pack import Grid, InvalidPackError, Pack

    with pytest.raises(InvalidPackError, match="use updates=\\('fedavgK',\\) and no defences"):
        Pack(name="p", model="giacheck.models.lenet:lenet_sigmoid", client=FlowerClient(f"{APPS}:app"),
             grid=Grid(updates=("fedsgd",)))
    with pytest.raises(InvalidPackError, match="valid: a framework client"):
        Pack(name="p", model="giacheck.models.lenet:lenet_sigmoid", client="mypkg:app",
             grid=Grid(updates=("fedavg1",)))


def test_bad_flower_config_is_refused_before_compute(tmp_path, capsys) -> None:
    from giacheck.cli import main

    code = main(["audit", "--name", "fl_lenet", "--model", "giacheck.models.lenet:lenet_sigmoid", "--input-size", "16",
                 "--updates", "fedavg1", "--flower-app", f"{APPS}:app", "--flower-config", "clipping_norm",
                 "--out", str(tmp_path / "audit")])
    assert code == 2 and "write KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()
