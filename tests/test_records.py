"""Tests of giacheck.records: a case record round-trips through JSON (property test), another schema version
or malformed data is refused naming where, payloads written before records existed are upgraded, and
results.json / results.jsonl are read back."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from _evidence import _evidence, _image, _trial
from hypothesis import given, settings
from hypothesis import strategies as st

from giacheck.claims import ClaimKind, ClaimResult, Verdict, feasible, infeasible
from giacheck.errors import GiacheckError
from giacheck.records import (
    SCHEMA,
    BaselineCheck,
    BaselineStatus,
    CaseRecord,
    IdentityChange,
    RecordError,
    attack_identity,
    identity_changes,
    read_records,
    write_results,
)

CASE = "resnet18_cifar-32-bn_eval-bs1-stats_none"


def result_dict(case_id: str = CASE, ssim: tuple[float, ...] = (0.5, 0.7), **attack: Any) -> dict[str, Any]:
    """A ``Result.to_dict()`` as the runner writes it (the parts records read)."""
    return {"case_id": case_id, "profile": "smoke", "seed": 0,
            "ssim": {"per_image": list(ssim), "mean": sum(ssim) / len(ssim), "max": max(ssim)},
            "psnr": {"per_image": [12.0, None], "mean": None},
            "secondary": {"patch_matched_ssim": {"per_image": [0.6, 0.8], "mean": 0.7, "note": "secondary"}},
            "objective": 0.25, "grad_distance": 0.125, "iterations": 200, "restarts": 1,
            "attack": {"name": "gradmatch", "iterations": 200, "restarts": 1, "lr": 0.1, "tv_weight": 0.01,
                       "bn_weight": 0.01, "bn_prior": "relative", "proxy_candidates": 4, "distance": "cosine",
                       "batched": True, **attack},
            "threat": {"stats": "none", "labels": "known", "init_ssim": 0.4}, "timings": {"total_s": 3.5}}


class _FakeResult:
    """Stands in for runner.Result (which needs torch): records only call ``to_dict``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


def _ev(case: str, ssim: float, p: float):
    return _evidence(case, [_trial(case, "astronaut", [_image(ssim, p)])])


def make_record(**overrides: Any) -> CaseRecord:
    claim = overrides.pop("claim", feasible(_ev(CASE, 0.6, 0.001)))
    fields: dict[str, Any] = {
        "suite": "test_table1", "profile": "smoke", "claim": claim,
        "baseline": BaselineCheck(status=BaselineStatus.PASS, passed=True, message="ok", path="b.json", recorded=0.58),
        "wall_s": 2.0, "origin": "computed", "nodeid": "suites/test_table1.py::test_x", "outcome": "passed"}
    fields.update(overrides)
    return CaseRecord.from_result(_FakeResult(result_dict()), **fields)


def test_from_result_reads_scores_and_identity() -> None:
    record = make_record()
    assert record.schema == SCHEMA and record.case_id == CASE
    assert record.claim is ClaimKind.FEASIBLE and record.verdict is Verdict.PASS
    scores = record.scores
    assert scores.ssim == (0.5, 0.7) and scores.ssim_mean == pytest.approx(0.6) and scores.ssim_max == 0.7
    assert scores.psnr_mean is None and scores.patch_ssim_mean == 0.7 and scores.objective == 0.25
    assert scores.grad_distance == 0.125 and scores.init_ssim == 0.4
    assert record.identity == {"attack": "gradmatch", "iterations": 200, "restarts": 1, "lr": 0.1, "tv_weight": 0.01,
                               "bn_weight": 0.01, "bn_prior": "relative", "proxy_candidates": 4,
                               "distance": "cosine", "profile": "smoke", "challenge": None, "weights": None,
                               "model_seed": None, "warm_recipe": None}
    assert record.result == result_dict()
    assert record.shown_verdict == "pass" and record.shown_baseline == "0.580 (pass)"
    assert record.with_outcome("failed").shown_verdict == "fail(base)"


def test_records_import_no_torch() -> None:
    import subprocess

    code = "import sys, giacheck.records, giacheck.baselines, giacheck.outputs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


