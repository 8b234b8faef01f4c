"""A Scaleout Edge (FEDn) train callback captured in-process. Runs where the ``fedn`` extra is installed (its
pins conflict with flwr's: ``.ci/run`` runs this module in an environment of its own); the missing-extra error
is checked in ``test_fl.py``."""

from __future__ import annotations

import pytest
import torch

from giacheck.fl import CaptureError, FednClient, capture
from giacheck.specs import Case

scaleoututil = pytest.importorskip("scaleoututil")

from giacheck import claims  # noqa: E402
from giacheck.challenge import CaseTrials, trial_options  # noqa: E402
from giacheck.client import simulate_update  # noqa: E402
from giacheck.models import build, get_entry  # noqa: E402
from giacheck.runner import run_trials  # noqa: E402
from giacheck.specs import RunOptions, get_profile  # noqa: E402

TRAIN = "giacheck.fl.example_fedn:train"
LENET = "lenet_sigmoid-16-bn_eval-bs2-stats_none-upd_fedavg2"


def _relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in b)
    return (num / sum(float(b[n].double().pow(2).sum()) for n in b)) ** 0.5


def test_captured_update_equals_the_simulated_one() -> None:
    model, case = build("lenet_sigmoid", 16), Case.parse(LENET)
    images, labels = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([1, 4])
    captured, record = capture(FednClient(TRAIN), model, images, labels, case.client)
    assert _relative_error(captured.tensors, simulate_update(model, images, labels, case.client).tensors) < 1e-5
    assert record["framework"] == "fedn" and record["version"].startswith("scaleoututil ")
    assert record["returned"]["metadata"]["num_examples"] == 2
    assert "the client's own report (local_lr, local_steps)" in record["replica"]["assumed"]


def test_the_control_reconstructs_through_fedn_as_simulated() -> None:
    case = "lenet_sigmoid-16-bn_eval-bs1-stats_none-upd_fedavg1"
    challenge = get_profile("smoke").challenge

    def evidence(options: RunOptions):
        per = trial_options(options, challenge, num_classes=10, task=get_entry("lenet_sigmoid").task)
        return CaseTrials.of(run_trials(case, options=per), selection=challenge.selection).evidence

    simulated, captured = evidence(RunOptions()), evidence(RunOptions(client=FednClient(TRAIN)))
    assert claims.feasible(simulated).passed and claims.feasible(captured).passed
    assert abs(captured.worst.ssim - simulated.worst.ssim) < 0.02


def _bad_train(kind: str):
    from scaleoututil.helpers.helpers import get_helper
    from scaleoututil.utils.model import ScaleoutModel

    from giacheck.fl import client_batch

    def train(in_model, settings):
        client_batch()
        arrays = in_model.get_training_model(get_helper("numpyhelper"))
        if kind == "raises":
            raise OSError("no space left on the client")
        if kind == "short":
            arrays = arrays[:-1]
        out = ScaleoutModel.from_training_model(arrays, get_helper("numpyhelper"))
        return (out, {"training_metadata": {}}) if kind == "no_examples" else (out, {"training_metadata":
                                                                                     {"num_examples": 1}})
    return train


@pytest.mark.parametrize(("kind", "message"), [
    ("raises", "raised OSError while training: no space left on the client"),
    ("short", "sent 7 arrays; the global model's state_dict has 8"),
    ("no_examples", "'num_examples': N > 0"),
])
def test_bad_callbacks_are_named(kind: str, message: str, monkeypatch) -> None:
    import giacheck.fl.example_fedn as example

    monkeypatch.setattr(example, "bad", _bad_train(kind), raising=False)
    with pytest.raises(CaptureError) as err:
        capture(FednClient("giacheck.fl.example_fedn:bad"), build("lenet_sigmoid", 16), torch.rand(1, 3, 16, 16),
                torch.tensor([0]), Case.parse(LENET).client)
    assert message in str(err.value)


def test_audit_captures_a_fedn_callback_end_to_end(tmp_path, capsys) -> None:
    from giacheck.cli import main

    code = main(["audit", "--name", "fl_lenet", "--model", "giacheck.models.lenet:lenet_sigmoid", "--input-size", "16",
                 "--bn", "eval",
                 "--updates", "fedavg1", "--fedn-train", TRAIN, "--out", str(tmp_path / "audit")])
    assert code == 1 and "audit: LEAKS" in capsys.readouterr().out
    assert f"captured from fedn scaleoututil 1.0.7 client {TRAIN}" in (tmp_path / "audit" / "report.md").read_text()
