"""Tests of giacheck.tuning: Appendix A's ranges, seeded TPE, selection without ground truth, shared storage."""

from __future__ import annotations

import json
import math

import pytest

import giacheck.tuning
from giacheck.errors import GiacheckError
from giacheck.specs import AttackSpec, Selection
from giacheck.tuning import SearchSpace, TuningResult, tune

LENET = "lenet_sigmoid-32-bn_eval-bs1-stats_none"
BASE = AttackSpec(iterations=3)


class _FakeResult:
    """A stand-in for :class:`giacheck.runner.Result`; scores are functions of the sampled setting."""

    def __init__(self, attack: AttackSpec, *, ssim_readable: bool) -> None:
        self._attack = attack
        self._ssim_readable = ssim_readable
        self.grad_distance = abs(math.log10(attack.lr) + 1) / 10 + abs(math.log10(attack.tv_weight) + 3) / 100
        self.objective = self.grad_distance + attack.tv_weight

    @property
    def ssim_mean(self) -> float:
        if not self._ssim_readable:
            raise AssertionError("objective selection read the ground-truth SSIM")
        return 1 / (1 + abs(math.log10(self._attack.lr) - 1))  # best near lr = 10, unlike grad_distance


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch):
    """Replace run_case with a fake; returns the list of attack specs it was called with."""
    calls: list[AttackSpec] = []

    def install(*, ssim_readable: bool = True) -> list[AttackSpec]:
        def run_case(case, *, profile, device, options):
            calls.append(options.budget)
            return _FakeResult(options.budget, ssim_readable=ssim_readable)

        monkeypatch.setattr(giacheck.tuning, "run_case", run_case)
        return calls

    return install


def _params(result: TuningResult) -> list[dict[str, float | None]]:
    return [t.params for t in result.trials]


def test_sampled_params_stay_inside_appendix_a_ranges(fake_run) -> None:
    calls = fake_run()
    result = tune(LENET, trials=15, base=BASE)
    space = SearchSpace()
    assert space.tv_weight == (1e-6, 1e-1) and space.lr == (1e-4, 1e2) and space.bn_weight == (0.0, 1e-4, 1e-2)
    assert len(calls) == len(result.trials) == result.trials_run == 15
    for spec in calls:
        assert 1e-6 <= spec.tv_weight <= 1e-1
        assert 1e-4 <= spec.lr <= 1e2
        assert spec.bn_weight in (0.0, 1e-4, 1e-2)
        assert (spec.iterations, spec.restarts, spec.bn_prior) == (BASE.iterations, BASE.restarts, BASE.bn_prior)


def test_same_seed_same_sequence_of_params(fake_run) -> None:
    fake_run()
    a = tune(LENET, trials=12, seed=5, base=BASE)  # past TPE's 10 random start-up trials
    b = tune(LENET, trials=12, seed=5, base=BASE)
    c = tune(LENET, trials=12, seed=6, base=BASE)
    assert _params(a) == _params(b)
    assert a.best_attack == b.best_attack
    assert _params(a) != _params(c)


def test_objective_selection_never_reads_ssim(fake_run) -> None:
    fake_run(ssim_readable=False)
    result = tune(LENET, trials=6, base=BASE)
    assert result.selection is Selection.OBJECTIVE
    assert result.direction == "minimize" and result.metric == "grad_distance"
    assert all(t.ssim_mean is None for t in result.trials)
    assert result.best_value == min(t.grad_distance for t in result.trials)
    assert all(t.value == t.grad_distance for t in result.trials)
    best = next(t for t in result.trials if t.number == result.best_trial)
    assert (result.best_attack.lr, result.best_attack.tv_weight) == (best.lr, best.tv_weight)
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["selection"] == "objective" and "note" not in payload


def test_oracle_selection_maximizes_ssim(fake_run) -> None:
    fake_run()
    result = tune(LENET, trials=6, base=BASE, selection="oracle")
    assert result.selection is Selection.ORACLE and result.direction == "maximize"
    ssims = [t.ssim_mean for t in result.trials]
    assert None not in ssims
    assert result.best_value == max(ssims)
    best = next(t for t in result.trials if t.number == result.best_trial)
    assert result.best_attack.lr == best.lr
    payload = result.to_dict()
    assert payload["selection"] == "oracle" and "upper bound" in payload["note"]