_numbers = st.floats(min_value=-1, max_value=1, allow_nan=False)
_texts = st.text(max_size=20)
_optional = st.none() | _texts


@st.composite
def records(draw: st.DrawFn) -> CaseRecord:
    ssim = tuple(draw(st.lists(_numbers, min_size=1, max_size=4)))
    case_id = draw(st.sampled_from([CASE, "tiny_cnn-16-bn_train-bs1-stats_none", "not a case id"]))
    kind = draw(st.sampled_from([*ClaimKind, None]))
    claim = None if kind is None else ClaimResult(
        kind=kind, case_id=case_id, verdict=draw(st.sampled_from(list(Verdict))), measured=ssim[0], threshold=None,
        message=draw(_texts))
    changes = tuple(IdentityChange(field=draw(st.sampled_from(["iterations", "lr", "attack"])),
                                   recorded=draw(st.none() | st.integers(0, 999) | _texts),
                                   current=draw(st.integers(0, 999) | _texts))
                    for _ in range(draw(st.integers(0, 2))))
    baseline = draw(st.none() | st.builds(
        BaselineCheck, status=st.sampled_from(list(BaselineStatus)), passed=st.booleans(), message=_texts,
        path=_optional, recorded=st.none() | _numbers, changed=st.just(changes)))
    data = result_dict(case_id, ssim, iterations=draw(st.integers(1, 5000)), lr=draw(st.floats(1e-4, 1.0)))
    return CaseRecord.from_result(
        _FakeResult(data), suite=draw(_texts), profile=draw(st.sampled_from(["smoke", "paper"])), claim=claim,
        baseline=baseline, wall_s=draw(st.none() | st.floats(0, 1e5)), origin=draw(_optional),
        nodeid=draw(_optional), outcome=draw(st.sampled_from([None, "passed", "failed", "skipped"])),
        baselines_root=draw(_optional))


@settings(max_examples=60, deadline=None)
@given(records())
def test_json_round_trip(record: CaseRecord) -> None:
    data = record.to_json()
    text = json.dumps(data, allow_nan=False)  # JSON-ready: the journal refuses NaN
    assert CaseRecord.from_json(data) == record
    assert CaseRecord.from_json(text) == record
    assert CaseRecord.from_json(json.loads(text)).to_json() == data


@pytest.mark.parametrize("schema", [0, 2, "1", None, True])
def test_other_schema_is_refused(schema: Any) -> None:
    data = make_record().to_json()
    data["schema"] = schema
    with pytest.raises(RecordError, match=rf"here: case record of schema {schema!r}; this giacheck reads schema 1"):
        CaseRecord.from_json(data, where="here")