def test_journal_storage_shared_by_two_calls_accumulates(fake_run, tmp_path) -> None:
    calls = fake_run()
    path = str(tmp_path / "study.log")
    first = tune(LENET, trials=2, base=BASE, storage=path, study_name="shared")
    second = tune(LENET, trials=2, base=BASE, storage=path, study_name="shared")
    assert (first.trials_run, len(first.trials)) == (2, 2)
    assert (second.trials_run, len(second.trials)) == (2, 4)
    assert [t.number for t in second.trials] == [0, 1, 2, 3]
    assert _params(second)[:2] == _params(first)
    assert len({(s.lr, s.tv_weight) for s in calls}) == 4  # the resumed call does not repeat settings
    assert second.to_dict()["storage"] == path


def test_sqlite_url_storage(fake_run, tmp_path) -> None:
    fake_run()
    url = f"sqlite:///{tmp_path / 'tuning.db'}"
    tune(LENET, trials=1, base=BASE, storage=url)
    result = tune(LENET, trials=2, base=BASE, storage=url)
    assert len(result.trials) == 3 and result.storage == url
    assert (tmp_path / "tuning.db").is_file()


def test_stored_study_for_other_settings_is_refused(fake_run, tmp_path) -> None:
    fake_run()
    path = str(tmp_path / "study.journal")
    tune(LENET, trials=1, base=BASE, storage=path, study_name="s")
    with pytest.raises(GiacheckError, match=r"set up for other settings.*seed: stored 0, given 1"):
        tune(LENET, trials=1, base=BASE, storage=path, study_name="s", seed=1)
    with pytest.raises(GiacheckError, match=r"selection: stored 'objective', given 'oracle'"):
        tune(LENET, trials=1, base=BASE, storage=path, study_name="s", selection=Selection.ORACLE)


@pytest.mark.parametrize(("storage", "match"), [
    ("tuning.db", "neither an RDB URL nor a journal file"),
    ("", "neither an RDB URL nor a journal file"),
    ("nosuchdialect://x", "cannot open storage 'nosuchdialect://x'"),
    ("sqlite:////no/such/folder/t.db", "cannot open storage"),
    ("/no/such/folder/t.log", "folder '/no/such/folder' does not exist"),
])
def test_invalid_storage_raises_before_any_trial(fake_run, storage: str, match: str) -> None:
    calls = fake_run()
    with pytest.raises(GiacheckError, match=match):
        tune(LENET, trials=1, base=BASE, storage=storage)
    assert calls == []


@pytest.mark.parametrize("kwargs", [
    {"trials": 0}, {"trials": -1}, {"trials": True}, {"trials": 1, "selection": "best"},
    {"trials": 1, "case": "lenet_sigmoid-32-bn_train-bs1-stats_exact"},  # no BatchNorm to take stats from
])
def test_invalid_arguments_raise_before_any_trial(fake_run, kwargs) -> None:
    calls = fake_run()
    case = kwargs.pop("case", LENET)
    with pytest.raises(GiacheckError):
        tune(case, base=BASE, **kwargs)
    assert calls == []


def test_password_masked_in_storage_url() -> None:
    assert giacheck.tuning._redact("postgresql://u:secret@host/db") == "postgresql://u:***@host/db"


def test_invalid_search_space() -> None:
    with pytest.raises(GiacheckError, match="lr="):
        SearchSpace(lr=(1.0, 0.1))
    with pytest.raises(GiacheckError, match="bn_weight="):
        SearchSpace(bn_weight=())


def test_end_to_end_on_lenet() -> None:
    result = tune(LENET, trials=2, base=BASE, seed=0)
    assert len(result.trials) == 2 and all(t.state == "complete" for t in result.trials)
    assert all(0 <= t.grad_distance <= 2 and math.isfinite(t.objective) for t in result.trials)
    assert result.best_attack.iterations == 3
    json.dumps(result.to_dict())