def _broken(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = make_record().to_json()
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "match"), [
    (("case_id",), KeyError, "missing 'case_id'"),
    (("case_id",), 3, "'case_id' is 3, expected str"),
    (("claim",), "wish", "'claim' is 'wish'; valid: feasible, infeasible"),
    (("verdict",), "maybe", "'verdict' is 'maybe'; valid: pass, fail, inconclusive"),
    (("scores", "ssim_mean"), "high", r"r\.scores: 'ssim_mean' is 'high', expected"),
    (("scores", "ssim_mean"), True, r"'ssim_mean' is True"),
    (("scores", "ssim"), [0.5, "x"], r"'ssim' is \[0\.5, 'x'\], expected numbers"),
    (("scores",), KeyError, r"r\.scores: expected an object, got NoneType"),
    (("baseline", "status"), "fine", r"r\.baseline: 'status' is 'fine'; valid: pass, fail, missing"),
    (("baseline", "passed"), "yes", r"'passed' is 'yes', expected bool"),
    (("result",), [1], "'result' is \\[1\\], expected dict"),
    (("wall_s",), "1s", "'wall_s' is '1s'"),
])
def test_malformed_record_is_refused(path: tuple[str, ...], value: Any, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        CaseRecord.from_json(_broken(path, value), where="r")


def test_malformed_text_and_non_objects() -> None:
    with pytest.raises(GiacheckError, match="r: malformed JSON"):
        CaseRecord.from_json("{oops", where="r")
    with pytest.raises(RecordError, match="r: expected a case record"):
        CaseRecord.from_json("[1, 2]", where="r")


def test_from_result_requires_the_ssim() -> None:
    data = result_dict()
    del data["ssim"]
    with pytest.raises(RecordError, match=r"result: missing 'ssim\.mean'"):
        CaseRecord.from_result(data, suite="s", profile="smoke", claim=None, baseline=None, wall_s=None, origin=None)


def test_schema0_payload_is_upgraded() -> None:
    """What the plugin and the audit wrote before records existed."""
    control = feasible(_ev("ctl", 0.8, 0.001))
    claim = infeasible(_ev(CASE, 0.1, 0.5), control=control)
    payload = {"suite": "s", "case_id": CASE, "profile": "smoke", "claim": "infeasible", "verdict": "pass",
               "message": claim.message, "baseline": {"status": "fail", "path": "b.json", "recorded": 0.05},
               "wall_s": 2.5, "origin": "computed", "nodeid": "n", "outcome": "failed", "result": result_dict(),
               "baselines_root": "baselines"}
    record = CaseRecord.from_json(payload)
    assert record.claim is ClaimKind.INFEASIBLE and record.verdict is Verdict.PASS and record.message == claim.message
    assert record.baseline == BaselineCheck(status=BaselineStatus.FAIL, passed=False, path="b.json", recorded=0.05)
    assert record.shown_verdict == "fail(base)" and record.baselines_root == "baselines"
    assert record.identity == attack_identity(result_dict())
    audit = CaseRecord.from_json({**payload, "baseline": {"status": "not checked (audit)"}})
    assert audit.baseline is not None and audit.baseline.status is BaselineStatus.NOT_CHECKED
    no_profile = {k: v for k, v in payload.items() if k != "profile"}
    assert CaseRecord.from_json(no_profile).profile == "smoke"  # from the result
    assert CaseRecord.from_json(CaseRecord.from_json(payload).to_json()) == record


def test_read_and_write_results(tmp_path: Path) -> None:
    first, second = make_record(), make_record(suite="other")
    again = make_record(wall_s=9.0)  # the same case again: the last one wins
    path = write_results([first, second, again], tmp_path / "results.json", profile="smoke")
    data = json.loads(path.read_text())
    assert data["profile"] == "smoke" and len(data["cases"]) == 2
    assert read_records(path) == [again, second]
    journal = tmp_path / "results.jsonl"
    journal.write_text("".join(json.dumps(r.to_json()) + "\n" for r in (first, second)) + "\n")
    assert read_records(journal) == [first, second]
    journal.write_text(json.dumps(first.to_json()) + "\n{torn\n")  # a complete line that is malformed: refused
    with pytest.raises(GiacheckError, match=r"results\.jsonl, line 2: malformed JSON"):
        read_records(journal)
    journal.write_text(json.dumps(first.to_json()) + "\n" + json.dumps(second.to_json())[:40])  # torn mid-append
    assert read_records(journal) == [first]
    one = tmp_path / "one.json"
    one.write_text(json.dumps(first.to_json()))
    assert read_records(one) == [first]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    with pytest.raises(RecordError, match="not giacheck case records"):
        read_records(other)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"profile": "smoke", "cases": [first.to_json(), {**first.to_json(), "schema": 7}]}))
    with pytest.raises(RecordError, match=r"bad\.json, cases\[1\]: case record of schema 7"):
        read_records(bad)


def test_identity_changes_name_each_field() -> None:
    recorded = attack_identity(result_dict(iterations=400, distance="l2"))
    current = attack_identity(result_dict())
    changes = identity_changes(recorded, current)
    assert changes == (IdentityChange(field="iterations", recorded=400, current=200),
                       IdentityChange(field="distance", recorded="l2", current="cosine"))
    assert identity_changes(current, current) == ()
    rounded = attack_identity(result_dict(lr=0.1 + 1e-12))  # a baseline file keeps 6 digits
    assert identity_changes(rounded, current) == ()
    assert not math.isnan(rounded["lr"])
